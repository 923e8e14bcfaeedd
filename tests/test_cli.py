"""The ds4h-gateway CLI against real state directories."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

from gateway.cli import build_parser
from tests.gw import hr_batch, make_config, post, running


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def _subcommands(parser: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    import argparse

    out = [prefix]
    assert isinstance(parser, argparse.ArgumentParser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _subcommands(sub, (*prefix, name))
    return out


def test_help_everywhere() -> None:
    for path in _subcommands(build_parser()):
        r = cli(*path, "--help")
        assert r.returncode == 0, (path, r.stderr)
        assert "usage:" in r.stdout


async def test_devices_keys_outbox_and_verify(tmp_state_dir: Path) -> None:
    async with running(make_config(tmp_state_dir)) as gw:
        for i in range(0, 20, 4):  # separate requests: several envelopes in the chain
            await post(gw, [hr_batch("hr-1", k) for k in range(i, i + 4)])
    sd = str(tmp_state_dir)
    # registry: the config's devices were seeded; add, disable
    r = cli(
        "devices", "add", "--state-dir", sd, "bp-1", "--kind", "blood_pressure", "--ble-address", "aa:bb:cc:dd:ee:ff"
    )
    assert r.returncode == 0, r.stderr
    r = cli("devices", "add", "--state-dir", sd, "bp-1", "--kind", "blood_pressure")
    assert r.returncode == 2 and "already registered" in r.stderr
    r = cli("devices", "add", "--state-dir", sd, "BP 2", "--kind", "x")
    assert r.returncode == 2 and "not canonical" in r.stderr
    assert cli("devices", "disable", "--state-dir", sd, "hr-1", "--note", "returned").returncode == 0
    listed = json.loads(cli("devices", "list", "--state-dir", sd, "--json").stdout)
    by_id = {d["id"]: d for d in listed}
    assert by_id["bp-1"]["identities"] == {"ble_address": "AA:BB:CC:DD:EE:FF"}
    assert by_id["hr-1"]["enabled"] is False
    did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    r = cli("devices", "add", "--state-dir", sd, "g5-s", "--kind", "cgm", "--public-key", did, "--require-signature")
    assert r.returncode == 0 and "signatures required" in r.stdout, r.stderr
    assert " signed " in cli("devices", "list", "--state-dir", sd).stdout
    # the config seeds only new devices: a disabled device stays disabled across restarts
    async with running(make_config(tmp_state_dir)) as gw:
        assert gw.registry.get("hr-1") is not None
        assert not gw.registry.get("hr-1").enabled  # type: ignore[union-attr]
    # keys
    keys = json.loads(cli("keys", "show", "--state-dir", sd).stdout)
    assert keys["did"].startswith("did:key:z6Mk")
    key_mode = stat.S_IMODE(os.stat(tmp_state_dir / "gateway.key").st_mode)
    assert key_mode == 0o600
    assert stat.S_IMODE(os.stat(tmp_state_dir / "control.token").st_mode) == 0o600
    # outbox stats
    stats = json.loads(cli("outbox", "stats", "--state-dir", sd).stdout)
    assert stats["totals"]["batches"] == 20
    assert stats["sinks"]["local"]["pending_batches"] == 0
    # provenance: the chain verifies …
    r = cli("provenance", "verify", "--state-dir", sd)
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True
    # an export verifies offline against the did alone
    export = tmp_state_dir.parent / "export.cborseq"
    assert cli("provenance", "export", "--state-dir", sd, "--out", str(export)).returncode == 0
    r = cli("provenance", "verify", "--file", str(export), "--did", keys["did"])
    assert r.returncode == 0 and json.loads(r.stdout)["envelopes"] >= 3
    r = cli(
        "provenance",
        "verify",
        "--file",
        str(export),
        "--did",
        "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw",
    )
    assert r.returncode == 1
    # … and a removed envelope breaks it, detectably
    conn = sqlite3.connect(tmp_state_dir / "outbox.db")
    conn.execute("PRAGMA foreign_keys = ON")
    n = conn.execute("SELECT MIN(n) FROM envelopes").fetchone()[0]
    last = conn.execute("SELECT MAX(n) FROM envelopes").fetchone()[0]
    assert last >= n + 2
    conn.execute("DELETE FROM envelopes WHERE n = ?", (n + 1,))
    conn.commit()
    conn.close()
    r = cli("provenance", "verify", "--state-dir", sd)
    assert r.returncode == 1
    assert json.loads(r.stdout)["problems"]


def test_state_commands_need_an_existing_state(tmp_path: Path) -> None:
    r = cli("outbox", "stats", "--state-dir", str(tmp_path / "nope"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = cli("keys", "show", "--state-dir", str(tmp_path))
    assert r.returncode == 2 and "no gateway key" in r.stderr

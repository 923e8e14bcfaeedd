"""`outbox export` and `verify` against a real gateway whose key was rotated twice; every tampering fails."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cbor2
import pytest

from gateway.cli import main, parse_time
from gateway.errors import GatewayError
from gateway.provenance import GatewayIdentity, build_envelope, open_envelope
from gateway.provenance.export import iter_items
from gateway.provenance.keyring import rotate
from gateway.provenance.verify import verify_export
from tests.gw import hr_batch, make_config, post, running

ROUNDS = (4, 4, 2)  # envelopes signed by key 1, key 2, key 3
PER_ENVELOPE = 3


@dataclass
class Exported:
    state: Path
    file: Path
    dids: list[str]
    since_second_key: str
    total_envelopes: int


async def _commit_rounds(state: Path, first_seq: int, envelopes: int) -> str:
    async with running(make_config(state)) as gw:
        for e in range(envelopes):
            seq = first_seq + e * PER_ENVELOPE
            status, body = await post(gw, [hr_batch("hr-1", k) for k in range(seq, seq + PER_ENVELOPE)])
            assert status == 200, body
        return gw.identity.did


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    root = tmp_path_factory.mktemp("export")
    state = root / "state"
    dids: list[str] = []
    seq = 0
    since_second = ""
    for i, n in enumerate(ROUNDS):
        if i:
            rotate(state)
            if i == 1:
                since_second = datetime.now(UTC).isoformat()
                time.sleep(0.01)
        dids.append(asyncio.run(_commit_rounds(state, seq, n)))
        seq += n * PER_ENVELOPE
    out = root / "all.cborseq"
    assert main(["outbox", "export", "--state-dir", str(state), "--since", "1d", "--out", str(out)]) == 0
    return Exported(state, out, dids, since_second, sum(ROUNDS))


def _items(path: Path) -> list[bytes]:
    return list(iter_items(path))


def _write(path: Path, items: list[bytes]) -> Path:
    path.write_bytes(b"".join(cbor2.dumps(i) for i in items))
    return path


def _verify(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["verify", str(path), *extra])
    return rc, capsys.readouterr().out


def test_export_spanning_three_keys_verifies(exported: Exported, capsys: pytest.CaptureFixture[str]) -> None:
    assert len(set(exported.dids)) == 3
    for did in exported.dids:  # any key of the history identifies the gateway
        rc, out = _verify(exported.file, capsys, "--did", did)
        assert rc == 0, out
    assert out.startswith("OK:")
    assert f"envelopes: {exported.total_envelopes} (1…{exported.total_envelopes})" in out
    assert f"readings: {exported.total_envelopes * PER_ENVELOPE}," in out and "devices: 1 (hr-1)" in out
    assert "key history: 3 key(s)" in out
    for did, (a, b) in zip(exported.dids, [(1, 4), (5, 8), (9, 10)], strict=True):
        assert f"signer {did}: envelopes {a}…{b}" in out
    rc, out = _verify(exported.file, capsys, "--json")
    report = json.loads(out)
    assert rc == 0 and report["ok"] and report["keys"] == exported.dids
    assert report["first_reading"] < report["last_reading"]
    assert report["readings"] == exported.total_envelopes * PER_ENVELOPE


def test_file_layout_key_history_envelopes_trailer(exported: Exported) -> None:
    items = _items(exported.file)
    assert len(items) == 3 + exported.total_envelopes + 1
    payloads = [cbor2.loads(cbor2.loads(i).value[2]) for i in items]
    assert [p.get("typ") for p in payloads[:3]] == ["ds4h-key"] * 3
    assert [p["n"] for p in payloads[3:-1]] == list(range(1, exported.total_envelopes + 1))
    trailer = payloads[-1]
    assert trailer["typ"] == "ds4h-trailer" and trailer["gw"] == exported.dids[-1]
    assert (trailer["first"], trailer["last"], trailer["count"], trailer["kh"]) == (1, 10, 10, 3)


def test_time_window_export_verifies(exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "window.cborseq"
    rc = main(
        ["outbox", "export", "--state-dir", str(exported.state), "--since", exported.since_second_key,
         "--until", "now", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    rc, text = _verify(out, capsys, "--did", exported.dids[0])
    assert rc == 0, text
    assert "envelopes: 6 (5…10)" in text  # keys 2 and 3 only, with the full key history in front
    assert f"signer {exported.dids[0]}" not in text  # key 1 signed none of these
    assert f"signer {exported.dids[1]}: envelopes 5…8" in text


def test_the_old_commands_still_verify(exported: Exported) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60)

    r = cli("provenance", "verify", "--state-dir", str(exported.state))
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout)["keys"] == exported.dids
    r = cli("provenance", "verify", "--file", str(exported.file), "--did", exported.dids[1])
    assert r.returncode == 0 and json.loads(r.stdout)["envelopes"] == exported.total_envelopes
    r = cli("verify", str(exported.file), "--did", exported.dids[2])  # the real exit code of the command
    assert r.returncode == 0, r.stdout
    r = cli("verify", str(exported.file), "--did", "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw")
    assert r.returncode == 1 and "first bad: --did" in r.stdout


def _flip_in_payload(item: bytes) -> bytes:
    payload = cbor2.loads(item).value[2]
    pos = item.index(payload) + len(payload) // 2
    out = bytearray(item)
    out[pos] ^= 0x04
    return bytes(out)


def _from_another_gateway(item: bytes) -> bytes:
    env = open_envelope(item)
    return build_envelope(GatewayIdentity.generate(), env.number, env.prev_hash, env.created_ns, env.batch_bodies)


K = 3  # key records in front of envelope 1: envelope n is item K + n - 1

TAMPERINGS: dict[str, tuple[Callable[[list[bytes]], list[bytes]], str]] = {
    "flipped bit": (
        lambda it: [*it[: K + 4], _flip_in_payload(it[K + 4]), *it[K + 5 :]],
        "envelope 5: does not verify",
    ),
    "flipped bit in an envelope of the third key": (
        lambda it: [*it[: K + 8], _flip_in_payload(it[K + 8]), *it[K + 9 :]],
        "envelope 9: does not verify",
    ),
    "removed envelope": (lambda it: [*it[: K + 6], *it[K + 7 :]], "envelope 8: gap 6→8"),
    "swapped envelopes": (
        lambda it: [*it[: K + 2], it[K + 3], it[K + 2], *it[K + 4 :]],
        "envelope 4: gap 2→4",
    ),
    "envelope of another gateway": (
        lambda it: [*it[: K + 5], _from_another_gateway(it[K + 5]), *it[K + 6 :]],
        "envelope 6: does not verify",
    ),
    "removed first envelope": (lambda it: [*it[:K], *it[K + 1 :]], "trailer: count is 10 but the file holds 9"),
    "removed trailer": (lambda it: it[:-1], "no trailer after envelope 10"),
    "removed last envelope and trailer": (lambda it: it[:-2], "no trailer after envelope 9"),
    "altered trailer": (lambda it: [*it[:-1], _flip_in_payload(it[-1])], "trailer: does not verify"),
    "removed key record": (lambda it: [it[0], *it[2:]], "key record at position 1: key record 3: expected record 2"),
    "no key history": (lambda it: it[K:], "no key history at the start"),
    "removed last envelope": (lambda it: [*it[:-2], it[-1]], "trailer: count is 10 but the file holds 9"),
}


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_tampering_fails_and_names_the_first_bad_item(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    change, first_bad = TAMPERINGS[name]
    bad = _write(tmp_path / "bad.cborseq", change(_items(exported.file)))
    rc, out = _verify(bad, capsys, "--did", exported.dids[0])
    assert rc == 1, out
    first_line = out.splitlines()[1]
    assert first_line.startswith("first bad: ") and first_bad in first_line, out


def test_truncated_file_fails(exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = exported.file.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 10):
        bad = tmp_path / f"cut{cut}.cborseq"
        bad.write_bytes(data[:cut])
        rc, out = _verify(bad, capsys)
        assert rc == 1, out
        assert "first bad: file cut or corrupted" in out or "first bad: no trailer" in out, out


def test_flipped_bit_anywhere_fails(exported: Exported, tmp_path: Path) -> None:
    data = exported.file.read_bytes()
    for pos in range(0, len(data), max(1, len(data) // 97)):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        (tmp_path / "f.cborseq").write_bytes(bad)
        assert not verify_export(tmp_path / "f.cborseq", exported.dids[0]).ok, pos


def test_missing_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(tmp_path / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_parse_time() -> None:
    now = 1_780_000_000_000_000_000
    assert parse_time("now", now) == now
    assert parse_time("1d", now) == parse_time("-1d", now) == now - 86_400 * 10**9
    assert parse_time("-90s", now) == now - 90 * 10**9
    assert parse_time("2026-12-01T08:00:00Z", now) == parse_time("2026-12-01T09:00:00+01:00", now)
    assert parse_time("2026-12-01T08:00:00", now) == parse_time("2026-12-01T08:00:00Z", now)  # no offset: UTC
    assert parse_time("2026-12-01", now) == 1_796_083_200 * 10**9
    with pytest.raises(GatewayError, match="ISO 8601"):
        parse_time("yesterday", now)

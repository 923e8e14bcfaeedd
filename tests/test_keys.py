"""Gateway key lifecycle against real state directories: init, show, rotate, key history, systemd credentials."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.config import Config
from gateway.errors import ProvenanceError, StateError
from gateway.metrics import GatewayMetrics
from gateway.outbox.housekeeping import Housekeeper
from gateway.outbox.store import OutboxStore, open_outbox
from gateway.provenance import GatewayIdentity, public_from_did_key, verify_chain
from gateway.provenance.cose import sign1_with, verify1
from gateway.provenance.identity import load_key_file, write_key_file
from gateway.provenance.keyhistory import KeyHistory, build_key_record, open_key_record, pop_message
from gateway.provenance.keyring import (
    NEXT_KEY_FILE_NAME,
    _append,
    load_gateway_keys,
    read_history,
    read_keys_public,
    rotate,
)
from gateway.state.db import write_transaction
from tests.gw import hr_batch, make_config, post, running, wait_until
from tests.services import VictoriaMetrics, free_port

T0 = 1_780_000_000_000_000_000


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **(env or {})},
    )  # fmt: skip


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _key_files(state: Path) -> list[str]:
    return sorted(p.name for p in state.iterdir() if "key" in p.name)


def test_init_show_rotate_twice_with_the_cli(tmp_path: Path) -> None:
    state = tmp_path / "state"  # keys init creates the state directory
    r = cli("keys", "init", "--state-dir", str(state))
    assert r.returncode == 0, r.stderr
    init = json.loads(r.stdout)
    assert init["created"] is True and init["did"].startswith("did:key:z6Mk")
    assert _mode(state / "gateway.key") == 0o600
    again = json.loads(cli("keys", "init", "--state-dir", str(state)).stdout)  # idempotent
    assert again["did"] == init["did"] and again["created"] is False
    show = json.loads(cli("keys", "show", "--state-dir", str(state)).stdout)
    assert show["did"] == init["did"] and show["key_records"] == 1

    dids = [init["did"]]
    for _ in range(2):
        r = cli("keys", "rotate", "--state-dir", str(state))
        assert r.returncode == 0, r.stderr
        assert "re-request" in r.stdout and "dataspace credential request" in r.stdout
        dids.append(load_key_file(state / "gateway.key").did)
        assert dids[-1] in r.stdout and dids[-2] in r.stdout
        assert _mode(state / "gateway.key") == 0o600
        assert _key_files(state) == ["gateway.key"]  # the old private key is gone, no temporary left
    assert len(set(dids)) == 3

    full = json.loads(cli("keys", "show", "--all", "--state-dir", str(state)).stdout)
    assert full["did"] == dids[-1] and full["key_records"] == 3
    hist = full["history"]
    assert [h["did"] for h in hist] == dids
    assert [h["announced_by"]["signed_by"] for h in hist] == [dids[0], dids[0], dids[1]]
    assert hist[0]["retired"] == hist[1]["created"] and hist[2]["retired"] is None
    assert all(h["created"].endswith("Z") for h in hist)

    # each announcement verifies with the previous key (record 1: the first key itself)
    history = read_keys_public(state)
    for i, rec in enumerate(history.records):
        signer = dids[max(0, i - 1)]
        _payload, kid = verify1(rec.cose, Ed25519PublicKey.from_public_bytes(public_from_did_key(signer)))
        assert kid == signer.encode()
        assert rec.did == dids[i]
        if i:  # a rotation record is not signed by the key it announces
            with pytest.raises(ProvenanceError):
                verify1(rec.cose, Ed25519PublicKey.from_public_bytes(public_from_did_key(dids[i])))


async def test_gateway_signs_with_the_new_key_after_rotation(tmp_state_dir: Path) -> None:
    async with running(make_config(tmp_state_dir)) as gw:
        first = gw.identity.did
        assert (await post(gw, [hr_batch("hr-1", i) for i in range(3)]))[0] == 200
        with pytest.raises(StateError, match="is running"):  # refused while a gateway runs on the state
            rotate(tmp_state_dir)
    r = rotate(tmp_state_dir)
    assert r.old_did == first and r.record.from_n == 2  # one envelope so far
    async with running(make_config(tmp_state_dir)) as gw:
        assert gw.identity.did == r.new_did
        assert (await post(gw, [hr_batch("hr-1", i) for i in range(3, 6)]))[0] == 200
    conn = open_outbox(tmp_state_dir, readonly=True)
    numbers = [n for (n,) in conn.execute("SELECT n FROM envelopes ORDER BY n")]
    history = read_history(conn)
    conn.close()
    assert [history.signer_for(n) for n in numbers] == [first, r.new_did]
    assert [open_key_record(rec.cose).did for rec in history.records] == [first, r.new_did]


async def test_a_gateway_running_through_a_rotation_stops_committing(tmp_state_dir: Path) -> None:
    """If the running-gateway check is bypassed, the committer still never signs with a retired key."""
    async with running(make_config(tmp_state_dir)) as gw:
        assert (await post(gw, [hr_batch("hr-1", 1)]))[0] == 200
        conn = open_outbox(tmp_state_dir)
        history = read_history(conn)
        new = GatewayIdentity.generate()
        assert history.current is not None
        cose = build_key_record(gw.identity, new, 2, history.current.hash, 2, T0)
        with write_transaction(conn):
            _append(conn, history, cose)
        conn.close()
        status, body = await post(gw, [hr_batch("hr-1", 2)])
        assert status >= 500, body
        assert "rotated" in json.dumps(body)
        assert gw.committer._last_n == 1  # nothing signed after the rotation


def test_interrupted_rotation_is_completed_on_load(tmp_state_dir: Path) -> None:
    keys = load_gateway_keys(tmp_state_dir)
    new = GatewayIdentity.generate()
    # the steps of rotate() up to the commit of the record, then a "crash" before the rename
    assert write_key_file(tmp_state_dir / NEXT_KEY_FILE_NAME, new.private_key_for_storage())
    conn = open_outbox(tmp_state_dir)
    history = read_history(conn)
    with write_transaction(conn):
        _append(conn, history, build_key_record(keys.identity, new, 2, keys.history.records[0].hash, 1, T0))
    conn.close()
    loaded = load_gateway_keys(tmp_state_dir)
    assert loaded.identity.did == new.did
    assert _key_files(tmp_state_dir) == ["gateway.key"]


def test_half_made_rotation_is_discarded_on_load(tmp_state_dir: Path) -> None:
    keys = load_gateway_keys(tmp_state_dir)
    assert write_key_file(tmp_state_dir / NEXT_KEY_FILE_NAME, GatewayIdentity.generate().private_key_for_storage())
    loaded = load_gateway_keys(tmp_state_dir)  # its record was never committed: the old key stays
    assert loaded.identity.did == keys.identity.did
    assert _key_files(tmp_state_dir) == ["gateway.key"]


def test_retired_unknown_and_missing_keys_are_refused(tmp_state_dir: Path) -> None:
    first = load_gateway_keys(tmp_state_dir).identity
    saved = (tmp_state_dir / "gateway.key").read_bytes()
    rotate(tmp_state_dir)
    key = tmp_state_dir / "gateway.key"
    current = key.read_bytes()
    key.write_bytes(saved)  # an old backup put back
    with pytest.raises(StateError, match=f"{first.did}.*was retired by key record 2"):
        load_gateway_keys(tmp_state_dir)
    key.unlink()
    assert write_key_file(key, GatewayIdentity.generate().private_key_for_storage())
    with pytest.raises(StateError, match="is not in the key history"):
        load_gateway_keys(tmp_state_dir)
    key.unlink()
    with pytest.raises(StateError, match=r"holds no gateway key.*restore it"):  # never silently a new identity
        load_gateway_keys(tmp_state_dir)
    key.write_bytes(current)
    key.chmod(0o600)
    load_gateway_keys(tmp_state_dir)


def test_key_history_records_are_checked(tmp_state_dir: Path) -> None:
    a, b, c = (GatewayIdentity.generate() for _ in range(3))
    r1 = build_key_record(a, a, 1, bytes(32), 1, T0)
    h1 = open_key_record(r1).hash
    r2 = build_key_record(a, b, 2, h1, 5, T0 + 1)
    hist = KeyHistory([r1, r2])
    assert hist.signer_for(4) == a.did and hist.signer_for(5) == b.did and hist.signer_for(10**6) == b.did
    with pytest.raises(ProvenanceError, match="signed by"):  # signed by a key that is not the current one
        KeyHistory([r1, r2, build_key_record(a, c, 3, open_key_record(r2).hash, 6, T0 + 2)])
    with pytest.raises(ProvenanceError, match="prev-hash mismatch"):
        KeyHistory([r1, r2, build_key_record(b, c, 3, h1, 6, T0 + 2)])
    with pytest.raises(ProvenanceError, match="expected record 2"):
        KeyHistory([r1, build_key_record(b, c, 3, open_key_record(r2).hash, 6, T0 + 2)])
    with pytest.raises(ProvenanceError, match="from envelope 4 < 5"):
        KeyHistory([r1, r2, build_key_record(b, c, 3, open_key_record(r2).hash, 4, T0 + 2)])
    # proof of possession: announcing someone else's public key (without its private key) is refused
    obj = cbor2.loads(cbor2.loads(r2).value[2])
    obj["pop"] = a.sign(pop_message(2, h1, a.did, b.did, 5, T0 + 1))  # signed by the old key, not the new
    with pytest.raises(ProvenanceError, match="proof of possession"):
        open_key_record(sign1_with(cbor2.dumps(obj, canonical=True), a.sign, a.did.encode()))
    obj["pop"] = b.sign(pop_message(2, h1, a.did, b.did, 5, T0 + 1))
    assert open_key_record(sign1_with(cbor2.dumps(obj, canonical=True), a.sign, a.did.encode())).did == b.did


def _write_credential(directory: Path, name: str) -> GatewayIdentity:
    directory.mkdir(mode=0o700, exist_ok=True)
    ident = GatewayIdentity.generate()
    assert write_key_file(directory / name, ident.private_key_for_storage())
    (directory / name).chmod(0o400)  # what systemd gives a service: read only, owner only
    return ident


async def test_key_from_a_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state, creds = tmp_path / "state", tmp_path / "credentials"
    ident = _write_credential(creds, "gateway-key")
    config = make_config(state, provenance={"key_credential": "gateway-key"})
    with pytest.raises(StateError, match="CREDENTIALS_DIRECTORY is not set"):
        load_gateway_keys(state, "gateway-key", environ={})
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    async with running(config) as gw:
        assert gw.identity.did == ident.did
        assert (await post(gw, [hr_batch("hr-1", 1)]))[0] == 200
    assert not (state / "gateway.key").exists()  # nothing written to the state directory
    assert _mode(creds / "gateway-key") == 0o400

    cfg_file = tmp_path / "gateway.toml"
    cfg_file.write_text(
        f"[gateway]\nstate_dir = '{state}'\nclock = 'synced'\n[provenance]\nkey_credential = 'gateway-key'\n"
        "[encryption]\ninsecure_key_on_disk = true\n"
    )
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    show = json.loads(cli("keys", "show", "--config", str(cfg_file), env=env).stdout)
    assert show["did"] == ident.did and show["key_credential"] == "gateway-key"
    # rotation cannot write a read-only credential: it says how to proceed
    r = cli("keys", "rotate", "--config", str(cfg_file), env=env)
    assert r.returncode == 2 and "--new-key-out" in r.stderr and "read only" in r.stderr
    new_key = tmp_path / "new-gateway-key.pem"
    r = cli("keys", "rotate", "--config", str(cfg_file), "--new-key-out", str(new_key), env=env)
    assert r.returncode == 0, r.stderr
    assert "provision it as the systemd credential" in r.stdout
    assert _mode(new_key) == 0o600
    new_did = load_key_file(new_key).did
    # until the credential is replaced, the retired key is refused
    with pytest.raises(StateError, match="was retired"):
        load_gateway_keys(state, "gateway-key")
    (creds / "gateway-key").chmod(0o600)
    (creds / "gateway-key").write_bytes(new_key.read_bytes())
    async with running(config) as gw:
        assert gw.identity.did == new_did
        assert (await post(gw, [hr_batch("hr-1", 2)]))[0] == 200


def test_missing_credential_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "creds").mkdir()
    with pytest.raises(StateError, match="credential 'gateway-key' not found"):
        load_gateway_keys(tmp_path / "state", "gateway-key", environ={"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})


def test_credential_file_modes(tmp_path: Path) -> None:
    """systemd's ACL for the service user shows as group read (0440): accepted; readable by others: refused."""
    creds = tmp_path / "creds"
    ident = _write_credential(creds, "gateway-key")
    (tmp_path / "state").mkdir()
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    (creds / "gateway-key").chmod(0o444)
    with pytest.raises(StateError, match="group/other may access it"):
        load_gateway_keys(tmp_path / "state", "gateway-key", environ=env)
    (creds / "gateway-key").chmod(0o440)
    assert load_gateway_keys(tmp_path / "state", "gateway-key", environ=env).identity.did == ident.did


async def test_undelivered_envelopes_of_a_retired_key_are_still_forwarded(
    tmp_state_dir: Path, victoria_metrics: VictoriaMetrics
) -> None:
    """After a restart the forwarders read envelopes back from the outbox and verify each against the
    key of its era, not only the current key."""
    token = tmp_state_dir.parent / "influx.token"
    token.write_text("test-token")
    token.chmod(0o600)

    def config(url: str) -> Config:
        influx = {"url": url, "token_file": str(token), "timeout_s": 2}
        return make_config(tmp_state_dir, gateway={"shutdown_flush_s": 0.2}, sinks={"influx": influx})

    async with running(config(f"http://127.0.0.1:{free_port()}")) as gw:  # nothing listens: stays in the outbox
        for i in range(0, 15, 3):
            assert (await post(gw, [hr_batch("hr-1", k) for k in range(i, i + 3)]))[0] == 200
    r = rotate(tmp_state_dir)
    async with running(config(victoria_metrics.url)) as gw:
        assert gw.identity.did == r.new_did
        await wait_until(lambda: int(gw.counters()["readings_forwarded"]["influx"]) == 15, what="old envelopes sent")
        assert gw.stats()["outbox"]["influx"]["dead_letters"] == 0


async def test_the_chain_continues_after_everything_aged_out(tmp_state_dir: Path) -> None:
    """Housekeeping keeps the newest envelope, so envelope numbers (and the key history's) never restart."""
    async with running(make_config(tmp_state_dir)) as gw:
        for i in range(3):
            assert (await post(gw, [hr_batch("hr-1", i)]))[0] == 200
        await wait_until(lambda: gw.stats()["outbox"]["local"]["pending_batches"] == 0, what="delivered")
    conn = open_outbox(tmp_state_dir)
    hk = Housekeeper(conn, GatewayMetrics(), sinks=["local"], retention_s=0, budget_bytes=10**9)
    assert hk.mark_delivered() == 3
    assert hk.prune_expired() == 2
    assert [n for (n,) in conn.execute("SELECT n FROM envelopes")] == [3]
    conn.close()
    async with running(make_config(tmp_state_dir)) as gw:
        assert (await post(gw, [hr_batch("hr-1", 10)]))[0] == 200
    conn = open_outbox(tmp_state_dir, readonly=True)
    assert verify_chain(OutboxStore(conn).envelopes(), read_history(conn).signer_for).ok
    assert [n for (n,) in conn.execute("SELECT n FROM envelopes")] == [3, 4]
    conn.close()

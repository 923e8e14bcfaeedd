"""Encryption at rest against the stolen-SD-card threat (docs/security.md).

Sentinels — a string, readings whose float64 and float32 bytes are distinctive, ECG samples with a
distinctive int32 pattern — go through a real gateway; afterwards every file under the state directory
(``-wal`` and ``-shm`` included) is scanned for them. A run with encryption off finds them (the scan
works); with encryption on, and after turning it on for a state directory written in the clear, it does
not. Also: values are bound to their rows, a wrong key is refused, a key rotation re-encrypts lazily, and
each key source (file on another medium, systemd credential, key service over HTTPS) loads.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import os
import sqlite3
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.devices import DeviceRegistry
from gateway.errors import StateError
from gateway.outbox.store import OutboxStore, open_outbox
from gateway.pki.ca import SitePki
from gateway.provenance.chain import verify_chain
from gateway.provenance.identity import SEALED_BEGIN, load_key_file
from gateway.sinks.local import History
from gateway.state import statekey
from gateway.state.cipher import StateCipher
from gateway.state.statekey import format_keys, new_key
from tests import sentinels
from tests.gw import hr_batch, make_config, post, running, wait_until

SENTINEL = sentinels.PATIENT
VALUE = sentinels.VALUE
"""A reading whose float64 (and float32) bytes are unlikely anywhere else."""
ECG = np.array([0x5EA1F00D, -0x2BADC0DE, 0x13572468] * 40, dtype=np.int32)


def _cli(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


def needles() -> dict[str, bytes]:
    return {
        "string": SENTINEL.encode(),
        "float64 le": struct.pack("<d", VALUE),
        "float64 be": struct.pack(">d", VALUE),
        "float32 le": struct.pack("<f", VALUE),
        "float32 be": struct.pack(">f", VALUE),
        "ecg int32": ECG[:3].astype("<i4").tobytes(),
    }


def scan(root: Path) -> dict[str, list[str]]:
    """Which needles occur in which files under ``root`` (every file, whatever its name)."""
    found: dict[str, list[str]] = {}
    for f in sorted(root.rglob("*")):
        if not f.is_file():
            continue
        data = f.read_bytes()
        for name, needle in needles().items():
            if needle in data:
                found.setdefault(name, []).append(f.name)
    return found


def planted_batches(seq: int) -> list[dict[str, Any]]:
    now = time.time_ns()
    return [
        {**hr_batch("hr-1", seq), "readings": [{"metric": "heart_rate", "v": VALUE, "u": "/min", "t": now - 10**9}]},
        {
            "device": "ecg-1",
            "key": ["sentinel", seq],
            "waveforms": [{"metric": "ecg", "u": "uV", "t0": now - 2 * 10**9, "period": 4_000_000,
                           "i32le": ECG.astype("<i4").tobytes()}],
        },
        # refused: the unknown metric name (the sentinel) is quoted in the quarantine detail
        {"device": "hr-1", "key": ["sentinel-q", seq], "readings": [{"metric": SENTINEL, "v": 1, "u": "/min"}]},
    ]  # fmt: skip


async def plant(cfg: Any, seq: int = 1) -> None:
    async with running(cfg) as gw:
        status, body = await post(gw, planted_batches(seq))
        assert status == 200
        assert [r["status"] for r in body["results"]] == ["committed", "committed", "quarantined"]
        await wait_until(lambda: gw.local.count()[0] >= 1 and gw.local.count()[1] >= ECG.size, what="history")
        gw.registry.set_enabled("cgm-1", False, f"worn by {SENTINEL}")  # an operator's free-text note


@pytest.fixture(autouse=True)
def _fresh_ciphers() -> Iterator[None]:
    yield
    statekey._ciphers.clear()


def assert_signing_key_sealed(state: Path) -> None:
    """The gateway's signing key is encrypted with the state key too: its raw bytes are in no file."""
    key_file = state / "gateway.key"
    assert key_file.read_bytes().startswith(SEALED_BEGIN)
    raw = load_key_file(key_file).private_key_for_storage().private_bytes_raw()
    assert not [f.name for f in state.rglob("*") if f.is_file() and raw in f.read_bytes()]


async def test_encryption_off_the_scan_finds_every_sentinel(tmp_state_dir: Path) -> None:
    await plant(make_config(tmp_state_dir, encryption={"enabled": False, "insecure_key_on_disk": False}))
    found = scan(tmp_state_dir)
    # the scan sees the plaintext where it is: SQLite and CBOR keep float64 big-endian, samples little-endian
    assert {"string", "float64 be", "ecg int32"} <= set(found), found
    assert set(found["float64 be"]) == {"outbox.db", "history.db"}
    assert "registry.db" in found["string"]


async def test_encrypted_state_holds_no_sentinel_and_reads_back(
    tmp_state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(tmp_state_dir)
    await plant(cfg)
    assert scan(tmp_state_dir) == {}
    assert_signing_key_sealed(tmp_state_dir)
    for rec in caplog.records:
        text = rec.getMessage()
        assert SENTINEL not in text and str(VALUE) not in text, text
    assert "INSECURE" in caplog.text  # the key beside the data is warned about
    # the data is all there, decrypted with the state directory's key
    reg = DeviceRegistry.open(tmp_state_dir)
    try:
        assert reg.get("cgm-1").note == f"worn by {SENTINEL}"  # type: ignore[union-attr]
    finally:
        reg.close()
    with History(tmp_state_dir) as h:
        assert [r.value for r in h.readings("hr-1")] == [VALUE]
        (w,) = h.waveforms("ecg-1")
        assert np.array_equal(w.samples, ECG)
    conn = open_outbox(tmp_state_dir)
    try:
        store = OutboxStore(conn)
        assert verify_chain(store.envelopes()).ok
        (row,) = conn.execute("SELECT detail FROM quarantine").fetchall()
        assert isinstance(row[0], bytes)  # sealed
    finally:
        conn.close()
    status = json.loads(await asyncio.to_thread(_cli, "encryption", "status", "--state-dir", str(tmp_state_dir)))
    assert status["outbox.db"]["state"] == "sealed" and status["history.db"]["state"] == "sealed"
    assert set(status["outbox.db"]["not_under_current_key"].values()) == {0}


async def test_turning_encryption_on_leaves_no_plaintext_behind(tmp_state_dir: Path) -> None:
    await plant(make_config(tmp_state_dir, encryption={"enabled": False, "insecure_key_on_disk": False}))
    assert scan(tmp_state_dir)
    assert (tmp_state_dir / "gateway.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    await plant(make_config(tmp_state_dir), seq=2)  # the same state directory, now encrypted at start
    assert scan(tmp_state_dir) == {}
    assert_signing_key_sealed(tmp_state_dir)
    with History(tmp_state_dir) as h:
        assert [r.value for r in h.readings("hr-1")] == [VALUE, VALUE]
        assert len(h.waveforms("ecg-1")) == 2
    conn = open_outbox(tmp_state_dir)
    try:
        report = verify_chain(OutboxStore(conn).envelopes())
        assert report.ok and report.count >= 2
    finally:
        conn.close()


async def test_an_encrypted_state_is_never_opened_as_plaintext_nor_with_a_wrong_key(tmp_state_dir: Path) -> None:
    await plant(make_config(tmp_state_dir))
    statekey._ciphers.clear()
    with pytest.raises(StateError, match="enabled = false cannot open it"):
        make_gw(make_config(tmp_state_dir, encryption={"enabled": False, "insecure_key_on_disk": False}))
    statekey._ciphers.clear()
    (tmp_state_dir / "state.key").write_bytes(format_keys([new_key()]))
    with pytest.raises(StateError, match="not the key this database uses"):
        make_gw(make_config(tmp_state_dir))


def make_gw(cfg: Any) -> object:
    from gateway.pipeline import Gateway

    return Gateway(cfg)


def test_values_are_bound_to_their_row_and_column() -> None:
    c = StateCipher([new_key()])
    sealed = c.seal("readings", "value", "hr-1\x00heart_rate\x001", b"x" * 8)
    assert c.open("readings", "value", "hr-1\x00heart_rate\x001", sealed) == b"x" * 8
    for table, column, row in (
        ("readings", "value", "hr-1\x00heart_rate\x002"),  # another row
        ("readings", "samples", "hr-1\x00heart_rate\x001"),  # another column
        ("waveforms", "value", "hr-1\x00heart_rate\x001"),  # another table
    ):
        with pytest.raises(StateError, match="does not decrypt"):
            c.open(table, column, row, sealed)
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(StateError, match="does not decrypt"):
        c.open("readings", "value", "hr-1\x00heart_rate\x001", bytes(flipped))
    with pytest.raises(StateError, match="not among the configured keys"):
        StateCipher([new_key()]).open("readings", "value", "hr-1\x00heart_rate\x001", sealed)
    assert "key" not in repr(c).replace("keys", "")  # no key material in repr


async def test_swapped_rows_in_the_database_are_detected(tmp_state_dir: Path) -> None:
    cfg = make_config(tmp_state_dir)
    async with running(cfg) as gw:
        await post(gw, [hr_batch("hr-1", 1, value=61.0), hr_batch("hr-1", 2, value=62.0)])
        await wait_until(lambda: gw.local.count()[0] == 2, what="history")
    conn = sqlite3.connect(tmp_state_dir / "history.db")
    (a, va), (b, vb) = conn.execute("SELECT t_ns, value FROM readings ORDER BY t_ns").fetchall()
    conn.execute("UPDATE readings SET value = ? WHERE t_ns = ?", (vb, a))
    conn.execute("UPDATE readings SET value = ? WHERE t_ns = ?", (va, b))
    conn.commit()
    conn.close()
    with History(tmp_state_dir) as h, pytest.raises(StateError, match=r"readings\.value .* does not decrypt"):
        h.readings()


async def test_key_rotation_re_encrypts_lazily(tmp_state_dir: Path) -> None:
    await plant(make_config(tmp_state_dir))
    key_file = tmp_state_dir / "state.key"
    old = statekey.parse_keys(key_file.read_bytes(), "old")
    fresh = new_key()
    statekey._ciphers.clear()
    key_file.write_bytes(format_keys([fresh, *old]))  # the new key first; the old one still decrypts
    async with running(make_config(tmp_state_dir)) as gw:
        await wait_until(lambda: gw._resealed_all, timeout=20, what="lazy re-encryption")
    from gateway.outbox.schema import SEALED
    from gateway.state.sealing import unsealed_counts

    conn = open_outbox(tmp_state_dir, readonly=True)
    try:
        assert set(unsealed_counts(conn, SEALED).values()) == {0}
    finally:
        conn.close()
    statekey._ciphers.clear()
    key_file.write_bytes(format_keys([fresh]))  # every value is under the new key: the old one can go
    statekey.open_cipher(tmp_state_dir, make_config(tmp_state_dir).crypto)
    with History(tmp_state_dir) as h:
        assert [r.value for r in h.readings("hr-1")] == [VALUE]
        assert np.array_equal(h.waveforms("ecg-1")[0].samples, ECG)


# --- key sources ----------------------------------------------------------------------------------


def _key_file(path: Path) -> bytes:
    key = new_key()
    path.write_bytes(format_keys([key]))
    path.chmod(0o600)
    return key


def test_a_key_file_on_the_state_medium_is_refused_unless_insecure(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    kf = tmp_path / "state.key"
    _key_file(kf)
    cfg = make_config(state, encryption={"insecure_key_on_disk": False, "key_file": str(kf)})
    with pytest.raises(StateError, match="same file system as the state directory"):
        statekey.open_cipher(state, cfg.crypto)
    kf.chmod(0o644)
    cfg = make_config(state, encryption={"insecure_key_on_disk": True, "key_file": str(kf)})
    with pytest.raises(StateError, match="readable by others"):
        statekey.open_cipher(state, cfg.crypto)
    kf.chmod(0o600)
    assert statekey.open_cipher(state, cfg.crypto) is not None


@pytest.mark.skipif(
    not Path("/dev/shm").is_dir() or Path("/dev/shm").stat().st_dev == Path("/tmp").stat().st_dev,
    reason="needs /dev/shm on its own file system",
)
async def test_a_key_file_on_another_medium(tmp_state_dir: Path) -> None:
    kf = Path("/dev/shm") / f"ds4h-test-{os.getpid()}.key"
    try:
        _key_file(kf)
        cfg = make_config(tmp_state_dir, encryption={"insecure_key_on_disk": False, "key_file": str(kf)})
        await plant(cfg)
        assert scan(tmp_state_dir) == {}
        desc = json.loads((tmp_state_dir / "encryption.json").read_text())
        assert desc["source"]["kind"] == "file" and kf.name in desc["source"]["where"]
    finally:
        kf.unlink(missing_ok=True)


async def test_a_key_from_a_systemd_credential(
    tmp_state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    key = new_key()
    (creds / "state-key").write_bytes(key)  # raw 32 bytes, as systemd-creds can hold it
    (creds / "state-key").chmod(0o440)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = make_config(tmp_state_dir, encryption={"insecure_key_on_disk": False, "key_credential": "state-key"})
    await plant(cfg)
    assert scan(tmp_state_dir) == {}
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    statekey._ciphers.clear()
    with pytest.raises(StateError, match=r"\$CREDENTIALS_DIRECTORY is not set"):
        statekey.open_cipher(tmp_state_dir, cfg.crypto)


class _KeyService(http.server.BaseHTTPRequestHandler):
    material = b""
    token = ""

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_response(401)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(self.material)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def key_service(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """A key service on loopback over TLS (certificate from a throw-away site CA): (url, token file, CA)."""
    pki_state = tmp_path / "kspki"
    pki_state.mkdir(mode=0o700)
    pki = SitePki(pki_state)
    pki.init_ca("key service test")
    server_cert = pki.issue_server()
    _KeyService.material = base64.b64encode(new_key()) + b"\n"
    _KeyService.token = "t0ken-" + os.urandom(8).hex()
    token_file = tmp_path / "ks.token"
    token_file.write_text(_KeyService.token)
    token_file.chmod(0o600)
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _KeyService)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(server_cert.cert), str(server_cert.key))
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{httpd.server_address[1]}/keys/gw", token_file, pki.ca_cert
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_a_key_from_a_key_service_over_tls(tmp_state_dir: Path, key_service: tuple[str, Path, Path]) -> None:
    url, token_file, ca = key_service
    enc = {
        "insecure_key_on_disk": False,
        "key_url": url,
        "key_url_token_file": str(token_file),
        "key_url_ca_file": str(ca),
    }
    await plant(make_config(tmp_state_dir, encryption=enc))
    assert scan(tmp_state_dir) == {}
    statekey._ciphers.clear()
    token_file.write_text("wrong")
    with pytest.raises(StateError, match="answered HTTP 401"):
        statekey.open_cipher(tmp_state_dir, make_config(tmp_state_dir, encryption=enc).crypto)
    statekey._ciphers.clear()
    with pytest.raises(StateError, match="key service"):  # the system CAs do not know the test CA
        statekey.open_cipher(
            tmp_state_dir, make_config(tmp_state_dir, encryption={**enc, "key_url_ca_file": None}).crypto
        )

"""Pseudonyms of the research path: HMAC-SHA256 with a key provisioned to the gateway and never exported.

- patient pseudonym: ``psn-`` + the first 16 bytes (hex) of HMAC-SHA256(key,
  ``ds4h-pseudonym/v1 \\0 patient \\0 <id>``);
- device pseudonym: ``pdv-`` + the first 10 bytes (hex) of HMAC-SHA256(key, ``ds4h-pseudonym/v1 \\0 device \\0
  <patient id> \\0 <device id>``): per patient and device, so a device worn by two patients does not link them,
  and never the device id or serial.

Key material has the state key's format (one 32-byte key per line, base64 or hex; the first is current, the
others previous). Sources (``[research]``): a systemd credential, a key file (0600; on another medium unless
``insecure_key_on_disk``), or ``<state_dir>/pseudonym.key`` beside the data (the demo; sealed with the state key
when encryption is on). ``<state_dir>/research.json`` names the source (no secret) so ``--state-dir`` commands
find the same key. Rotation (docs/consent.md): a new key first makes new pseudonyms; the endpoint still resolves
pseudonyms made under the previous keys listed after it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from pathlib import Path
from typing import Any

from gateway.config import ResearchSection
from gateway.errors import StateError
from gateway.state.files import write_secret
from gateway.state.statekey import (
    KeySource,
    cached_cipher,
    format_keys,
    load_local_keys,
    new_key,
    parse_keys,
    read_private,
)

log = logging.getLogger(__name__)

DESCRIPTOR = "research.json"
DISK_KEY = "pseudonym.key"
_SEALED_HEADER = b"ds4h sealed pseudonym key v1\n"
_CONTEXT = b"ds4h-pseudonym/v1\x00"
PATIENT_PREFIX = "psn-"
DEVICE_PREFIX = "pdv-"


def key_source(c: ResearchSection) -> KeySource:
    """Where the pseudonym key comes from: a systemd credential, a key file, or beside the data (``disk``)."""
    if c.pseudonym_key_credential is not None:
        return KeySource("credential", c.pseudonym_key_credential)
    if c.pseudonym_key_file is not None:
        return KeySource("file", str(c.pseudonym_key_file), insecure=c.insecure_key_on_disk)
    return KeySource("disk", DISK_KEY, insecure=True)


class Pseudonymiser:
    """Keyed pseudonyms; the keys never appear in ``repr``."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise StateError("no pseudonym key")
        self._keys = list(keys)

    def __repr__(self) -> str:
        return f"Pseudonymiser(keys={len(self._keys)}, current={self.key_id(0)})"

    def key_id(self, i: int = 0) -> str:
        return hashlib.sha256(b"ds4h-pseudonym-key-id" + self._keys[i]).hexdigest()[:8]

    @property
    def n_keys(self) -> int:
        return len(self._keys)

    def _mac(self, key: bytes, *parts: str) -> bytes:
        msg = _CONTEXT + b"\x00".join(p.encode("utf-8", "surrogatepass") for p in parts)
        return hmac.new(key, msg, hashlib.sha256).digest()

    def patient(self, patient_id: str, key_index: int = 0) -> str:
        return PATIENT_PREFIX + self._mac(self._keys[key_index], "patient", patient_id)[:16].hex()

    def device(self, patient_id: str, device_id: str, key_index: int = 0) -> str:
        return DEVICE_PREFIX + self._mac(self._keys[key_index], "device", patient_id, device_id)[:10].hex()

    def all_patient(self, patient_id: str) -> list[str]:
        """The patient's pseudonym under every configured key (current first)."""
        return [self.patient(patient_id, i) for i in range(len(self._keys))]


def _disk_keys(state_dir: Path, *, create: bool) -> list[bytes]:
    path = state_dir / DISK_KEY
    cipher = cached_cipher(state_dir)
    if not path.exists():
        if not create:
            raise StateError(f"{path}: no pseudonym key (start the gateway once with [research] enabled)")
        material = format_keys([new_key()])
        data = material
        if cipher is not None:
            data = _SEALED_HEADER + base64.b64encode(cipher.seal("files", DISK_KEY, "1", material)) + b"\n"
        write_secret(path, data)
        log.warning("created a pseudonym key beside the data (research.insecure_key_on_disk): %s", path)
    raw = read_private(path, "pseudonym key file")
    if raw.startswith(_SEALED_HEADER):
        if cipher is None:
            raise StateError(f"{path}: sealed with the state key, and no state key is configured")
        try:
            sealed = base64.b64decode(raw[len(_SEALED_HEADER) :].strip(), validate=True)
        except (binascii.Error, ValueError) as e:
            raise StateError(f"{path}: damaged sealed pseudonym key") from e
        raw = cipher.open("files", DISK_KEY, "1", sealed)
    return parse_keys(raw, str(path))


def load_keys(src: KeySource, state_dir: Path, *, create: bool = False) -> list[bytes]:
    local = load_local_keys(src, state_dir, "pseudonym key", "research.insecure_key_on_disk")
    if local is not None:
        return local
    if src.kind == "disk":
        return _disk_keys(state_dir, create=create)
    raise StateError(f"unknown pseudonym key source {src.kind!r}")


def open_pseudonymiser(state_dir: Path, config: ResearchSection | None = None) -> Pseudonymiser:
    """The gateway (``config`` given): from its ``[research]`` key source, writing ``research.json``. CLI
    ``--state-dir`` commands: from the source ``research.json`` names."""
    desc_path = state_dir / DESCRIPTOR
    if config is not None:
        src = key_source(config)
        p = Pseudonymiser(load_keys(src, state_dir, create=True))
        if src.insecure:
            log.warning(
                "INSECURE: the pseudonym key is kept on the same medium as the data (%s); see docs/consent.md",
                state_dir / DISK_KEY if src.kind == "disk" else src.where,
            )
        body: dict[str, Any] = {
            "format": 1,
            "source": {"kind": src.kind, "where": src.where, "insecure": src.insecure},
            "current": p.key_id(0),
        }
        write_secret(desc_path, (json.dumps(body, indent=2) + "\n").encode())
        return p
    try:
        desc = json.loads(desc_path.read_text())
        s = desc["source"]
        src = KeySource(str(s["kind"]), str(s["where"]), insecure=bool(s.get("insecure", False)))
    except FileNotFoundError:
        raise StateError(
            f"{desc_path}: missing: the research path was never started in this state directory (give --config)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StateError(f"{desc_path}: unreadable research descriptor: {e}") from e
    return Pseudonymiser(load_keys(src, state_dir))

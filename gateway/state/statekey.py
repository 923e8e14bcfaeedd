"""Where the state encryption key comes from, and the cipher of a state directory.

Key material is one or more keys, the first the current one (it encrypts) and the others previous ones
(they only decrypt, until housekeeping has re-encrypted their rows): one key per line, each 32 bytes as
base64 or hex, ``#`` comments allowed — or exactly 32 raw bytes. Sources (``[encryption]``):

- ``key_credential``: a systemd credential, ``$CREDENTIALS_DIRECTORY/<name>`` (``LoadCredential=`` from
  another medium, or ``LoadCredentialEncrypted=`` sealed with the TPM2);
- ``key_file``: a file on another medium (a USB key, a separate partition) — refused on the state
  directory's own file system unless ``insecure_key_on_disk``;
- ``key_url``: a key service over HTTPS, fetched once at start with a bearer token;
- ``insecure_key_on_disk``: ``<state_dir>/state.key``, created if missing (the demo).

The gateway writes ``<state_dir>/encryption.json`` (no secret: which source, the key ids) so that the CLI's
``--state-dir`` commands find the same key, and so that an encrypted state directory is never opened as
if it were plaintext.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import ssl
import stat
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import EncryptionSection
from gateway.errors import StateError
from gateway.state.cipher import KEY_BYTES, StateCipher, key_id
from gateway.state.files import write_secret

log = logging.getLogger(__name__)

DESCRIPTOR = "encryption.json"
DISK_KEY = "state.key"
MAX_KEY_FILE = 64 * 1024

_lock = threading.Lock()
_ciphers: dict[Path, StateCipher | None] = {}
"""Per state directory (resolved): its cipher, once loaded in this process (None: not encrypted)."""


@dataclass(frozen=True, slots=True)
class KeySource:
    kind: str
    """``credential``, ``file``, ``url``, ``disk`` or ``off``."""
    where: str = ""
    """The credential name, file path or URL (never a secret)."""
    token_file: str = ""
    ca_file: str = ""
    timeout_s: float = 10.0
    insecure: bool = False

    @classmethod
    def from_config(cls, c: EncryptionSection) -> KeySource:
        if not c.enabled:
            return cls("off")
        if c.key_credential is not None:
            return cls("credential", c.key_credential)
        if c.key_file is not None:
            return cls("file", str(c.key_file), insecure=c.insecure_key_on_disk)
        if c.key_url is not None:
            return cls(
                "url",
                c.key_url,
                token_file=str(c.key_url_token_file or ""),
                ca_file=str(c.key_url_ca_file or ""),
                timeout_s=c.key_url_timeout_s,
            )
        return cls("disk", DISK_KEY, insecure=True)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "where": self.where,
            "token_file": self.token_file,
            "ca_file": self.ca_file,
            "timeout_s": self.timeout_s,
            "insecure": self.insecure,
        }


# --- parsing key material -----------------------------------------------------------------------
def parse_keys(data: bytes, origin: str) -> list[bytes]:
    """Keys from key material: 32 raw bytes, or lines of base64 / hex (first = current)."""
    if len(data) == KEY_BYTES and not _looks_textual(data):
        return [data]
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise StateError(f"{origin}: not a key (32 raw bytes, or lines of base64 or hex)") from None
    keys: list[bytes] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key = _decode_line(line)
        if key is None or len(key) != KEY_BYTES:
            raise StateError(f"{origin}: line {n} is not a {KEY_BYTES}-byte key in base64 or hex")
        keys.append(key)
    if not keys:
        raise StateError(f"{origin}: holds no key")
    return keys


def _looks_textual(data: bytes) -> bool:
    return all(32 <= b < 127 or b in (9, 10, 13) for b in data)


def _decode_line(line: str) -> bytes | None:
    if len(line) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(line)
        except ValueError:
            pass
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        return None


def format_keys(keys: list[bytes]) -> bytes:
    """Key material as written by ``encryption new-key``: base64 lines, the current key first."""
    lines = ["# ds4h-gateway state encryption keys: the first encrypts, the others only decrypt"]
    lines += [f"{base64.b64encode(k).decode()}  # id {key_id(k).hex()}" for k in keys]
    return ("\n".join(lines) + "\n").encode()


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


# --- reading each source ------------------------------------------------------------------------
def read_private(path: Path, what: str, *, group_ok: bool = False) -> bytes:
    try:
        st = path.lstat()
    except OSError as e:
        raise StateError(f"{what} {path}: {e.strerror or e}") from e
    if stat.S_ISLNK(st.st_mode) and not group_ok:
        raise StateError(f"{what} {path}: is a symbolic link; refusing it")
    st = path.stat()
    allowed = 0o077 & ~(0o040 if group_ok else 0)
    if st.st_mode & allowed:
        raise StateError(f"{what} {path}: readable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod 600 {path}")
    if st.st_size > MAX_KEY_FILE:
        raise StateError(f"{what} {path}: {st.st_size} bytes is too large for key material")
    return path.read_bytes()


def _same_medium(a: Path, b: Path) -> bool:
    try:
        return a.resolve().stat().st_dev == b.resolve().stat().st_dev
    except OSError:
        return False


def _fetch(src: KeySource) -> bytes:
    token = read_private(Path(src.token_file), "key service token file").decode("ascii", "replace").strip()
    ctx = ssl.create_default_context(cafile=src.ca_file or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    req = urllib.request.Request(src.where, headers={"Authorization": f"Bearer {token}", "Accept": "text/plain"})
    try:
        with urllib.request.urlopen(req, timeout=src.timeout_s, context=ctx) as resp:
            data: bytes = resp.read(MAX_KEY_FILE + 1)
    except urllib.error.HTTPError as e:
        raise StateError(f"key service {src.where}: answered HTTP {e.code}") from None
    except (urllib.error.URLError, OSError, ssl.SSLError) as e:
        reason = getattr(e, "reason", e)
        raise StateError(f"key service {src.where}: {reason}") from None
    if len(data) > MAX_KEY_FILE:
        raise StateError(f"key service {src.where}: answer too large for key material")
    return data


def load_local_keys(src: KeySource, state_dir: Path, what: str, insecure_key: str) -> list[bytes] | None:
    """Keys from a systemd credential or a key file (the sources every key of the gateway can use); None for
    another kind of source. ``what`` names the key in errors ("state key"), ``insecure_key`` the config key
    that allows a file on the state directory's medium."""
    if src.kind == "credential":
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if not creds:
            raise StateError(
                f"{what} credential {src.where!r}: $CREDENTIALS_DIRECTORY is not set (run the gateway as a "
                f"systemd service with LoadCredential={src.where}:… or LoadCredentialEncrypted=)"
            )
        path = Path(creds) / src.where
        return parse_keys(read_private(path, f"{what} credential", group_ok=True), str(path))
    if src.kind == "file":
        path = Path(src.where)
        if not src.insecure and _same_medium(path, state_dir):
            raise StateError(
                f"{what} file {path} is on the same file system as the state directory {state_dir}: a stolen "
                f"card would carry both; put it on another medium, or set {insecure_key} = true"
            )
        return parse_keys(read_private(path, f"{what} file"), str(path))
    return None


def load_keys(src: KeySource, state_dir: Path) -> list[bytes]:
    """The keys of ``src`` (current first); :class:`StateError` saying what is wrong, never a key."""
    local = load_local_keys(src, state_dir, "state key", "insecure_key_on_disk")
    if local is not None:
        return local
    if src.kind == "url":
        return parse_keys(_fetch(src), src.where)
    if src.kind == "disk":
        path = state_dir / DISK_KEY
        if not path.exists():
            write_secret(path, format_keys([new_key()]))
            log.warning("created a state encryption key beside the data (insecure_key_on_disk): %s", path)
        return parse_keys(read_private(path, "state key file"), str(path))
    raise StateError(f"unknown state key source {src.kind!r}")


# --- per state directory ----------------------------------------------------------------------------
def _descriptor(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / DESCRIPTOR
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise StateError(f"{path}: unreadable: {e}") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("source"), dict):
        raise StateError(f"{path}: not a ds4h-gateway encryption descriptor")
    return raw


def open_cipher(state_dir: Path, config: EncryptionSection | None = None) -> StateCipher | None:
    """The cipher of ``state_dir`` (None when it is not encrypted), loaded once per process.

    With ``config`` (the gateway, and CLI commands given ``--config``): from its key source, and the
    descriptor is (re)written. Without (``--state-dir``): from the source the descriptor names.
    """
    root = state_dir.resolve()
    with _lock:
        if config is None and root in _ciphers:
            return _ciphers[root]
        if config is not None:
            src = KeySource.from_config(config)
        else:
            desc = _descriptor(root)
            if desc is None:
                _ciphers[root] = None
                return None
            src = KeySource(**{k: v for k, v in desc["source"].items() if k in KeySource.__slots__})
        if src.kind == "off":
            desc = _descriptor(root)
            if desc is not None and desc["source"].get("kind") != "off":
                raise StateError(
                    f"{root}: the state is encrypted ({root / DESCRIPTOR}); [encryption] enabled = false cannot "
                    "open it: configure its key source"
                )
            _ciphers[root] = None
            return None
        cipher = StateCipher(load_keys(src, root))
        if src.insecure:
            log.warning(
                "INSECURE: the state encryption key is kept on the same medium as the data (%s): a stolen card "
                "gives both away; see docs/security.md",
                root / DISK_KEY if src.kind == "disk" else src.where,
            )
        if config is not None:
            body = {
                "format": 1,
                "source": src.as_dict(),
                "key_ids": cipher.key_ids,
                "current": cipher.current_kid.hex(),
            }
            write_secret(root / DESCRIPTOR, (json.dumps(body, indent=2) + "\n").encode())
        _ciphers[root] = cipher
        return cipher


def cached_cipher(state_dir: Path) -> StateCipher | None:
    """The cipher already opened for ``state_dir`` in this process, else the descriptor's (see :func:`open_cipher`)."""
    return open_cipher(state_dir)


def forget(state_dir: Path) -> None:
    """Drop the cached cipher (tests; after a key rotation)."""
    with _lock:
        _ciphers.pop(state_dir.resolve(), None)

"""The gateway's own Ed25519 identity: a key file in the state directory and its ``did:key``.

``<state_dir>/gateway.key`` holds the private key as unencrypted PKCS#8 PEM, mode 0600. It is
created on first run through a private temporary file (``O_CREAT | O_EXCL``, mode 0600 from the
first instant) that is hard-linked into place, so a crash never leaves a half-written key and two
processes starting at once end up with the same key. A key file that group or other may access is
refused. The private key never appears in ``repr``/``str`` or in log messages.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.errors import StateError
from gateway.provenance.didkey import did_key_from_public

if TYPE_CHECKING:
    from gateway.state.cipher import StateCipher

log = logging.getLogger(__name__)

KEY_FILE_NAME = "gateway.key"


class GatewayIdentity:
    """An Ed25519 signing key and the ``did:key`` naming it. Holds the private key; never shows it."""

    __slots__ = ("_private_key", "did", "public_key", "public_key_bytes")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise StateError(f"gateway identity needs an Ed25519 private key, got {type(private_key).__name__}")
        self._private_key = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()
        self.public_key_bytes: bytes = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.did: str = did_key_from_public(self.public_key_bytes)

    @classmethod
    def generate(cls) -> GatewayIdentity:
        """A fresh in-memory identity (tests, tools); use :func:`load_or_create` for the gateway's own."""
        return cls(Ed25519PrivateKey.generate())

    def private_key_for_storage(self) -> Ed25519PrivateKey:
        """The private key object, for writing it to its 0600 file (key rotation); never log it."""
        return self._private_key

    def sign(self, data: bytes) -> bytes:
        """Raw 64-byte Ed25519 signature of ``data``."""
        return self._private_key.sign(data)

    def __repr__(self) -> str:
        return f"GatewayIdentity(did={self.did!r})"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("GatewayIdentity holds a private key and cannot be pickled")


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key_file(path: Path, *, systemd_credential: bool = False) -> GatewayIdentity:
    """Load an Ed25519 PKCS#8 PEM key file (refused when group/other may access it, or a symlink).

    ``systemd_credential``: a file of ``$CREDENTIALS_DIRECTORY``. systemd grants the service user read
    access there through an ACL, whose mask shows as group read (0440): allowed; access by others is not.
    """
    return _load(path, forbidden=0o007 if systemd_credential else 0o077)


def _load(path: Path, forbidden: int = 0o077) -> GatewayIdentity:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise StateError(f"cannot open gateway key {path}: {e}") from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise StateError(f"gateway key {path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & forbidden:
            raise StateError(
                f"gateway key {path} has mode {mode:04o}: group/other may access it; "
                f"refusing to use it. Fix: chmod 600 {path}"
            )
        pem = f.read()
    pem, resealed = _unseal(path, pem)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise StateError(f"gateway key {path} is not an unencrypted PKCS#8 PEM private key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise StateError(f"gateway key {path} holds a {type(key).__name__}, not an Ed25519 key")
    if resealed:
        _replace_key_file(path, key)
        log.info("gateway key %s: now encrypted with the state key", path)
    return GatewayIdentity(key)


SEALED_BEGIN = b"-----BEGIN DS4H SEALED PRIVATE KEY-----\n"
SEALED_END = b"-----END DS4H SEALED PRIVATE KEY-----\n"


def _state_cipher(path: Path) -> StateCipher | None:
    """The state encryption of the directory holding ``path`` (a state directory's key file), if any."""
    from gateway.state.statekey import cached_cipher

    return cached_cipher(path.parent)


def _unseal(path: Path, data: bytes) -> tuple[bytes, bool]:
    """The PEM of a key file, and whether it must be written again (plaintext in an encrypted state
    directory, or sealed with a previous state key)."""
    cipher = _state_cipher(path) if path.name.startswith(KEY_FILE_NAME) else None
    if data.startswith(SEALED_BEGIN):
        if cipher is None:
            raise StateError(
                f"gateway key {path} is encrypted with the state key: configure [encryption] (docs/security.md)"
            )
        body = data[len(SEALED_BEGIN) :].split(SEALED_END, 1)[0]
        try:
            sealed = base64.b64decode(body, validate=False)
        except ValueError as e:
            raise StateError(f"gateway key {path}: damaged ({e})") from e
        return cipher.open("files", "gateway.key", "1", sealed), not cipher.is_current(sealed)
    return data, cipher is not None


def _key_file_bytes(path: Path, key: Ed25519PrivateKey) -> bytes:
    """A key file's content: PEM, encrypted with the state key when the state directory is encrypted."""
    pem = _private_pem(key)
    cipher = _state_cipher(path) if path.name.startswith(KEY_FILE_NAME) else None
    if cipher is None:
        return pem
    sealed = base64.encodebytes(cipher.seal("files", "gateway.key", "1", pem))
    return SEALED_BEGIN + sealed + SEALED_END


def _replace_key_file(path: Path, key: Ed25519PrivateKey) -> None:
    """Rewrite an existing key file in place (same key; atomic, 0600, fsynced)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(_key_file_bytes(path, key))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create(path: Path) -> bool:
    """Write a new key to ``path``; False if another process created it first."""
    return write_key_file(path, Ed25519PrivateKey.generate())


def write_key_file(path: Path, key: Ed25519PrivateKey) -> bool:
    """Write ``key`` to the new file ``path`` (0600, fsynced, atomic); False if ``path`` already exists."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # exact mode whatever the umask
            f.write(_key_file_bytes(path, key))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, never replaces an existing key
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return True


def load_or_create(state_dir: Path) -> GatewayIdentity:
    """The gateway identity kept in ``<state_dir>/gateway.key``, created (mode 0600) on first run.

    Raises :class:`StateError` if the state directory cannot be used, the key file is readable
    by group/other, or it does not hold an Ed25519 PKCS#8 PEM key.
    """
    path = Path(state_dir) / KEY_FILE_NAME
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists() and _create(path):
            identity = _load(path)
            log.info("created gateway identity %s in %s", identity.did, path)
            return identity
    except OSError as e:
        raise StateError(f"cannot create gateway key {path}: {e}") from e
    return _load(path)

"""Secret files of the state directory (control token …): created 0600, refused when readable by others."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from gateway.errors import StateError


def ensure_state_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise StateError(f"state directory {path}: {e.strerror}") from e
    return path


def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file with mode 0600 atomically (never readable by others, even briefly)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        raise StateError(f"{path}: cannot write: {e.strerror}") from e


def read_secret(path: Path) -> bytes:
    """Read a secret file, refusing it when group or others may read it."""
    try:
        st = path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise StateError(f"{path}: permissions {stat.filemode(st.st_mode)} are too open; run chmod 600 {path}")
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StateError(f"{path}: cannot read: {e.strerror}") from e


def load_or_create_token(path: Path) -> str:
    """The control API bearer token: created on first use (256 bits), 0600."""
    try:
        return read_secret(path).decode().strip()
    except FileNotFoundError:
        token = secrets.token_urlsafe(32)
        write_secret(path, token.encode())
        return token

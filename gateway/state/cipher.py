"""Column encryption for the state databases: AES-256-GCM, each value bound to its table, column and row.

A sealed value is ``E5 01 ‖ key id (4) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`` (34 bytes of overhead).
The associated data is ``ds4h-state/v1 \\0 table \\0 column \\0 row key``, so a sealed value copied into
another row, column or table no longer opens: rows cannot be swapped. The key id is the first 4 bytes of
SHA-256(``ds4h-state-key-id`` ‖ key); a :class:`StateCipher` holds the current key (which seals) and
any number of previous keys (which only open), so a key rotation re-encrypts lazily.

Nonces are 96 random bits per value. Their collision bound is the reason to rotate the key: after q
values under one key the chance that two share a nonce is about q² / 2⁹⁷ (10,000 values a second for
a year is about 2⁻²¹; docs/security.md).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import StateError

MAGIC = b"\xe5\x01"
KEY_BYTES = 32
KID_BYTES = 4
NONCE_BYTES = 12
HEADER_BYTES = len(MAGIC) + KID_BYTES + NONCE_BYTES
OVERHEAD = HEADER_BYTES + 16
_AAD_PREFIX = b"ds4h-state/v1\x00"
_FLOAT = struct.Struct("<d")


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"ds4h-state-key-id" + key).digest()[:KID_BYTES]


def aad(table: str, column: str, row: str) -> bytes:
    return _AAD_PREFIX + f"{table}\x00{column}\x00{row}".encode()


class StateCipher:
    """AES-256-GCM sealing with a current key and previous keys; the keys never appear in ``repr``."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise StateError("no state encryption key")
        ids: dict[bytes, AESGCM] = {}
        for k in keys:
            if len(k) != KEY_BYTES:
                raise StateError(f"a state encryption key must be {KEY_BYTES} bytes, not {len(k)}")
            ids.setdefault(key_id(k), AESGCM(k))
        self._aes = ids
        self.current_kid = key_id(keys[0])
        self._current = ids[self.current_kid]

    def __repr__(self) -> str:
        return f"StateCipher(current={self.current_kid.hex()}, keys={len(self._aes)})"

    @property
    def key_ids(self) -> list[str]:
        return [k.hex() for k in self._aes]

    def seal(self, table: str, column: str, row: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return MAGIC + self.current_kid + nonce + self._current.encrypt(nonce, plaintext, aad(table, column, row))

    def open(self, table: str, column: str, row: str, sealed: bytes) -> bytes:
        """The plaintext; :class:`StateError` naming the row if the value is not sealed, was sealed with an
        unknown key, or was altered or moved from another row."""
        where = f"{table}.{column} [{row}]"
        if len(sealed) < OVERHEAD or sealed[:2] != MAGIC:
            raise StateError(f"{where}: not an encrypted value")
        kid = bytes(sealed[2 : 2 + KID_BYTES])
        aes = self._aes.get(kid)
        if aes is None:
            raise StateError(f"{where}: encrypted with key {kid.hex()}, which is not among the configured keys")
        try:
            return aes.decrypt(
                bytes(sealed[2 + KID_BYTES : HEADER_BYTES]), bytes(sealed[HEADER_BYTES:]), aad(table, column, row)
            )
        except InvalidTag:
            raise StateError(f"{where}: does not decrypt (altered, or moved from another row)") from None

    def try_open(self, table: str, column: str, row: str, value: object) -> bytes | None:
        """The plaintext if ``value`` is a value sealed for this place, else None (a plaintext value)."""
        if not isinstance(value, bytes) or len(value) < OVERHEAD or value[:2] != MAGIC:
            return None
        try:
            return self.open(table, column, row, value)
        except StateError:
            return None

    def is_current(self, sealed: bytes) -> bool:
        return bytes(sealed[2 : 2 + KID_BYTES]) == self.current_kid

    # --- typed helpers -----------------------------------------------------------------------------
    def seal_text(self, table: str, column: str, row: str, text: str) -> bytes:
        return self.seal(table, column, row, text.encode("utf-8", "surrogatepass"))

    def open_text(self, table: str, column: str, row: str, sealed: bytes) -> str:
        return self.open(table, column, row, sealed).decode("utf-8", "surrogatepass")

    def seal_float(self, table: str, column: str, row: str, value: float | None) -> bytes | None:
        return None if value is None else self.seal(table, column, row, _FLOAT.pack(value))

    def open_float(self, table: str, column: str, row: str, sealed: bytes | None) -> float | None:
        return None if sealed is None else float(_FLOAT.unpack(self.open(table, column, row, sealed))[0])

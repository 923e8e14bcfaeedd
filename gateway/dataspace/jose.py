"""Compact JWS with EdDSA (Ed25519, RFC 8037): signing with a raw signer, verification with jwcrypto.

The gateway signs with :meth:`GatewayIdentity.sign` (the private key never leaves its object); a
signature is checked with jwcrypto against a raw 32-byte public key, ``alg`` pinned to ``EdDSA``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from gateway.dataspace import CredentialError

MAX_TOKEN_BYTES = 64 * 1024


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as e:
        raise CredentialError(f"not base64url: {e}") from e


def sign_compact(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """``b64url(header).b64url(claims).b64url(signature)``; ``header["alg"]`` must be ``EdDSA``."""
    if header.get("alg") != "EdDSA":
        raise CredentialError("only EdDSA (Ed25519) is supported")
    signing_input = b64url(_json(header)) + "." + b64url(_json(claims))
    return signing_input + "." + b64url(sign(signing_input.encode("ascii")))


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def split(token: str, what: str = "token") -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWS, **not verified**: to find out who must have signed it."""
    token = token.strip()
    if len(token) > MAX_TOKEN_BYTES:
        raise CredentialError(f"{what}: longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise CredentialError(f"{what}: not a compact JWS (three non-empty base64url parts separated by dots)")
    out = []
    for name, part in zip(("header", "claims"), parts[:2], strict=False):
        try:
            obj = json.loads(b64url_decode(part))
        except (ValueError, UnicodeDecodeError) as e:
            raise CredentialError(f"{what}: the {name} is not JSON: {e}") from e
        if not isinstance(obj, dict):
            raise CredentialError(f"{what}: the {name} is not a JSON object")
        out.append(obj)
    if out[0].get("alg") != "EdDSA":
        raise CredentialError(f"{what}: alg {out[0].get('alg')!r} is not accepted (only EdDSA)")
    if "crit" in out[0]:
        raise CredentialError(f"{what}: critical header parameters are not supported")
    return out[0], out[1]


def verify_compact(token: str, public_key: bytes, what: str = "token") -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify an EdDSA compact JWS against a raw Ed25519 public key; header and claims."""
    header, claims = split(token, what)
    key = jwk.JWK(kty="OKP", crv="Ed25519", x=b64url(public_key))
    obj = jws.JWS()
    try:
        obj.deserialize(token.strip())
        obj.verify(key, alg="EdDSA")
    except (JWException, ValueError) as e:
        raise CredentialError(f"{what}: the signature does not verify ({type(e).__name__}: {e})") from e
    return header, claims

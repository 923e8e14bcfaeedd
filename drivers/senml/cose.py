"""Device-signed SenML: the COSE_Sign1 (RFC 9052 §4.2) wrapper a 5G device may put around its pack.

Pure parsing, no key material and no I/O: :func:`parse_sign1` checks the structure and the headers and
returns the parts; the MQTT source (``gateway.mqtt.devsig``) checks the kid against the device
registry and verifies the Ed25519 signature over the ``Sig_structure`` (built with
``gateway.provenance.cose.sig_structure``). The wire format
(docs/mqtt.md, "Device-signed payloads")::

    18([ protected:   bstr .cbor {1: -8},          ; alg EdDSA (or -19, Ed25519); may also hold 3, 4
         unprotected: {4: kid},                     ; kid = UTF-8 of the device's did:key
         payload:     bstr,                         ; the SenML CBOR pack (never detached, never JSON)
         signature:   bstr .size 64 ])

    Sig_structure = ["Signature1", protected, external_aad, payload]
    external_aad  = UTF-8 of the MQTT topic, ``ds4h/v1/devices/{device_id}/readings``

Every failure is a :class:`~gateway.errors.PayloadError` with reason ``signature_invalid`` (a broken
structure cannot be told apart from a tampered message) or ``unsupported_content_type``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import cbor2

from gateway.errors import PayloadError

COSE_SIGN1_TAG: Final = 18
TAG_BYTE: Final = 0xD2
"""CBOR tag 18 in one byte: how a payload without content type (MQTT 3.1.1) is recognised as signed."""
COSE_CONTENT_TYPE: Final = 'application/cose; cose-type="cose-sign1"'
"""MQTT v5 Content-Type of a device-signed frame (RFC 9052 §2)."""
ALG_EDDSA: Final = -8
ALG_ED25519: Final = -19
ALGS: Final = frozenset({ALG_EDDSA, ALG_ED25519})
HDR_ALG: Final = 1
HDR_CRIT: Final = 2
HDR_CONTENT_TYPE: Final = 3
HDR_KID: Final = 4
SIGNATURE_LEN: Final = 64
MAX_KID_LEN: Final = 128
INNER_CONTENT_TYPES: Final = frozenset({"application/senml+cbor", 112})
"""Allowed values of a protected content-type header (label 3): SenML CBOR as a media type or CoAP CF 112."""
_PROTECTED_LABELS: Final = frozenset({HDR_ALG, HDR_CONTENT_TYPE, HDR_KID})
_INVALID: Final = "signature_invalid"


@dataclass(frozen=True, slots=True)
class Sign1:
    """A parsed, not yet verified, COSE_Sign1 message."""

    protected: bytes
    """The protected header exactly as received (the signature covers these bytes)."""
    alg: int
    kid: bytes
    payload: bytes
    signature: bytes


def is_cose_content_type(content_type: str | None) -> bool:
    """True for ``application/cose`` with any parameters (case-insensitive)."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/cose"


def looks_signed(payload: bytes, content_type: str | None) -> bool:
    """Whether a frame claims to be signed: a COSE content type, or (any content type absent) tag 18."""
    if content_type:
        return is_cose_content_type(content_type)
    return payload[:1] == b"\xd2"


class _Tag(ValueError):
    pass


def _no_tag(*_: Any) -> Any:
    raise _Tag


_BUILTIN_TAGS: Final = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004, 55799)
_NO_TAGS: Final = dict.fromkeys(_BUILTIN_TAGS, _no_tag)


def _decode(data: bytes, what: str, max_depth: int) -> Any:
    """Exactly one CBOR item filling ``data``: definite lengths, no duplicate keys, no tags."""
    fp = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(
            fp,
            tag_hook=_no_tag,
            semantic_decoders=_NO_TAGS,
            max_depth=max_depth,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        ).decode()
    except cbor2.CBORDecodeError as e:
        if isinstance(e.__cause__ or e.__context__, _Tag):
            raise PayloadError(f"{what}: CBOR tags are not allowed here", _INVALID) from None
        raise PayloadError(f"{what}: malformed CBOR: {str(e)[:120]}", _INVALID) from None
    except Exception as e:  # a third-party decoder on untrusted bytes: nothing else may escape
        raise PayloadError(f"{what}: malformed CBOR ({type(e).__name__})", _INVALID) from None
    if fp.tell() != len(data):
        raise PayloadError(f"{what}: {len(data) - fp.tell()} bytes after the CBOR item", _INVALID)
    return obj


def parse_sign1(message: bytes, content_type: str | None = None) -> Sign1:
    """Check a device's COSE_Sign1 and return its parts (the signature is *not* verified here).

    Tag 18 is required unless ``content_type`` is the COSE one (then it is optional, RFC 9052 §2).
    """
    if type(message) is not bytes:
        message = bytes(message)
    if content_type and is_cose_content_type(content_type):
        params = content_type.split(";", 1)[1] if ";" in content_type else ""
        kind = params.replace(" ", "").lower()
        if kind and kind not in ('cose-type="cose-sign1"', "cose-type=cose-sign1"):
            raise PayloadError(
                f'content type {content_type[:80]!r}: only cose-type="cose-sign1" is accepted',
                "unsupported_content_type",
            )
    if message[:1] == b"\xd2":
        body = message[1:]
    elif content_type and is_cose_content_type(content_type):
        body = message
    else:
        raise PayloadError("a signed payload starts with CBOR tag 18 (0xd2)", _INVALID)
    obj = _decode(body, "COSE_Sign1", max_depth=3)
    if type(obj) is not list or len(obj) != 4:
        raise PayloadError("COSE_Sign1 must be an array [protected, unprotected, payload, signature]", _INVALID)
    protected, unprotected, payload, signature = obj
    if type(protected) is not bytes or not protected:
        raise PayloadError("COSE_Sign1: the protected header must be a non-empty byte string", _INVALID)
    if type(unprotected) is not dict:
        raise PayloadError("COSE_Sign1: the unprotected header must be a map", _INVALID)
    if type(payload) is not bytes:
        raise PayloadError("COSE_Sign1: the payload must be a byte string (detached payloads are refused)", _INVALID)
    if type(signature) is not bytes or len(signature) != SIGNATURE_LEN:
        raise PayloadError("COSE_Sign1: the signature must be a 64-byte string", _INVALID)
    prot = _decode(protected, "COSE protected header", max_depth=2)
    if type(prot) is not dict:
        raise PayloadError("COSE protected header is not a map", _INVALID)
    alg, kid = _headers(prot, unprotected)
    return Sign1(protected, alg, kid, payload, signature)


def _headers(prot: Mapping[Any, Any], unprot: Mapping[Any, Any]) -> tuple[int, bytes]:
    extra = [k for k in prot if k not in _PROTECTED_LABELS]
    if extra:
        raise PayloadError(f"COSE protected header labels {sorted(map(repr, extra))[:4]} are not understood", _INVALID)
    if HDR_CRIT in unprot:
        raise PayloadError("COSE header has critical extensions (label 2)", _INVALID)
    both = [k for k in unprot if k in prot]
    if both:
        raise PayloadError("COSE header labels appear in both the protected and the unprotected header", _INVALID)
    alg = prot.get(HDR_ALG)
    if type(alg) is not int or alg not in ALGS:
        raise PayloadError(f"COSE alg {alg!r:.20} is not allowed: use -8 (EdDSA) or -19 (Ed25519)", _INVALID)
    ct = prot.get(HDR_CONTENT_TYPE, unprot.get(HDR_CONTENT_TYPE))
    if ct is not None and (type(ct) not in (str, int) or ct not in INNER_CONTENT_TYPES):
        raise PayloadError(
            "COSE content type (label 3) must be application/senml+cbor or 112", "unsupported_content_type"
        )
    kid = prot.get(HDR_KID, unprot.get(HDR_KID))
    if type(kid) is not bytes or not 0 < len(kid) <= MAX_KID_LEN:
        raise PayloadError("COSE header has no kid (label 4, a byte string: the device's did:key)", _INVALID)
    return alg, kid


def tagged_sign1(message: bytes) -> bytes:
    """The message with CBOR tag 18 in front (a device may send it untagged under the COSE content type; the
    tag is not signed, RFC 9052 §4.4, so adding it keeps the message verifiable on its own)."""
    message = bytes(message)
    return message if message[:1] == b"\xd2" else b"\xd2" + message


def external_aad(topic: str) -> bytes:
    """What binds a device's signature to its topic (and so to its device id)."""
    return topic.encode("utf-8")

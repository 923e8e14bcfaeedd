"""SenML (RFC 8428) packs in JSON and CBOR → resolved records. Pure: no I/O, no asyncio.

:func:`decode_pack` picks the representation (content type, else sniffing), decodes it strictly and
resolves every record (base name/time/unit/value/sum carried over, names checked, times summed). It
knows nothing about the gateway's vocabulary: that is :mod:`drivers.senml.profile`.

Every failure is a :class:`~gateway.errors.PayloadError` whose ``reason`` is a short quarantine
reason (see :data:`DECODE_REASONS`). Messages say what and where (record index, label) and never
carry a measured value.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final, NamedTuple

import cbor2

from gateway.errors import PayloadError

SENML_JSON: Final = "application/senml+json"
SENML_CBOR: Final = "application/senml+cbor"
JSON_CONTENT_TYPES: Final = frozenset({SENML_JSON, "application/json"})
CBOR_CONTENT_TYPES: Final = frozenset({SENML_CBOR, "application/cbor"})

MAX_VERSION: Final = 10
"""The SenML version this decoder implements (RFC 8428); packs with a newer ``bver`` are refused."""
ABSOLUTE_TIME_S: Final = 2**28
"""Resolved times at or above this (1978-07-04) are absolute Unix times; below it, relative to now."""

DECODE_REASONS: Final = frozenset(
    {
        "malformed",
        "empty",
        "unsupported_content_type",
        "signed_payload_unsupported",
        "wrong_type",
        "non_finite",
        "unsupported_version",
        "unknown_label",
        "bad_name",
        "too_many_records",
    }
)
"""Every quarantine reason :func:`decode_pack` raises."""


@dataclass(frozen=True, slots=True)
class SenmlRecord:
    """One resolved record: base fields applied, no base labels left.

    Numbers are always ``float`` (SenML's data model), also where the pack sent an integer: integers
    are exact up to 2**53 in magnitude.
    """

    name: str
    """``bn`` + ``n``; checked against RFC 8428's character rules."""
    unit: str | None
    """``u``, else ``bu``, else None."""
    value: float | None
    """``bv`` + ``v``; None when the record has no ``v``."""
    string: str | None
    """``vs``."""
    boolean: bool | None
    """``vb``."""
    data: bytes | None
    """``vd`` (JSON: base64url decoded; CBOR: the byte string)."""
    sum: float | None
    """``bs`` + ``s``; None when the record has no ``s``."""
    time: float
    """``bt`` + ``t`` in seconds (missing = 0): ≥ 2**28 absolute Unix time, else relative to now."""
    update_time: float | None
    """``ut``: the maximum time before the sensor sends a new value for this name."""


# --- labels ------------------------------------------------------------------------------------------
class _Labels(NamedTuple):
    """The keys of one representation: JSON uses the label names, CBOR the integers of RFC 8428 Table 4."""

    bver: Hashable
    bn: Hashable
    bt: Hashable
    bu: Hashable
    bv: Hashable
    bs: Hashable
    n: Hashable
    u: Hashable
    v: Hashable
    vs: Hashable
    vb: Hashable
    s: Hashable
    t: Hashable
    ut: Hashable
    vd: Hashable


_LABEL_NAMES: Final = _Labels._fields
_JSON: Final = _Labels(*_LABEL_NAMES)
_CBOR: Final = _Labels(-1, -2, -3, -4, -5, -6, 0, 1, 2, 3, 4, 5, 6, 7, 8)
_JSON_KNOWN: Final = frozenset(_JSON)
_CBOR_KNOWN: Final = frozenset(_CBOR)
_BASE_JSON: Final = frozenset(_JSON[:6])
_BASE_CBOR: Final = frozenset(_CBOR[:6])

_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9:./_-]*")
_valid_names: set[str] = set()
"""Resolved names already checked (the same few names arrive in every message of a device)."""
_VALID_NAMES_MAX: Final = 10_000


# --- errors ------------------------------------------------------------------------------------------
def _where(i: int, label: str) -> str:
    return f"record {i}: {label!r}"


def _wrong_type(i: int, label: str, want: str, got: object) -> PayloadError:
    return PayloadError(f"{_where(i, label)} must be {want}, not {_type_name(got)}", reason="wrong_type")


def _type_name(x: object) -> str:
    t = type(x)
    if t is bool:
        return "a boolean"
    if t is int or t is float:
        return "a number"
    if t is str:
        return "a string"
    if t is bytes:
        return "a byte string"
    if x is None:
        return "null"
    if t is list:
        return "an array"
    if t is dict:
        return "a map"
    return f"a {t.__name__}"


def show(text: str, limit: int = 80) -> str:
    """``repr`` of a name or label for a message, cut to ``limit`` characters (names come from devices)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


# --- entry point -------------------------------------------------------------------------------------
def decode_pack(payload: bytes, content_type: str | None = None, *, max_records: int = 10_000) -> list[SenmlRecord]:
    """Decode and resolve a SenML pack.

    ``content_type``: ``application/senml+json`` or ``application/json`` → JSON;
    ``application/senml+cbor`` or ``application/cbor`` → CBOR; None or ``""`` → sniff the payload
    (``[`` after optional whitespace → JSON, a CBOR array → CBOR, CBOR tag 18 → a signed message).
    Media-type parameters (``; charset=utf-8``) and case are ignored.
    """
    if type(payload) is not bytes:
        payload = bytes(payload)
    if not payload:
        raise PayloadError("payload is empty: a SenML pack needs at least one record", reason="empty")
    kind = _kind(payload, content_type)
    if kind == "cbor":
        if payload[0] == 0xD9 and payload.startswith(_SELF_DESCRIBED):  # tag 55799: "this is CBOR"
            payload = payload[3:]
        if payload[:1] == b"\xd2":
            payload = unwrap_signed(payload)
        doc = _load_cbor(payload)
        labels, known, base = _CBOR, _CBOR_KNOWN, _BASE_CBOR
    else:
        doc = _load_json(payload)
        labels, known, base = _JSON, _JSON_KNOWN, _BASE_JSON
    if type(doc) is not list:
        raise PayloadError(f"a SenML pack must be an array of records, not {_type_name(doc)}")
    if not doc:
        raise PayloadError("the pack holds no records", reason="empty")
    if len(doc) > max_records:
        raise PayloadError(f"the pack holds {len(doc)} records; at most {max_records} are accepted", "too_many_records")
    return _resolve(doc, labels, known, base, kind == "json")


_SELF_DESCRIBED: Final = b"\xd9\xd9\xf7"
_JSON_WS: Final = frozenset(b" \t\r\n")


def _kind(payload: bytes, content_type: str | None) -> str:
    """``"json"`` or ``"cbor"``: from the content type, else by sniffing; raises for anything else."""
    if content_type:
        if content_type in CBOR_CONTENT_TYPES:
            return "cbor"
        if content_type in JSON_CONTENT_TYPES:
            return "json"
        media = content_type.split(";", 1)[0].strip().lower()
        if media in CBOR_CONTENT_TYPES:
            return "cbor"
        if media in JSON_CONTENT_TYPES:
            return "json"
        if media.startswith("application/cose"):
            unwrap_signed(payload)
        raise PayloadError(
            f"unsupported content type {show(content_type)}: use {SENML_CBOR} or {SENML_JSON}",
            reason="unsupported_content_type",
        )
    first = payload[0]
    if first in _JSON_WS:
        stripped = payload.lstrip(b" \t\r\n")
        first = stripped[0] if stripped else 0
    if first == 0x5B:  # "["
        return "json"
    if 0x80 <= first <= 0x9F or first == 0xD2 or payload.startswith(_SELF_DESCRIBED):  # array, COSE_Sign1, tag 55799
        return "cbor"
    raise PayloadError(
        "payload is neither a SenML JSON array nor a SenML CBOR array (no content type given, sniffing failed)"
    )


def unwrap_signed(payload: bytes) -> bytes:
    """Signed payloads (COSE_Sign1, CBOR tag 18) are not decoded here: this decoder has no keys.

    The MQTT source verifies a device's COSE_Sign1 first (``drivers.senml.cose``, ``gateway.mqtt.devsig``)
    and hands the inner SenML CBOR to :func:`decode_pack`; a COSE payload reaching the decoder itself
    (e.g. ``ds4h-gateway decode``, or one signed message nested in another) is refused.
    """
    raise PayloadError(
        "payload is a signed COSE_Sign1 message (CBOR tag 18): the SenML decoder does not verify signatures "
        "(the MQTT source verifies device-signed frames before decoding them, docs/mqtt.md)",
        reason="signed_payload_unsupported",
    )


# --- representation decoders -------------------------------------------------------------------------
def _refuse_constant(name: str) -> Any:
    raise PayloadError(f"JSON literal {name} is not a number SenML accepts", reason="non_finite")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object → dict, refusing repeated labels (which value wins would depend on the parser)."""
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise PayloadError(f"a record repeats the label {show(key)}")
            seen.add(key)
    return record


_JSON_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant, object_pairs_hook=_unique_pairs)


def _load_json(payload: bytes) -> Any:
    try:
        return _JSON_DECODER.decode(payload.decode("utf-8"))
    except PayloadError:
        raise
    except UnicodeDecodeError as e:
        raise PayloadError(f"payload is not valid SenML JSON: not UTF-8 at byte {e.start}") from None
    except json.JSONDecodeError as e:
        raise PayloadError(f"payload is not valid SenML JSON: {e.msg} at byte {e.pos}") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer literal of thousands of digits, deep nesting
        raise PayloadError(f"payload is not valid SenML JSON: {type(e).__name__}") from None


class _TagRefused(ValueError):
    pass


def _refuse_tag(*_: Any) -> Any:
    raise _TagRefused


# cbor2 decodes these tags itself (dates, bignums, shared values, regular expressions …); a SenML pack
# uses none of them, so each is refused; any other tag reaches ``tag_hook`` and is refused there.
_BUILTIN_TAGS: Final = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004, 55799)
_NO_TAGS: Final[Mapping[int, Callable[..., Any]]] = dict.fromkeys(_BUILTIN_TAGS, _refuse_tag)


def _load_cbor(payload: bytes) -> Any:
    try:
        return cbor2.loads(
            payload,
            semantic_decoders=_NO_TAGS,
            tag_hook=_refuse_tag,
            max_depth=8,
            allow_duplicate_keys=False,
        )
    except cbor2.CBORDecodeError as e:
        if isinstance(e.__cause__ or e.__context__, _TagRefused):
            raise PayloadError("payload is not valid SenML CBOR: CBOR tags are not allowed inside a pack") from None
        raise PayloadError(f"payload is not valid SenML CBOR: {str(e)[:160]}") from None
    except Exception as e:  # a third-party decoder on untrusted bytes: nothing else may escape
        raise PayloadError(f"payload is not valid SenML CBOR: {type(e).__name__}") from None


# --- resolution --------------------------------------------------------------------------------------
def _resolve(
    doc: list[Any], k: _Labels, known: frozenset[Hashable], base: frozenset[Hashable], is_json: bool
) -> list[SenmlRecord]:
    """Apply RFC 8428's resolution rules record by record (base fields stay in force until redefined).

    Hot path (every MQTT message): labels in locals, one ``get`` per label, finite floats checked inline.
    """
    K_BVER, K_BN, K_BT, K_BU, K_BV, K_BS, K_N, K_U, K_V, K_VS, K_VB, K_S, K_T, K_UT, K_VD = k
    missing = _MISSING
    valid_names = _valid_names
    new_record = _new_record
    bn = ""
    bt: float | None = None
    bu: str | None = None
    bv: float | None = None
    bs: float | None = None
    version: int | None = None  # None: no record gave bver yet, so the default (10) is in force
    out: list[SenmlRecord] = []
    append = out.append
    for i, rec in enumerate(doc):
        if type(rec) is not dict:
            raise PayloadError(f"record {i} is {_type_name(rec)}, not a map")
        keys = rec.keys()
        if not keys <= known:
            _check_unknown(rec, known, i)
        get = rec.get
        if not keys.isdisjoint(base):
            x = get(K_BVER, missing)
            if x is not missing:
                version = _version(x, MAX_VERSION if version is None and i else version, i)
            x = get(K_BN, missing)
            if x is not missing:
                if type(x) is not str:
                    raise _wrong_type(i, "bn", "a string", x)
                bn = x
            x = get(K_BT, missing)
            if x is not missing:
                bt = _number(x, i, "bt")
            x = get(K_BU, missing)
            if x is not missing:
                if type(x) is not str:
                    raise _wrong_type(i, "bu", "a string", x)
                bu = x
            x = get(K_BV, missing)
            if x is not missing:
                bv = _number(x, i, "bv")
            x = get(K_BS, missing)
            if x is not missing:
                bs = _number(x, i, "bs")

        x = get(K_N, missing)
        if x is missing:
            name = bn
        elif type(x) is str:
            name = bn + x
        else:
            raise _wrong_type(i, "n", "a string", x)
        if name not in valid_names:
            _check_name(name, i)

        unit = get(K_U, missing)
        if unit is missing:
            unit = bu
        elif type(unit) is not str:
            raise _wrong_type(i, "u", "a string", unit)

        n_values = 0
        value = get(K_V, missing)
        if value is missing:
            value = None
        else:
            if type(value) is not float or value - value != 0.0:  # not a finite float: convert or refuse
                value = _number(value, i, "v")
            if bv is not None:
                value = _sum(bv, value, i, "bv + v")
            n_values = 1
        string = get(K_VS, missing)
        if string is missing:
            string = None
        elif type(string) is str:
            n_values += 1
        else:
            raise _wrong_type(i, "vs", "a string", string)
        boolean = get(K_VB, missing)
        if boolean is missing:
            boolean = None
        elif type(boolean) is bool:
            n_values += 1
        else:
            raise _wrong_type(i, "vb", "a boolean", boolean)
        data = get(K_VD, missing)
        if data is missing:
            data = None
        else:
            data = _base64url(data, i) if is_json else _bytes(data, i)
            n_values += 1
        total = get(K_S, missing)
        if total is missing:
            total = None
        else:
            total = _number(total, i, "s")
            if bs is not None:
                total = _sum(bs, total, i, "bs + s")
        if n_values != 1 and (n_values or total is None):
            raise PayloadError(
                f"record {i} ({show(name)}) has {'no value' if not n_values else f'{n_values} value fields'}: "
                "give exactly one of v, vs, vb, vd (or a sum s)"
            )

        time = get(K_T, missing)
        if time is missing:
            time = 0.0 if bt is None else bt
        else:
            if type(time) is not float or time - time != 0.0:
                time = _number(time, i, "t")
            if bt is not None:
                time = _sum(bt, time, i, "bt + t")
        x = get(K_UT, missing)
        update_time = None if x is missing else _number(x, i, "ut")

        append(new_record(name, unit, value, string, boolean, data, total, time, update_time))
    return out


def _record_maker() -> Callable[..., SenmlRecord]:
    """``SenmlRecord(...)`` without the frozen dataclass's ``__init__`` (nine ``object.__setattr__``
    calls): the slot descriptors set the fields directly, in half the time. Same object, same checks."""
    setters = [SenmlRecord.__dict__[f.name].__set__ for f in fields(SenmlRecord)]
    s0, s1, s2, s3, s4, s5, s6, s7, s8 = setters
    new = object.__new__

    def make(
        name: str,
        unit: str | None,
        value: float | None,
        string: str | None,
        boolean: bool | None,
        data: bytes | None,
        total: float | None,
        time: float,
        update_time: float | None,
    ) -> SenmlRecord:
        r = new(SenmlRecord)
        s0(r, name)
        s1(r, unit)
        s2(r, value)
        s3(r, string)
        s4(r, boolean)
        s5(r, data)
        s6(r, total)
        s7(r, time)
        s8(r, update_time)
        return r

    return make


_new_record: Final = _record_maker()


_MISSING: Final[Any] = object()


def _version(x: Any, current: int | None, i: int) -> int:
    if type(x) is float and x.is_integer():
        x = int(x)
    if type(x) is not int or x < 1:
        raise PayloadError(f"{_where(i, 'bver')} must be a positive integer", reason="wrong_type")
    if x > MAX_VERSION:
        raise PayloadError(
            f"{_where(i, 'bver')}: SenML version {x} is newer than the supported version {MAX_VERSION}",
            reason="unsupported_version",
        )
    if current is not None and x != current:
        raise PayloadError(f"{_where(i, 'bver')}: all records of a pack must share one SenML version")
    return x


def _number(x: Any, i: int, label: str) -> float:
    """A finite number as a float (bool is not a number)."""
    t = type(x)
    if t is float:
        if math.isfinite(x):
            return x  # type: ignore[no-any-return]
        raise PayloadError(f"{_where(i, label)} must be a finite number (NaN and infinities are refused)", "non_finite")
    if t is int:
        try:
            return float(x)
        except OverflowError:
            raise PayloadError(f"{_where(i, label)} is too large for a number", reason="non_finite") from None
    raise _wrong_type(i, label, "a number", x)


def _sum(base: float, x: float, i: int, what: str) -> float:
    r = base + x
    if not math.isfinite(r):
        raise PayloadError(f"record {i}: {what} is not a finite number", reason="non_finite")
    return r


def _check_name(name: str, i: int) -> None:
    if not name:
        raise PayloadError(f"record {i} has no name: give n, or bn on this or an earlier record", reason="bad_name")
    if not _NAME_RE.fullmatch(name):
        raise PayloadError(
            f"record {i}: name {show(name)} is not a valid SenML name: only A-Z a-z 0-9 - : . / _, "
            "starting with a letter or digit",
            reason="bad_name",
        )
    if len(_valid_names) < _VALID_NAMES_MAX and len(name) <= 256:
        _valid_names.add(name)


def _check_unknown(rec: dict[Any, Any], known: frozenset[Hashable], i: int) -> None:
    """Unknown labels are ignored, except labels ending in ``_``: those must be understood (RFC 8428 §4.4)."""
    for key in rec:
        if key not in known and type(key) is str and key.endswith("_"):
            raise PayloadError(
                f"record {i}: label {show(key)} must be understood (it ends in '_') and this gateway does not know it",
                reason="unknown_label",
            )


_B64URL: Final = bytes.maketrans(b"-_", b"+/")


def _base64url(x: Any, i: int) -> bytes:
    """JSON ``vd``: base64url, without padding (correct padding is tolerated)."""
    if type(x) is not str:
        raise _wrong_type(i, "vd", "a base64url string", x)
    if "+" in x or "/" in x:
        raise PayloadError(f"{_where(i, 'vd')} must be base64url ('-' and '_', not '+' and '/')")
    try:
        raw = x.encode("ascii")
        if b"=" not in raw:
            raw += b"=" * (-len(raw) % 4)
        return binascii.a2b_base64(raw.translate(_B64URL), strict_mode=True)
    except (binascii.Error, ValueError):  # UnicodeEncodeError is a ValueError
        raise PayloadError(f"{_where(i, 'vd')} is not valid base64url") from None


def _bytes(x: Any, i: int) -> bytes:
    if type(x) is not bytes:
        raise _wrong_type(i, "vd", "a byte string", x)
    return x

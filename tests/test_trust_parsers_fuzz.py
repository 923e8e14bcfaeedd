"""Property tests: the parsers added with the trust and dataspace work refuse short and garbage input with the
project's own error, never anything else.

- state key material (``gateway.state.statekey.parse_keys``) → a list of 32-byte keys or :class:`StateError`;
- sealed values (``StateCipher.open``) → :class:`StateError`, also for bit flips of a genuine value;
- compact JWS / credentials / credential requests (``gateway.dataspace.jose``, ``credential``) →
  :class:`CredentialError`, also for a genuine token with one character changed;
- signed Bundles and CSV signatures (``gateway.dataspace.bundlesig``) → a report that is not ok, never an
  exception.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dataspace import CredentialError
from gateway.dataspace.bundlesig import verify_bundle, verify_csv
from gateway.dataspace.credential import verify_credential, verify_request
from gateway.dataspace.jose import b64url, sign_compact, split, verify_compact
from gateway.errors import StateError
from gateway.state.cipher import KEY_BYTES, StateCipher
from gateway.state.statekey import format_keys, new_key, parse_keys

CIPHER = StateCipher([new_key()])
SEALED = CIPHER.seal("readings", "value", "d\x00m\x001", b"\x01" * 8)
SIGNER = Ed25519PrivateKey.generate()
PUBLIC = SIGNER.public_key().public_bytes_raw()
TOKEN = sign_compact({"alg": "EdDSA", "typ": "JWT"}, {"iss": "x", "n": 1}, SIGNER.sign)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(st.binary(max_size=300))
@settings(max_examples=400)
def test_key_material_is_keys_or_a_state_error(data: bytes) -> None:
    try:
        keys = parse_keys(data, "fuzz")
    except StateError:
        return
    assert keys and all(len(k) == KEY_BYTES for k in keys)


@given(st.lists(st.binary(min_size=KEY_BYTES, max_size=KEY_BYTES), min_size=1, max_size=4))
def test_key_material_round_trips(keys: list[bytes]) -> None:
    assert parse_keys(format_keys(keys), "round trip") == keys


@given(st.binary(max_size=120))
@settings(max_examples=300)
def test_garbage_never_opens(blob: bytes) -> None:
    with pytest.raises(StateError):
        CIPHER.open("readings", "value", "d\x00m\x001", blob)


@given(st.integers(min_value=0, max_value=len(SEALED) * 8 - 1))
def test_every_bit_flip_of_a_sealed_value_is_refused(bit: int) -> None:
    flipped = bytearray(SEALED)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(StateError):
        CIPHER.open("readings", "value", "d\x00m\x001", bytes(flipped))


def _jws_like() -> st.SearchStrategy[str]:
    part = st.one_of(
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=40),
        json_values.map(lambda v: b64url(json.dumps(v).encode())),
    )
    return st.one_of(st.text(max_size=80), st.lists(part, min_size=1, max_size=4).map(".".join))


@given(_jws_like())
@settings(max_examples=400)
def test_tokens_are_refused_with_a_credential_error(token: str) -> None:
    for parse in (
        lambda: split(token),
        lambda: verify_compact(token, PUBLIC),
        lambda: verify_request(token),
        lambda: verify_credential(token, None),
    ):
        with pytest.raises(CredentialError):
            parse()


@given(st.integers(min_value=0, max_value=len(TOKEN) - 1), st.sampled_from("AQZaz09-_."))
def test_a_changed_character_breaks_the_signature(pos: int, ch: str) -> None:
    changed = TOKEN[:pos] + ch + TOKEN[pos + 1 :]
    if changed == TOKEN:
        return
    try:
        header, claims = verify_compact(changed, PUBLIC)
    except CredentialError:
        return
    # base64url has slack bits in the last character of a part: the decoded content is then the same
    assert (header, claims) == (split(TOKEN))


@given(json_values)
@settings(max_examples=300)
def test_bundle_verification_reports_garbage_without_raising(obj: Any) -> None:
    assert not verify_bundle(obj).ok
    assert not verify_bundle({"resourceType": "Bundle", "entry": obj}).ok


@given(
    st.binary(max_size=200),
    st.one_of(st.text(max_size=80), st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode())),
)
@settings(max_examples=300)
def test_csv_signature_verification_reports_garbage_without_raising(body: bytes, sig: str) -> None:
    assert not verify_csv(body, sig).ok

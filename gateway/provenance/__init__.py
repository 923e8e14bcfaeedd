"""Provenance: the gateway's Ed25519 identity (did:key), COSE_Sign1 envelopes and their hash chain.

See ``docs/provenance.md`` for the formats and how to verify an export by hand.
"""

from gateway.provenance.chain import ChainReport, verify_chain
from gateway.provenance.cose import ALG_ED25519, ALG_EDDSA, sign1, sign1_with, verify1
from gateway.provenance.didkey import did_key_from_public, public_from_did_key
from gateway.provenance.envelope import (
    GENESIS_PREV,
    Envelope,
    build_envelope,
    envelope_hash,
    open_envelope,
)
from gateway.provenance.identity import KEY_FILE_NAME, GatewayIdentity, load_or_create

__all__ = [
    "ALG_ED25519",
    "ALG_EDDSA",
    "GENESIS_PREV",
    "KEY_FILE_NAME",
    "ChainReport",
    "Envelope",
    "GatewayIdentity",
    "build_envelope",
    "did_key_from_public",
    "envelope_hash",
    "load_or_create",
    "open_envelope",
    "public_from_did_key",
    "sign1",
    "sign1_with",
    "verify1",
    "verify_chain",
]

"""Export files: a CBOR sequence (RFC 8742) of the COSE_Sign1 envelopes, in envelope-number order.

An export can be verified anywhere with the gateway's did:key alone (``ds4h-gateway provenance verify
--file``): every signature, the numbering and the hash chain between consecutive envelopes.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path

import cbor2

from gateway.errors import ProvenanceError

MEDIA_TYPE = "application/cbor-seq"


def write_export(path: Path, envelopes: Iterable[bytes]) -> int:
    n = 0
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for env in envelopes:
            f.write(cbor2.dumps(env))  # each envelope as one CBOR byte string
            n += 1
        f.flush()
    tmp.replace(path)
    return n


def read_export(path: Path) -> Iterator[bytes]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ProvenanceError(f"{path}: cannot read: {e.strerror}") from e
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        try:
            item = cbor2.CBORDecoder(stream).decode()
        except (cbor2.CBORDecodeError, ValueError, EOFError) as e:
            raise ProvenanceError(f"{path}: not a CBOR sequence of envelopes at byte {stream.tell()}: {e}") from e
        if not isinstance(item, bytes):
            raise ProvenanceError(f"{path}: item at byte {stream.tell()} is not an envelope byte string")
        yield item

"""Verify a run of envelopes as a hash chain: signatures, numbering and ``prev`` links.

Every envelope is checked on its own (signature, kid = gw = expected gateway), then against the
one before it: its number must be exactly one more, and its ``prev`` must be the SHA-256 of the
previous envelope's bytes. A removed, reordered, duplicated, altered or forged envelope breaks at
least one of these. Streaming: memory use does not grow with the number of envelopes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.errors import ProvenanceError
from gateway.provenance.envelope import envelope_hash, open_envelope, peek_number


@dataclass(slots=True)
class ChainReport:
    """Outcome of :func:`verify_chain`. Numbers are the ones envelopes claim, verified or not."""

    ok: bool = True
    count: int = 0
    first_number: int | None = None
    last_number: int | None = None
    last_hash: bytes | None = None
    """SHA-256 of the last envelope seen: pass it as ``first_prev`` to verify the next export."""
    problems: list[str] = field(default_factory=list)


def _label(position: int, number: int | None) -> str:
    return f"envelope {number}" if number is not None else f"envelope at position {position} (number unreadable)"


def _link_problems(
    label: str, number: int, prev_hash: bytes, before_number: int | None, before_hash: bytes | None
) -> list[str]:
    out: list[str] = []
    if before_number is not None:
        if number == before_number:
            out.append(f"{label}: duplicate number (repeats envelope {before_number})")
        elif number < before_number:
            out.append(f"{label}: reordered (comes after envelope {before_number})")
        elif number > before_number + 1:
            out.append(f"{label}: gap {before_number}→{number} (envelopes in between missing)")
    if before_hash is not None and prev_hash != before_hash:
        out.append(f"{label}: prev-hash mismatch (the envelope before it was removed, swapped or altered)")
    return out


def verify_chain(
    envelopes: Iterable[bytes], expected_did: str | None = None, first_prev: bytes | None = None
) -> ChainReport:
    """Verify envelopes in order. ``first_prev`` is the hash the first one's ``prev`` must equal, when known.

    Without ``expected_did`` the first verified envelope's gateway is expected throughout.
    Never raises for bad envelopes: every problem is listed in the report.
    """
    report = ChainReport()
    did = expected_did
    before_number: int | None = None
    before_hash: bytes | None = first_prev
    for position, data in enumerate(envelopes):
        report.count += 1
        number = peek_number(data)
        label = _label(position, number)
        try:
            env = open_envelope(data, did)
        except ProvenanceError as e:
            report.problems.append(f"{label}: does not verify (bad signature, key or format): {e}")
        else:
            if did is None:
                did = env.did
            report.problems.extend(_link_problems(label, env.number, env.prev_hash, before_number, before_hash))
        if position == 0:
            report.first_number = number
        report.last_number = number
        before_number = number if number is not None else before_number
        before_hash = envelope_hash(data) if isinstance(data, bytes) else None
        report.last_hash = before_hash
    report.ok = not report.problems
    return report

"""Verify a run of envelopes as a hash chain: signatures, numbering and ``prev`` links.

Every envelope is checked on its own (signature, kid = gw = expected gateway), then against the
one before it: its number must be exactly one more, and its ``prev`` must be the SHA-256 of the
previous envelope's bytes. A removed, reordered, duplicated, altered or forged envelope breaks at
least one of these. Streaming: memory use does not grow with the number of envelopes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.errors import ProvenanceError
from gateway.provenance.envelope import Envelope, envelope_hash, open_envelope, peek_number


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


SignerLookup = Callable[[int], str | None]
"""Envelope number → the did that must have signed it (from a key history), ``None`` when unknown."""


class ChainChecker:
    """Streaming form of :func:`verify_chain`: feed envelopes one at a time with :meth:`add`.

    ``expected_did`` is one did for every envelope, or a lookup by envelope number (a key history's
    ``signer_for``). Without it the first verified envelope's gateway is expected throughout.
    """

    def __init__(self, expected_did: str | SignerLookup | None = None, first_prev: bytes | None = None) -> None:
        self.report = ChainReport()
        self._lookup: SignerLookup | None = expected_did if callable(expected_did) else None
        self._did: str | None = None if callable(expected_did) else expected_did
        self._before_number: int | None = None
        self._before_hash: bytes | None = first_prev
        self._position = 0

    def add(self, data: bytes) -> Envelope | None:
        """Check one envelope and its link to the one before; the envelope when it verified on its own."""
        report = self.report
        position = self._position
        self._position += 1
        report.count += 1
        number = peek_number(data)
        label = _label(position, number)
        env: Envelope | None = None
        try:
            did = self._did
            if self._lookup is not None:
                did = self._lookup(number) if number is not None else None
                if did is None:
                    raise ProvenanceError(f"no key of the key history covers envelope {number}")
            env = open_envelope(data, did)
        except ProvenanceError as e:
            report.problems.append(f"{label}: does not verify (bad signature, key or format): {e}")
        else:
            if self._did is None and self._lookup is None:
                self._did = env.did
            report.problems.extend(
                _link_problems(label, env.number, env.prev_hash, self._before_number, self._before_hash)
            )
        if position == 0:
            report.first_number = number
        report.last_number = number
        self._before_number = number if number is not None else self._before_number
        self._before_hash = envelope_hash(data) if isinstance(data, bytes) else None
        report.last_hash = self._before_hash
        report.ok = not report.problems
        return env


def verify_chain(
    envelopes: Iterable[bytes], expected_did: str | SignerLookup | None = None, first_prev: bytes | None = None
) -> ChainReport:
    """Verify envelopes in order. ``first_prev`` is the hash the first one's ``prev`` must equal, when known.

    ``expected_did``: one did, or a lookup envelope number → did (a key history's ``signer_for``).
    Without it the first verified envelope's gateway is expected throughout.
    Never raises for bad envelopes: every problem is listed in the report.
    """
    checker = ChainChecker(expected_did, first_prev)
    for data in envelopes:
        checker.add(data)
    checker.report.ok = not checker.report.problems
    return checker.report

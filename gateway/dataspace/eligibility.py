"""Is a reading eligible for research? (docs/consent.md#rules)

A reading of device D at time t is eligible when
1. D was bound to a patient P at t (a binding ``[from, until)`` covers t), and
2. among P's consent records for ``research`` that count (FHIR status ``active``, not revoked) and cover t,
   there is a ``permit`` and no ``deny`` (deny over permit; an opt-out is a deny without end).

Eligibility is decided again whenever data leaves: per batch in the research sink, per request in the
endpoint and per run of ``dataspace export``; a revocation therefore stops every later export, also of
readings taken while the consent was still in force.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from gateway.dataspace.patients import FOREVER, RESEARCH, Binding, ConsentDb, StoredConsent


@dataclass(frozen=True, slots=True)
class Decision:
    eligible: bool
    reason: str
    """``eligible``, ``no_binding``, ``no_consent`` or ``denied``."""
    patient_id: str | None = None


def decide(consents: list[StoredConsent], t_ns: int) -> str:
    """``eligible``, ``denied`` or ``no_consent`` for one patient's research consents at ``t_ns``."""
    permit = False
    for c in consents:
        if c.purpose != RESEARCH or not c.counts or not c.covers(t_ns):
            continue
        if c.decision == "deny":
            return "denied"
        permit = True
    return "eligible" if permit else "no_consent"


def eligible_intervals(consents: list[StoredConsent]) -> list[tuple[int, int]]:
    """The times at which :func:`decide` says ``eligible``, as sorted disjoint ``[start, end)`` intervals."""
    lo, hi = -(1 << 63), FOREVER
    cuts = {lo, hi}
    for c in consents:
        if c.purpose == RESEARCH and c.counts:
            cuts.add(max(lo, c.from_ns))
            cuts.add(hi if c.until_ns is None else min(hi, c.until_ns))
    points = sorted(cuts)
    out: list[tuple[int, int]] = []
    for a, b in itertools.pairwise(points):
        if decide(consents, a) == "eligible":
            if out and out[-1][1] == a:
                out[-1] = (out[-1][0], b)
            else:
                out.append((a, b))
    return out


class Eligibility:
    """Decisions against the current state of a :class:`ConsentDb` (one snapshot per forwarding round or request:
    bindings and consents are read once per device and patient)."""

    def __init__(self, db: ConsentDb) -> None:
        self._db = db
        self._consents: dict[str, list[StoredConsent]] = {}
        self._windows: dict[str, list[tuple[int, int]]] = {}
        self._bindings: dict[str, list[Binding]] = {}

    def patient_consents(self, patient_id: str) -> list[StoredConsent]:
        c = self._consents.get(patient_id)
        if c is None:
            c = self._consents[patient_id] = self._db.consents(patient_id)
        return c

    def _binding(self, device: str, t_ns: int) -> Binding | None:
        bs = self._bindings.get(device)
        if bs is None:
            bs = self._bindings[device] = self._db.bindings(device)
        for b in bs:
            if b.from_ns <= t_ns < (FOREVER if b.until_ns is None else b.until_ns):
                return b
        return None

    def at(self, device: str, t_ns: int) -> Decision:
        b = self._binding(device, t_ns)
        if b is None:
            return Decision(False, "no_binding")
        reason = decide(self.patient_consents(b.patient_id), t_ns)
        return Decision(reason == "eligible", reason, b.patient_id)

    def for_patient(self, patient_id: str, t_ns: int) -> bool:
        w = self._windows.get(patient_id)
        if w is None:
            w = self._windows[patient_id] = eligible_intervals(self.patient_consents(patient_id))
        return any(a <= t_ns < b for a, b in w)

"""Selecting research observations: a pseudonym, a time range and kinds → eligible history rows.

What the endpoint and ``dataspace export`` serve (docs/consent.md#endpoint) comes from the local history
(``history.db``), restricted to research-path data and re-checked against consent at read time:

1. the pseudonym is resolved to a patient (under the current or a previous pseudonym key);
2. for each of the patient's device bindings, the history of that device inside the binding's period and the
   requested range is read;
3. a row is kept only when the research sink passed its batch (``research_batches``: eligible or partial — this
   also names the source envelope) and the patient has an active research consent at the row's time *now*.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.dataspace.eligibility import Eligibility
from gateway.dataspace.patients import FOREVER, ConsentDb
from gateway.dataspace.pseudonym import Pseudonymiser
from gateway.errors import GatewayError
from gateway.sinks.local import HistoryReading, HistoryWaveform, open_history, read_readings, read_waveforms
from gateway.vocabulary import METRICS

KINDS: dict[str, tuple[str, ...]] = {
    "glucose": tuple(m for m in METRICS if m.startswith("glucose_") and m not in ("glucose_isf", "glucose_trend")
                     and not METRICS[m].research_only),
    "cgm-glucose": ("glucose_isf",),
    "glucose-trend": ("glucose_trend",),
    "heart-rate": ("heart_rate",),
    "pulse-rate": ("pulse_rate_oximeter", "pulse_rate_bp"),
    "rr-interval": ("rr_interval",),
    "blood-pressure": ("bp_systolic", "bp_diastolic", "bp_mean"),
    "spo2": ("spo2",),
    "body-temperature": ("body_temperature",),
    "ecg": ("ecg", "ecg_lead_i", "ecg_lead_ii"),
    "pleth": ("pleth",),
    "perfusion-index": ("perfusion_index",),
}  # fmt: skip
"""``kind=`` values of the endpoint and their metrics."""


class QueryError(GatewayError):
    """A bad observation query (the endpoint answers 400 with the message)."""


@dataclass(frozen=True, slots=True)
class Query:
    pseudonym: str
    since_ns: int = 0
    until_ns: int = FOREVER
    kinds: tuple[str, ...] = ()
    """Empty: every kind."""

    def metrics(self) -> set[str]:
        kinds = self.kinds or tuple(KINDS)
        for k in kinds:
            if k not in KINDS:
                raise QueryError(f"kind {k!r} is not one of {', '.join(KINDS)}")
        return {m for k in kinds for m in KINDS[k]}


@dataclass(frozen=True, slots=True)
class Item:
    """One observation to serve: a reading or a waveform, with its pseudonyms and source envelope."""

    t_ns: int
    metric: str
    pseudonym: str
    device_pseudonym: str
    envelope_n: int
    reading: HistoryReading | None = None
    waveform: HistoryWaveform | None = None


def _envelope_for(spans: Sequence[tuple[int, int, int]], starts: list[int], t_ns: int) -> int | None:
    i = bisect.bisect_right(starts, t_ns)
    for j in range(i - 1, -1, -1):
        first, last, n = spans[j]
        if first <= t_ns <= last:
            return n
        if j < i - 64:  # spans of one device rarely overlap much
            break
    return None


def resolve(db: ConsentDb, pseudo: Pseudonymiser, pseudonym: str) -> tuple[str, int] | None:
    """The patient a pseudonym names and the index of the key that made it."""
    for pid in db.patient_ids():
        for i, p in enumerate(pseudo.all_patient(pid)):
            if p == pseudonym:
                return pid, i
    return None


def select(state_dir: Path, db: ConsentDb, pseudo: Pseudonymiser, q: Query) -> list[Item]:
    """Every eligible research observation of the query, oldest first (see module docstring)."""
    metrics = q.metrics()
    found = resolve(db, pseudo, q.pseudonym)
    if found is None:
        return []
    pid, key_index = found
    elig = Eligibility(db)
    out: list[Item] = []
    hist = open_history(state_dir, readonly=True)
    try:
        for b in db.bindings_of(pid):
            lo = max(q.since_ns, b.from_ns)
            hi = min(q.until_ns, FOREVER if b.until_ns is None else b.until_ns - 1)
            if lo > hi:
                continue
            spans = db.research_spans(b.device, lo, hi)
            if not spans:
                continue
            starts = [s[0] for s in spans]
            pdv = pseudo.device(pid, b.device, key_index)
            for r in read_readings(hist, b.device, None, lo, hi):
                if r.metric not in metrics or not elig.for_patient(pid, r.t_ns):
                    continue
                n = _envelope_for(spans, starts, r.t_ns)
                if n is not None:
                    out.append(Item(r.t_ns, r.metric, q.pseudonym, pdv, n, reading=r))
            if any(METRICS[m].waveform for m in metrics):
                for w in read_waveforms(hist, b.device, None, lo, hi):
                    end = w.start_ns + max(0, len(w.samples) - 1) * w.period_ns
                    if w.metric not in metrics or end > hi:
                        continue
                    if not (elig.for_patient(pid, w.start_ns) and elig.for_patient(pid, end)):
                        continue
                    n = _envelope_for(spans, starts, w.start_ns)
                    if n is not None:
                        out.append(Item(w.start_ns, w.metric, q.pseudonym, pdv, n, waveform=w))
    finally:
        hist.close()
    out.sort(key=lambda i: (i.t_ns, i.metric, i.device_pseudonym))
    return out


def all_pseudonyms(db: ConsentDb, pseudo: Pseudonymiser) -> Iterable[str]:
    """The current pseudonym of every patient with a binding (the offline export covers them all)."""
    for pid in db.patient_ids():
        if db.bindings_of(pid):
            yield pseudo.patient(pid)

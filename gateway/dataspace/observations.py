"""Selecting research observations: a pseudonym, a time range and kinds → eligible history rows.

What the endpoint and ``dataspace export`` serve (docs/consent.md#endpoint) comes from the local history
(``history.db``), restricted to research-path data and re-checked against consent at read time:

1. the pseudonym is resolved to a patient (under the current or a previous pseudonym key);
2. for each of the patient's device bindings, the history of that device inside the binding's period and the
   requested range is read;
3. a row is kept only when the research sink has decided on its batch (``research_batches``, whatever the
   decision then — the record names the source envelope) and the patient has an active research consent at the
   row's time *now* (so a consent entered later covers earlier readings, docs/consent.md#later-consent).
"""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from gateway.dataspace.eligibility import eligible_intervals
from gateway.dataspace.patients import FOREVER, ConsentDb
from gateway.dataspace.pseudonym import Pseudonymiser
from gateway.errors import GatewayError
from gateway.sinks.local import (
    HistoryReading,
    HistorySpectrum,
    HistoryWaveform,
    open_history,
    read_readings,
    read_spectra,
    read_waveforms,
)
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
    # the research sensor (docs/research-sensor.md): served only when asked for by name, flagged research-only
    "research-glucose-estimate": ("glucose_research_estimate",),
    "nig-spectrum": ("nig_s21_magnitude", "nig_s21_phase"),
}  # fmt: skip
"""``kind=`` values of the endpoint and their metrics."""

RESEARCH_ONLY_KINDS = frozenset({"research-glucose-estimate", "nig-spectrum"})
"""Kinds of a research sensor's output: never a clinical value, so not part of "every kind" (ask by name)."""
DEFAULT_KINDS = tuple(k for k in KINDS if k not in RESEARCH_ONLY_KINDS)
CSV_ONLY_KINDS = frozenset({"nig-spectrum"})
"""Spectra (values over a frequency axis) have no FHIR R4 form (``SampledData`` is over time): CSV only."""


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
        kinds = self.kinds or DEFAULT_KINDS
        for k in kinds:
            if k not in KINDS:
                raise QueryError(f"kind {k!r} is not one of {', '.join(KINDS)}")
        return {m for k in kinds for m in KINDS[k]}

    def check_format(self, fmt: str) -> None:
        """Spectra are served as CSV only."""
        if fmt != "csv":
            for k in self.kinds:
                if k in CSV_ONLY_KINDS:
                    raise QueryError(f"kind {k!r} (spectra) is served as CSV only: ask with _format=csv")


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
    spectrum: HistorySpectrum | None = None


Shape = Literal["reading", "waveform", "spectrum"]


class Key(NamedTuple):
    """An eligible observation before its value is read (values are decrypted only for the page served)."""

    t_ns: int
    metric: str
    device_pseudonym: str
    device: str
    shape: Shape
    envelope_n: int


def _envelope_for(spans: Sequence[tuple[int, int, int]], starts: list[int], t_ns: int) -> int | None:
    i = bisect.bisect_right(starts, t_ns)
    for j in range(i - 1, i - 65 if i > 65 else -1, -1):  # spans of one device rarely overlap much
        first, last, n = spans[j]
        if first <= t_ns <= last:
            return n
    return None


def resolve(db: ConsentDb, pseudo: Pseudonymiser, pseudonym: str) -> tuple[str, int] | None:
    """The patient a pseudonym names and the index of the key that made it."""
    for pid in db.patient_ids():
        for i, p in enumerate(pseudo.all_patient(pid)):
            if p == pseudonym:
                return pid, i
    return None


def select_keys(hist: sqlite3.Connection, db: ConsentDb, pseudo: Pseudonymiser, q: Query) -> list[Key]:
    """Every eligible research observation of the query, oldest first (see module docstring); no value is
    decrypted."""
    metrics = q.metrics()
    found = resolve(db, pseudo, q.pseudonym)
    if found is None:
        return []
    pid, key_index = found
    windows = eligible_intervals(db.consents(pid))  # consent re-checked now, once per request
    ms = {f"m{i}": m for i, m in enumerate(sorted(metrics))}
    among = f"metric IN ({', '.join(':' + k for k in ms)})"

    def query(table: str, t: str, whole: str = "") -> str:
        return f"SELECT {t}, metric FROM {table} WHERE device = :dev AND {t} BETWEEN :lo AND :hi{whole} AND {among}"

    queries: list[tuple[Shape, str]] = [("reading", query("readings", "t_ns"))]
    if any(METRICS[m].waveform for m in metrics):  # a waveform is one observation: all of it within the range
        queries.append(("waveform", query("waveforms", "start_ns", " AND start_ns + (n - 1) * period_ns <= :hi")))
    if any(METRICS[m].spectrum for m in metrics):
        queries.append(("spectrum", query("spectra", "t_ns")))
    out: list[Key] = []
    for b in db.bindings_of(pid):
        b_end = FOREVER if b.until_ns is None else b.until_ns - 1
        for w_start, w_end in windows:
            lo = max(q.since_ns, b.from_ns, w_start)
            hi = min(q.until_ns, b_end, w_end - 1)
            if lo > hi:
                continue
            spans = db.research_spans(b.device, lo, hi)
            if not spans:
                continue
            starts = [s[0] for s in spans]
            pdv = pseudo.device(pid, b.device, key_index)
            for shape, sql in queries:
                for t, m in hist.execute(sql, {"dev": b.device, "lo": lo, "hi": hi, **ms}):
                    n = _envelope_for(spans, starts, t)
                    if n is not None:
                        out.append(Key(t, m, pdv, b.device, shape, n))
    out.sort(key=lambda k: (k.t_ns, k.metric, k.device_pseudonym))
    return out


def materialise(hist: sqlite3.Connection, keys: Sequence[Key], pseudonym: str) -> list[Item]:
    """The items of ``keys`` (a page) with their values, decrypted."""
    by_device: dict[tuple[str, Shape], list[Key]] = {}
    for k in keys:
        by_device.setdefault((k.device, k.shape), []).append(k)
    found: dict[tuple[str, str, int, Shape], HistoryReading | HistoryWaveform | HistorySpectrum] = {}
    for (device, shape), ks in by_device.items():
        lo, hi = min(k.t_ns for k in ks), max(k.t_ns for k in ks)
        wanted = {k.metric for k in ks}
        if shape == "waveform":
            for w in read_waveforms(hist, device, None, lo, hi):
                if w.metric in wanted:
                    found[(device, w.metric, w.start_ns, shape)] = w
        elif shape == "spectrum":
            for sp in read_spectra(hist, device, None, lo, hi):
                if sp.metric in wanted:
                    found[(device, sp.metric, sp.t_ns, shape)] = sp
        else:
            for r in read_readings(hist, device, None, lo, hi):
                if r.metric in wanted:
                    found[(device, r.metric, r.t_ns, shape)] = r
    out = []
    for k in keys:
        v = found.get((k.device, k.metric, k.t_ns, k.shape))
        if v is None:  # pruned between the two reads: left out
            continue
        head = (k.t_ns, k.metric, pseudonym, k.device_pseudonym, k.envelope_n)
        if isinstance(v, HistoryWaveform):
            out.append(Item(*head, waveform=v))
        elif isinstance(v, HistorySpectrum):
            out.append(Item(*head, spectrum=v))
        else:
            out.append(Item(*head, reading=v))
    return out


def select(
    state_dir: Path, db: ConsentDb, pseudo: Pseudonymiser, q: Query, offset: int = 0, count: int | None = None
) -> tuple[list[Item], int]:
    """A page (``offset``, ``count``; None: all) of the query's items, and the number of all of them."""
    hist = open_history(state_dir, readonly=True)
    try:
        keys = select_keys(hist, db, pseudo, q)
        page = keys[offset:] if count is None else keys[offset : offset + count]
        return materialise(hist, page, q.pseudonym), len(keys)
    finally:
        hist.close()


def all_pseudonyms(db: ConsentDb, pseudo: Pseudonymiser) -> Iterable[str]:
    """The current pseudonym of every patient with a binding (the offline export covers them all)."""
    for pid in db.patient_ids():
        if db.bindings_of(pid):
            yield pseudo.patient(pid)

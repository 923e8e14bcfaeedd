"""``research`` sink: the consent-filtered, pseudonymised copy of the outbox (docs/consent.md#research-sink).

One more sink with its own outbox cursor. For every batch it decides, per reading / waveform / spectrum, whether
the data is eligible (gateway.dataspace.eligibility) *now*; eligible data is written to the research store (when
``[research.store]`` is set) as line protocol whose series identity is the patient pseudonym:

    <metric>,device=<pdv-…>,patient=<psn-…>,unit=<ucum> value=… <t>

(``device`` is the pseudonymous device tag, derived with the same key from patient and device; never the device
id, serial or patient id). Every batch's decision — ``eligible``, ``partial`` or ``not_eligible`` with its reason
(``no_binding``, ``no_consent``, ``denied``), points in and out, its outbox batch id and envelope number — is
recorded in ``consent.db`` (``research_batches``) after the store took the data: nothing is skipped silently.
That record is also what makes data "research-path data" for the endpoint and ``dataspace export``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.dataspace.eligibility import Eligibility
from gateway.dataspace.patients import ConsentDb
from gateway.dataspace.pseudonym import Pseudonymiser
from gateway.dataspace.reforward import RESEARCH_SINK
from gateway.errors import PayloadError, RejectedSinkError, RetryableSinkError
from gateway.metrics import GatewayMetrics
from gateway.model import Batch, Reading, Spectrum, Waveform
from gateway.outbox.store import BatchRef, open_outbox, queue_again
from gateway.sinks.influx import InfluxSink
from gateway.sinks.lineproto import _reading_line, _waveform_lines, escape_measurement, escape_tag

log = logging.getLogger(__name__)

Decided = tuple[int, int, str, int, int, str, str, int, int]


@dataclass(slots=True)
class Filtered:
    """One batch after the consent filter."""

    readings: list[tuple[str, str, Reading]]
    """(patient pseudonym, device pseudonym, reading)."""
    waveforms: list[tuple[str, str, Waveform]]
    spectra: list[tuple[str, str, Spectrum]]
    points_in: int
    points_out: int
    reasons: set[str]


def _prefix(metric: str, pdv: str, psn: str, unit: str) -> str:
    return f"{escape_measurement(metric)},device={escape_tag(pdv)},patient={escape_tag(psn)},unit={escape_tag(unit)}"


def _spectrum_lines(pdv: str, psn: str, s: Spectrum) -> bytes:
    head = f"{escape_measurement(s.metric)},device={escape_tag(pdv)},hz="
    tail = f",patient={escape_tag(psn)},unit={escape_tag(s.unit)} value="
    tq = int(s.time_quality)
    end = f",tq={tq}i {int(s.time_ns)}" if tq else f" {int(s.time_ns)}"
    hz = np.rint(s.axis()).astype(np.int64).tolist()
    values = [np.format_float_positional(v, unique=True, trim="0") for v in s.values]
    return "\n".join([f"{head}{f}{tail}{v}{end}" for f, v in zip(hz, values, strict=True)]).encode()


def encode_filtered(f: Filtered) -> bytes:
    parts: list[bytes] = []
    if f.readings:
        lines = [_reading_line(_prefix(r.metric, pdv, psn, r.unit), r) for psn, pdv, r in f.readings]
        parts.append("\n".join(lines).encode())
    for psn, pdv, w in f.waveforms:
        if w.samples.size:
            parts.append(_waveform_lines(_prefix(w.metric, pdv, psn, w.unit), w))
    for psn, pdv, s in f.spectra:
        if s.values.size:
            parts.append(_spectrum_lines(pdv, psn, s))
    return b"\n".join(parts)


def filter_batch(b: Batch, elig: Eligibility, pseudo: Pseudonymiser) -> Filtered:
    f = Filtered([], [], [], b.n_points, 0, set())
    dev = b.device_id
    names: dict[str, tuple[str, str]] = {}

    def ok(t_ns: int) -> tuple[str, str] | None:
        d = elig.at(dev, t_ns)
        f.reasons.add(d.reason)
        if not d.eligible or d.patient_id is None:
            return None
        pair = names.get(d.patient_id)
        if pair is None:
            pair = names[d.patient_id] = (pseudo.patient(d.patient_id), pseudo.device(d.patient_id, dev))
        return pair

    for r in b.readings:
        p = ok(r.device_time_ns)
        if p is not None:
            f.readings.append((*p, r))
            f.points_out += 1
    for w in b.waveforms:
        # a waveform is one observation: eligible when its first and last samples are
        first, last = w.start_ns, w.start_ns + max(0, int(w.samples.size) - 1) * w.period_ns
        p = ok(first)
        if p is not None and ok(last) == p:
            f.waveforms.append((*p, w))
            f.points_out += int(w.samples.size)
    for s in b.spectra:
        p = ok(s.time_ns)
        if p is not None:
            f.spectra.append((*p, s))
            f.points_out += int(s.values.size)
    return f


def batch_span(b: Batch) -> tuple[int, int]:
    times = [r.device_time_ns for r in b.readings]
    for w in b.waveforms:
        times += [w.start_ns, w.start_ns + max(0, int(w.samples.size) - 1) * w.period_ns]
    times += [s.time_ns for s in b.spectra]
    return (min(times), max(times)) if times else (b.received_ns, b.received_ns)


def decision_of(f: Filtered) -> tuple[str, str]:
    reasons = f.reasons - {"eligible"}
    reason = ",".join(sorted(reasons)) if reasons else "eligible"
    if f.points_out == 0:
        return "not_eligible", reason if reasons else "empty"
    return ("eligible" if f.points_out == f.points_in else "partial"), reason


class ResearchSink:
    name = RESEARCH_SINK

    def __init__(
        self,
        state_dir: Path,
        pseudonymiser: Pseudonymiser,
        store: InfluxSink | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._db = ConsentDb.open(state_dir)
        self._outbox = open_outbox(state_dir)
        self._pseudo = pseudonymiser
        self._store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="research-sink")
        self.decided: dict[str, int] = {"eligible": 0, "partial": 0, "not_eligible": 0}
        self._tlock = threading.Lock()
        """Serialises the sink thread and the housekeeping thread (reseal) on the consent database."""

    def _prepare(self, batches: Sequence[Batch]) -> tuple[list[bytes], list[Decided], int]:
        with self._tlock:
            version = self._consent_version()
            return (*self._prepare_locked(batches), version)

    def _consent_version(self) -> int:
        """Changes whenever another connection (the CLI: bind, consent import/revoke) committed to consent.db."""
        return int(self._db.conn.execute("PRAGMA data_version").fetchone()[0])

    def _prepare_locked(self, batches: Sequence[Batch]) -> tuple[list[bytes], list[Decided]]:
        keys = [b.key.text() for b in batches]
        where: dict[str, tuple[int, int]] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            q = f"SELECT source_key, id, envelope_n FROM batches WHERE source_key IN ({','.join('?' * len(part))})"
            where.update({k: (bid, n) for k, bid, n in self._outbox.execute(q, part)})
        elig = Eligibility(self._db)
        chunks: list[bytes] = []
        rows: list[Decided] = []
        for b, k in zip(batches, keys, strict=True):
            ids = where.get(k)
            if ids is None:  # pruned from the outbox meanwhile (disk budget): nothing to decide about any more
                log.warning("research: an outbox batch of %s was pruned before the research sink got it", b.device_id)
                continue
            f = filter_batch(b, elig, self._pseudo)
            decision, reason = decision_of(f)
            first, last = batch_span(b)
            rows.append((ids[0], ids[1], b.device_id, first, last, decision, reason, f.points_in, f.points_out))
            if f.points_out:
                chunks.append(encode_filtered(f))
        return chunks, rows

    def _record(self, rows: list[Decided], version: int) -> None:
        with self._tlock:
            self._db.record_decisions(rows)
            if self._consent_version() != version:
                # bindings or consent changed while this round was being decided: a `consent import` or
                # `patients bind` meanwhile could not see these decisions yet, so decide them once more
                again = [BatchRef(r[0], r[1], r[2]) for r in rows if r[5] != "eligible"]
                if again:
                    queue_again(self._outbox, RESEARCH_SINK, again)
                    log.info("research: consent changed during a round: %d batch(es) to decide again", len(again))

    async def write(self, batches: Sequence[Batch]) -> None:
        loop = asyncio.get_running_loop()
        try:
            chunks, rows, version = await loop.run_in_executor(self._executor, self._prepare, batches)
        except sqlite3.OperationalError as e:
            raise RetryableSinkError(f"research: consent state: {e}") from e
        except PayloadError as e:
            raise RejectedSinkError(f"research: cannot encode: {e}") from e
        if self._store is not None and chunks:
            await self._store.write_lines(chunks)
        try:
            await loop.run_in_executor(self._executor, self._record, rows, version)
        except sqlite3.OperationalError as e:
            raise RetryableSinkError(f"research: recording decisions: {e}") from e
        for r in rows:
            self.decided[r[5]] += 1
            if self._metrics is not None:
                self._metrics.consent_decisions.labels(decision=r[5]).inc()

    def reseal(self, limit: int) -> int:
        """Re-encrypt up to ``limit`` consent values still under a previous state key (housekeeping's thread)."""
        with self._tlock:
            return self._db.reseal(limit)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._store is not None:
            await self._store.close()
        self._db.close()
        self._outbox.close()

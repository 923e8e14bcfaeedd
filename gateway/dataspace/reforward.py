"""Earlier readings that a later consent or binding covers: queue their batches again for the research sink.

The research sink decides eligibility once per batch, as it passes (docs/consent.md#rules). A consent imported
afterwards whose period reaches back — the patient signed on day two of the stay, the form was entered a week
later — or a binding entered afterwards (``patients bind --from`` in the past) makes readings eligible that the
sink judged ``not_eligible`` or left out of a ``partial`` batch. ``consent import``, ``patients bind`` and
``consent reforward`` therefore look for the recorded decisions such a change may overturn and queue those
batches again for the research sink (the outbox's ``sink_again`` lane, ahead of new data). The sink decides
again, forwards what is eligible now and replaces the batch's record; writing a point twice to the research
store is harmless (same series and time).

Only batches still in the outbox or its archive (``provenance.archive_retention_days``) can be forwarded again;
the others are counted and reported. The endpoint and ``dataspace export`` need none of this: they decide
again on every request.

A change that lands while the research sink is deciding a round (after it read bindings and consent, before it
recorded the round) is not missed: the sink notices that ``consent.db`` changed meanwhile (``PRAGMA
data_version``) and queues that round's not wholly eligible batches again itself; and queueing a batch that
is being delivered again queues it anew rather than being absorbed by that delivery.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.dataspace.eligibility import eligible_intervals
from gateway.dataspace.patients import FOREVER, ConsentDb
from gateway.outbox.store import BatchRef, OutboxStore, open_outbox

RESEARCH_SINK = "research"
"""The research sink's name (its outbox cursor)."""


@dataclass(frozen=True, slots=True)
class Requeued:
    queued: int
    """Batches queued again for the research sink."""
    gone: int
    """Batches no longer in the outbox or its archive: they cannot reach the research store any more."""


def batches_to_reconsider(db: ConsentDb, patient_ids: Iterable[str]) -> list[BatchRef]:
    """The batches of the patients' devices that the research sink did not pass in full but that are now
    (partly) eligible: ``not_eligible`` ones that overlap an eligible time of the binding, ``partial`` ones that
    lie wholly inside one."""
    out: dict[int, BatchRef] = {}
    for pid in dict.fromkeys(patient_ids):
        windows = eligible_intervals(db.consents(pid))
        for b in db.bindings_of(pid):
            b_end = FOREVER if b.until_ns is None else b.until_ns
            for w_start, w_end in windows:
                lo, hi = max(b.from_ns, w_start), min(b_end, w_end)  # [lo, hi)
                if lo >= hi:
                    continue
                for batch_id, envelope_n, first, last, decision in db.undecided_spans(b.device, lo, hi - 1):
                    if decision == "not_eligible" or (lo <= first and last < hi):
                        out[batch_id] = BatchRef(batch_id, envelope_n, b.device)
    return [out[k] for k in sorted(out)]


def requeue_for_research(state_dir: Path, db: ConsentDb, patient_ids: Iterable[str]) -> Requeued | None:
    """Queue the batches of :func:`batches_to_reconsider` for the research sink. None when the research sink
    has never run on this state directory (then there is nothing to forward again)."""
    if not (state_dir / "outbox.db").exists():
        return None
    refs = batches_to_reconsider(db, patient_ids)
    conn = open_outbox(state_dir)
    try:
        store = OutboxStore(conn)
        if RESEARCH_SINK not in store.sinks():
            return None
        queued, gone = store.queue_again(RESEARCH_SINK, refs)
    finally:
        conn.close()
    return Requeued(queued, gone)


def describe(r: Requeued | None) -> str | None:
    """The line the CLI prints (None: nothing to say)."""
    if r is None or r.queued + r.gone == 0:
        return None
    line = f"research: {r.queued} earlier batch(es) queued again for the research sink"
    if r.gone:
        line += f"; {r.gone} no longer in the outbox archive: they cannot be forwarded again"
    return line

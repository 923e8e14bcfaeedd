"""Verify an export file for a third party: key history, every envelope against it, the chain, the trailer.

Checks, in file order (every problem is listed; the first one names the first bad item):

1. the file opens with the key history: records 1…K, each signed by the key before it (record 1
   self-signed), each proving possession of the key it announces, hash-chained;
2. ``--did`` (when given) is one of the history's keys;
3. every data envelope is signed by the key the history makes current for its number, its number is
   one more than the one before, its ``prev`` is the hash of the one before;
4. the file ends with exactly one trailer, signed by the history's current key, whose first/last
   number, count, first/last envelope hash and key-history head equal what came before it;
5. every batch that carries its device's signed message (``gateway.provenance.evidence``) matches it and
   the device signature verifies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.dataspace.bundlesig import BundleReport
from gateway.errors import PayloadError, ProvenanceError
from gateway.model import Batch
from gateway.provenance.chain import ChainChecker
from gateway.provenance.envelope import Envelope, envelope_hash
from gateway.provenance.evidence import EvidenceError, check_evidence
from gateway.provenance.export import TRAILER_TYPE, Trailer, iter_items, open_trailer
from gateway.provenance.keyhistory import KEY_RECORD_TYPE, KeyHistory, peek_type


@dataclass(slots=True)
class SignerSpan:
    first: int
    last: int
    count: int = 0


@dataclass(slots=True)
class ExportReport:
    """What :func:`verify_export` found. ``ok`` only when ``problems`` is empty."""

    ok: bool = False
    problems: list[str] = field(default_factory=list)
    did_checked: str | None = None
    key_dids: list[str] = field(default_factory=list)
    envelopes: int = 0
    first_number: int | None = None
    last_number: int | None = None
    last_hash: bytes | None = None
    batches: int = 0
    readings: int = 0
    waveform_samples: int = 0
    spectra: int = 0
    devices: set[str] = field(default_factory=set)
    first_reading_ns: int | None = None
    last_reading_ns: int | None = None
    signers: dict[str, SignerSpan] = field(default_factory=dict)
    device_signed: int = 0
    """Batches whose device signature (carried in the envelope) was checked and holds."""
    device_keys: dict[str, set[str]] = field(default_factory=dict)
    """Device id → the did:keys that signed its batches (more than one after the device's key was rotated —
    or when a key that was never the device's was used: compare with the provisioning records)."""
    batches_by_device: dict[str, list[int]] = field(default_factory=dict)
    """Device id → [batches carrying a device signature that holds, batches without one]: a device that always
    signs should show no unsigned batch (a stripped signature is no longer checked)."""
    trailer: Trailer | None = None

    @property
    def first_problem(self) -> str | None:
        return self.problems[0] if self.problems else None


def _shown(v: object) -> object:
    return v.hex()[:16] + "…" if isinstance(v, bytes) else v


class _Verifier:
    def __init__(self, expected_did: str | None) -> None:
        self.report = ExportReport(did_checked=expected_did)
        self.history = KeyHistory()
        self.phase = "keys"  # keys → envelopes → trailer
        self.chain: ChainChecker | None = None
        self.first_hash: bytes | None = None
        self.position = 0

    # --- items --------------------------------------------------------------------------------------
    def item(self, data: bytes) -> None:
        position = self.position
        self.position += 1
        typ = peek_type(data)
        if self.phase == "trailer":
            self.problem(f"item at position {position}: data after the trailer")
        elif typ == KEY_RECORD_TYPE:
            self.key_record(position, data)
        elif typ == TRAILER_TYPE:
            self.end_of_keys()
            self.trailer(data)
        else:
            self.end_of_keys()
            self.envelope(data)

    def problem(self, text: str) -> None:
        self.report.problems.append(text)

    def key_record(self, position: int, data: bytes) -> None:
        if self.phase != "keys":
            self.problem(f"key record at position {position}: after the envelopes (the key history comes first)")
            return
        try:
            self.history.add(data)
        except ProvenanceError as e:
            self.problem(f"key record at position {position}: {e}")

    def end_of_keys(self) -> None:
        if self.phase != "keys":
            return
        self.phase = "envelopes"
        r = self.report
        r.key_dids = self.history.dids
        if not self.history.records:
            self.problem("no key history at the start of the file (not an export of `outbox export`, or cut)")
        elif r.did_checked is not None and r.did_checked not in r.key_dids:
            self.problem(
                f"--did {r.did_checked} is not a key of this file's key history ({', '.join(r.key_dids)}):"
                " no envelope is from that gateway"
            )
        self.chain = ChainChecker(self.history.signer_for)

    def envelope(self, data: bytes) -> None:
        assert self.chain is not None
        before = len(self.chain.report.problems)
        env = self.chain.add(data)
        self.report.problems.extend(self.chain.report.problems[before:])
        r = self.report
        r.envelopes += 1
        if r.envelopes == 1:
            r.first_number = self.chain.report.first_number
            self.first_hash = envelope_hash(data)
        r.last_number = self.chain.report.last_number
        r.last_hash = self.chain.report.last_hash
        if env is not None:
            self.summarise(env)

    def summarise(self, env: Envelope) -> None:
        r = self.report
        span = r.signers.get(env.did)
        if span is None:
            span = r.signers[env.did] = SignerSpan(env.number, env.number)
        span.last = env.number
        span.count += 1
        try:
            batches = env.batches()
        except PayloadError as e:
            self.problem(f"envelope {env.number}: signed, but a batch does not decode: {e}")
            return
        try:
            self._count(env, batches)
        except (TypeError, ValueError, AttributeError) as e:  # signed, but not what a gateway writes
            self.problem(f"envelope {env.number}: signed, but a batch is malformed ({type(e).__name__})")

    def _count(self, env: Envelope, batches: Sequence[Batch]) -> None:
        r = self.report
        times: list[int] = []
        for i, b in enumerate(batches):
            counts = r.batches_by_device.setdefault(b.device_id, [0, 0])
            if b.evidence:
                try:
                    did = check_evidence(b)
                except EvidenceError as e:
                    self.problem(f"envelope {env.number} batch {i + 1}: {e}")
                else:
                    r.device_signed += 1
                    r.device_keys.setdefault(b.device_id, set()).add(did)
                    counts[0] += 1
            else:
                counts[1] += 1
            r.batches += 1
            r.devices.add(b.device_id)
            r.readings += len(b.readings)
            times.extend(x.device_time_ns for x in b.readings)
            for w in b.waveforms:
                r.waveform_samples += len(w.samples)
                times.append(w.start_ns)
                times.append(w.start_ns + max(0, len(w.samples) - 1) * w.period_ns)
            r.spectra += len(b.spectra)
            times.extend(s.time_ns for s in b.spectra)
        if times:
            lo, hi = min(times), max(times)
            r.first_reading_ns = lo if r.first_reading_ns is None else min(lo, r.first_reading_ns)
            r.last_reading_ns = hi if r.last_reading_ns is None else max(hi, r.last_reading_ns)

    def trailer(self, data: bytes) -> None:
        self.phase = "trailer"
        try:
            t = open_trailer(data)
        except ProvenanceError as e:
            self.problem(f"trailer: does not verify: {e}")
            return
        self.report.trailer = t
        r = self.report
        current = self.history.current
        if current is not None and t.did != current.did:
            self.problem(f"trailer: signed by {t.did}, not by the current key {current.did}")
        expected = {
            "count": (t.count, r.envelopes),
            "first envelope number": (t.first, r.first_number),
            "last envelope number": (t.last, r.last_number),
            "first envelope hash": (t.first_hash, self.first_hash),
            "last envelope hash": (t.last_hash, r.last_hash),
            "key records": (t.key_records, len(self.history.records)),
            "key history hash": (t.key_history_hash, current.hash if current else None),
        }
        for what, (signed, found) in expected.items():
            if signed != found:
                self.problem(f"trailer: {what} is {_shown(signed)} but the file holds {_shown(found)} (cut or altered)")

    def finish(self) -> ExportReport:
        self.end_of_keys()
        if self.phase != "trailer":
            last = self.report.last_number
            after = f" after envelope {last}" if last is not None else ""
            self.problem(f"no trailer{after}: the end of the export is missing (cut or truncated)")
        self.report.ok = not self.report.problems
        return self.report


def verify_items(items: Iterable[bytes], expected_did: str | None = None) -> ExportReport:
    """Verify the items of an export (key history, envelopes, trailer) given in file order."""
    v = _Verifier(expected_did)
    try:
        for data in items:
            v.item(data)
    except ProvenanceError as e:  # the file itself is cut or corrupted: no item boundary past here
        last = v.report.last_number
        where = f"after envelope {last}" if last is not None else f"after item {v.position}"
        v.problem(f"file cut or corrupted {where}: {e}")
        v.report.ok = False
        return v.report
    return v.finish()


def verify_export(path: Path, expected_did: str | None = None) -> ExportReport:
    """Verify an export file; never raises for bad content (a missing file raises ProvenanceError)."""
    if not Path(path).is_file():
        raise ProvenanceError(f"{path}: no such file")
    return verify_items(iter_items(Path(path)), expected_did)


def is_layout_with_history(path: Path) -> bool:
    """Does the file start with a key record (an `outbox export` file) rather than a bare envelope?"""
    try:
        first = next(iter_items(Path(path)), None)
    except ProvenanceError:
        return False
    return first is not None and peek_type(first) == KEY_RECORD_TYPE


def verify_bundle_file(path: Path, expected_did: str | None = None) -> BundleReport:
    """Verify the gateway signature (Provenance) of a research FHIR Bundle file (docs/consent.md#signature)."""
    import json

    from gateway.dataspace.bundlesig import verify_bundle

    try:
        doc = json.loads(Path(path).read_bytes())
    except OSError as e:
        raise ProvenanceError(f"{path}: {e.strerror or e}") from e
    except ValueError as e:
        report = BundleReport()
        report.problems.append(f"{path}: not JSON: {e}")
        return report
    return verify_bundle(doc, expected_did)

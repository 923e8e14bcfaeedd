"""FHIR R4 Observations (HL7 Personal Health Device IG) and CSV from research items (docs/consent.md#bundle).

Per observation:

- ``meta.profile``: PHD ``PhdNumericObservation`` (scalar readings), ``PhdRtsaObservation`` (ECG as
  ``SampledData``); CGM readings (``glucose_isf``) also the HL7 CGM IG's sensor-reading profile;
- ``code.coding``: the MDC code (``urn:iso:std:iso:11073:10101``, display the MDC reference id) and the LOINC code
  where the vocabulary has one for the unit (CGM: 99504-3 mass, 105272-9 molar);
- ``subject``: ``identifier`` {``urn:ds4h:pseudonym``, ``psn-…``}; ``device``: ``identifier``
  {``urn:ds4h:pseudonymous-device``, ``pdv-…``} (never a device id, serial or patient id);
- ``effectiveDateTime``: the corrected device time (UTC, µs);
- ``valueQuantity`` with the UCUM unit (``system`` ``http://unitsofmeasure.org``); or ``dataAbsentReason`` for an
  IEEE 11073 special value (NaN → ``not-a-number``, NRes → ``error``, +INF → ``positive-infinity``, −INF →
  ``negative-infinity``, reserved → ``unsupported``);
- ``status``: ``final``; ``preliminary`` when the device set measurement-status bits;
- ECG: ``valueSampledData`` (origin 0 µV, ``period`` in ms, factor 1, dimensions 1, samples space-separated);
- the research sensor's glucose estimate (asked for by name, ``kind=research-glucose-estimate``): ``status``
  ``preliminary``, ``meta.tag`` ``urn:ds4h:tag`` ``research-only``, ``meta.security`` v3-ActReason ``HRESCH``
  (for research use), the private MDC code and a ``code.text`` and ``note`` saying it is no clinical value.
  Its spectra have no FHIR R4 form (``SampledData`` is over time, not frequency): CSV only.
"""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.dataspace.observations import Item
from gateway.vocabulary import METRICS

MDC_SYSTEM = "urn:iso:std:iso:11073:10101"
LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"
PSEUDONYM_SYSTEM = "urn:ds4h:pseudonym"
DEVICE_SYSTEM = "urn:ds4h:pseudonymous-device"
PHD_NUMERIC = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdNumericObservation"
PHD_RTSA = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdRtsaObservation"
CGM_READING = "http://hl7.org/uv/cgm/StructureDefinition/cgm-sensor-reading-mass-per-volume"
CGM_READING_MOLAR = "http://hl7.org/uv/cgm/StructureDefinition/cgm-sensor-reading-moles-per-volume"
ABSENT = {
    "nan": "not-a-number",
    "nres": "error",
    "+inf": "positive-infinity",
    "-inf": "negative-infinity",
    "reserved": "unsupported",
}
_VITAL = frozenset(
    {"heart_rate", "pulse_rate_oximeter", "pulse_rate_bp", "bp_systolic", "bp_diastolic", "bp_mean", "spo2",
     "body_temperature"}
)  # fmt: skip
_NS = uuid.UUID("6f1d3c4e-8a0b-5c5e-9f44-0d5b4e3a2c10")
TAG_SYSTEM = "urn:ds4h:tag"
RESEARCH_ONLY_TEXT = "Research sensor output (synthetic transfer model in this build): not a clinical value"
_RESEARCH_META: dict[str, Any] = {
    "tag": [{"system": TAG_SYSTEM, "code": "research-only", "display": "Research use only: not a clinical value"}],
    "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}],
}


def iso(t_ns: int) -> str:
    dt = datetime.fromtimestamp(t_ns // 1000 / 1e6, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def observation_id(item: Item) -> str:
    return str(uuid.uuid5(_NS, f"{item.pseudonym}/{item.device_pseudonym}/{item.metric}/{item.t_ns}"))


def _code(metric: str, unit: str) -> dict[str, Any]:
    m = METRICS[metric]
    coding: list[dict[str, Any]] = [{"system": MDC_SYSTEM, "code": str(m.mdc), "display": m.mdc_ref}]
    loinc = m.loinc_for(unit)
    if loinc:
        coding.append({"system": LOINC_SYSTEM, "code": loinc})
    return {"coding": coding}


def _value(v: float, precision: int | None) -> float | int:
    if precision is not None and 0 <= precision <= 12:
        r = round(v, precision)
        return int(r) if precision == 0 and r.is_integer() else r
    return v


def observation(item: Item) -> dict[str, Any]:
    obs: dict[str, Any] = {"resourceType": "Observation", "id": observation_id(item)}
    if item.spectrum is not None:
        raise ValueError(f"{item.metric}: a spectrum has no FHIR R4 Observation form (served as CSV)")
    if item.waveform is not None:
        w = item.waveform
        obs["meta"] = {"profile": [PHD_RTSA]}
        obs["status"] = "final"
        obs["code"] = _code(w.metric, w.unit)
        obs["valueSampledData"] = {
            "origin": {"value": 0, "unit": w.unit, "system": UCUM_SYSTEM, "code": w.unit},
            "period": w.period_ns / 1e6,
            "factor": 1,
            "dimensions": 1,
            "data": " ".join(str(int(s)) for s in w.samples.tolist()),
        }
    else:
        r = item.reading
        assert r is not None
        profiles = [PHD_NUMERIC]
        if r.metric == "glucose_isf":
            profiles.append(CGM_READING_MOLAR if r.unit.startswith("mmol") else CGM_READING)
        obs["meta"] = {"profile": profiles}
        obs["status"] = "preliminary" if r.status else "final"
        if r.metric in _VITAL:
            obs["category"] = [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs",
                        }
                    ]
                }
            ]
        obs["code"] = _code(r.metric, r.unit)
        if METRICS[r.metric].research_only:
            obs["meta"].update(_RESEARCH_META)
            obs["status"] = "preliminary"
            obs["code"]["text"] = RESEARCH_ONLY_TEXT
            obs["note"] = [{"text": RESEARCH_ONLY_TEXT}]
        if r.value is not None:
            obs["valueQuantity"] = {
                "value": _value(r.value, None),
                "unit": r.unit,
                "system": UCUM_SYSTEM,
                "code": r.unit,
            }
        else:
            reason = ABSENT.get(r.absent or "", "unknown")
            obs["dataAbsentReason"] = {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": reason}]
            }
    # FHIR orders elements by definition; JSON order does not matter, but keep it readable
    obs["subject"] = {"identifier": {"system": PSEUDONYM_SYSTEM, "value": item.pseudonym}}
    obs["effectiveDateTime"] = iso(item.t_ns)
    obs["device"] = {"identifier": {"system": DEVICE_SYSTEM, "value": item.device_pseudonym}}
    return obs


def bundle(
    items: Sequence[Item], *, total: int, self_url: str, next_url: str | None, timestamp_ns: int
) -> dict[str, Any]:
    entries = [{"fullUrl": f"urn:uuid:{observation_id(i)}", "resource": observation(i)} for i in items]
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    digest = hashlib.sha256(self_url.encode()).hexdigest()[:32]
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(_NS, f"{digest}/{timestamp_ns}")),
        "type": "searchset",
        "timestamp": iso(timestamp_ns),
        "total": total,
        "link": links,
        "entry": entries,
    }


CSV_COLUMNS = (
    "patient", "device", "kind", "metric", "mdc", "loinc", "time", "value", "unit", "absent", "status",
    "period_ms", "samples", "envelope", "axis_start", "axis_step", "axis_unit",
)  # fmt: skip


def to_csv(items: Sequence[Item]) -> str:
    from gateway.dataspace.observations import KINDS

    kind_of = {m: k for k, ms in KINDS.items() for m in ms}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for i in items:
        m = METRICS[i.metric]
        axis = ["", "", ""]
        if i.spectrum is not None:
            sp = i.spectrum
            unit = sp.unit
            row = ["", unit, "", "", "", " ".join(repr(float(v)) for v in sp.values.tolist())]
            axis = [repr(sp.axis_start), repr(sp.axis_step), sp.axis_unit]
        elif i.waveform is not None:
            wf = i.waveform
            unit = wf.unit
            row = ["", unit, "", "", f"{wf.period_ns / 1e6:g}", " ".join(str(int(s)) for s in wf.samples.tolist())]
        else:
            r = i.reading
            assert r is not None
            unit = r.unit
            row = ["" if r.value is None else repr(r.value), unit, r.absent or "", str(r.status), "", ""]
        w.writerow(
            [i.pseudonym, i.device_pseudonym, kind_of.get(i.metric, ""), i.metric, m.mdc, m.loinc_for(unit) or "",
             iso(i.t_ns), *row, i.envelope_n, *axis]
        )  # fmt: skip
    return buf.getvalue()

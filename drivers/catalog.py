"""Characteristic UUID → decode-to-points, for the ``ds4h-gateway decode`` tool.

The same codecs and points functions the sessions use; only the clock differs: device time stamps
are taken as sent (no skew correction, UTC offset 0, ``DEVICE_UNCORRECTED``) and packets without a
time stamp get no time (``"time": null``). Each entry is a JSON-ready dict.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Callable
from typing import Any, Final

from drivers.blood_pressure import codec as bp
from drivers.blood_pressure import points as bp_points
from drivers.cgm import codec as cgm
from drivers.cgm import points as cgm_points
from drivers.cgm import socp
from drivers.device_info import codec as info
from drivers.device_info import points as info_points
from drivers.glucose import codec as glu
from drivers.glucose import points as glu_points
from drivers.heart_rate import codec as hr
from drivers.heart_rate import points as hr_points
from drivers.polar_pmd import CONTROL_POINT_UUID as PMD_CONTROL_POINT_UUID
from drivers.polar_pmd import DATA_UUID as PMD_DATA_UUID
from drivers.polar_pmd import codec as pmd
from drivers.polar_pmd import points as pmd_points
from drivers.pulse_oximeter import codec as plx
from drivers.pulse_oximeter import points as plx_points
from drivers.sdk import racp
from drivers.sdk.clock import DeviceClock
from drivers.sdk.gatt import DateTime, normalize_uuid
from drivers.sdk.ieee11073 import Number11073
from gateway.errors import PayloadError
from gateway.model import Reading, TimeQuality, Waveform
from gateway.vocabulary import metric as vocabulary_metric

DECODE_CLOCK: Final = DeviceClock(skew_ns=None, utc_offset_ns=0)
"""Device stamps as sent: no skew correction, UTC offset 0."""
CLOCK_NOTE: Final = "device time stamps are shown as sent: no clock correction, UTC offset 0"
_RECEIVED_NS: Final = 0
"""The notional receive time: readings timed relative to it have ``time`` null and a ``time_offset_ms``."""

Entry = dict[str, Any]
Decoder = Callable[[bytes], list[Entry]]


def _iso(ns: int) -> str:
    t = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=ns // 1000)
    frac = ns % 1_000_000_000
    text = t.replace(microsecond=0).isoformat()
    return f"{text}.{frac:09d}".rstrip("0") if frac else text


def reading_entry(r: Reading) -> Entry:
    received = bool(r.time_quality & TimeQuality.RECEIVE_TIME)
    out: Entry = {
        "metric": r.metric,
        "mdc": vocabulary_metric(r.metric).mdc,
        "value": r.value,
        "unit": r.unit,
        "precision": r.precision,
        "absent": r.absent,
        "time": None if received else _iso(r.device_time_ns),
        "time_quality": int(r.time_quality),
        "seq": r.seq,
        "status": r.status,
        "alert": r.alert,
    }
    if received and r.device_time_ns != _RECEIVED_NS:
        out["time_offset_ms"] = (r.device_time_ns - _RECEIVED_NS) / 1e6
    return out


def waveform_entry(w: Waveform) -> Entry:
    return {
        "metric": w.metric,
        "mdc": vocabulary_metric(w.metric).mdc,
        "unit": w.unit,
        "absent": None,
        "time": _iso(w.start_ns),
        "period_ns": w.period_ns,
        "samples": [int(s) for s in w.samples],
        "time_quality": int(w.time_quality),
    }


def _jsonable(v: Any) -> Any:
    if isinstance(v, Number11073):
        return {"value": v.value, "precision": v.precision, "absent": None if v.absent is None else v.absent.value}
    if isinstance(v, DateTime):
        return v.iso()
    if isinstance(v, enum.Enum):
        return int(v.value)
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}
    return v


def value_entry(obj: object) -> Entry:
    """A characteristic that carries no measurement (feature, status, control point…): its fields."""
    return {"type": type(obj).__name__, "fields": _jsonable(obj)}


def _readings(rs: tuple[Reading, ...]) -> list[Entry]:
    return [reading_entry(r) for r in rs]


def _hr(data: bytes) -> list[Entry]:
    return _readings(hr_points.readings(hr.HeartRateMeasurement.from_bytes(data), DECODE_CLOCK, _RECEIVED_NS))


def _bp(data: bytes) -> list[Entry]:
    return _readings(bp_points.readings(bp.BloodPressureMeasurement.from_bytes(data), DECODE_CLOCK, _RECEIVED_NS))


def _cuff(data: bytes) -> list[Entry]:
    live = bp_points.live_cuff_pressure(bp.IntermediateCuffPressure.from_bytes(data), _RECEIVED_NS)
    return [
        {
            "metric": "cuff_pressure",
            "mdc": live.mdc,
            "value": live.value,
            "unit": live.unit,
            "precision": live.precision,
            "absent": None if live.absent is None else live.absent.value,
            "time": None,
            "live_only": True,
        }
    ]


def _plx_spot(data: bytes) -> list[Entry]:
    m = plx.PlxSpotCheck.from_bytes(data)
    return _plx(m)


def _plx_cont(data: bytes) -> list[Entry]:
    return _plx(plx.PlxContinuous.from_bytes(data))


def _plx(m: plx.PlxSpotCheck | plx.PlxContinuous) -> list[Entry]:
    entries = _readings(plx_points.readings(m, DECODE_CLOCK, _RECEIVED_NS))
    for e in entries:
        e["flags"] = {"demo_or_test": plx_points.is_demo_or_test(m), "invalid": plx_points.is_invalid(m)}
    return entries


def _glucose(data: bytes) -> list[Entry]:
    m = glu.GlucoseMeasurement.from_bytes(data)
    if m.is_control_solution:
        entry = value_entry(m)
        entry["flags"] = {"control_solution": True, "context_follows": m.context_follows}
        return [entry]
    entries = _readings(glu_points.readings(m, DECODE_CLOCK, _RECEIVED_NS))
    for e in entries:
        e["flags"] = {"control_solution": False, "context_follows": m.context_follows}
    return entries


def _glucose_context(data: bytes) -> list[Entry]:
    ctx = glu.GlucoseContext.from_bytes(data)
    q = int(DECODE_CLOCK.received(_RECEIVED_NS)[1])
    return _readings(glu_points.context_readings(ctx, _RECEIVED_NS, q)) or [value_entry(ctx)]


def _cgm(data: bytes) -> list[Entry]:
    return _readings(cgm_points.readings(cgm.CgmMeasurement.from_bytes(data), None, DECODE_CLOCK, _RECEIVED_NS))


def _battery(data: bytes) -> list[Entry]:
    return _readings(info_points.battery_readings(info.BatteryLevel.from_bytes(data), DECODE_CLOCK, _RECEIVED_NS))


def _pmd_data(data: bytes) -> list[Entry]:
    frame = pmd.EcgFrame.from_bytes(data)
    entry = waveform_entry(pmd_points.waveform(frame, pmd_points.PolarTimebase.device_utc()))
    entry["note"] = "time assumes the strap clock was set to UTC (Polar epoch 2000-01-01)"
    return [entry]


def _racp(data: bytes) -> list[Entry]:
    if data[:1] in (b"\x05", b"\x06"):
        return [value_entry(racp.parse_racp_indication(data))]
    return [value_entry(racp.RacpRequest.from_bytes(data))]


def _pmd_cp(data: bytes) -> list[Entry]:
    if data[:1] == b"\x0f":
        return [value_entry(pmd.PmdFeatures.from_bytes(data))]
    resp = pmd.PmdControlPointResponse.from_bytes(data)
    entry = value_entry(resp)
    entry["status_name"] = resp.status_name
    return [entry]


def _value(parse: Callable[[bytes], object]) -> Decoder:
    return lambda data: [value_entry(parse(data))]


def _string(data: bytes) -> list[Entry]:
    return [{"type": "str", "fields": info.decode_string(data)}]


DECODERS: Final[dict[str, Decoder]] = {
    normalize_uuid(k): v
    for k, v in {
        "2a37": _hr,
        "2a38": _value(hr.BodySensorLocation.from_bytes),
        "2a35": _bp,
        "2a36": _cuff,
        "2a49": _value(bp.BloodPressureFeature.from_bytes),
        "2a5e": _plx_spot,
        "2a5f": _plx_cont,
        "2a60": _value(plx.PlxFeatures.from_bytes),
        "2a18": _glucose,
        "2a34": _glucose_context,
        "2a51": _value(glu.GlucoseFeature.from_bytes),
        "2a52": _racp,
        "2aa7": _cgm,
        "2aa8": _value(cgm.CgmFeature.from_bytes),
        "2aa9": _value(cgm.CgmStatus.from_bytes),
        "2aaa": _value(cgm.CgmSessionStartTime.from_bytes),
        "2aab": _value(cgm.CgmSessionRunTime.from_bytes),
        "2aac": _value(socp.SocpIndication.from_bytes),
        "2a2b": _value(info.CurrentTime.from_bytes),
        "2a0f": _value(info.LocalTimeInformation.from_bytes),
        "2a19": _battery,
        "2a23": _value(info.SystemId.from_bytes),
        "2a50": _value(info.PnpId.from_bytes),
        **{k: _string for k in ("2a24", "2a25", "2a26", "2a27", "2a28", "2a29")},
        PMD_CONTROL_POINT_UUID: _pmd_cp,
        PMD_DATA_UUID: _pmd_data,
    }.items()
}


def parse_hex(parts: list[str]) -> bytes:
    """Hex digits, possibly split over several arguments / spaces / colons."""
    text = "".join(parts).replace(" ", "").replace(":", "")
    if text.lower().startswith("0x"):
        text = text[2:]
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise PayloadError(f"not hex: {' '.join(parts)!r}") from None


def decode(characteristic: str, data: bytes) -> list[Entry]:
    """Decode one notification/indication/read value of ``characteristic`` to JSON-ready entries."""
    uuid = normalize_uuid(characteristic)
    decoder = DECODERS.get(uuid)
    if decoder is None:
        raise PayloadError(
            f"unknown characteristic {characteristic} ({uuid}): no decoder", reason="unknown_characteristic"
        )
    return decoder(data)

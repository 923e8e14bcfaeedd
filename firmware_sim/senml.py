"""SenML (RFC 8428) packs as a ds4h 5G device sends them (docs/mqtt.md), in CBOR or JSON.

A frame is one pack: the header records ``boot`` / ``seq`` / ``unacked`` under the base name
``urn:dev:ds4h:{device_id}:``, then the measurements. Written for the simulator only: it knows the
wire format, not the gateway's code.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
import numpy as np
import numpy.typing as npt

CBOR = "application/senml+cbor"
JSON = "application/senml+json"
_CBOR_KEYS = {"bver": -1, "bn": -2, "bt": -3, "bu": -4, "bv": -5, "bs": -6, "n": 0, "u": 1, "v": 2, "vs": 3}
_CBOR_KEYS.update({"vb": 4, "s": 5, "t": 6, "ut": 7, "vd": 8})


def base_name(device_id: str) -> str:
    return f"urn:dev:ds4h:{device_id}:"


@dataclass(frozen=True, slots=True)
class Header:
    boot: str
    seq: int
    unacked: int


Record = dict[str, Any]


def frame_records(device_id: str, header: Header | None, t_s: float, measurements: Sequence[Record]) -> list[Record]:
    """A pack: base name and base time on the first record, header records, then ``measurements``."""
    first: Record = {"bn": base_name(device_id), "bt": t_s}
    records: list[Record] = []
    if header is not None:
        records += [
            {"n": "boot", "vs": header.boot},
            {"n": "seq", "v": header.seq},
            {"n": "unacked", "v": header.unacked},
        ]
    records += list(measurements)
    records[0] = {**first, **records[0]}
    return records


def ecg_records(samples: npt.NDArray[np.int32], fs: int, lead: str = "MDC_ECG_ELEC_POTL") -> list[Record]:
    """protocols.md §10's compact ECG frame: int16 little-endian µV when they fit, else int24."""
    lo, hi = (int(samples.min()), int(samples.max())) if samples.size else (0, 0)
    if lo >= -32768 and hi <= 32767:
        name, data = "ecg:i16le", samples.astype("<i2").tobytes()
    else:
        raw = samples.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
        name, data = "ecg:i24le", raw.tobytes()
    return [
        {"n": "ecg:fs", "u": "Hz", "v": fs},
        {"n": "ecg:scale", "u": "V", "v": 1e-6},
        {"n": "ecg:lead", "vs": lead},
        {"n": name, "vd": data},
    ]


def nig_records(s21_frame: bytes, estimate_mg_dl: float) -> list[Record]:
    """The research glucose sensor's sweep (docs/research-sensor.md): the binary S21 frame and the
    device's research-only estimate."""
    return [
        {"n": "nig:s21", "vd": s21_frame},
        {"n": "nig:estimate", "u": "mg/dL", "v": round(float(estimate_mg_dl), 1)},
    ]


def encode(records: Sequence[Record], content_type: str = CBOR) -> bytes:
    if content_type == CBOR:
        return cbor2.dumps([{_CBOR_KEYS[k]: v for k, v in r.items()} for r in records])
    out = []
    for r in records:
        out.append({k: (_b64(v) if k == "vd" else v) for k, v in r.items()})
    return json.dumps(out, separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

"""SenML (RFC 8428) for 5G/MQTT devices: the pure decoder and the gateway's SenML profile.

:mod:`drivers.senml.codec` decodes a JSON or CBOR pack into resolved records (RFC 8428 rules only);
:mod:`drivers.senml.profile` maps resolved records onto the gateway's vocabulary (docs/mqtt.md):
frame header, readings in clinical units, ECG waveforms. Neither does I/O.
"""

from __future__ import annotations

from drivers.senml.codec import SENML_CBOR, SENML_JSON, SenmlRecord, decode_pack
from drivers.senml.profile import CANONICAL_PREFIX, REASONS, Frame, decode_frame, frame_from_records

__all__ = [
    "CANONICAL_PREFIX",
    "REASONS",
    "SENML_CBOR",
    "SENML_JSON",
    "Frame",
    "SenmlRecord",
    "decode_frame",
    "decode_pack",
    "frame_from_records",
]

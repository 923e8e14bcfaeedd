"""CGM Specific Ops Control Point 0x2AAC (protocols.md §6.5): requests and indications. Pure.

With E2E-CRC the collector appends the CRC to its writes (``to_bytes(crc=True)``) and the sensor's
indications carry one (checked by :meth:`SocpIndication.from_bytes`).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from drivers.cgm.crc import split_crc, with_crc
from drivers.sdk.gatt import ByteReader
from drivers.sdk.ieee11073 import Number11073, decode_sfloat, encode_number_sfloat
from gateway.errors import PayloadError


class SocpOpCode(enum.IntEnum):
    SET_COMMUNICATION_INTERVAL = 1
    GET_COMMUNICATION_INTERVAL = 2
    COMMUNICATION_INTERVAL_RESPONSE = 3
    SET_CALIBRATION_VALUE = 4
    GET_CALIBRATION_VALUE = 5
    CALIBRATION_VALUE_RESPONSE = 6
    SET_PATIENT_HIGH_ALERT = 7
    GET_PATIENT_HIGH_ALERT = 8
    PATIENT_HIGH_ALERT_RESPONSE = 9
    SET_PATIENT_LOW_ALERT = 10
    GET_PATIENT_LOW_ALERT = 11
    PATIENT_LOW_ALERT_RESPONSE = 12
    SET_HYPO_ALERT = 13
    GET_HYPO_ALERT = 14
    HYPO_ALERT_RESPONSE = 15
    SET_HYPER_ALERT = 16
    GET_HYPER_ALERT = 17
    HYPER_ALERT_RESPONSE = 18
    SET_RATE_OF_DECREASE_ALERT = 19
    GET_RATE_OF_DECREASE_ALERT = 20
    RATE_OF_DECREASE_ALERT_RESPONSE = 21
    SET_RATE_OF_INCREASE_ALERT = 22
    GET_RATE_OF_INCREASE_ALERT = 23
    RATE_OF_INCREASE_ALERT_RESPONSE = 24
    RESET_DEVICE_SPECIFIC_ALERT = 25
    START_SESSION = 26
    STOP_SESSION = 27
    RESPONSE_CODE = 28


class SocpResponseCode(enum.IntEnum):
    SUCCESS = 1
    OP_CODE_NOT_SUPPORTED = 2
    INVALID_OPERAND = 3
    PROCEDURE_NOT_COMPLETED = 4
    PARAMETER_OUT_OF_RANGE = 5


LEVEL_RESPONSES: Final = frozenset({9, 12, 15, 18, 21, 24})
CALIBRATION_RECORD_SIZE: Final = 10
_OPERAND_SIZE: Final[dict[int, int]] = {
    SocpOpCode.COMMUNICATION_INTERVAL_RESPONSE: 1,
    SocpOpCode.CALIBRATION_VALUE_RESPONSE: CALIBRATION_RECORD_SIZE,
    SocpOpCode.RESPONSE_CODE: 2,
    **{op: 2 for op in LEVEL_RESPONSES},
}


@dataclass(frozen=True, slots=True)
class CalibrationRecord:
    """The 10-octet calibration record (type/location packed ``location << 4 | type``)."""

    glucose_mg_dl: Number11073
    time_min: int
    sample_type: int
    sample_location: int
    next_time_min: int
    record_number: int
    status: int

    @classmethod
    def from_bytes(cls, data: bytes) -> CalibrationRecord:
        r = ByteReader(data, "CGM calibration record")
        glucose, t = r.sfloat("calibration glucose concentration"), r.u16("calibration time")
        type_loc = r.u8("type and sample location")
        nxt, number, status = r.u16("next calibration time"), r.u16("record number"), r.u8("calibration status")
        return cls(glucose, t, type_loc & 0x0F, type_loc >> 4, nxt, number, status)

    def to_bytes(self) -> bytes:
        return struct.pack(
            "<HHBHHB",
            encode_number_sfloat(self.glucose_mg_dl),
            self.time_min,
            (self.sample_location & 0xF) << 4 | (self.sample_type & 0xF),
            self.next_time_min,
            self.record_number,
            self.status,
        )


@dataclass(frozen=True, slots=True)
class SocpRequest:
    """A request the collector writes: op code and operand."""

    op: int
    operand: bytes = b""

    def to_bytes(self, *, crc: bool = False) -> bytes:
        body = bytes((self.op,)) + self.operand
        return with_crc(body) if crc else body

    @classmethod
    def start_session(cls) -> SocpRequest:
        return cls(SocpOpCode.START_SESSION)

    @classmethod
    def stop_session(cls) -> SocpRequest:
        return cls(SocpOpCode.STOP_SESSION)

    @classmethod
    def set_communication_interval(cls, minutes: int) -> SocpRequest:
        if not 0 <= minutes <= 0xFF:
            raise PayloadError(f"communication interval {minutes} min does not fit in one octet")
        return cls(SocpOpCode.SET_COMMUNICATION_INTERVAL, bytes((minutes,)))

    @classmethod
    def get_communication_interval(cls) -> SocpRequest:
        return cls(SocpOpCode.GET_COMMUNICATION_INTERVAL)

    @classmethod
    def set_level(cls, op: SocpOpCode, level: Number11073) -> SocpRequest:
        """One of the ``SET_…_ALERT`` op codes with its SFLOAT level (mg/dL or (mg/dL)/min)."""
        return cls(op, struct.pack("<H", encode_number_sfloat(level)))

    @classmethod
    def set_calibration(cls, record: CalibrationRecord) -> SocpRequest:
        return cls(SocpOpCode.SET_CALIBRATION_VALUE, record.to_bytes())

    @classmethod
    def get_calibration(cls, record_number: int = 0xFFFF) -> SocpRequest:
        """0xFFFF = the last calibration record."""
        return cls(SocpOpCode.GET_CALIBRATION_VALUE, struct.pack("<H", record_number))


@dataclass(frozen=True, slots=True)
class SocpIndication:
    """A sensor → collector indication: response code, communication interval, level or calibration."""

    op: int
    operand: bytes

    @classmethod
    def from_bytes(cls, data: bytes, *, crc: bool | None = None) -> SocpIndication:
        data = bytes(data)
        op = ByteReader(data, "CGM Specific Ops Control Point").u8("op code")
        if op not in _OPERAND_SIZE:
            raise PayloadError(f"CGM Specific Ops Control Point: op code {op} is not an indication")
        body = split_crc(data, 1 + _OPERAND_SIZE[op], "CGM Specific Ops Control Point", crc)
        return cls(op, body[1:])

    @property
    def response(self) -> tuple[int, int] | None:
        """(request op code, response code) of a response-code indication."""
        return (self.operand[0], self.operand[1]) if self.op == SocpOpCode.RESPONSE_CODE else None

    @property
    def communication_interval_min(self) -> int | None:
        return self.operand[0] if self.op == SocpOpCode.COMMUNICATION_INTERVAL_RESPONSE else None

    @property
    def level(self) -> Number11073 | None:
        return decode_sfloat(struct.unpack_from("<H", self.operand)[0]) if self.op in LEVEL_RESPONSES else None

    @property
    def calibration(self) -> CalibrationRecord | None:
        if self.op != SocpOpCode.CALIBRATION_VALUE_RESPONSE:
            return None
        return CalibrationRecord.from_bytes(self.operand)

    def to_bytes(self, *, crc: bool = False) -> bytes:
        body = bytes((self.op,)) + self.operand
        return with_crc(body) if crc else body

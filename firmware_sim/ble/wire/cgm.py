"""CGM Measurement 0x2AA7, Feature 0x2AA8, Status 0x2AA9, Session Start Time 0x2AAA, Session Run
Time 0x2AAB and Specific Ops Control Point 0x2AAC (protocols.md §6)."""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from firmware_sim.ble.wire.crc import crc16_mcrf4xx, with_crc
from firmware_sim.ble.wire.ieee11073 import Value, sfloat
from firmware_sim.ble.wire.time_fields import date_time


class CgmFeature(enum.IntFlag):
    CALIBRATION = 1 << 0
    PATIENT_HIGH_LOW_ALERTS = 1 << 1
    HYPO_ALERTS = 1 << 2
    HYPER_ALERTS = 1 << 3
    RATE_ALERTS = 1 << 4
    DEVICE_SPECIFIC_ALERT = 1 << 5
    SENSOR_MALFUNCTION = 1 << 6
    TEMPERATURE_HIGH_LOW = 1 << 7
    RESULT_HIGH_LOW = 1 << 8
    LOW_BATTERY = 1 << 9
    SENSOR_TYPE_ERROR = 1 << 10
    GENERAL_DEVICE_FAULT = 1 << 11
    E2E_CRC = 1 << 12
    MULTIPLE_BONDS = 1 << 13
    MULTIPLE_SESSIONS = 1 << 14
    TREND = 1 << 15
    QUALITY = 1 << 16


@dataclass(frozen=True, slots=True)
class CgmMeasurement:
    """One record. Annunciation octets are sent Status → Cal/Temp → Warning (§6.1)."""

    glucose: Value
    """mg/dL."""
    time_offset_min: int
    status: int | None = None
    cal_temp: int | None = None
    warning: int | None = None
    trend: Value | None = None
    quality: Value | None = None

    def to_bytes(self, *, e2e_crc: bool, corrupt_crc: bool = False) -> bytes:
        flags = 0
        body = bytearray(sfloat(self.glucose) + struct.pack("<H", self.time_offset_min))
        for bit, octet in ((0x80, self.status), (0x40, self.cal_temp), (0x20, self.warning)):
            if octet is not None:
                flags |= bit
                body.append(octet)
        if self.trend is not None:
            flags |= 0x01
            body += sfloat(self.trend)
        if self.quality is not None:
            flags |= 0x02
            body += sfloat(self.quality)
        size = 2 + len(body) + (2 if e2e_crc else 0)
        record = bytes([size, flags]) + bytes(body)
        if not e2e_crc:
            return record
        crc = crc16_mcrf4xx(record) ^ (0xFFFF if corrupt_crc else 0)
        return record + struct.pack("<H", crc)


def cgm_notification(records: Iterable[bytes]) -> bytes:
    """Several encoded records back to back in one notification."""
    return b"".join(records)


def _maybe_crc(data: bytes, e2e_crc: bool) -> bytes:
    return with_crc(data) if e2e_crc else data


def cgm_feature(features: CgmFeature, type_: int = 9, location: int = 5) -> bytes:
    """Always carries a CRC field: the CRC with E2E-CRC, 0xFFFF without."""
    data = struct.pack("<I", int(features))[:3] + bytes([(type_ & 0x0F) | ((location & 0x0F) << 4)])
    return with_crc(data) if features & CgmFeature.E2E_CRC else data + b"\xff\xff"


def cgm_status(time_offset_min: int, status: int, cal_temp: int, warning: int, *, e2e_crc: bool) -> bytes:
    return _maybe_crc(struct.pack("<H", time_offset_min) + bytes([status, cal_temp, warning]), e2e_crc)


def cgm_session_run_time(hours: int, *, e2e_crc: bool) -> bytes:
    return _maybe_crc(struct.pack("<H", hours), e2e_crc)


def cgm_session_start_time(start: datetime, time_zone_quarters: int, dst: int, *, e2e_crc: bool) -> bytes:
    return _maybe_crc(date_time(start) + struct.pack("<bB", time_zone_quarters, dst), e2e_crc)


class SocpOpCode(enum.IntEnum):
    SET_COMMUNICATION_INTERVAL = 1
    GET_COMMUNICATION_INTERVAL = 2
    COMMUNICATION_INTERVAL_RESPONSE = 3
    START_SESSION = 26
    STOP_SESSION = 27
    RESPONSE_CODE = 28


class SocpResponse(enum.IntEnum):
    SUCCESS = 1
    OP_CODE_NOT_SUPPORTED = 2
    INVALID_OPERAND = 3
    PROCEDURE_NOT_COMPLETED = 4
    PARAMETER_OUT_OF_RANGE = 5


def socp(op: int, operand: bytes = b"", *, e2e_crc: bool) -> bytes:
    """A SOCP value (request or response): op code, operand, CRC when E2E-CRC is supported."""
    return _maybe_crc(bytes([op]) + operand, e2e_crc)


def socp_response(request_op: int, code: SocpResponse, *, e2e_crc: bool) -> bytes:
    return socp(SocpOpCode.RESPONSE_CODE, bytes([request_op, code]), e2e_crc=e2e_crc)

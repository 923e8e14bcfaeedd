"""Record Access Control Point 0x2A52 (protocols.md §5.4), shared by GLS, CGMS and PLXS.

Requests are ``OpCode Operator [FilterType Operand…]``; the server answers with an indication on
the same characteristic: a number of records (op 0x05) or a response code (op 0x06).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from drivers.sdk.gatt import ByteReader, DateTime
from gateway.errors import PayloadError


class RacpOpCode(enum.IntEnum):
    REPORT_STORED_RECORDS = 0x01
    DELETE_STORED_RECORDS = 0x02
    ABORT = 0x03
    REPORT_NUMBER_OF_RECORDS = 0x04
    NUMBER_OF_RECORDS_RESPONSE = 0x05
    RESPONSE_CODE = 0x06


class RacpOperator(enum.IntEnum):
    NULL = 0x00
    ALL = 0x01
    LESS_OR_EQUAL = 0x02
    GREATER_OR_EQUAL = 0x03
    WITHIN_RANGE = 0x04
    FIRST = 0x05
    LAST = 0x06


class RacpFilter(enum.IntEnum):
    """Filter types. GLS: 1 sequence number, 2 user-facing time; CGMS: 1 time offset (minutes)."""

    SEQUENCE_NUMBER = 0x01
    TIME_OFFSET = 0x01
    USER_FACING_TIME = 0x02


class RacpResponseCode(enum.IntEnum):
    SUCCESS = 0x01
    OP_CODE_NOT_SUPPORTED = 0x02
    INVALID_OPERATOR = 0x03
    OPERATOR_NOT_SUPPORTED = 0x04
    INVALID_OPERAND = 0x05
    NO_RECORDS_FOUND = 0x06
    ABORT_UNSUCCESSFUL = 0x07
    PROCEDURE_NOT_COMPLETED = 0x08
    OPERAND_NOT_SUPPORTED = 0x09


@dataclass(frozen=True, slots=True)
class RacpRequest:
    """A request the collector writes. ``operand`` holds the filter type octet and its operand(s)."""

    op: int
    operator: int
    operand: bytes = b""

    def to_bytes(self) -> bytes:
        return bytes((self.op, self.operator)) + self.operand

    @classmethod
    def from_bytes(cls, data: bytes) -> RacpRequest:
        r = ByteReader(data, "RACP request")
        return cls(r.u8("op code"), r.u8("operator"), r.rest())

    # --- builders ---------------------------------------------------------------------------------
    @classmethod
    def report_all(cls) -> RacpRequest:
        return cls(RacpOpCode.REPORT_STORED_RECORDS, RacpOperator.ALL)

    @classmethod
    def report_first(cls) -> RacpRequest:
        return cls(RacpOpCode.REPORT_STORED_RECORDS, RacpOperator.FIRST)

    @classmethod
    def report_last(cls) -> RacpRequest:
        return cls(RacpOpCode.REPORT_STORED_RECORDS, RacpOperator.LAST)

    @classmethod
    def report_from_sequence(cls, seq: int) -> RacpRequest:
        """Glucose: records with sequence number ≥ ``seq``."""
        return cls(RacpOpCode.REPORT_STORED_RECORDS, RacpOperator.GREATER_OR_EQUAL, _u16_operand(seq))

    @classmethod
    def report_from_time_offset(cls, minutes: int) -> RacpRequest:
        """CGM: records with time offset ≥ ``minutes``."""
        return cls(RacpOpCode.REPORT_STORED_RECORDS, RacpOperator.GREATER_OR_EQUAL, _u16_operand(minutes))

    @classmethod
    def report_from_time(cls, when: DateTime) -> RacpRequest:
        """Glucose: records with user-facing time ≥ ``when``."""
        operand = bytes((RacpFilter.USER_FACING_TIME,)) + when.to_bytes()
        return cls(RacpOpCode.REPORT_STORED_RECORDS, RacpOperator.GREATER_OR_EQUAL, operand)

    @classmethod
    def count_all(cls) -> RacpRequest:
        return cls(RacpOpCode.REPORT_NUMBER_OF_RECORDS, RacpOperator.ALL)

    @classmethod
    def count_from_sequence(cls, seq: int) -> RacpRequest:
        return cls(RacpOpCode.REPORT_NUMBER_OF_RECORDS, RacpOperator.GREATER_OR_EQUAL, _u16_operand(seq))

    @classmethod
    def count_from_time_offset(cls, minutes: int) -> RacpRequest:
        return cls(RacpOpCode.REPORT_NUMBER_OF_RECORDS, RacpOperator.GREATER_OR_EQUAL, _u16_operand(minutes))

    @classmethod
    def delete_all(cls) -> RacpRequest:
        return cls(RacpOpCode.DELETE_STORED_RECORDS, RacpOperator.ALL)

    @classmethod
    def abort(cls) -> RacpRequest:
        return cls(RacpOpCode.ABORT, RacpOperator.NULL)


def _u16_operand(value: int) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise PayloadError(f"RACP operand {value} does not fit in 16 bits")
    return struct.pack("<BH", 0x01, value)


@dataclass(frozen=True, slots=True)
class RacpNumberOfRecords:
    """Indication ``05 00 <count u16>``."""

    count: int

    def to_bytes(self) -> bytes:
        return struct.pack("<BBH", RacpOpCode.NUMBER_OF_RECORDS_RESPONSE, 0, self.count)


@dataclass(frozen=True, slots=True)
class RacpResponse:
    """Indication ``06 00 <request op> <response code>``."""

    request_op: int
    code: int

    @property
    def success(self) -> bool:
        return self.code == RacpResponseCode.SUCCESS

    @property
    def no_records(self) -> bool:
        return self.code == RacpResponseCode.NO_RECORDS_FOUND

    def to_bytes(self) -> bytes:
        return bytes((RacpOpCode.RESPONSE_CODE, 0, self.request_op, self.code))


def parse_racp_indication(data: bytes) -> RacpNumberOfRecords | RacpResponse:
    """A server→client RACP indication; anything but op 0x05 / 0x06 is malformed."""
    r = ByteReader(data, "RACP indication")
    op = r.u8("op code")
    r.u8("operator")
    if op == RacpOpCode.NUMBER_OF_RECORDS_RESPONSE:
        return RacpNumberOfRecords(r.u16("number of records"))
    if op == RacpOpCode.RESPONSE_CODE:
        return RacpResponse(r.u8("request op code"), r.u8("response code"))
    raise PayloadError(f"RACP indication: op code {op:#04x} is not a response")

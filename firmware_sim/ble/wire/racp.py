"""Record Access Control Point 0x2A52 (protocols.md §5.4): requests (collector side, for tests
and tools) and responses (device side), plus the device's parser of a written request."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass


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
    SEQUENCE_NUMBER = 0x01
    """GLS: sequence number; CGMS: time offset (both uint16)."""
    USER_FACING_TIME = 0x02


class RacpResponse(enum.IntEnum):
    SUCCESS = 0x01
    OP_CODE_NOT_SUPPORTED = 0x02
    INVALID_OPERATOR = 0x03
    OPERATOR_NOT_SUPPORTED = 0x04
    INVALID_OPERAND = 0x05
    NO_RECORDS_FOUND = 0x06
    ABORT_UNSUCCESSFUL = 0x07
    PROCEDURE_NOT_COMPLETED = 0x08
    OPERAND_NOT_SUPPORTED = 0x09


def racp_request(
    op: RacpOpCode, operator: RacpOperator = RacpOperator.NULL, *operands: int, filter_type: int | None = None
) -> bytes:
    """A request; operands (uint16) need a filter type (default: sequence number / time offset)."""
    out = bytes([op, operator])
    if operands:
        ft = RacpFilter.SEQUENCE_NUMBER if filter_type is None else filter_type
        out += bytes([ft]) + struct.pack(f"<{len(operands)}H", *operands)
    return out


def racp_number_of_records(count: int) -> bytes:
    return bytes([RacpOpCode.NUMBER_OF_RECORDS_RESPONSE, RacpOperator.NULL]) + struct.pack("<H", count)


def racp_response_code(request_op: int, code: RacpResponse) -> bytes:
    return bytes([RacpOpCode.RESPONSE_CODE, RacpOperator.NULL, request_op, code])


class RacpRequestError(Exception):
    """A written request the device answers with a RACP response code (not an ATT error)."""

    def __init__(self, op: int, code: RacpResponse) -> None:
        super().__init__(f"RACP op {op:#04x}: {code.name}")
        self.op = op
        self.code = code


@dataclass(frozen=True, slots=True)
class RacpRequest:
    """A parsed request: ``bounds`` is the inclusive key range selected by the operator
    (``None`` ends = open), or ``first``/``last``."""

    op: RacpOpCode
    operator: RacpOperator
    low: int | None = None
    high: int | None = None

    @classmethod
    def parse(cls, data: bytes) -> RacpRequest:
        """Parse a write; raises :class:`RacpRequestError` with the response code to send."""
        if len(data) < 2:
            raise RacpRequestError(data[0] if data else 0, RacpResponse.INVALID_OPERAND)
        op_raw, operator_raw = data[0], data[1]
        try:
            op = RacpOpCode(op_raw)
        except ValueError:
            raise RacpRequestError(op_raw, RacpResponse.OP_CODE_NOT_SUPPORTED) from None
        if op in (RacpOpCode.NUMBER_OF_RECORDS_RESPONSE, RacpOpCode.RESPONSE_CODE):
            raise RacpRequestError(op_raw, RacpResponse.OP_CODE_NOT_SUPPORTED)
        if op is RacpOpCode.ABORT:
            if operator_raw != RacpOperator.NULL:
                raise RacpRequestError(op_raw, RacpResponse.INVALID_OPERATOR)
            return cls(op, RacpOperator.NULL)
        try:
            operator = RacpOperator(operator_raw)
        except ValueError:
            raise RacpRequestError(op_raw, RacpResponse.OPERATOR_NOT_SUPPORTED) from None
        if operator is RacpOperator.NULL:
            raise RacpRequestError(op_raw, RacpResponse.INVALID_OPERATOR)
        operand = data[2:]
        if operator in (RacpOperator.ALL, RacpOperator.FIRST, RacpOperator.LAST):
            if operand:
                raise RacpRequestError(op_raw, RacpResponse.INVALID_OPERAND)
            return cls(op, operator)
        n = 2 if operator is RacpOperator.WITHIN_RANGE else 1
        if len(operand) < 1:
            raise RacpRequestError(op_raw, RacpResponse.INVALID_OPERAND)
        if operand[0] != RacpFilter.SEQUENCE_NUMBER:
            raise RacpRequestError(op_raw, RacpResponse.OPERAND_NOT_SUPPORTED)
        if len(operand) != 1 + 2 * n:
            raise RacpRequestError(op_raw, RacpResponse.INVALID_OPERAND)
        values = struct.unpack_from(f"<{n}H", operand, 1)
        if operator is RacpOperator.LESS_OR_EQUAL:
            return cls(op, operator, None, values[0])
        if operator is RacpOperator.GREATER_OR_EQUAL:
            return cls(op, operator, values[0], None)
        if values[0] > values[1]:
            raise RacpRequestError(op_raw, RacpResponse.INVALID_OPERAND)
        return cls(op, operator, values[0], values[1])

    def select(self, keys: list[int]) -> list[int]:
        """Indices of the records (given by their keys, oldest first) the request selects."""
        if not keys:
            return []
        if self.operator is RacpOperator.FIRST:
            return [0]
        if self.operator is RacpOperator.LAST:
            return [len(keys) - 1]
        return [
            i
            for i, k in enumerate(keys)
            if (self.low is None or k >= self.low) and (self.high is None or k <= self.high)
        ]

"""Faults a simulated device can be told to show (per device, on demand)."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from firmware_sim.ble.peripheral import SimPeripheral


class FaultKind(enum.StrEnum):
    DISCONNECT_MID_RACP = "disconnect-mid-racp"
    """Drop the link after ``k`` records of the next RACP report (one shot)."""
    GARBAGE = "garbage"
    """The next ``n`` measurement notifications carry random/short bytes instead."""
    BAD_CRC = "bad-crc"
    """CGM: the next ``n`` records carry a wrong E2E-CRC."""
    SEQUENCE_RESET = "sequence-reset"
    """Glucose meter: forget every record and restart sequence numbers at 0."""
    HANG = "hang"
    """Stop answering reads and control-point writes, stop notifying, until resumed."""
    CONTROL_SOLUTION = "control-solution"
    """Glucose meter: store ``n`` control-solution records (type 10, location 4)."""


@dataclass
class Faults:
    """The armed faults of one device; the device consumes them as it goes."""

    racp_disconnect_after: int | None = None
    garbage: int = 0
    bad_crc: int = 0
    _responsive: asyncio.Event | None = field(default=None, repr=False)
    _hung: bool = False

    @property
    def hung(self) -> bool:
        return self._hung

    def hang(self) -> None:
        self._hung = True
        if self._responsive is not None:
            self._responsive.clear()

    def resume(self) -> None:
        self._hung = False
        if self._responsive is not None:
            self._responsive.set()

    async def wait_responsive(self) -> None:
        """Return at once unless hung; otherwise wait until :meth:`resume`."""
        if not self._hung:
            return
        if self._responsive is None:
            self._responsive = asyncio.Event()
        await self._responsive.wait()

    def take_garbage(self) -> bool:
        if self.garbage <= 0:
            return False
        self.garbage -= 1
        return True

    def take_bad_crc(self) -> bool:
        if self.bad_crc <= 0:
            return False
        self.bad_crc -= 1
        return True


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """``KIND[=N][@TARGET]``: TARGET is a profile, a device name or serial (default: every device
    the fault applies to); N is the count (garbage, bad-crc, control-solution), the record count
    (disconnect-mid-racp) or the records taken after a sequence reset."""

    kind: FaultKind
    count: int = 1
    target: str | None = None

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        spec, _, target = text.partition("@")
        kind, _, count = spec.partition("=")
        try:
            fault = FaultKind(kind)
        except ValueError:
            raise ValueError(f"unknown fault {kind!r}; one of: {', '.join(k.value for k in FaultKind)}") from None
        return cls(fault, int(count) if count else 1, target or None)

    def matches(self, p: SimPeripheral) -> bool:
        ident = p.identity
        return self.target is None or self.target in (ident.profile.value, ident.name, ident.serial, ident.address)

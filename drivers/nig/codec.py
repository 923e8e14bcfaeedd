"""The S21 frame of the research non-invasive glucose sensor (docs/research-sensor.md), bytes ⇄ value.

Little-endian, 24-byte header then two int16 arrays::

    offset size field
    0      2    magic b"NI"
    2      1    version (1)
    3      1    flags (0; other values are reserved)
    4      2    K: frequency points, uint16, 1 … 4096
    6      2    magnitude scale: counts per dB, uint16 ≥ 1 (100: 0.01 dB steps)
    8      2    phase scale: counts per degree, uint16 ≥ 1 (100: 0.01° steps)
    10     2    reserved (0)
    12     8    f_start: frequency of point 0, Hz, uint64
    20     4    f_step: spacing of the points, Hz, uint32 ≥ 1
    24     2K   magnitude of S21, int16 counts (dB × magnitude scale)
    24+2K  2K   phase of S21, int16 counts (degrees × phase scale)

Pure: no I/O. Every failure is a :class:`~gateway.errors.PayloadError` with reason ``malformed``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from gateway.errors import PayloadError

MAGIC: Final = b"NI"
VERSION: Final = 1
HEADER: Final = struct.Struct("<2sBBHHHHQI")
HEADER_SIZE: Final = HEADER.size  # 24
MAX_POINTS: Final = 4096
MAX_FREQUENCY_HZ: Final = 2**53
"""The last point's frequency must stay below 2**53 Hz (exact as a float64 axis)."""
_LE_I16: Final = np.dtype("<i2")

I16Array = npt.NDArray[np.int16]
F64Array = npt.NDArray[np.float64]


def _bad(what: str) -> PayloadError:
    return PayloadError(f"nig:s21 frame: {what}", reason="malformed")


@dataclass(frozen=True, slots=True, eq=False)
class S21Frame:
    """One multi-frequency S21 sweep: raw int16 counts and the scales that turn them into dB and degrees."""

    f_start_hz: int
    f_step_hz: int
    magnitude_scale: int
    """Counts per dB."""
    phase_scale: int
    """Counts per degree."""
    magnitude_counts: I16Array
    phase_counts: I16Array

    def __post_init__(self) -> None:
        k = self.magnitude_counts.size
        if self.magnitude_counts.dtype != np.int16 or self.phase_counts.dtype != np.int16:
            raise _bad("counts must be int16 arrays")
        if self.magnitude_counts.ndim != 1 or self.phase_counts.shape != (k,):
            raise _bad("magnitude and phase must be 1-D arrays of the same length")
        if not 1 <= k <= MAX_POINTS:
            raise _bad(f"{k} frequency points; 1 to {MAX_POINTS} allowed")
        if not (1 <= self.magnitude_scale <= 0xFFFF and 1 <= self.phase_scale <= 0xFFFF):
            raise _bad("scales must be 1 to 65535 counts per unit")
        if not (self.f_start_hz >= 0 and 1 <= self.f_step_hz <= 0xFFFF_FFFF):
            raise _bad("f_start must be >= 0 Hz and f_step 1 Hz to 2**32-1 Hz")
        if self.f_start_hz + (k - 1) * self.f_step_hz >= MAX_FREQUENCY_HZ:
            raise _bad("the last frequency point is beyond 2**53 Hz")

    @property
    def points(self) -> int:
        return int(self.magnitude_counts.size)

    def frequencies_hz(self) -> npt.NDArray[np.int64]:
        return self.f_start_hz + np.arange(self.points, dtype=np.int64) * self.f_step_hz

    def magnitude_db(self) -> F64Array:
        return self.magnitude_counts.astype(np.float64) / self.magnitude_scale

    def phase_deg(self) -> F64Array:
        return self.phase_counts.astype(np.float64) / self.phase_scale

    @classmethod
    def from_values(
        cls,
        f_start_hz: int,
        f_step_hz: int,
        magnitude_db: npt.ArrayLike,
        phase_deg: npt.ArrayLike,
        *,
        magnitude_scale: int = 100,
        phase_scale: int = 100,
    ) -> S21Frame:
        """Quantise dB / degree values to counts (rounded, clipped to int16)."""
        mag = np.clip(np.rint(np.asarray(magnitude_db, dtype=np.float64) * magnitude_scale), -32768, 32767)
        ph = np.clip(np.rint(np.asarray(phase_deg, dtype=np.float64) * phase_scale), -32768, 32767)
        return cls(f_start_hz, f_step_hz, magnitude_scale, phase_scale, mag.astype(np.int16), ph.astype(np.int16))

    @classmethod
    def from_bytes(cls, data: bytes) -> S21Frame:
        if len(data) < HEADER_SIZE:
            raise _bad(f"{len(data)} bytes; the header alone is {HEADER_SIZE}")
        magic, version, flags, k, mag_scale, phase_scale, reserved, f_start, f_step = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise _bad("bad magic (expected 'NI')")
        if version != VERSION:
            raise _bad(f"version {version} is not {VERSION}")
        if flags or reserved:
            raise _bad("reserved bits are set")
        if len(data) != HEADER_SIZE + 4 * k:
            raise _bad(f"{len(data)} bytes; K = {k} points needs {HEADER_SIZE + 4 * k}")
        body = np.frombuffer(data, dtype=_LE_I16, offset=HEADER_SIZE)
        return cls(f_start, f_step, mag_scale, phase_scale, body[:k].astype(np.int16), body[k:].astype(np.int16))

    def to_bytes(self) -> bytes:
        head = HEADER.pack(
            MAGIC,
            VERSION,
            0,
            self.points,
            self.magnitude_scale,
            self.phase_scale,
            0,
            self.f_start_hz,
            self.f_step_hz,
        )
        return head + self.magnitude_counts.astype(_LE_I16).tobytes() + self.phase_counts.astype(_LE_I16).tobytes()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, S21Frame):
            return NotImplemented
        return (self.f_start_hz, self.f_step_hz, self.magnitude_scale, self.phase_scale) == (
            other.f_start_hz,
            other.f_step_hz,
            other.magnitude_scale,
            other.phase_scale,
        ) and (
            np.array_equal(self.magnitude_counts, other.magnitude_counts)
            and np.array_equal(self.phase_counts, other.phase_counts)
        )

    __hash__ = None  # type: ignore[assignment]

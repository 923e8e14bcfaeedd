"""Device-signed MQTT frames: key lookup, chunked Ed25519 verification and the replay guard.

A 5G device may wrap its SenML CBOR pack in COSE_Sign1 (format: :mod:`drivers.senml.cose`,
docs/mqtt.md "Device-signed payloads"). The source parses each signed message on the event loop,
checks its kid against the device's registered did:key, then verifies every signature of a chunk
on two worker threads, half each (cryptography releases the GIL during Ed25519 verification, so the
two run in parallel and the event loop keeps receiving meanwhile). Verified frames pass through
:class:`ReplayGuard`, in arrival order.

Quarantine reasons raised here: ``signature_invalid``, ``signature_unknown_key``,
``signature_missing``, ``replay``, ``stale``.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from drivers.senml.cose import Sign1
from gateway.errors import GatewayError, PayloadError
from gateway.provenance.cose import sig_structure
from gateway.provenance.didkey import public_from_did_key

log = logging.getLogger(__name__)

REASONS: Final = frozenset({"signature_invalid", "signature_unknown_key", "signature_missing", "replay", "stale"})
INLINE_MAX: Final = 4
"""Chunks with at most this many signatures are verified on the event loop (a thread hop costs about as much)."""
SPLIT_MIN: Final = 64
"""Chunks with at least this many signatures are split over both worker threads."""
MAX_ACTIVE_BOOTS: Final = 16
"""Boots per device the replay guard follows; older ones are retired (their frames are then ``stale``)."""
MAX_RETIRED_BOOTS: Final = 256
"""Retired boot ids remembered per device."""


@dataclass(frozen=True, slots=True)
class VerifyJob:
    key: Ed25519PublicKey
    signature: bytes
    data: bytes
    """The encoded Sig_structure."""


class DeviceKeys:
    """did:key → Ed25519 public key, parsed once per key."""

    def __init__(self) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}

    def job(self, sign1: Sign1, registered: str | None, device_id: str, aad: bytes) -> VerifyJob:
        """The verification of ``sign1`` against the device's registered key; raises for a wrong kid."""
        if registered is None:
            raise PayloadError(
                f"device {device_id} has no signing key registered (`pki issue-device --signing-key`)",
                "signature_unknown_key",
            )
        if sign1.kid != registered.encode():
            raise PayloadError(f"kid is not the signing key registered for device {device_id}", "signature_unknown_key")
        key = self._keys.get(registered)
        if key is None:
            try:
                key = Ed25519PublicKey.from_public_bytes(public_from_did_key(registered))
            except (GatewayError, ValueError) as e:
                raise PayloadError(f"device {device_id}: registered key unusable ({e})", "signature_unknown_key") from e
            if len(self._keys) > 100_000:
                self._keys.clear()
            self._keys[registered] = key
        return VerifyJob(key, sign1.signature, sig_structure(sign1.protected, sign1.payload, aad))


def verify_all(jobs: Sequence[VerifyJob]) -> list[bool]:
    """Verify each job; True where the signature holds. Runs on a worker thread for big chunks."""
    out: list[bool] = []
    append = out.append
    for j in jobs:
        try:
            j.key.verify(j.signature, j.data)
        except InvalidSignature:
            append(False)
        else:
            append(True)
    return out


# --- replay ---------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Boot:
    high: int
    """Highest seq accepted."""
    floor: int
    """Highest signed ``unacked`` seen: the device has freed every lower seq and never sends it again."""
    superseded_at: float | None = None
    """Monotonic time another boot of the device last produced a new frame while this one did not."""


@dataclass(slots=True)
class _Device:
    boots: OrderedDict[str, _Boot] = field(default_factory=OrderedDict)
    """In the order they first appeared."""
    retired: OrderedDict[str, None] = field(default_factory=OrderedDict)


class ReplayGuard:
    """Per device and boot: which verified frames may still be new (docs/mqtt.md, "Replay").

    - ``replay``: seq below the boot's floor, the highest signed ``unacked`` seen (the device said it no
      longer holds those frames, so a copy is not the device re-sending);
    - ``stale``: seq more than ``window`` below the boot's highest seq; or a frame of a *retired* boot:
      one that produced no new frame (seq above its highest) for ``grace_s`` while another boot of the
      device did — the device has rebooted and had that long to re-send what it still held — or one
      pushed out of the last :data:`MAX_ACTIVE_BOOTS`.

    A broker redelivery (MQTT DUP flag: the broker already delivered it to the gateway, which did not
    acknowledge it) is not judged here: the outbox answers it (duplicate). The state survives a restart
    through :meth:`export` / :meth:`restore` (the source keeps it in the device registry); time a boot
    spent superseded while the gateway was down does not count towards ``grace_s``.
    """

    def __init__(self, window: int, grace_s: float) -> None:
        self.window = window
        self.grace_s = grace_s
        self._devices: dict[str, _Device] = {}
        self.dirty: set[str] = set()
        """Devices whose state changed since the last :meth:`export`."""

    def export(self, device_id: str, now: float) -> str | None:
        """The device's state as JSON (None when unknown): boots with high, floor and seconds superseded."""
        d = self._devices.get(device_id)
        if d is None:
            return None
        boots = [
            [boot, b.high, b.floor, None if b.superseded_at is None else round(now - b.superseded_at, 3)]
            for boot, b in d.boots.items()
        ]
        return json.dumps({"v": 1, "boots": boots, "retired": list(d.retired)}, separators=(",", ":"))

    def restore(self, device_id: str, text: str, now: float) -> None:
        """Load what :meth:`export` wrote; an unreadable state is dropped (the guard then relearns it)."""
        try:
            doc = json.loads(text)
            d = _Device()
            for boot, high, floor, age in doc["boots"]:
                d.boots[str(boot)] = _Boot(int(high), int(floor), None if age is None else now - float(age))
            for boot in doc["retired"][-MAX_RETIRED_BOOTS:]:
                d.retired[str(boot)] = None
        except (ValueError, TypeError, KeyError) as e:
            log.warning("mqtt: replay state of %s unreadable (%s): relearnt from its next frames", device_id, e)
            return
        self._devices[device_id] = d

    def check(self, device_id: str, boot: str, seq: int, unacked: int | None, now: float) -> str | None:
        """The reason to refuse a verified frame, or None (then the frame is recorded as seen)."""
        d = self._devices.get(device_id)
        if d is None:
            d = self._devices[device_id] = _Device()
        if boot in d.retired:
            return "stale"
        self.dirty.add(device_id)
        floor = -1 if unacked is None else unacked
        b = d.boots.get(boot)
        if b is None:
            b = d.boots[boot] = _Boot(seq, floor)
            self._advanced(d, b, now)
            return None
        if b.superseded_at is not None and now - b.superseded_at > self.grace_s:
            self._to_retired(d, boot)
            return "stale"
        if seq < b.floor:
            return "replay"
        if seq + self.window < b.high:
            return "stale"
        if floor > b.floor:
            b.floor = floor
        if seq > b.high:
            b.high = seq
            self._advanced(d, b, now)
        return None

    def _advanced(self, d: _Device, live: _Boot, now: float) -> None:
        """``live`` produced a new frame: it is current, every other boot is superseded from now on."""
        live.superseded_at = None
        for other in d.boots.values():
            if other is not live and other.superseded_at is None:
                other.superseded_at = now
        while len(d.boots) > MAX_ACTIVE_BOOTS:
            self._to_retired(d, next(k for k, v in d.boots.items() if v is not live))

    @staticmethod
    def _to_retired(d: _Device, boot: str) -> None:
        del d.boots[boot]
        d.retired[boot] = None
        while len(d.retired) > MAX_RETIRED_BOOTS:
            d.retired.popitem(last=False)

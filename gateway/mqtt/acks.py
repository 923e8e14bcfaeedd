"""Device ack watermarks: per device and boot, the highest frame seq with every earlier frame settled.

A frame is *settled* once it is committed, refused as already committed, or quarantined. Frames of a
boot are numbered from 0; a device may also say (record ``unacked``) which is the lowest seq it still
holds, so a gateway that restarted without memory of earlier frames does not wait for them. The
retained ack message lists the recent boots of a device (docs/mqtt.md); MQTT's PUBACK covers one hop
only, this covers device → outbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cbor2


@dataclass(slots=True)
class _Boot:
    watermark: int = -1
    """Every seq ≤ watermark is settled; -1: nothing yet."""
    ahead: set[int] = field(default_factory=set)
    """Settled seqs above watermark + 1 (waiting for a gap to fill)."""
    last_seen: float = 0.0


class AckTracker:
    def __init__(self, *, max_boots: int = 4, boot_ttl_s: float = 3600.0, max_ahead: int = 100_000) -> None:
        self._devices: dict[str, dict[str, _Boot]] = {}
        self._max_boots = max_boots
        self._ttl = boot_ttl_s
        self._max_ahead = max_ahead
        self.dirty: set[str] = set()
        """Devices whose ack message changed since :meth:`take_dirty`."""

    def settle(self, device_id: str, boot: str, seq: int, unacked: int | None, now: float) -> None:
        boots = self._devices.get(device_id)
        if boots is None:
            boots = self._devices[device_id] = {}
        b = boots.get(boot)
        if b is None:
            b = boots[boot] = _Boot(last_seen=now)
            self._trim(boots, now)
        b.last_seen = now
        before = b.watermark
        if unacked is not None and unacked - 1 > b.watermark:
            b.watermark = unacked - 1
            if b.ahead:
                b.ahead = {s for s in b.ahead if s > b.watermark}
        if seq > b.watermark:
            if seq == b.watermark + 1:
                b.watermark = seq
            elif len(b.ahead) < self._max_ahead:
                b.ahead.add(seq)
        ahead = b.ahead
        while ahead and (b.watermark + 1) in ahead:
            b.watermark += 1
            ahead.discard(b.watermark)
        if b.watermark != before:
            self.dirty.add(device_id)

    def _trim(self, boots: dict[str, _Boot], now: float) -> None:
        for k in [k for k, b in boots.items() if now - b.last_seen > self._ttl]:
            del boots[k]
        while len(boots) > self._max_boots:
            oldest = min(boots, key=lambda k: boots[k].last_seen)
            del boots[oldest]

    def devices(self) -> list[str]:
        """Devices with at least one boot tracked."""
        return list(self._devices)

    def watermarks(self, device_id: str) -> dict[str, int]:
        """Boot id → watermark, for boots with at least one settled frame."""
        return {k: b.watermark for k, b in self._devices.get(device_id, {}).items() if b.watermark >= 0}

    def payload(self, device_id: str) -> bytes:
        """The retained ack message: CBOR array of ``{"boot": id, "seq": watermark}``, most recent boot first."""
        boots = self._devices.get(device_id, {})
        ordered = sorted(boots.items(), key=lambda kv: kv[1].last_seen, reverse=True)
        return cbor2.dumps([{"boot": k, "seq": b.watermark} for k, b in ordered if b.watermark >= 0])

    def take_dirty(self) -> list[str]:
        out = sorted(self.dirty)
        self.dirty.clear()
        return out

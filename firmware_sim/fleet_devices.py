"""The devices of a scenario fleet: the BLE peripherals and 5G devices of :mod:`firmware_sim.ble` and
:mod:`firmware_sim.mqtt_device`, subclassed to count exactly what they delivered and to take the
scheduled faults that the plain devices do not have (radio drop-out, hang mid-RACP, duplicate publish).

What "sent" means (the fleet report; ``docs/simulator-fleet.md``):

- BLE streaming devices: a notification (or indication) counts as sent when it was pushed to a
  connection that had subscribed to it; garbage (the ``garbage`` fault: 1 random byte, which no
  measurement format accepts) is counted apart.
- Glucose meter / CGM: the records the device holds, each identified by (sequence number, base time) or
  time offset; a record counts as transmitted once it was notified to a subscribed connection with a
  valid encoding; records erased by a sequence reset are reported as erased (transmitted or not).
- 5G: frames produced, frames the gateway's ack watermark covered, frames still buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from bumble.core import UUID
from bumble.device import Connection
from bumble.gatt import Characteristic

from firmware_sim.ble import uuids
from firmware_sim.ble.devices.blood_pressure import BloodPressureCuff
from firmware_sim.ble.devices.cgm import Cgm
from firmware_sim.ble.devices.ecg import EcgStrap
from firmware_sim.ble.devices.glucose_meter import GlucoseMeter, StoredReading
from firmware_sim.ble.devices.heart_rate import HeartRateStrap
from firmware_sim.ble.devices.pulse_oximeter import PulseOximeter
from firmware_sim.ble.peripheral import ADVERTISING_INTERVAL_MS, Properties, SimPeripheral
from firmware_sim.ble.racp_server import Notification
from firmware_sim.ble.wire.cgm import CgmMeasurement
from firmware_sim.mqtt_device import MqttDevice
from firmware_sim.senml import Record

# ------------------------------------------------------------------------------------------------ BLE

_CHAR_NAMES = {
    bytes(v): k.lower()
    for k, v in vars(uuids).items()
    if k.isupper() and isinstance(v, UUID) and not k.endswith("_SERVICE")
}
"""Characteristic UUID → report name (``heart_rate_measurement``, ``pmd_data`` …)."""


class FleetPeripheral(SimPeripheral):
    """Counting, radio drop-outs and timed hangs for any simulated peripheral (a mixin: put it first)."""

    garbage_applies = True
    """Only streaming devices take the garbage fault (a garbled stored record would be a lost record)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: dict[str, int] = {}
        """Notifications/indications delivered to a subscribed connection, per characteristic name."""
        self.garbage_sent = 0
        self.offline = False
        self.faults_applied: list[dict[str, Any]] = []
        self.advertising_interval_ms = ADVERTISING_INTERVAL_MS
        self.paused = False
        """Settling at the end of a run: no new readings are taken."""

    @staticmethod
    def _name(characteristic: Characteristic[bytes]) -> str:
        return _CHAR_NAMES.get(bytes(characteristic.uuid), str(characteristic.uuid))

    def _targets(self, characteristic: Characteristic[bytes], indicate: bool) -> list[Connection]:
        if self._device is None:
            return []
        return [c for c in self.device.connections.values() if self.subscribed(c, characteristic, indicate=indicate)]

    async def notify_measurement(
        self, characteristic: Characteristic[bytes], value: bytes, *, connection: Connection | None = None
    ) -> None:
        if self.faults.hung or self._device is None or self.offline:
            return
        indicate = bool(characteristic.properties & Properties.INDICATE)
        targets = self._targets(characteristic, indicate)
        if connection is not None:
            targets = [c for c in targets if c is connection]
        if not targets:
            return
        garbage = self.garbage_applies and self.faults.take_garbage()
        if garbage:
            value = self.rng.bytes(1)
        dev = self.device
        for c in targets:
            if indicate:
                await dev.indicate_subscriber(c, characteristic, value)
            else:
                await dev.notify_subscriber(c, characteristic, value)
            if garbage:
                self.garbage_sent += 1
            else:
                name = self._name(characteristic)
                self.sent[name] = self.sent.get(name, 0) + 1
                self.delivered(characteristic, value)

    def delivered(self, characteristic: Characteristic[bytes], value: bytes) -> None:
        """Hook: ``value`` reached a subscribed connection (not garbage)."""

    # ---- faults

    async def go_offline(self) -> None:
        """Out of range: drop every link and stop advertising (kept down until :meth:`go_online`)."""
        self.offline = True
        if self._device is None:
            return
        device = self.device
        for _ in range(50):
            if device.connections:
                await self.disconnect_all()
                await asyncio.sleep(0.05)  # let bumble's advertising auto-restart run before stopping it
            with contextlib.suppress(Exception):
                await device.stop_advertising()
            await asyncio.sleep(0.02)
            if not device.connections and not device.is_advertising:
                return

    async def go_online(self) -> None:
        self.offline = False
        if self._device is None or self._closing:
            return
        with contextlib.suppress(Exception):
            await self.device.start_advertising(
                advertising_data=self.advertising_data(),
                advertising_interval_min=self.advertising_interval_ms,
                advertising_interval_max=self.advertising_interval_ms,
                auto_restart=True,
            )

    def hang_for(self, real_s: float) -> None:
        self.faults.hang()
        asyncio.get_running_loop().call_later(real_s, self.faults.resume)

    def report(self) -> dict[str, Any]:
        return {"notifications": dict(sorted(self.sent.items())), "garbage": self.garbage_sent}


class _RacpTracking(FleetPeripheral):
    """RACP reports: the hang-mid-RACP fault and "a report completed since the last change/connection"."""

    garbage_applies = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hang_after: tuple[int, float] | None = None
        """(records, real seconds): the next report hangs after that many records."""
        self.reports_completed = 0
        self.fresh_report = False
        """A report ran to its end since the last record change and the last connection."""
        self.report_since_connect = False
        """A report ran to its end since the last connection."""

    def on_connection(self, connection: Connection) -> None:
        self.fresh_report = self.report_since_connect = False
        super().on_connection(connection)

    def changed(self) -> None:
        self.fresh_report = False

    def tracked(self, items: Iterator[tuple[Notification, Any]]) -> Iterator[Notification]:
        """Wrap a store's notifications: hang after K records if armed; flag completion."""
        done = 0
        for notification, key in items:
            if self.hang_after is not None and done >= self.hang_after[0]:
                _, real_s = self.hang_after
                self.hang_after = None
                self.hang_for(real_s)
                self.faults_applied.append({"kind": "hang-mid-racp-triggered", "after_records": done})
            self._current_key = key
            yield notification
            done += notification[2]
        self.reports_completed += 1
        self.fresh_report = self.report_since_connect = True

    _current_key: Any = None


class FleetGlucoseMeter(_RacpTracking, GlucoseMeter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.transmitted: set[tuple[int, datetime]] = set()
        self.erased: list[tuple[StoredReading, bool]] = []
        self.control_keys: set[tuple[int, datetime]] = set()
        self.control_notified = 0
        """Measurement notifications of control-solution records delivered (each one a quarantine row)."""
        super().__init__(*args, **kwargs)

    def add_reading(self, when: datetime | None = None, *, control_solution: bool = False) -> StoredReading:
        r = super().add_reading(when, control_solution=control_solution)
        if control_solution:
            self.control_keys.add((r.sequence, r.base_time))
        self.changed()
        return r

    def notifications(self, indices: Sequence[int], connection: Connection) -> Iterator[Notification]:
        def items() -> Iterator[tuple[Notification, Any]]:
            for i in list(indices):
                if i < len(self.records):
                    r = self.records[i]
                    for n in self.record_notifications(r):
                        yield n, (r.sequence, r.base_time)

        return self.tracked(items())

    def delivered(self, characteristic: Characteristic[bytes], value: bytes) -> None:
        if characteristic is self.measurement_char and self._current_key is not None:
            self.transmitted.add(self._current_key)
            if self._current_key in self.control_keys:
                self.control_notified += 1

    def reset_meter(self, new_records: int = 0) -> None:
        self.erased += [(r, (r.sequence, r.base_time) in self.transmitted) for r in self.records]
        super().reset_meter(new_records)
        self.changed()

    def held(self) -> list[StoredReading]:
        return list(self.records)

    def report(self) -> dict[str, Any]:
        patient = [r for r in self.records if r.type != 10]
        erased_sent = [r for r, sent in self.erased if sent and r.type != 10]
        return {
            **super().report(),
            "records_held": len(self.records),
            "control_solution_held": len(self.records) - len(patient),
            "erased_by_reset": len(self.erased),
            "erased_after_transmission": len(erased_sent),
            "records_transmitted": len(self.transmitted),
            "control_solution_transmitted": len(self.transmitted & self.control_keys),
            "control_solution_notified": self.control_notified,
            "records_expected": len(patient) + len(erased_sent),
            "expected_keys": sorted([r.sequence, r.base_time.isoformat()] for r in [*patient, *erased_sent]),
            "reports_completed": self.reports_completed,
        }


class FleetCgm(_RacpTracking, Cgm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.transmitted_ok: set[int] = set()
        self.bad_crc_sent = 0
        self._last_bad = False
        self._batch_bad: list[bool] = []
        super().__init__(*args, **kwargs)

    def encode(self, record: CgmMeasurement) -> bytes:
        self._last_bad = self.e2e_crc and self.faults.take_bad_crc()
        return record.to_bytes(e2e_crc=self.e2e_crc, corrupt_crc=self._last_bad)

    def notifications(self, indices: Sequence[int], connection: Connection) -> Iterator[Notification]:
        """As :meth:`Cgm.notifications` (records packed up to ATT_MTU − 3), remembering which offsets
        (and CRC states) each notification carries."""

        def items() -> Iterator[tuple[Notification, Any]]:
            room = max(connection.att_mtu - 3, 20)
            batch: list[bytes] = []
            keys: list[tuple[int, bool]] = []
            for i in list(indices):
                if i >= len(self.records):
                    continue
                rec = self.records[i]
                encoded = self.encode(rec)
                if batch and sum(map(len, batch)) + len(encoded) > room:
                    yield (self.measurement_char, b"".join(batch), len(batch)), keys
                    batch, keys = [], []
                batch.append(encoded)
                keys.append((rec.time_offset_min, self._last_bad))
            if batch:
                yield (self.measurement_char, b"".join(batch), len(batch)), keys

        return self.tracked(items())

    def delivered(self, characteristic: Characteristic[bytes], value: bytes) -> None:
        if characteristic is not self.measurement_char or self._current_key is None:
            return
        for offset, bad in self._current_key:
            if bad:
                self.bad_crc_sent += 1
            else:
                self.transmitted_ok.add(offset)

    async def measure_due(self) -> list[CgmMeasurement]:
        if self.paused:
            return []
        new = self.new_records() if self.cgm_stream is not None else [await self._own_reading()]
        if new:
            self.changed()
        for record in new:
            if not self._targets(self.measurement_char, False) or self.faults.hung or self.offline:
                continue  # stored: the collector backfills it
            value = self.encode(record)
            self._current_key = [(record.time_offset_min, self._last_bad)]
            await self.notify_measurement(self.measurement_char, value)
            self._current_key = None
        return new

    async def _own_reading(self) -> CgmMeasurement:
        last = self.records[-1].time_offset_min if self.records else -1
        record = self._reading(max(self.current_offset_min(), last + 1))
        self.records.append(record)
        return record

    def report(self) -> dict[str, Any]:
        offsets = [r.time_offset_min for r in self.records]
        return {
            **super().report(),
            "records_held": len(offsets),
            "records_transmitted": len(self.transmitted_ok & set(offsets)),
            "bad_crc_sent": self.bad_crc_sent,
            "records_expected": len(offsets),
            "expected_keys": offsets,
            "reports_completed": self.reports_completed,
        }


class FleetHeartRateStrap(FleetPeripheral, HeartRateStrap):
    pass


class FleetEcgStrap(FleetPeripheral, EcgStrap):
    pass


class FleetBloodPressureCuff(FleetPeripheral, BloodPressureCuff):
    pass


class FleetPulseOximeter(FleetPeripheral, PulseOximeter):
    pass


# ------------------------------------------------------------------------------------------------- 5G


class FleetMqttDevice(MqttDevice):
    """A 5G device with coverage gaps, duplicate publishes, a device clock offset and a battery."""

    KEEP_ACKED = 64
    BATTERY_EVERY = 60
    """Frames between two battery records (one also goes with the first frame and after every change)."""

    def __init__(self, *args: Any, kind: str = "cardiac", ecg_fs: int = 130, **kwargs: Any) -> None:
        self.kind = kind
        self.ecg_fs = ecg_fs
        self.offline = False
        self.clock_offset_s = 0.0
        self.duplicates_sent = 0
        self.bursts: list[int] = []
        """Frames buffered at each return from a coverage gap (published again as a burst)."""
        self.faults_applied: list[dict[str, Any]] = []
        self._recent: dict[tuple[str, int], bytes] = {}
        self.battery_pct = 100
        self._battery_due = 0
        """Frames until the next battery record (0: the next frame carries one)."""
        super().__init__(*args, **kwargs)

    def set_battery(self, percent: int) -> None:
        """The battery drops (or is charged) to ``percent``; the next frame reports it."""
        self.battery_pct = percent
        self._battery_due = 0

    def battery_records(self) -> list[Record]:
        """A SenML ``battery`` record when one is due (remaining charge, unit ``%EL``), else nothing."""
        if self._battery_due > 0:
            self._battery_due -= 1
            return []
        self._battery_due = self.BATTERY_EVERY - 1
        return [{"n": "battery", "u": "%EL", "v": self.battery_pct}]

    def _encode(self, boot: str, b: Any, seq: int) -> bytes:
        payload = super()._encode(boot, b, seq)
        self._recent[(boot, seq)] = payload
        while len(self._recent) > 4 * self.KEEP_ACKED:
            self._recent.pop(next(iter(self._recent)))
        return payload

    def _publish(self, payload: bytes) -> None:
        if self.offline:
            return  # no coverage: the frame stays buffered and is resent on return
        super()._publish(payload)

    def go_offline(self) -> None:
        self.offline = True
        self.disconnect()

    def go_online(self) -> None:
        self.offline = False
        self.bursts.append(self.pending)
        self.reconnect()

    def duplicate(self, count: int) -> int:
        """Publish ``count`` frames the watermark already covered again; returns how many were."""
        if self.offline or not self.connected.is_set():
            return 0
        with self._lock:
            held = {(boot, s) for boot, b in self._boots.items() for s in b.frames}
            acked = [k for k in self._recent if k not in held]
        picks = acked[-count:] if count else []
        for k in picks:
            super()._publish(self._recent[k])
        self.duplicates_sent += len(picks)
        return len(picks)

    def report(self) -> dict[str, Any]:
        s = self.stats
        return {
            "frames": s.frames,
            "acked": s.acked,
            "buffered": self.pending,
            "published": s.published,
            "resent": s.resent,
            "duplicates_sent": self.duplicates_sent,
            "bursts": list(self.bursts),
            "reconnects": s.reconnects,
        }

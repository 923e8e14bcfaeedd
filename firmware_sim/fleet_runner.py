"""``ds4h-sim fleet SCENARIO``: run a scenario's ward — BLE devices on a hub, 5G devices against a broker —
apply its fault schedule on ward time, show progress, and write a per-device report at the end.

Everything runs on one asyncio loop (the ward is not thread-safe): the BLE peripherals (each on its own
HCI transport to the hub), the 5G devices (their paho clients driven by the loop through
:class:`~firmware_sim.mqtt_loop.LoopNetwork`: no network thread per device), the fault scheduler, the
glucose meters' readings and the progress line. At the end
(``--duration``, SIGTERM or Ctrl-C) the fleet *settles*: faults still active end, no new readings are
taken, 5G devices resend until the gateway's watermark covers their buffer, and each glucose meter /
CGM waits for a complete RACP report of the collector (bounded by ``--settle-timeout``); then the
devices stop and the report is written. See ``docs/simulator-fleet.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import math
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from paho.mqtt.enums import MQTTProtocolVersion

from firmware_sim.ble.clock import DeviceClock
from firmware_sim.ble.identity import Profile, device_identity
from firmware_sim.fleet_devices import (
    FleetBloodPressureCuff,
    FleetCgm,
    FleetEcgStrap,
    FleetGlucoseMeter,
    FleetHeartRateStrap,
    FleetMqttDevice,
    FleetPeripheral,
    FleetPulseOximeter,
)
from firmware_sim.mqtt_fleet import device_tls, ward_frame
from firmware_sim.mqtt_loop import LoopNetwork
from firmware_sim.progress import FleetProgress
from firmware_sim.scenario import DeviceSpec, FaultKind, FaultSpec, G5Kind, Scenario, ScenarioError, load_scenario
from firmware_sim.senml import Record
from firmware_sim.ward import CgmStream, EcgStream, PatientView, Ward

GATEWAY_KIND = {
    Profile.HEART_RATE.value: "heart_rate",
    Profile.BLOOD_PRESSURE.value: "blood_pressure",
    Profile.PULSE_OXIMETER.value: "pulse_oximeter",
    Profile.GLUCOSE_METER.value: "glucose_meter",
    Profile.CGM.value: "cgm",
    Profile.ECG.value: "polar_ecg",
    G5Kind.CARDIAC.value: "cardiac_monitor",
    G5Kind.CGM.value: "cgm",
}
"""The driver / registry kind a gateway registers each device kind under (a hint in the device list)."""


def _hostport(text: str, flag: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"ds4h-sim: {flag} must be HOST:PORT, not {text!r}")
    return host, int(port)


# -------------------------------------------------------------------------------------------- devices


@dataclass
class _Ble:
    spec: DeviceSpec
    device: FleetPeripheral


@dataclass
class _G5:
    spec: DeviceSpec
    device: FleetMqttDevice
    patient: PatientView
    ecg: EcgStream | None
    cgm: CgmStream | None
    next_frame: float = 0.0


@dataclass
class _Applied:
    kind: str
    at_s: float
    """Ward time."""
    duration_s: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "at_s": round(self.at_s, 1)}
        if self.duration_s:
            out["duration_s"] = round(self.duration_s, 1)
        return {**out, **self.detail}


class FleetRun:
    """One run of a scenario; build it inside the running loop."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        hub: tuple[str, int] | None,
        broker: tuple[str, int] | None,
        pki_dir: Path | None = None,
        protocol: str = "5",
        speed: float | None = None,
        resend_after_s: float = 5.0,
        progress_s: float = 5.0,
        err: TextIO = sys.stderr,
    ) -> None:
        self.scenario = scenario
        self.speed = speed if speed is not None else scenario.speed
        self.hub = hub
        self.progress_s = progress_s
        self.err = err
        self.ward = Ward(
            list(scenario.patients), seed=scenario.seed, speed=self.speed, start_clock_min=scenario.start_clock_min
        )
        for bed, schedule in scenario.events:
            self.ward.add_glucose_events(bed, schedule)
        self.ble: dict[str, _Ble] = {}
        self.g5: dict[str, _G5] = {}
        self.network = LoopNetwork()
        """Every 5G device's paho client runs on this loop (no network thread per device)."""
        fast = scenario.fast_pacing
        for d in scenario.devices:
            if d.ble:
                self.ble[d.device_id] = _Ble(d, self._ble_device(d, fast))
            else:
                if broker is None:
                    raise SystemExit(f"ds4h-sim: the scenario has 5G devices ({d.device_id}): --broker is required")
                dev = FleetMqttDevice(
                    d.device_id,
                    broker[0],
                    broker[1],
                    device_tls(pki_dir, d.device_id),
                    kind=G5Kind(d.kind).mqtt_kind,
                    ecg_fs=d.ecg_fs,
                    resend_after_s=resend_after_s,
                    protocol=MQTTProtocolVersion.MQTTv5 if protocol == "5" else MQTTProtocolVersion.MQTTv311,
                    network=self.network,
                )
                view = self.ward.patient(d.patient)
                cgm = d.kind == G5Kind.CGM
                self.g5[d.device_id] = _G5(
                    d, dev, view, None if cgm else view.ecg_stream(d.ecg_fs), view.cgm_stream() if cgm else None
                )
        if self.ble and hub is None:
            raise SystemExit("ds4h-sim: the scenario has BLE devices: --hub is required")
        self.applied: dict[str, list[_Applied]] = {d.device_id: [] for d in scenario.devices}
        self.active: dict[tuple[str, str], int] = {}
        """(device, fault kind) → how many occurrences are active (overlapping drop-outs nest)."""
        self.faults_fired = 0
        self.settled: bool | None = None
        self.started = time.monotonic()
        self._tasks: list[asyncio.Task[Any]] = []
        self._pending_ends: list[tuple[float, int, FaultSpec, str]] = []
        self.display = FleetProgress(err, None, use_rich=False)
        """Progress lines (and a bar on a terminal), replaced for each run."""

    def _ble_device(self, d: DeviceSpec, fast: bool) -> FleetPeripheral:
        profile = Profile(d.kind)
        ident = device_identity(profile, d.index, self.scenario.seed)
        kw: dict[str, Any] = {
            "seed": self.scenario.seed,
            "clock": DeviceClock(host_time=self.ward.epoch),
            "patient": self.ward.patient(d.patient),
        }
        if profile is Profile.HEART_RATE:
            return FleetHeartRateStrap(ident, interval_s=0.05 if fast else 1.0, **kw)
        if profile is Profile.ECG:
            return FleetEcgStrap(ident, interval_s=0.05 if fast else 1.0, **kw)
        if profile is Profile.BLOOD_PRESSURE:
            return FleetBloodPressureCuff(
                ident, interval_s=0.5 if fast else 60.0, cuff_step_s=0.01 if fast else 0.2, **kw
            )
        if profile is Profile.PULSE_OXIMETER:
            return FleetPulseOximeter(ident, interval_s=0.05 if fast else 1.0, spot_check_every=5 if fast else 30, **kw)
        if profile is Profile.GLUCOSE_METER:
            return FleetGlucoseMeter(ident, records=d.records, **kw)
        return FleetCgm(ident, records=d.records, e2e_crc=d.e2e_crc, interval_s=0.5 if fast else 60.0, **kw)

    # ------------------------------------------------------------------ the device list

    def fault_plan(self, device_id: str) -> list[dict[str, Any]]:
        """The faults scheduled for a device, in real seconds at this run's speed (``every``: the mean gap)."""
        out: list[dict[str, Any]] = []
        for f in self.scenario.faults:
            if device_id not in f.targets or not f.times_s:
                continue
            times = sorted(f.times_s)
            plan: dict[str, Any] = {"kind": f.kind.value, "first_s": round(times[0] / self.speed, 1)}
            if len(times) > 1:
                plan["every_s"] = round((times[-1] - times[0]) / (len(times) - 1) / self.speed, 1)
            if f.duration_s:
                plan["duration_s"] = round(f.duration_s / self.speed, 1)
            out.append(plan)
        return out

    def device_lines(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for d in self.scenario.devices:
            base: dict[str, Any] = {"id": d.device_id, "kind": d.kind, "gateway_kind": GATEWAY_KIND[d.kind]}
            base["patient"] = d.patient
            if faults := self.fault_plan(d.device_id):
                base["faults"] = faults
            if d.ble:
                out.append({**base, "transport": "ble", **self.ble[d.device_id].device.identity.as_dict()})
            else:
                out.append({**base, "transport": "mqtt", "client_id": f"dev-{d.device_id}"})
        return out

    # ------------------------------------------------------------------ faults

    def _events(self) -> list[tuple[float, int, FaultSpec]]:
        out = [(t, i, f) for i, f in enumerate(self.scenario.faults) for t in f.times_s]
        heapq.heapify(out)
        return out

    async def _schedule(self) -> None:
        starts = self._events()
        n = 0
        while starts or self._pending_ends:
            t_start = starts[0][0] if starts else math.inf
            t_end = self._pending_ends[0][0] if self._pending_ends else math.inf
            wait = (min(t_start, t_end) - self.ward.now_s()) / self.speed
            if wait > 0:
                await asyncio.sleep(min(wait, 1.0))
                continue
            if t_end <= t_start:
                _, _, fault, target = heapq.heappop(self._pending_ends)
                await self._end(fault, target)
                continue
            t, _, fault = heapq.heappop(starts)
            for target in fault.targets:
                if await self._start(fault, target, t) and fault.duration_s:
                    n += 1
                    heapq.heappush(self._pending_ends, (t + fault.duration_s, n, fault, target))

    async def _start(self, f: FaultSpec, target: str, at_s: float) -> bool:
        """Apply ``f`` to ``target``; False if it does not apply to that device."""
        k = f.kind
        detail: dict[str, Any] = {}
        ble = self.ble.get(target)
        g5 = self.g5.get(target)
        if k in (FaultKind.RADIO_DROPOUT, FaultKind.OUT_OF_RANGE):
            depth = self.active.get((target, "offline"), 0)
            self.active[(target, "offline")] = depth + 1
            if depth == 0:
                if ble is not None:
                    await ble.device.go_offline()
                elif g5 is not None:
                    g5.device.go_offline()
        elif ble is not None:
            p = ble.device
            if k is FaultKind.GARBAGE:
                p.faults.garbage += f.count
                detail["count"] = f.count
            elif k is FaultKind.BAD_CRC and isinstance(p, FleetCgm) and p.e2e_crc:
                p.corrupt_crc(f.count)
                detail["count"] = f.count
            elif k is FaultKind.CONTROL_SOLUTION and isinstance(p, FleetGlucoseMeter):
                p.add_control_solution(f.count)
                detail["count"] = f.count
            elif k is FaultKind.SEQUENCE_RESET and isinstance(p, FleetGlucoseMeter):
                detail["records_erased"] = len(p.records)
                p.reset_meter(f.count)
                detail["new_records"] = f.count
            elif k is FaultKind.CLOCK_JUMP:
                await p.jump_clock(f.seconds)
                detail["seconds"] = f.seconds
            elif k is FaultKind.LOW_BATTERY:
                await p.set_battery(f.level)
                detail["level"] = f.level
            elif k is FaultKind.HANG:
                p.faults.hang()
                self.active[(target, "hang")] = self.active.get((target, "hang"), 0) + 1
            elif k is FaultKind.HANG_MID_RACP and isinstance(p, FleetGlucoseMeter | FleetCgm):
                p.hang_after = (f.records, f.duration_s / self.speed)
                detail["records"] = f.records
            elif k is FaultKind.DISCONNECT_MID_RACP and isinstance(p, FleetGlucoseMeter | FleetCgm):
                p.faults.racp_disconnect_after = f.records
                detail["records"] = f.records
            else:
                return False
        elif g5 is not None:
            if k is FaultKind.DUPLICATE_PUBLISH:
                detail["published"] = g5.device.duplicate(f.count)
            elif k is FaultKind.CLOCK_JUMP:
                g5.device.clock_offset_s += f.seconds
                detail["seconds"] = f.seconds
            elif k is FaultKind.LOW_BATTERY:
                g5.device.set_battery(f.level)
                detail["level"] = f.level
            else:
                return False
        else:
            return False
        self.faults_fired += 1
        self.applied[target].append(_Applied(k.value, at_s, f.duration_s, detail))
        return True

    async def _end(self, f: FaultSpec, target: str) -> None:
        if f.kind in (FaultKind.RADIO_DROPOUT, FaultKind.OUT_OF_RANGE):
            depth = self.active.get((target, "offline"), 0) - 1
            self.active[(target, "offline")] = max(0, depth)
            if depth <= 0:
                await self._online(target)
        elif f.kind is FaultKind.HANG:
            depth = self.active.get((target, "hang"), 0) - 1
            self.active[(target, "hang")] = max(0, depth)
            if depth <= 0 and target in self.ble:
                self.ble[target].device.faults.resume()

    async def _online(self, target: str) -> None:
        if target in self.ble:
            await self.ble[target].device.go_online()
        elif target in self.g5:
            self.g5[target].device.go_online()

    def faults_active(self) -> list[str]:
        return sorted(f"{k}@{d}" for (d, k), n in self.active.items() if n > 0)

    # ------------------------------------------------------------------ producers

    async def _meter_readings(self, b: _Ble) -> None:
        every = b.spec.reading_every_s
        assert every is not None and isinstance(b.device, FleetGlucoseMeter)
        k = 1
        while True:
            due = k * every
            wait = (due - self.ward.now_s()) / self.speed
            if wait > 0:
                await asyncio.sleep(min(wait, 1.0))
                continue
            if not b.device.paused:
                b.device.add_reading()
            k += 1

    def _frame(self, g: _G5) -> list[Record]:
        return [
            *ward_frame(g.patient, g.ecg, g.cgm, g.spec.ecg_fs, speed=self.speed),
            *g.device.battery_records(),
        ]

    async def _g5_loop(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        for g in self.g5.values():
            g.next_frame = loop.time() + g.spec.frame_every_s
        while not stop.is_set():
            now = loop.time()
            for g in self.g5.values():
                if now >= g.next_frame:
                    g.next_frame += g.spec.frame_every_s
                    # stamped by the host's wall clock (a gateway refuses times ahead of its own), the values
                    # from the ward; a CGM reading's relative time is scaled to real seconds
                    g.device.send(time.time() + g.device.clock_offset_s, self._frame(g))
                g.device.resend_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)

    async def _progress(self) -> None:
        if not self.display.rich:  # plain lines (a pipe, a file): what the demo and the tests read
            while True:
                await asyncio.sleep(self.progress_s)
                self.display.line(self.progress_line())
        next_line = time.monotonic() + self.progress_s
        while True:  # a terminal: the bar moves every half second, a line every progress_s
            await asyncio.sleep(min(0.5, self.progress_s))
            if time.monotonic() >= next_line:
                next_line = time.monotonic() + self.progress_s
                self.display.line(self.progress_line())
            else:
                self.display.tick()

    def progress_line(self) -> str:
        t = self.ward.now_s()
        clock = (self.ward.start_clock_min * 60 + t) % 86400
        ble_up = sum(1 for b in self.ble.values() if b.device._device is not None and b.device.device.connections)
        ble_sent = sum(sum(b.device.sent.values()) for b in self.ble.values())
        g5_up = sum(1 for g in self.g5.values() if g.device.connected.is_set())
        frames = sum(g.device.stats.frames for g in self.g5.values())
        acked = sum(g.device.stats.acked for g in self.g5.values())
        buffered = sum(g.device.pending for g in self.g5.values())
        active = self.faults_active()
        return (
            f"[fleet] ward +{t / 60:.1f} min ({int(clock // 3600):02d}:{int(clock % 3600 // 60):02d}, x{self.speed:g})"
            f" | BLE {ble_up}/{len(self.ble)} connected, {ble_sent} sent"
            f" | 5G {g5_up}/{len(self.g5)} up, frames {frames} acked {acked} buffered {buffered}"
            f" | faults {self.faults_fired} fired, active: {', '.join(active) if active else '-'}"
        )

    # ------------------------------------------------------------------ run

    async def run(self, stop: asyncio.Event, duration_s: float | None, settle_timeout_s: float) -> dict[str, Any]:
        from firmware_sim.ble.runner import BleSimulation

        for g in self.g5.values():
            g.device.start()
        peripherals = [b.device for b in self.ble.values()]
        sim = None
        if peripherals:
            assert self.hub is not None
            sim = BleSimulation(peripherals, transport=f"tcp-client:{self.hub[0]}:{self.hub[1]}")
        self.display = FleetProgress(self.err, duration_s)
        try:
            if sim is not None:
                await sim.__aenter__()
            self.started = time.monotonic()
            produce = asyncio.Event()
            self._tasks = [
                asyncio.create_task(self._schedule()),
                asyncio.create_task(self._g5_loop(produce)),
                asyncio.create_task(self._progress()),
                *(
                    asyncio.create_task(self._meter_readings(b))
                    for b in self.ble.values()
                    if b.spec.reading_every_s is not None
                ),
            ]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration_s)
            # settle: end the faults, stop producing, let the gateway catch up
            self._tasks[0].cancel()
            produce.set()
            self.display.tick("settling: the gateway catches up")
            await self._settle(settle_timeout_s)
            self.display.tick("settled" if self.settled else "NOT settled")
            self.display.line(self.progress_line())
        finally:
            self.display.close()
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if sim is not None:
                await sim.aclose()
            for g in self.g5.values():
                g.device.close()
            await asyncio.sleep(0)  # let the loop hand the last writes to the sockets
            await self.network.aclose()
        return self.report()

    async def _settle(self, timeout_s: float) -> None:
        for b in self.ble.values():
            b.device.paused = True
            b.device.faults.resume()
            if isinstance(b.device, FleetGlucoseMeter | FleetCgm):
                b.device.hang_after = None
                b.device.faults.racp_disconnect_after = None
        for (target, kind), n in list(self.active.items()):
            if n > 0:
                self.active[(target, kind)] = 0
                if kind == "offline":
                    await self._online(target)
        self._pending_ends.clear()
        deadline = time.monotonic() + timeout_s
        while True:
            for g in self.g5.values():
                g.device.resend_due()
            if self._all_settled():
                self.settled = True
                return
            if time.monotonic() > deadline:
                self.settled = False
                return
            await asyncio.sleep(0.1)

    def _all_settled(self) -> bool:
        return not self.unsettled()

    def unsettled(self) -> list[str]:
        """Devices whose sent data the gateway has not caught up with yet (as far as the device can tell)."""
        out = [i for i, g in self.g5.items() if g.device.pending]
        for i, b in self.ble.items():
            p = b.device
            if isinstance(p, FleetGlucoseMeter) and not p.fresh_report:
                out.append(i)
            if isinstance(p, FleetCgm) and (
                not p.report_since_connect or any(r.time_offset_min not in p.transmitted_ok for r in p.records)
            ):
                out.append(i)
        return out

    def report(self) -> dict[str, Any]:
        devices: dict[str, Any] = {}
        for d in self.scenario.devices:
            entry: dict[str, Any] = {"kind": d.kind, "patient": d.patient}
            if d.ble:
                p = self.ble[d.device_id].device
                entry |= {"transport": "ble", "address": p.identity.address, "serial": p.identity.serial}
                entry["sent"] = p.report()
                extra = list(p.faults_applied)
            else:
                g = self.g5[d.device_id].device
                entry |= {"transport": "mqtt", "client_id": f"dev-{d.device_id}", "sent": g.report()}
                extra = []
            entry["faults"] = [a.as_dict() for a in self.applied[d.device_id]] + extra
            devices[d.device_id] = entry
        return {
            "scenario": self.scenario.name,
            "source": self.scenario.source,
            "speed": self.speed,
            "ward_time_s": round(self.ward.now_s(), 1),
            "real_time_s": round(time.monotonic() - self.started, 1),
            "cpu_s": round(time.process_time(), 2),
            "settled": self.settled,
            "unsettled": self.unsettled(),
            "faults_fired": self.faults_fired,
            "devices": devices,
        }


# ------------------------------------------------------------------------------------------------ CLI


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fleet",
        help="run a scenario (TOML): a ward's BLE devices on a hub and 5G devices against a broker, with faults",
        description="Run the ward described by SCENARIO: its BLE devices attached to the hub's virtual radio, "
        "its 5G devices publishing to the broker, its fault schedule applied on ward time. Prints the devices "
        "as JSON lines first (for a gateway config), a progress line every few seconds on stderr (with a progress "
        "bar when stderr is a terminal), and at the "
        "end (--duration, Ctrl-C or SIGTERM) settles and writes a per-device report (see "
        "docs/simulator-fleet.md). SCENARIO is a file or the name of a shipped scenario.",
    )
    p.add_argument("scenario", metavar="SCENARIO", help="scenario file (TOML) or shipped scenario name")
    p.add_argument("--hub", help="HOST:PORT of the BLE hub (needed when the scenario has BLE devices)")
    p.add_argument("--broker", help="HOST:PORT of the MQTT broker (needed when the scenario has 5G devices)")
    p.add_argument("--pki-dir", type=Path, help="the site's pki directory (ca.crt, devices/<id>.crt|.key)")
    p.add_argument(
        "--protocol",
        choices=("5", "3.1.1"),
        default="5",
        help="5G devices' MQTT version (default: 5); without --pki-dir they connect over plain TCP (loopback only)",
    )
    p.add_argument("--speed", type=float, help="ward time per real second (default: the scenario's)")
    p.add_argument(
        "--duration", type=float, help="real seconds to run (default: the scenario's duration, else until stopped)"
    )
    p.add_argument("--settle-timeout", type=float, default=30.0, help="seconds to settle at the end (default: 30)")
    p.add_argument("--resend-after", type=float, default=5.0, help="5G: resend an unacked frame after S s")
    p.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines (default: 5)")
    p.add_argument("--report", type=Path, help="write the final report (JSON) here")
    p.add_argument("--devices-out", type=Path, help="also write the device list (JSON lines) here")
    p.add_argument("--list", action="store_true", help="print the device list and exit (nothing is started)")


async def run(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"ds4h-sim: {exc}", file=sys.stderr)
        return 2
    if args.speed is not None and not args.speed > 0:
        raise SystemExit(f"ds4h-sim: --speed must be > 0, not {args.speed}")
    hub = _hostport(args.hub, "--hub") if args.hub else None
    broker = _hostport(args.broker, "--broker") if args.broker else None
    if args.list:
        hub, broker = hub or ("127.0.0.1", 0), broker or ("127.0.0.1", 0)
    fleet = FleetRun(
        scenario,
        hub=hub,
        broker=broker,
        pki_dir=args.pki_dir,
        protocol=args.protocol,
        speed=args.speed,
        resend_after_s=args.resend_after,
        progress_s=args.progress,
    )
    lines = [json.dumps(x) for x in fleet.device_lines()]
    if args.devices_out is not None:
        args.devices_out.write_text("".join(line + "\n" for line in lines))
    for line in lines:
        print(line)
    print(json.dumps({"listed": len(lines), "scenario": scenario.name}), flush=True)
    if args.list:
        return 0
    duration = args.duration
    if duration is None and scenario.duration_s is not None:
        duration = scenario.duration_s / fleet.speed
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, stop.set)
    try:
        report = await fleet.run(stop, duration, args.settle_timeout)
    finally:
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(s)
    if args.report is not None:
        args.report.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps(_summary(report)), flush=True)
    return 0 if report["settled"] else 1


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    devices: dict[str, Any] = report["devices"]
    return {
        "mode": "fleet",
        "scenario": report["scenario"],
        "devices": len(devices),
        "settled": report["settled"],
        "faults_fired": report["faults_fired"],
        "ward_time_s": report["ward_time_s"],
        "real_time_s": report["real_time_s"],
    }


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - convenience
    parser = argparse.ArgumentParser(prog="ds4h-sim")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return asyncio.run(run(parser.parse_args(argv)))

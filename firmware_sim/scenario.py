"""Scenario files (TOML): a ward's patients, the devices they wear and the faults over ward time.

A scenario is loaded with :func:`load_scenario` (a path) or :func:`parse_scenario` (a dict, for tests);
every problem raises :class:`ScenarioError` naming the file and the key (``devices[2].kind``). The
format is documented in ``docs/simulator-fleet.md``; :mod:`firmware_sim.fleet_runner` runs it.

Durations and ward times are numbers of seconds or strings such as ``"90s"``, ``"10min"``,
``"2h"``, ``"1h30min"``, ``"1d"`` (ward times may be negative: ``"-1d"``); times of day are
``"HH:MM"``.
"""

from __future__ import annotations

import enum
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from firmware_sim.ble.identity import Profile
from firmware_sim.fleet import DEVICE_ID_RE
from firmware_sim.models.beats import CardiacProfile
from firmware_sim.models.glucose import MINUTES_PER_DAY, Bolus, Exercise, Meal, Schedule
from firmware_sim.ward import PatientSpec


class ScenarioError(ValueError):
    """A scenario file that cannot be used: ``file``, ``key`` (dotted path) and what is wrong."""

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file, self.key, self.message = file, key, message
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")


class G5Kind(enum.StrEnum):
    """5G (MQTT) device kinds; the value after ``5g-`` is the ``ds4h-sim mqtt --kind``."""

    CARDIAC = "5g-cardiac"
    CGM = "5g-cgm"

    @property
    def mqtt_kind(self) -> str:
        return self.value.removeprefix("5g-")


class FaultKind(enum.StrEnum):
    RADIO_DROPOUT = "radio-dropout"
    """BLE: disconnect and stop advertising for ``duration``; 5G: lose the broker connection."""
    OUT_OF_RANGE = "out-of-range"
    """As radio-dropout (usually hours): RACP devices keep recording and are backfilled on return; 5G
    devices buffer and resend the whole buffer as a burst on return."""
    GARBAGE = "garbage"
    """BLE streaming devices: the next ``count`` notifications are 1 random byte (never decodable)."""
    BAD_CRC = "bad-crc"
    """CGM with E2E-CRC: the next ``count`` records carry a wrong CRC."""
    SEQUENCE_RESET = "sequence-reset"
    """Glucose meter: forget every record, restart at sequence 0, take ``count`` new readings."""
    DUPLICATE_PUBLISH = "duplicate-publish"
    """5G: publish ``count`` already-acknowledged frames again."""
    CLOCK_JUMP = "clock-jump"
    """Step the device clock by ``seconds`` (BLE: Current Time notified; 5G: frame times shift)."""
    LOW_BATTERY = "low-battery"
    """Battery level drops to ``level`` % (BLE: notified, read by the gateway on connect; 5G: a SenML
    ``battery`` record in the next frame)."""
    CONTROL_SOLUTION = "control-solution"
    """Glucose meter: ``count`` control-solution tests stored (the gateway must quarantine them, never
    take them for patient readings)."""
    HANG = "hang"
    """BLE: stop answering reads, writes and notifying for ``duration``."""
    HANG_MID_RACP = "hang-mid-racp"
    """Glucose meter / CGM: the next RACP report stops answering after ``records`` records, for
    ``duration`` (the collector times out)."""
    DISCONNECT_MID_RACP = "disconnect-mid-racp"
    """Glucose meter / CGM: the next RACP report drops the link after ``records`` records."""


DURATION_FAULTS = frozenset({FaultKind.RADIO_DROPOUT, FaultKind.OUT_OF_RANGE, FaultKind.HANG, FaultKind.HANG_MID_RACP})
BLE_KINDS = frozenset(p.value for p in Profile)
G5_KINDS = frozenset(k.value for k in G5Kind)
FAULTS_FOR: dict[FaultKind, frozenset[str]] = {
    FaultKind.RADIO_DROPOUT: BLE_KINDS | G5_KINDS,
    FaultKind.OUT_OF_RANGE: BLE_KINDS | G5_KINDS,
    FaultKind.GARBAGE: frozenset({"heart-rate", "ecg", "blood-pressure", "pulse-oximeter"}),
    FaultKind.BAD_CRC: frozenset({"cgm"}),
    FaultKind.SEQUENCE_RESET: frozenset({"glucose-meter"}),
    FaultKind.DUPLICATE_PUBLISH: G5_KINDS,
    FaultKind.CLOCK_JUMP: BLE_KINDS | G5_KINDS,
    FaultKind.LOW_BATTERY: BLE_KINDS | G5_KINDS,
    FaultKind.CONTROL_SOLUTION: frozenset({"glucose-meter"}),
    FaultKind.HANG: BLE_KINDS,
    FaultKind.HANG_MID_RACP: frozenset({"glucose-meter", "cgm"}),
    FaultKind.DISCONNECT_MID_RACP: frozenset({"glucose-meter", "cgm"}),
}
"""The device kinds each fault applies to; a selector matching none of them is an error."""

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|min|m|sec|s)")
_TIME_OF_DAY = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


# --------------------------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    kind: str
    """A BLE profile (``heart-rate`` …) or a 5G kind (``5g-cardiac``, ``5g-cgm``)."""
    patient: int
    index: int
    """BLE: index among the scenario's devices of that profile (identity ``(seed, profile, index)``);
    5G: index among the 5G devices."""
    device_id: str
    """The gateway device id: ``{profile}-{index}`` for BLE, ``{prefix}{index:02d}`` for 5G."""
    records: int = 10
    """Glucose meter / CGM: records stored at start."""
    reading_every_s: float | None = None
    """Glucose meter: a new (stored, not notified) reading every so much ward time."""
    e2e_crc: bool = True
    ecg_fs: int = 130
    frame_every_s: float = 1.0
    """5G: seconds of real time between frames."""

    @property
    def ble(self) -> bool:
        return self.kind in BLE_KINDS


@dataclass(frozen=True, slots=True)
class FaultSpec:
    kind: FaultKind
    targets: tuple[str, ...]
    """Device ids the fault applies to (resolved from the selectors)."""
    times_s: tuple[float, ...]
    """Ward times it fires at (``at``, or ``every`` with jitter from ``from`` until ``until``)."""
    duration_s: float = 0.0
    count: int = 1
    records: int = 1
    seconds: float = 0.0
    level: int = 5
    where: str = ""
    """``faults[i]`` — for messages."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    source: str
    """File name (or ``<dict>``)."""
    seed: int
    patients: tuple[PatientSpec, ...]
    events: tuple[tuple[int, Schedule], ...]
    """Glucose events per patient (times in ward minutes)."""
    devices: tuple[DeviceSpec, ...]
    faults: tuple[FaultSpec, ...]
    speed: float = 1.0
    start_clock_min: float | None = None
    duration_s: float | None = None
    """Default run length in ward time (``--duration`` overrides it in real seconds)."""
    description: str = ""
    fast_pacing: bool = False
    """BLE devices paced for tests (HR 0.05 s …) instead of like real devices."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def device(self, device_id: str) -> DeviceSpec:
        for d in self.devices:
            if d.device_id == device_id:
                return d
        raise KeyError(device_id)


# ---------------------------------------------------------------------------------------------- parsing


class _Ctx:
    def __init__(self, source: str) -> None:
        self.source = source

    def err(self, key: str, message: str) -> ScenarioError:
        return ScenarioError(self.source, key, message)

    def table(self, raw: Any, key: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.err(key, f"must be a table, not {type(raw).__name__}")
        return raw

    def known(self, raw: Mapping[str, Any], key: str, allowed: set[str]) -> None:
        for k in raw:
            if k not in allowed:
                where = f"{key}.{k}" if key else k
                raise self.err(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def integer(self, raw: Any, key: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise self.err(key, f"must be an integer, not {raw!r}")
        if minimum is not None and raw < minimum:
            raise self.err(key, f"must be >= {minimum}, not {raw}")
        if maximum is not None and raw > maximum:
            raise self.err(key, f"must be <= {maximum}, not {raw}")
        return raw

    def number(self, raw: Any, key: str, *, positive: bool = False) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise self.err(key, f"must be a number, not {raw!r}")
        if positive and not raw > 0:
            raise self.err(key, f"must be > 0, not {raw}")
        return float(raw)

    def boolean(self, raw: Any, key: str) -> bool:
        if not isinstance(raw, bool):
            raise self.err(key, f"must be true or false, not {raw!r}")
        return raw

    def string(self, raw: Any, key: str) -> str:
        if not isinstance(raw, str):
            raise self.err(key, f"must be a string, not {raw!r}")
        return raw

    def seconds(self, raw: Any, key: str, *, positive: bool = False, negative_ok: bool = False) -> float:
        """A duration / ward time: seconds as a number, or ``"1h30min"``-style text."""
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            value = float(raw)
        elif isinstance(raw, str):
            text = raw.strip().replace(" ", "")
            sign = -1.0 if text.startswith("-") else 1.0
            body = text.lstrip("+-")
            pos, total = 0, 0.0
            for m in _PART.finditer(body):
                if m.start() != pos:
                    break
                total += float(m.group(1)) * _UNITS[m.group(2)]
                pos = m.end()
            if not body or pos != len(body):
                raise self.err(key, f"not a duration: {raw!r} (e.g. 90, '90s', '10min', '2h', '1h30min', '1d')")
            value = sign * total
        else:
            raise self.err(key, f"must be seconds or a duration string, not {raw!r}")
        if not math.isfinite(value) or (value < 0 and not negative_ok):
            raise self.err(key, f"must not be negative: {raw!r}")
        if positive and not value > 0:
            raise self.err(key, f"must be > 0: {raw!r}")
        return value


def _time_of_day(ctx: _Ctx, raw: Any, key: str) -> float:
    m = _TIME_OF_DAY.fullmatch(ctx.string(raw, key))
    if m is None:
        raise ctx.err(key, f"must be a time of day 'HH:MM', not {raw!r}")
    return int(m.group(1)) * 60.0 + int(m.group(2))


_PATIENT_KEYS = {
    "seed",
    "diabetes_type",
    "hr_bpm",
    "ectopic_per_min",
    "af_episodes",
    "af_hr_bpm",
    "cgm_insertion",
    "routine",
    "events",
    "count",
}
_EVENT_KEYS = {"at", "kind", "carbs_g", "units", "duration", "intensity"}


def _patients(ctx: _Ctx, raw: Any, seed: int) -> tuple[list[PatientSpec], list[tuple[int, Schedule]]]:
    if isinstance(raw, int) and not isinstance(raw, bool):
        n = ctx.integer(raw, "patients", minimum=1, maximum=100_000)
        return [PatientSpec.draw(seed, i) for i in range(n)], []
    if not isinstance(raw, list) or not raw:
        raise ctx.err("patients", "must be a count or a non-empty array of tables ([[patients]])")
    specs: list[PatientSpec] = []
    events: list[tuple[int, Schedule]] = []
    for i, item in enumerate(raw):
        key = f"patients[{i}]"
        t = ctx.table(item, key)
        ctx.known(t, key, _PATIENT_KEYS)
        copies = ctx.integer(t.get("count", 1), f"{key}.count", minimum=1, maximum=100_000)
        for c in range(copies):
            bed = len(specs)
            base = PatientSpec.draw(seed, bed)
            p_seed = ctx.integer(t["seed"], f"{key}.seed", minimum=0) + c if "seed" in t else base.seed
            dtype = ctx.integer(
                t.get("diabetes_type", base.diabetes_type), f"{key}.diabetes_type", minimum=1, maximum=2
            )
            overrides: dict[str, Any] = {}
            if "hr_bpm" in t:
                overrides["hr_bpm"] = ctx.number(t["hr_bpm"], f"{key}.hr_bpm", positive=True)
            if "ectopic_per_min" in t:
                overrides["ectopic_per_min"] = ctx.number(t["ectopic_per_min"], f"{key}.ectopic_per_min")
            if "af_hr_bpm" in t:
                overrides["af_hr_bpm"] = ctx.number(t["af_hr_bpm"], f"{key}.af_hr_bpm", positive=True)
            if "af_episodes" in t:
                eps = t["af_episodes"]
                if not isinstance(eps, list):
                    raise ctx.err(f"{key}.af_episodes", "must be an array of [start, end] pairs")
                pairs: list[tuple[float, float]] = []
                for j, ep in enumerate(eps):
                    ek = f"{key}.af_episodes[{j}]"
                    if not isinstance(ep, list) or len(ep) != 2:
                        raise ctx.err(ek, "must be a [start, end] pair")
                    pairs.append((ctx.seconds(ep[0], ek), ctx.seconds(ep[1], ek)))
                overrides["af_episodes"] = tuple(pairs)
            cardiac = None
            if overrides:
                try:
                    cardiac = CardiacProfile.draw(p_seed, **overrides)
                except ValueError as exc:
                    raise ctx.err(key, str(exc)) from None
            insertion: float = -MINUTES_PER_DAY
            if "cgm_insertion" in t:
                insertion = ctx.seconds(t["cgm_insertion"], f"{key}.cgm_insertion", negative_ok=True) / 60.0
            routine = ctx.boolean(t.get("routine", True), f"{key}.routine")
            specs.append(
                PatientSpec(p_seed, dtype, cardiac=cardiac, cgm_insertion_min=float(insertion), routine=routine)
            )
            if "events" in t:
                events.append((bed, _events(ctx, t["events"], f"{key}.events")))
    return specs, events


def _events(ctx: _Ctx, raw: Any, key: str) -> Schedule:
    if not isinstance(raw, list):
        raise ctx.err(key, "must be an array of tables ([[patients.events]])")
    s = Schedule()
    for j, item in enumerate(raw):
        ek = f"{key}[{j}]"
        t = ctx.table(item, ek)
        ctx.known(t, ek, _EVENT_KEYS)
        if "at" not in t or "kind" not in t:
            raise ctx.err(ek, "needs 'at' and 'kind'")
        at_min = ctx.seconds(t["at"], f"{ek}.at") / 60.0
        kind = ctx.string(t["kind"], f"{ek}.kind")
        if kind == "meal":
            s.meals.append(Meal(at_min, ctx.number(t.get("carbs_g", 50), f"{ek}.carbs_g", positive=True)))
        elif kind in ("bolus", "over-bolus"):
            default = 12.0 if kind == "over-bolus" else 4.0
            s.boluses.append(Bolus(at_min, ctx.number(t.get("units", default), f"{ek}.units", positive=True)))
        elif kind == "exercise":
            dur = ctx.seconds(t.get("duration", 1800), f"{ek}.duration", positive=True) / 60.0
            intensity = ctx.number(t.get("intensity", 0.5), f"{ek}.intensity")
            if not 0.0 <= intensity <= 1.0:
                raise ctx.err(f"{ek}.intensity", f"must be 0 … 1, not {intensity}")
            s.exercise.append(Exercise(at_min, dur, intensity))
        else:
            raise ctx.err(f"{ek}.kind", f"unknown event {kind!r} (meal, bolus, over-bolus, exercise)")
    return s


_DEVICE_KEYS = {"kind", "patients", "records", "reading_every", "e2e_crc", "id_prefix", "ecg_fs", "frame_every"}


def _devices(ctx: _Ctx, raw: Any, n_patients: int) -> list[DeviceSpec]:
    if not isinstance(raw, list) or not raw:
        raise ctx.err("devices", "must be a non-empty array of tables ([[devices]])")
    out: list[DeviceSpec] = []
    per_profile: dict[str, int] = {}
    g5_index: dict[str, int] = {}
    for i, item in enumerate(raw):
        key = f"devices[{i}]"
        t = ctx.table(item, key)
        ctx.known(t, key, _DEVICE_KEYS)
        if "kind" not in t:
            raise ctx.err(key, "needs 'kind'")
        kind = ctx.string(t["kind"], f"{key}.kind")
        if kind not in BLE_KINDS | G5_KINDS:
            raise ctx.err(
                f"{key}.kind", f"unknown device kind {kind!r} (one of: {', '.join(sorted(BLE_KINDS | G5_KINDS))})"
            )
        who = t.get("patients", "all")
        if who == "all":
            beds = list(range(n_patients))
        elif isinstance(who, list) and who:
            beds = [
                ctx.integer(b, f"{key}.patients[{j}]", minimum=0, maximum=n_patients - 1) for j, b in enumerate(who)
            ]
        else:
            raise ctx.err(f"{key}.patients", "must be 'all' or a non-empty array of patient indices")
        records = ctx.integer(t.get("records", 10), f"{key}.records", minimum=0, maximum=100_000)
        every = None
        if "reading_every" in t:
            if kind != Profile.GLUCOSE_METER:
                raise ctx.err(f"{key}.reading_every", "only for glucose-meter")
            every = ctx.seconds(t["reading_every"], f"{key}.reading_every", positive=True)
        e2e = ctx.boolean(t.get("e2e_crc", True), f"{key}.e2e_crc")
        ecg_fs = ctx.integer(t.get("ecg_fs", 130), f"{key}.ecg_fs", minimum=1, maximum=2000)
        frame_every = ctx.seconds(t.get("frame_every", 1.0), f"{key}.frame_every", positive=True)
        prefix = None
        if "id_prefix" in t:
            if kind in BLE_KINDS:
                raise ctx.err(f"{key}.id_prefix", "only for 5G devices (BLE ids are {profile}-{index})")
            prefix = ctx.string(t["id_prefix"], f"{key}.id_prefix")
        for bed in beds:
            if kind in BLE_KINDS:
                index = per_profile.get(kind, 0)
                per_profile[kind] = index + 1
                device_id = f"{kind}-{index}"
            else:
                p = prefix if prefix is not None else f"{kind}-"
                index = g5_index.get(p, 0)
                g5_index[p] = index + 1
                device_id = f"{p}{index + 1:02d}"
                if not DEVICE_ID_RE.fullmatch(device_id):
                    raise ctx.err(f"{key}.id_prefix", f"{device_id!r} is not a valid device id")
            out.append(DeviceSpec(kind, bed, index, device_id, records, every, e2e, ecg_fs, frame_every))
    ids = [d.device_id for d in out]
    dup = {x for x in ids if ids.count(x) > 1}
    if dup:
        raise ctx.err("devices", f"device ids collide: {', '.join(sorted(dup))} (use distinct id_prefix)")
    return out


_FAULT_KEYS = {
    "kind",
    "devices",
    "at",
    "every",
    "jitter",
    "from",
    "until",
    "duration",
    "count",
    "records",
    "seconds",
    "level",
}


def _select(ctx: _Ctx, raw: Any, key: str, devices: Sequence[DeviceSpec], kind: FaultKind) -> tuple[str, ...]:
    """Selectors: a device id, a kind (``cgm``: every CGM), ``KIND:PATIENT``, or ``*``."""
    sels = [raw] if isinstance(raw, str) else raw
    if not isinstance(sels, list) or not sels:
        raise ctx.err(key, "must be a selector or a non-empty array of selectors (id, kind, kind:patient, '*')")
    chosen: list[str] = []
    for j, sel in enumerate(sels):
        sk = f"{key}[{j}]" if isinstance(raw, list) else key
        s = ctx.string(sel, sk)
        k, _, bed = s.partition(":")
        hits = [d for d in devices if s in ("*", d.device_id) or (k == d.kind and (not bed or bed == str(d.patient)))]
        if not hits:
            raise ctx.err(sk, f"selects no device: {s!r}")
        fit = [d for d in hits if d.kind in FAULTS_FOR[kind]]
        if not fit and s != "*":
            raise ctx.err(sk, f"{kind.value} does not apply to {', '.join(sorted({d.kind for d in hits}))}")
        chosen += [d.device_id for d in fit if d.device_id not in chosen]
    if not chosen:
        raise ctx.err(key, f"{kind.value} applies to none of the selected devices")
    return tuple(chosen)


def _fault_times(
    ctx: _Ctx, t: Mapping[str, Any], key: str, seed: int, index: int, horizon_s: float
) -> tuple[float, ...]:
    if ("at" in t) == ("every" in t):
        raise ctx.err(key, "needs exactly one of 'at' (a time or an array of times) or 'every'")
    if "at" in t:
        ats = t["at"] if isinstance(t["at"], list) else [t["at"]]
        return tuple(sorted(ctx.seconds(a, f"{key}.at") for a in ats))
    import numpy as np

    every = ctx.seconds(t["every"], f"{key}.every", positive=True)
    jitter = ctx.seconds(t.get("jitter", 0), f"{key}.jitter")
    start = ctx.seconds(t.get("from", every), f"{key}.from")
    until = ctx.seconds(t["until"], f"{key}.until") if "until" in t else horizon_s
    if not math.isfinite(until):
        raise ctx.err(key, "'every' needs 'until' (or a scenario duration)")
    rng = np.random.default_rng([seed, index, 0xFA17])
    out: list[float] = []
    k = 0
    while start + k * every <= until and len(out) < 100_000:
        out.append(max(0.0, start + k * every + float(rng.uniform(-jitter, jitter))))
        k += 1
    return tuple(sorted(out))


def _faults(ctx: _Ctx, raw: Any, devices: Sequence[DeviceSpec], seed: int, horizon_s: float) -> list[FaultSpec]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ctx.err("faults", "must be an array of tables ([[faults]])")
    out: list[FaultSpec] = []
    for i, item in enumerate(raw):
        key = f"faults[{i}]"
        t = ctx.table(item, key)
        ctx.known(t, key, _FAULT_KEYS)
        if "kind" not in t:
            raise ctx.err(key, "needs 'kind'")
        name = ctx.string(t["kind"], f"{key}.kind")
        try:
            kind = FaultKind(name)
        except ValueError:
            raise ctx.err(
                f"{key}.kind", f"unknown fault {name!r} (one of: {', '.join(k.value for k in FaultKind)})"
            ) from None
        targets = _select(ctx, t.get("devices", "*"), f"{key}.devices", devices, kind)
        times = _fault_times(ctx, t, key, seed, i, horizon_s)
        duration = 0.0
        if kind in DURATION_FAULTS:
            if "duration" not in t:
                raise ctx.err(key, f"{kind.value} needs 'duration'")
            duration = ctx.seconds(t["duration"], f"{key}.duration", positive=True)
        elif "duration" in t:
            raise ctx.err(f"{key}.duration", f"{kind.value} has no duration")
        if kind is FaultKind.CLOCK_JUMP and "seconds" not in t:
            raise ctx.err(key, "clock-jump needs 'seconds'")
        out.append(
            FaultSpec(
                kind,
                targets,
                times,
                duration,
                count=ctx.integer(t.get("count", 1), f"{key}.count", minimum=0),
                records=ctx.integer(t.get("records", 1), f"{key}.records", minimum=0),
                seconds=ctx.seconds(t.get("seconds", 0), f"{key}.seconds", negative_ok=True),
                level=ctx.integer(t.get("level", 5), f"{key}.level", minimum=0, maximum=100),
                where=key,
            )
        )
    return out


_TOP = {"scenario", "patients", "devices", "faults"}
_HEAD = {"name", "description", "seed", "start", "speed", "duration", "pacing"}


def parse_scenario(raw: Mapping[str, Any], source: str = "<dict>") -> Scenario:
    ctx = _Ctx(source)
    ctx.known(raw, "", _TOP)
    head = ctx.table(raw.get("scenario", {}), "scenario")
    ctx.known(head, "scenario", _HEAD)
    seed = ctx.integer(head.get("seed", 0), "scenario.seed", minimum=0)
    speed = ctx.number(head.get("speed", 1.0), "scenario.speed", positive=True)
    start = _time_of_day(ctx, head["start"], "scenario.start") if "start" in head else None
    duration = ctx.seconds(head["duration"], "scenario.duration", positive=True) if "duration" in head else None
    pacing = ctx.string(head.get("pacing", "real"), "scenario.pacing")
    if pacing not in ("real", "fast"):
        raise ctx.err("scenario.pacing", f"must be 'real' or 'fast', not {pacing!r}")
    if "patients" not in raw:
        raise ctx.err("patients", "missing (a count, or [[patients]] tables)")
    patients, events = _patients(ctx, raw["patients"], seed)
    if "devices" not in raw:
        raise ctx.err("devices", "missing ([[devices]] tables)")
    devices = _devices(ctx, raw["devices"], len(patients))
    faults = _faults(ctx, raw.get("faults"), devices, seed, duration if duration is not None else math.inf)
    return Scenario(
        name=ctx.string(head.get("name", Path(source).stem), "scenario.name"),
        source=source,
        seed=seed,
        patients=tuple(patients),
        events=tuple(events),
        devices=tuple(devices),
        faults=tuple(faults),
        speed=speed,
        start_clock_min=start,
        duration_s=duration,
        description=ctx.string(head.get("description", ""), "scenario.description"),
        fast_pacing=pacing == "fast",
    )


def load_scenario(path: str | Path) -> Scenario:
    """Load a scenario file; a bare name (``diabetes-ward-night``) is looked up among the shipped ones."""
    p = Path(path)
    if not p.exists() and p.parent == Path(".") and p.name in shipped_scenarios():
        text = resources.files("firmware_sim.scenarios").joinpath(f"{p.name}.toml").read_text(encoding="utf-8")
        source = f"{p.name}.toml"
    else:
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(str(p), "", f"cannot read: {exc.strerror or exc}") from None
        source = str(p)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, "", f"not valid TOML: {exc}") from None
    return parse_scenario(raw, source)


def shipped_scenarios() -> list[str]:
    """Names of the scenarios shipped in ``firmware_sim/scenarios``."""
    root = resources.files("firmware_sim.scenarios")
    return sorted(f.name.removesuffix(".toml") for f in root.iterdir() if f.name.endswith(".toml"))

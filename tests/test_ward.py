"""A ward of simulated patients observed by simulated devices (firmware_sim/ward.py).

No radio: the devices' value builders (``next_measurement``, ``ecg_samples``, ``measure_due``,
``add_reading``, ``next_result``, ``next_reading``) work without one, and a :class:`ManualClock`
drives simulated time.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import numpy.typing as npt
from paho.mqtt.enums import MQTTProtocolVersion

from firmware_sim.ble.clock import DeviceClock
from firmware_sim.ble.devices.blood_pressure import BloodPressureCuff
from firmware_sim.ble.devices.cgm import Cgm
from firmware_sim.ble.devices.ecg import ECG_RATE_HZ, EcgStrap
from firmware_sim.ble.devices.glucose_meter import GlucoseMeter
from firmware_sim.ble.devices.heart_rate import HeartRateStrap
from firmware_sim.ble.devices.pulse_oximeter import PulseOximeter
from firmware_sim.ble.fleet import FleetOptions, build_fleet
from firmware_sim.ble.identity import DeviceIdentity, Profile, device_identity
from firmware_sim.ble.wire.ieee11073 import Num
from firmware_sim.models.beats import CardiacProfile
from firmware_sim.models.cgm_sensor import iso15197_within
from firmware_sim.mqtt_fleet import FleetOptions as MqttFleetOptions
from firmware_sim.mqtt_fleet import MqttFleet
from firmware_sim.ward import ManualClock, PatientSpec, PatientView, Ward

START_CLOCK_MIN = 7 * 60.0
"""07:00: breakfast and lunch fall in the first hours."""


def ward(n: int, seed: int = 5, **kw: object) -> tuple[Ward, ManualClock]:
    clock = ManualClock()
    w = Ward(n, seed=seed, clock=clock, epoch_s=1_767_225_600.0, start_clock_min=START_CLOCK_MIN, **kw)  # type: ignore[arg-type]
    return w, clock


def ident(profile: Profile, index: int = 0) -> DeviceIdentity:
    return device_identity(profile, index, 11)


def r_peaks(uv: npt.NDArray[np.int32], fs: int) -> npt.NDArray[np.int64]:
    """Sample indices of R peaks: maxima of the ECG minus its 200 ms moving average."""
    x = uv.astype(np.float64)
    w = int(0.2 * fs) | 1
    hp = x - np.convolve(np.pad(x, w // 2, mode="edge"), np.ones(w) / w, mode="valid")
    threshold = 0.45 * np.percentile(hp, 99.5)
    peaks: list[int] = []
    refractory = int(0.25 * fs)
    for k in np.flatnonzero(hp > threshold):
        lo, hi = max(0, k - refractory // 2), min(hp.size, k + refractory // 2 + 1)
        if hp[k] == hp[lo:hi].max() and (not peaks or k - peaks[-1] >= refractory):
            peaks.append(int(k))
    return np.array(peaks, dtype=np.int64)


def test_hr_strap_and_ecg_strap_of_a_patient_agree_beat_for_beat() -> None:
    # A patient with an AF episode from 30 to 60 s, so the beats are not a regular train.
    seed = PatientSpec.draw(5, 0).seed
    spec = PatientSpec(seed, cardiac=CardiacProfile.draw(seed, af_episodes=((30.0, 60.0),)))
    clock = ManualClock()
    w = Ward([spec], seed=5, clock=clock, epoch_s=0.0, start_clock_min=START_CLOCK_MIN)
    view = w.patient(0)
    strap = HeartRateStrap(ident(Profile.HEART_RATE), patient=view, clock=DeviceClock(host_time=w.epoch))
    ecg = EcgStrap(ident(Profile.ECG), patient=view, clock=DeviceClock(host_time=w.epoch))
    assert ecg.ecg_stream is not None
    first_sample = ecg.ecg_stream.next_sample
    rr_strap: list[int] = []
    rr_ecg_strap: list[int] = []
    chunks: list[npt.NDArray[np.int32]] = []
    hrs: list[int] = []
    for _ in range(90):
        clock.advance(1.0)
        m = strap.next_measurement()
        rr_strap += m.rr_1024
        hrs.append(m.bpm)
        rr_ecg_strap += ecg.next_measurement().rr_1024
        chunks.append(ecg.ecg_samples(ecg.ecg_stream.due()))
    assert rr_strap == rr_ecg_strap  # the two straps' own HR services
    samples = np.concatenate(chunks)
    assert samples.size == 90 * ECG_RATE_HZ
    peaks = (first_sample + r_peaks(samples, ECG_RATE_HZ)) / ECG_RATE_HZ
    # Both report the beats after t = 0: the strap's RR intervals (the first one ends at the first
    # beat, the ECG's first R peak) are the R-R intervals of the ECG, each within a sample.
    rr = np.array(rr_strap) / 1024.0
    ecg_rr = np.diff(peaks)
    assert ecg_rr.size == rr.size - 1
    np.testing.assert_allclose(ecg_rr, rr[1:], atol=1.5 / ECG_RATE_HZ + 1 / 1024)
    # AF shows in the strap's RR: irregular during the episode, far more than in sinus rhythm.
    t_beats = peaks[0] + np.concatenate([[0.0], np.cumsum(rr[1:])])
    af = (t_beats > 32) & (t_beats < 58)
    sinus = t_beats > 62
    assert np.std(rr[af]) > 2 * np.std(rr[sinus])
    assert min(hrs) >= 30 and max(hrs) <= 200


def test_cgm_and_meter_of_a_patient_see_one_glucose_trajectory() -> None:
    w, clock = ward(3)
    view = w.patient(1)
    dclock = DeviceClock(host_time=w.epoch)
    cgm = Cgm(ident(Profile.CGM), patient=view, clock=dclock, records=12)
    meter = GlucoseMeter(ident(Profile.GLUCOSE_METER), patient=view, clock=dclock, records=10)
    # Stored records from the patient's recent past: CGM readings every 5 min, meter spot checks.
    assert len(cgm.records) == 12
    offsets = [r.time_offset_min for r in cgm.records]
    assert offsets == sorted(set(offsets))
    past = [(r.base_time, r.mg_dl) for r in meter.records]
    assert len(past) == 10
    for when, mg_dl in past:
        t_s = (when - dclock.now()).total_seconds()
        plasma = w.glucose.advance_to(w.glucose_minute(t_s))[1]
        assert iso15197_within(np.array([plasma]), np.array([mg_dl]))[0] or abs(mg_dl - plasma) < 25
    cgm_t: list[float] = []
    cgm_v: list[float] = []
    meter_v: list[float] = []
    plasma_v: list[float] = []
    for _ in range(8 * 12):  # 8 h in 5-min steps
        clock.advance(300.0)
        for record in cgm.new_records():
            assert isinstance(record.glucose, Num)
            cgm_t.append(view.now_s())
            cgm_v.append(float(record.glucose.mantissa))
        meter_v.append(meter.add_reading().mg_dl)
        plasma_v.append(view.glucose())
    cgm_arr, meter_arr, plasma = np.array(cgm_v), np.array(meter_v), np.array(plasma_v)
    assert cgm_arr.size == 8 * 12
    # The meter reads plasma within ISO 15197 (95 % required).
    assert iso15197_within(plasma, meter_arr).mean() >= 0.95
    # The CGM follows the same trajectory, behind it: closer to the lagged plasma than to plasma ahead.
    assert plasma.max() - plasma.min() > 40  # meals happened
    mard = np.abs(cgm_arr - plasma) / plasma
    assert np.mean(mard) < 0.2
    lag_fit = [np.mean(np.abs(cgm_arr[k:] - plasma[: plasma.size - k])) for k in range(0, 5)]
    lead_fit = [np.mean(np.abs(cgm_arr[: cgm_arr.size - k] - plasma[k:])) for k in range(1, 5)]
    assert min(lag_fit) < min(lead_fit)
    assert np.corrcoef(cgm_arr, meter_arr)[0, 1] > 0.8


def test_cgm_warm_up_is_absent_then_values() -> None:
    clock = ManualClock()
    spec = PatientSpec.draw(2, 0, cgm_insertion_min=0.0)
    w = Ward([spec], seed=2, clock=clock, epoch_s=0.0, start_clock_min=START_CLOCK_MIN)
    cgm = Cgm(ident(Profile.CGM), patient=w.patient(0), clock=DeviceClock(host_time=w.epoch), records=0)
    seen: list[object] = []
    for _ in range(36):
        clock.advance(300.0)
        seen += [r.glucose for r in cgm.new_records()]
    absent = [g for g in seen if not isinstance(g, Num)]
    assert 60 // 5 <= len(absent) <= 125 // 5  # 60–120 min of warm-up
    assert all(isinstance(g, Num) for g in seen[len(absent) :])
    first = cgm.records[0]
    assert first.cal_temp is not None and first.trend is None


def test_two_patients_differ_and_vitals_come_from_the_patient() -> None:
    w, clock = ward(2)
    a, b = w.patient(0), w.patient(1)
    straps = [HeartRateStrap(ident(Profile.HEART_RATE, i), patient=p) for i, p in enumerate((a, b))]
    cuffs = [BloodPressureCuff(ident(Profile.BLOOD_PRESSURE, i), patient=p) for i, p in enumerate((a, b))]
    oxis = [PulseOximeter(ident(Profile.PULSE_OXIMETER, i), patient=p) for i, p in enumerate((a, b))]
    rr: list[list[int]] = [[], []]
    for _ in range(30):
        clock.advance(1.0)
        for i in range(2):
            rr[i] += straps[i].next_measurement().rr_1024
    assert rr[0] != rr[1]
    assert a.glucose() != b.glucose()
    for i, p in enumerate((a, b)):
        bp = cuffs[i].next_result()
        truth = p.blood_pressure()
        assert bp.systolic == Num(round(truth.systolic)) and bp.diastolic == Num(round(truth.diastolic))
        assert bp.pulse_bpm == Num(round(p.heart_rate()))
        assert oxis[i].next_reading() == (round(p.spo2()), round(p.heart_rate()))
    assert cuffs[0].next_result().systolic != cuffs[1].next_result().systolic


def device_outputs(seed: int) -> list[bytes]:
    w, clock = ward(3, seed=seed)
    devs = build_fleet(
        {Profile.HEART_RATE: 3, Profile.ECG: 1, Profile.CGM: 2, Profile.GLUCOSE_METER: 1, Profile.PULSE_OXIMETER: 1},
        FleetOptions(seed=seed, realtime=False),
        ward=w,
    )
    out: list[bytes] = []
    for _ in range(20):
        clock.advance(30.0)
        for d in devs:
            if isinstance(d, EcgStrap):
                assert d.ecg_stream is not None
                out.append(d.ecg_samples(d.ecg_stream.due()).tobytes())
            elif isinstance(d, HeartRateStrap):
                out.append(d.next_measurement().to_bytes())
            elif isinstance(d, Cgm):
                out += [d.encode(r) for r in d.new_records()]
            elif isinstance(d, GlucoseMeter):
                out.append(d.add_reading().measurement(mol_per_l=False).to_bytes())
            elif isinstance(d, PulseOximeter):
                out.append(bytes(d.next_reading()))
    return out


def test_same_seed_same_device_outputs_other_seed_others() -> None:
    first = device_outputs(7)
    assert first == device_outputs(7)
    assert first != device_outputs(8)


def test_fleet_with_a_ward_shares_patients() -> None:
    w, clock = ward(2)
    devs = build_fleet({Profile.HEART_RATE: 4, Profile.CGM: 2}, FleetOptions(seed=1, realtime=False), ward=w)
    straps = [d for d in devs if isinstance(d, HeartRateStrap)]
    assert [s.patient.index if s.patient else None for s in straps] == [0, 1, 0, 1]
    clock.advance(20.0)
    assert straps[0].next_measurement().rr_1024 == straps[2].next_measurement().rr_1024
    # The devices' clocks follow the ward's simulated time.
    assert abs((straps[0].clock.now() - straps[1].clock.now()) / timedelta(seconds=1)) < 1e-3
    # options.patients builds the ward itself; without it nothing changes (no patient).
    built = build_fleet({Profile.PULSE_OXIMETER: 2}, FleetOptions(seed=1, patients=1))
    assert all(isinstance(d, PulseOximeter) and d.patient is not None for d in built)
    plain = build_fleet({Profile.PULSE_OXIMETER: 2}, FleetOptions(seed=1))
    assert all(isinstance(d, PulseOximeter) and d.patient is None for d in plain)


async def test_ward_of_200_patients_with_3_devices_for_a_simulated_hour() -> None:
    w, clock = ward(200, seed=9, speed=60.0)
    devs = build_fleet(
        {Profile.HEART_RATE: 200, Profile.CGM: 200, Profile.PULSE_OXIMETER: 200},
        FleetOptions(seed=9, realtime=False),
        ward=w,
    )
    beats = 0
    readings = 0
    for _ in range(60):  # one host second = one simulated minute
        clock.advance(1.0)
        for d in devs:
            if isinstance(d, HeartRateStrap):
                beats += len(d.next_measurement().rr_1024)
            elif isinstance(d, Cgm):
                readings += len(await d.measure_due())
            elif isinstance(d, PulseOximeter):
                spo2, pr = d.next_reading()
                assert 70 <= spo2 <= 100 and 25 <= pr <= 250
    assert w.now_s() == 3600.0
    assert readings == 200 * 12
    # A strap that pulls once a simulated minute keeps at most MAX_RR = 8 RR intervals per notification.
    assert beats == 200 * 60 * 8


def test_lagging_cursors_stay_bounded() -> None:
    w, clock = ward(4, ecg_history_s=20.0, beat_history_s=60.0, cgm_history_min=120.0)
    view: PatientView = w.patient(0)
    keen, lazy = view.beat_stream(), view.beat_stream()
    keen_ecg, lazy_ecg = view.ecg_stream(250), view.ecg_stream(250)
    keen_cgm, lazy_cgm = view.cgm_stream(), view.cgm_stream()
    for _ in range(600):  # 10 simulated minutes, the keen devices pulling every second
        clock.advance(1.0)
        keen.take()
        keen_ecg.take_due()
    # The shared buffers hold a bounded window, whatever the lagging cursors still point at.
    assert max(len(log.t) for log in w._logs) < 400
    group = w._ecg[250][0]
    assert group.uv.shape[1] == 2 * 20 * 250 + 250  # never grew
    assert keen.skipped == keen_ecg.skipped == 0
    # A lagging device skips to what is still held, and continues from there.
    b = lazy.take()
    assert lazy.skipped > 0 and b.time_s.size > 0 and b.time_s[0] >= view.now_s() - 62.0
    e = lazy_ecg.take(250)
    assert lazy_ecg.skipped > 0 and e.start >= (view.now_s() - 22.0) * 250 and e.uv.size == 250
    assert [r.time_s for r in keen_cgm.take()] == [300.0, 600.0]
    for _ in range(12 * 10):  # then 10 hours, the keen CGM every 5 min
        clock.advance(300.0)
        assert len(keen_cgm.take()) == 1
    assert w._cgm_t.size <= 120 // 5 + 66
    c = lazy_cgm.take()
    assert lazy_cgm.skipped > 0 and 0 < len(c) <= 120 // 5 + 66
    assert keen_cgm.take() == [] and keen_cgm.skipped == 0


def test_mqtt_fleet_observes_ward_patients() -> None:
    w, clock = ward(2)
    opts = MqttFleetOptions(
        host="127.0.0.1",
        port=1,
        pki_dir=None,
        device_ids=["dev01", "dev02", "dev03"],
        protocol=MQTTProtocolVersion.MQTTv5,
        ecg_fs=250,
    )
    fleet = MqttFleet(opts, ward=w)
    clock.advance(1.0)
    recs = fleet._measurements(0, 0.0)
    hr = next(r for r in recs if r["n"] == "heart-rate")
    assert hr["v"] == round(w.patient(0).heart_rate() / 60, 4)
    ecg = next(r for r in recs if r["n"].startswith("ecg:i"))
    assert len(ecg["vd"]) in (2 * 250, 3 * 250)
    w2, clock2 = ward(1)
    cgm = MqttFleet(MqttFleetOptions("127.0.0.1", 1, None, ["dev01"], kind="cgm"), ward=w2)
    sent: list[float] = []
    for _ in range(12):
        clock2.advance(300.0)
        records = cgm._measurements(0, 0.0)
        sent += [r["v"] for r in records if r["n"] == "cgm-glucose"]
        assert all(r["t"] <= 0 for r in records if r["n"] == "cgm-glucose")
    assert len(sent) == 12 and all(0.3 < v < 4.0 for v in sent)
    # options.patients builds the ward; without it the devices keep their own simple patients.
    assert MqttFleet(MqttFleetOptions("127.0.0.1", 1, None, ["dev01"], patients=1)).ward is not None
    assert MqttFleet(MqttFleetOptions("127.0.0.1", 1, None, ["dev01"])).ward is None

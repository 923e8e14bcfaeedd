"""Glucose–insulin compartment model of type 1 and type 2 patients, vectorised across a ward.

A simplified synthetic model in the spirit of Bergman's minimal model (glucose ``G``, remote insulin
action ``X``, plasma insulin ``I``) with the meal route of Dalla Man et al. (2007) / UVA-Padova
(stomach → gut → plasma appearance), two-compartment subcutaneous insulin, endogenous secretion for
type 2, exercise, dawn phenomenon, renal excretion and counter-regulation. It is *not* a validated
simulator; see ``docs/physiology.md`` ("Glucose") for the equations, parameter ranges and sources.

Every array is vectorised over the ward (one column per patient); the state is integrated with a fixed
1-minute RK4 step. Everything is deterministic from a seed: :meth:`GlucosePatients.draw` draws the
per-patient parameters, :func:`daily_routine` the meals, boluses and exercise.

Streaming: :class:`GlucoseSimulation` carries its state across calls; ``advance_to(t_min)`` returns
the plasma glucose (mg/dL) of every patient at ``t_min`` and ``plasma(k0, k1)`` the per-minute
trajectory from its history — identical to the one-shot :func:`simulate` for the same inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MINUTES_PER_DAY = 1440
G_MIN_MG_DL = 20.0
"""Lower physiological bound; the dynamics (counter-regulation) keep glucose above it, a clip guards it."""
G_MAX_MG_DL = 600.0
"""Upper physiological bound; the dynamics (renal excretion) keep glucose below it, a clip guards it."""
HYPO_MG_DL = 70.0
HYPER_MG_DL = 180.0
RENAL_THRESHOLD_MG_DL = 180.0
COUNTER_THRESHOLD_MG_DL = 70.0

# State rows.
_G, _X, _I, _STO1, _STO2, _GUT, _SC1, _SC2, _SEC = range(9)
_N_STATE = 9


# ---------------------------------------------------------------------- scenario input


@dataclass(frozen=True, slots=True)
class Meal:
    time_min: float
    """Minutes since the simulation start."""
    carbs_g: float


@dataclass(frozen=True, slots=True)
class Bolus:
    time_min: float
    units: float
    """Rapid-acting insulin, subcutaneous (U)."""


@dataclass(frozen=True, slots=True)
class Exercise:
    start_min: float
    duration_min: float
    intensity: float
    """0–1 (fraction of maximal effort); raises insulin-independent uptake while it lasts."""


@dataclass(slots=True)
class Schedule:
    """One patient's inputs over the simulated period (times in minutes since the start)."""

    meals: list[Meal] = field(default_factory=list)
    boluses: list[Bolus] = field(default_factory=list)
    exercise: list[Exercise] = field(default_factory=list)


# ---------------------------------------------------------------------- patients


def _u(rng: np.random.Generator, lo: float, hi: float, n: int) -> FloatArray:
    return rng.uniform(lo, hi, n)


@dataclass(frozen=True, slots=True)
class GlucosePatients:
    """Per-patient parameters (one array element per patient). Ranges: see :meth:`draw`."""

    type1: BoolArray
    insulin_treated: BoolArray
    """Takes meal boluses (all type 1, some type 2)."""
    weight_kg: FloatArray
    vg_dl: FloatArray
    """Glucose distribution volume (dL)."""
    sg: FloatArray
    """Insulin-independent glucose uptake / effectiveness (1/min)."""
    si: FloatArray
    """Insulin sensitivity (1/min per mU/L)."""
    p2: FloatArray
    """Rate of remote insulin action (1/min)."""
    vi_l: FloatArray
    """Insulin distribution volume (L)."""
    n_clear: FloatArray
    """Plasma insulin clearance (1/min)."""
    kd: FloatArray
    """Subcutaneous insulin, depot → second compartment (1/min)."""
    ka: FloatArray
    """Subcutaneous insulin, second compartment → plasma (1/min)."""
    k_grind: FloatArray
    """Meal: solid stomach → liquid stomach (1/min)."""
    k_empt: FloatArray
    """Meal: stomach → gut (1/min)."""
    k_abs: FloatArray
    """Meal: gut → plasma (1/min)."""
    f_abs: FloatArray
    """Fraction of the carbohydrate that appears in plasma."""
    egp0: FloatArray
    """Endogenous glucose production without insulin (mg/dL/min)."""
    dawn_amp: FloatArray
    """Early-morning relative increase of endogenous production."""
    dawn_peak_min: FloatArray
    """Clock time (minutes after midnight) of the dawn peak."""
    dawn_width_min: FloatArray
    renal_k: FloatArray
    """Renal excretion above 180 mg/dL (1/min)."""
    counter_k: FloatArray
    """Counter-regulation (glucagon) below 70 mg/dL (1/min)."""
    exercise_k: FloatArray
    """Extra insulin-independent uptake at intensity 1 (1/min)."""
    target_mg_dl: FloatArray
    """Fasting glucose the patient's basal insulin (sc or endogenous) holds at night."""
    basal_sc_mu_min: FloatArray
    """Subcutaneous basal insulin (mU/min); 0 for type 2."""
    basal_secretion_mu_min: FloatArray
    """Endogenous basal secretion (mU/min); 0 for type 1."""
    beta: FloatArray
    """Glucose-stimulated secretion (mU/min per mg/dL above target); 0 for type 1."""
    alpha: FloatArray
    """Rate of stimulated secretion (1/min)."""
    carb_ratio_g_u: FloatArray
    """Carbohydrate that one unit of bolus insulin covers for this patient (g/U), from the model."""

    @property
    def n(self) -> int:
        return int(self.type1.shape[0])

    @classmethod
    def draw(cls, n: int, seed: int, *, type1_fraction: float = 0.5) -> GlucosePatients:
        """``n`` patients from ``seed``; the first ``round(n * type1_fraction)`` are type 1."""
        if n < 1:
            raise ValueError(f"need at least one patient, not {n}")
        rng = np.random.default_rng([seed, 0x6C0])
        n1 = round(n * type1_fraction)
        type1 = np.arange(n) < n1
        insulin_treated = type1 | (rng.uniform(0.0, 1.0, n) < 0.4)
        weight = _u(rng, 55.0, 110.0, n)
        vg = _u(rng, 1.5, 1.9, n) * weight
        sg = _u(rng, 0.005, 0.009, n)
        si = np.where(type1, _u(rng, 4.0e-4, 1.0e-3, n), _u(rng, 1.2e-4, 3.5e-4, n))
        p2 = _u(rng, 0.015, 0.035, n)
        vi = _u(rng, 0.10, 0.14, n) * weight
        n_clear = _u(rng, 0.12, 0.16, n)
        kd = _u(rng, 0.014, 0.022, n)
        ka = _u(rng, 0.014, 0.022, n)
        k_grind = _u(rng, 0.05, 0.09, n)
        k_empt = _u(rng, 0.03, 0.06, n)
        k_abs = _u(rng, 0.04, 0.08, n)
        f_abs = _u(rng, 0.85, 0.95, n)
        egp0 = np.where(type1, _u(rng, 1.4, 2.2, n), _u(rng, 1.6, 2.4, n))
        dawn_amp = _u(rng, 0.10, 0.35, n)
        dawn_peak = _u(rng, 5.0, 7.0, n) * 60.0
        dawn_width = _u(rng, 60.0, 90.0, n)
        renal_k = _u(rng, 0.003, 0.006, n)
        counter_k = _u(rng, 0.03, 0.06, n)
        exercise_k = _u(rng, 0.008, 0.015, n)
        target = np.where(type1, _u(rng, 100.0, 140.0, n), _u(rng, 120.0, 160.0, n))
        # Basal insulin that holds `target` at steady state: X_b = EGP0/G_t - S_G, I_b = X_b/S_I.
        x_b = np.maximum(egp0 / target - sg, 5e-4)
        basal_mu_min = x_b / si * vi * n_clear
        basal_sc = np.where(type1, basal_mu_min, 0.0)
        basal_secretion = np.where(type1, 0.0, basal_mu_min)
        beta = np.where(type1, 0.0, _u(rng, 0.3, 1.2, n))
        alpha = _u(rng, 0.03, 0.06, n)
        # A unit of bolus lowers G by about G_ref*S_I*1000/(V_I*n) in total; a gram of carbohydrate
        # raises it by f*1000/V_G. Their ratio is the carbohydrate one unit covers (G_ref: the
        # post-meal level, about 1.25 x the fasting target).
        carb_ratio = 1.25 * target * si * vg / (vi * n_clear * f_abs)
        return cls(
            type1=type1,
            insulin_treated=insulin_treated,
            weight_kg=weight,
            vg_dl=vg,
            sg=sg,
            si=si,
            p2=p2,
            vi_l=vi,
            n_clear=n_clear,
            kd=kd,
            ka=ka,
            k_grind=k_grind,
            k_empt=k_empt,
            k_abs=k_abs,
            f_abs=f_abs,
            egp0=egp0,
            dawn_amp=dawn_amp,
            dawn_peak_min=dawn_peak,
            dawn_width_min=dawn_width,
            renal_k=renal_k,
            counter_k=counter_k,
            exercise_k=exercise_k,
            target_mg_dl=target,
            basal_sc_mu_min=basal_sc,
            basal_secretion_mu_min=basal_secretion,
            beta=beta,
            alpha=alpha,
            carb_ratio_g_u=carb_ratio,
        )


# ---------------------------------------------------------------------- routine generator


def daily_routine(
    patients: GlucosePatients,
    days: float,
    seed: int,
    *,
    start_clock_min: float = 0.0,
    mistakes: bool = True,
) -> list[Schedule]:
    """A routine per patient: 3 meals, 0–3 snacks, boluses by carb ratio, some exercise.

    Insulin-treated patients bolus ``carbs / estimated carb ratio`` (their estimate is off by about
    ±15 %; type 2 patients' own secretion covers about half a meal). With ``mistakes``, about 1 in 15
    boluses is forgotten (→ hyperglycaemia) and 1 in 50 is taken twice (→ hypoglycaemia).
    Times are minutes since the simulation start, which is ``start_clock_min`` after midnight.
    """
    rng = np.random.default_rng([seed, 0x6C1])
    horizon = days * MINUTES_PER_DAY
    first_day = math.floor(start_clock_min / MINUTES_PER_DAY)
    last_day = math.ceil((start_clock_min + horizon) / MINUTES_PER_DAY)
    out: list[Schedule] = []
    for p in range(patients.n):
        sched = Schedule()
        est_ratio = float(patients.carb_ratio_g_u[p] * rng.lognormal(0.0, 0.15))
        if not patients.type1[p]:
            est_ratio *= 2.0
        treated = bool(patients.insulin_treated[p])
        for day in range(first_day, last_day):
            base = day * MINUTES_PER_DAY - start_clock_min
            meals = [
                (rng.uniform(6.5, 8.5) * 60.0, rng.uniform(30.0, 70.0)),
                (rng.uniform(12.0, 13.5) * 60.0, rng.uniform(40.0, 90.0)),
                (rng.uniform(18.0, 20.0) * 60.0, rng.uniform(50.0, 100.0)),
            ]
            for lo, hi in ((10.0, 11.0), (15.0, 16.5), (21.5, 22.5)):
                if rng.uniform() < 0.4:
                    meals.append((rng.uniform(lo, hi) * 60.0, rng.uniform(10.0, 30.0)))
            for clock, carbs in meals:
                t = base + float(clock)
                if not 0.0 <= t < horizon:
                    continue
                sched.meals.append(Meal(t, round(float(carbs), 1)))
                if not treated or (carbs < 20.0 and rng.uniform() < 0.5):
                    continue
                units = float(carbs) / est_ratio
                if mistakes:
                    roll = rng.uniform()
                    if roll < 1.0 / 15.0:
                        continue
                    if roll < 1.0 / 15.0 + 1.0 / 50.0:
                        units *= 2.0
                offset = float(rng.uniform(-10.0, 10.0))
                sched.boluses.append(Bolus(max(0.0, t + offset), round(units * 2.0) / 2.0))
            if rng.uniform() < 0.3:
                start = base + float(rng.uniform(15.0, 17.5)) * 60.0
                if 0.0 <= start < horizon:
                    sched.exercise.append(
                        Exercise(start, float(rng.uniform(30.0, 60.0)), round(float(rng.uniform(0.3, 0.8)), 2))
                    )
        sched.meals.sort(key=lambda m: m.time_min)
        sched.boluses.sort(key=lambda b: b.time_min)
        out.append(sched)
    return out


@dataclass(frozen=True, slots=True)
class GlucoseScenario:
    patients: GlucosePatients
    schedules: list[Schedule]
    start_clock_min: float
    minutes: int


def ward_night_with_hypo(n: int, seed: int, *, hypo_patient: int = 0) -> GlucoseScenario:
    """A diabetes ward from 18:00 to 08:00: dinner with its bolus at about 19:00, a bedtime snack,
    and patient ``hypo_patient`` (type 1) taking three times the dinner bolus → a nocturnal hypo."""
    patients = GlucosePatients.draw(n, seed, type1_fraction=0.5)
    if not patients.type1[hypo_patient]:
        raise ValueError("the hypo patient must be type 1 (raise type1_fraction or pick another)")
    rng = np.random.default_rng([seed, 0x6C2])
    schedules: list[Schedule] = []
    for p in range(n):
        dinner_t = float(rng.uniform(45.0, 75.0))
        carbs = round(float(rng.uniform(50.0, 90.0)), 1)
        sched = Schedule(meals=[Meal(dinner_t, carbs), Meal(dinner_t + 180.0, 15.0)])
        if patients.insulin_treated[p]:
            ratio = float(patients.carb_ratio_g_u[p]) * (1.0 if patients.type1[p] else 2.0)
            units = carbs / ratio * (3.0 if p == hypo_patient else 1.0)
            sched.boluses.append(Bolus(dinner_t, round(units * 2.0) / 2.0))
        schedules.append(sched)
    return GlucoseScenario(patients, schedules, start_clock_min=18 * 60.0, minutes=14 * 60)


# ---------------------------------------------------------------------- simulation


@dataclass(slots=True)
class _Events:
    """One kind of input, sorted by step: (step, patient, amount)."""

    steps: IntArray
    patient: IntArray
    amount: FloatArray
    next: int = 0

    @classmethod
    def build(cls, rows: list[tuple[int, int, float]]) -> _Events:
        rows.sort(key=lambda r: r[0])
        return cls(
            np.array([r[0] for r in rows], dtype=np.int64),
            np.array([r[1] for r in rows], dtype=np.int64),
            np.array([r[2] for r in rows], dtype=np.float64),
        )

    def pending(self) -> list[tuple[int, int, float]]:
        i = self.next
        return list(zip(self.steps[i:].tolist(), self.patient[i:].tolist(), self.amount[i:].tolist(), strict=True))

    def apply(self, step: int, target: FloatArray) -> None:
        hi = int(np.searchsorted(self.steps, step, side="right"))
        if hi > self.next:
            np.add.at(target, self.patient[self.next : hi], self.amount[self.next : hi])
            self.next = hi


class GlucoseSimulation:
    """A ward's glucose–insulin state, stepped once a (simulated) minute, all patients at once.

    ``advance_to(t)`` integrates up to ``t`` and returns plasma glucose per patient (linear between
    minutes); ``plasma(k0, k1)`` returns the per-minute trajectory ``[k0, k1)`` (the last
    ``history_min`` minutes are kept). Inputs may be added while it runs with :meth:`add`, at or
    after the current minute. Results do not depend on how the calls are split.
    """

    def __init__(
        self,
        patients: GlucosePatients,
        schedules: Sequence[Schedule] | None = None,
        *,
        start_clock_min: float = 0.0,
        history_min: int = MINUTES_PER_DAY,
        initial_glucose: FloatArray | None = None,
    ) -> None:
        self.patients = patients
        self.start_clock_min = float(start_clock_min)
        n = patients.n
        self._x = np.zeros((_N_STATE, n), dtype=np.float64)
        p = patients
        i_b = (p.basal_sc_mu_min + p.basal_secretion_mu_min) / (p.vi_l * p.n_clear)
        self._x[_G] = p.target_mg_dl if initial_glucose is None else np.asarray(initial_glucose, dtype=np.float64)
        self._x[_I] = i_b
        self._x[_X] = p.si * i_b
        self._x[_SC1] = p.basal_sc_mu_min / p.kd
        self._x[_SC2] = p.basal_sc_mu_min / p.ka
        self._exercise = np.zeros(n, dtype=np.float64)
        self._meals = _Events.build([])
        self._boluses = _Events.build([])
        self._ex_events = _Events.build([])
        self._step = 0
        self._hist = np.empty((n, max(2, history_min)), dtype=np.float64)
        self._hist[:, 0] = self._x[_G]
        self._dawn_shift = p.dawn_peak_min
        if schedules is not None:
            if len(schedules) != n:
                raise ValueError(f"{len(schedules)} schedules for {n} patients")
            for i, s in enumerate(schedules):
                self.add(i, s)

    @property
    def n(self) -> int:
        return self.patients.n

    @property
    def minute(self) -> int:
        """The last simulated minute (its glucose is in the history)."""
        return self._step

    @property
    def insulin(self) -> FloatArray:
        """Plasma insulin now (mU/L)."""
        return np.array(self._x[_I], dtype=np.float64)

    def add(self, patient: int, schedule: Schedule) -> None:
        """Add a patient's meals, boluses and exercise (no earlier than the current minute)."""
        meal_rows = [(self._at(m.time_min), patient, m.carbs_g * 1000.0) for m in schedule.meals]
        bolus_rows = [(self._at(b.time_min), patient, b.units * 1000.0) for b in schedule.boluses]
        ex_rows: list[tuple[int, int, float]] = []
        for e in schedule.exercise:
            if not 0.0 <= e.intensity <= 1.0:
                raise ValueError(f"exercise intensity must be in [0, 1], not {e.intensity}")
            ex_rows.append((self._at(e.start_min), patient, e.intensity))
            ex_rows.append((self._at(e.start_min + e.duration_min), patient, -e.intensity))
        if meal_rows:
            self._meals = _Events.build(self._meals.pending() + meal_rows)
        if bolus_rows:
            self._boluses = _Events.build(self._boluses.pending() + bolus_rows)
        if ex_rows:
            self._ex_events = _Events.build(self._ex_events.pending() + ex_rows)

    def _at(self, t_min: float) -> int:
        step = round(t_min)
        if step < self._step:
            raise ValueError(f"input at minute {t_min} is before the current minute {self._step}")
        return step

    def advance_to(self, t_min: float) -> FloatArray:
        """Plasma glucose (mg/dL) of every patient at ``t_min`` (not earlier than the history)."""
        k1 = math.ceil(t_min)
        self._run_until(k1)
        k0 = math.floor(t_min)
        g1 = self._hist[:, k1 % self._hist.shape[1]]
        if k0 == k1:
            return g1.copy()
        g0 = self._hist[:, self._hist_index(k0)]
        w = t_min - k0
        return np.asarray((1.0 - w) * g0 + w * g1, dtype=np.float64)

    def plasma(self, k0: int, k1: int) -> FloatArray:
        """Per-minute plasma glucose, shape ``(n, k1 - k0)``, for minutes ``k0 … k1 - 1``."""
        if k1 <= k0:
            return np.empty((self.n, 0), dtype=np.float64)
        self._run_until(k1 - 1)
        self._hist_index(k0)
        idx = np.arange(k0, k1) % self._hist.shape[1]
        return np.asarray(self._hist[:, idx], dtype=np.float64)

    def _hist_index(self, k: int) -> int:
        if k < 0 or k < self._step - self._hist.shape[1] + 1:
            raise ValueError(f"minute {k} is no longer in the history (now {self._step})")
        return k % self._hist.shape[1]

    def _run_until(self, k: int) -> None:
        while self._step < k:
            self._advance_one()

    def _advance_one(self) -> None:
        k = self._step
        x = self._x
        self._meals.apply(k, x[_STO1])
        self._boluses.apply(k, x[_SC1])
        self._ex_events.apply(k, self._exercise)
        np.maximum(self._exercise, 0.0, out=self._exercise)
        t = float(k)
        k1 = self._deriv(x, t)
        k2 = self._deriv(x + 0.5 * k1, t + 0.5)
        k3 = self._deriv(x + 0.5 * k2, t + 0.5)
        k4 = self._deriv(x + k3, t + 1.0)
        x += (k1 + 2.0 * (k2 + k3) + k4) * (1.0 / 6.0)
        np.clip(x[_G], G_MIN_MG_DL, G_MAX_MG_DL, out=x[_G])
        np.maximum(x[1:], 0.0, out=x[1:])
        self._step = k + 1
        self._hist[:, self._step % self._hist.shape[1]] = x[_G]

    def _deriv(self, x: FloatArray, t: float) -> FloatArray:
        p = self.patients
        g, xa, ins, sto1, sto2, gut, sc1, sc2, sec = x
        clock = (self.start_clock_min + t) % MINUTES_PER_DAY
        d = (clock - self._dawn_shift + MINUTES_PER_DAY / 2) % MINUTES_PER_DAY - MINUTES_PER_DAY / 2
        egp = p.egp0 * (1.0 + p.dawn_amp * np.exp(-0.5 * (d / p.dawn_width_min) ** 2))
        ra = p.f_abs * p.k_abs * gut / p.vg_dl
        out = np.empty_like(x)
        out[_G] = (
            egp
            + ra
            - (p.sg + xa + p.exercise_k * self._exercise) * g
            - p.renal_k * np.maximum(g - RENAL_THRESHOLD_MG_DL, 0.0)
            + p.counter_k * np.maximum(COUNTER_THRESHOLD_MG_DL - g, 0.0)
        )
        out[_X] = p.p2 * (p.si * ins - xa)
        out[_I] = (p.ka * sc2 + p.basal_secretion_mu_min + sec) / p.vi_l - p.n_clear * ins
        out[_STO1] = -p.k_grind * sto1
        out[_STO2] = p.k_grind * sto1 - p.k_empt * sto2
        out[_GUT] = p.k_empt * sto2 - p.k_abs * gut
        out[_SC1] = p.basal_sc_mu_min - p.kd * sc1
        out[_SC2] = p.kd * sc1 - p.ka * sc2
        out[_SEC] = p.alpha * (p.beta * np.maximum(g - p.target_mg_dl, 0.0) - sec)
        return out


def simulate(
    patients: GlucosePatients,
    schedules: Sequence[Schedule] | None,
    minutes: int,
    *,
    start_clock_min: float = 0.0,
) -> FloatArray:
    """One-shot: plasma glucose (mg/dL), shape ``(n, minutes + 1)``, one column per minute from 0."""
    sim = GlucoseSimulation(patients, schedules, start_clock_min=start_clock_min, history_min=minutes + 1)
    return sim.plasma(0, minutes + 1)

"""The metric vocabulary: gateway metric name ↔ IEEE 11073 MDC ↔ LOINC ↔ UCUM.

This table is the single source of names; ``docs/schema.md`` documents it and a test checks that
the two agree. The metric name is also the InfluxDB measurement name.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import PayloadError


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    mdc: int
    mdc_ref: str
    loinc: str | None
    units: tuple[str, ...]
    """UCUM units accepted for this metric; the first one is the canonical unit."""
    waveform: bool = False
    loinc_moles: str | None = None
    """LOINC code for readings in a substance (mol/L) unit, where it differs from ``loinc`` (mass)."""
    spectrum: bool = False
    """Accepted only as a :class:`~gateway.model.Spectrum` (values over a frequency axis)."""
    research_only: bool = False
    """A research sensor's output: never a clinical value, never in the priority rules (docs/research-sensor.md)."""

    @property
    def unit(self) -> str:
        return self.units[0]

    def loinc_for(self, unit: str) -> str | None:
        """The LOINC code that matches ``unit`` (mass and molar concentrations have different codes)."""
        if unit.startswith(("mmol", "umol", "mol")):
            return self.loinc_moles
        return self.loinc


PRIVATE_BASE = (2 << 16) | 0xF000
"""First code of IEEE 11073-10101's private range in partition 2 (2::61440): private, non-standard codes."""

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("heart_rate", 147842, "MDC_ECG_HEART_RATE", "8867-4", ("/min",)),
        Metric("pulse_rate_oximeter", 149530, "MDC_PULS_OXIM_PULS_RATE", "8867-4", ("/min",)),
        Metric("pulse_rate_bp", 149546, "MDC_PULS_RATE_NON_INV", "8867-4", ("/min",)),
        Metric("rr_interval", 147240, "MDC_ECG_TIME_PD_RR_GL", "8637-1", ("ms",)),
        Metric("bp_systolic", 150021, "MDC_PRESS_BLD_NONINV_SYS", "8480-6", ("mm[Hg]", "kPa")),
        Metric("bp_diastolic", 150022, "MDC_PRESS_BLD_NONINV_DIA", "8462-4", ("mm[Hg]", "kPa")),
        Metric("bp_mean", 150023, "MDC_PRESS_BLD_NONINV_MEAN", "8478-0", ("mm[Hg]", "kPa")),
        Metric("spo2", 150456, "MDC_PULS_OXIM_SAT_O2", "59408-5", ("%",)),
        Metric(
            "glucose_capillary_whole_blood",
            160184,
            "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD",
            "41653-7",
            ("mg/dL", "mmol/L"),
            loinc_moles=None,
        ),
        Metric("glucose_capillary_plasma", 160188, "MDC_CONC_GLU_CAPILLARY_PLASMA", None, ("mg/dL", "mmol/L")),
        Metric("glucose_venous_whole_blood", 160192, "MDC_CONC_GLU_VENOUS_WHOLEBLOOD", None, ("mg/dL", "mmol/L")),
        Metric("glucose_venous_plasma", 160196, "MDC_CONC_GLU_VENOUS_PLASMA", None, ("mg/dL", "mmol/L")),
        Metric("glucose_arterial_whole_blood", 160200, "MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD", None, ("mg/dL", "mmol/L")),
        Metric("glucose_arterial_plasma", 160204, "MDC_CONC_GLU_ARTERIAL_PLASMA", None, ("mg/dL", "mmol/L")),
        Metric(
            "glucose_undetermined_whole_blood",
            160364,
            "MDC_CONC_GLU_UNDETERMINED_WHOLEBLOOD",
            None,
            ("mg/dL", "mmol/L"),
        ),
        Metric("glucose_undetermined_plasma", 160368, "MDC_CONC_GLU_UNDETERMINED_PLASMA", None, ("mg/dL", "mmol/L")),
        Metric("glucose_isf", 160212, "MDC_CONC_GLU_ISF", "99504-3", ("mg/dL", "mmol/L"), loinc_moles="105272-9"),
        Metric("glucose_trend", 160472, "MDC_CONC_GLU_TREND", None, ("mg/dL/min",)),
        Metric("hba1c", 160220, "MDC_CONC_HBA1C", None, ("%",)),
        Metric("perfusion_index", 150448, "MDC_PULS_OXIM_PERF_REL", None, ("%",)),
        Metric("energy_expended", 8454263, "MDC_HF_ENERGY", None, ("kJ",)),
        Metric("battery_level", 67996, "MDC_ATTR_VAL_BATT_CHARGE", None, ("%",)),
        Metric("body_temperature", 150364, "MDC_TEMP_BODY", "8310-5", ("Cel",)),
        Metric("ecg", 131328, "MDC_ECG_ELEC_POTL", None, ("uV",), waveform=True),
        Metric("ecg_lead_i", 131329, "MDC_ECG_ELEC_POTL_I", None, ("uV",), waveform=True),
        Metric("ecg_lead_ii", 131330, "MDC_ECG_ELEC_POTL_II", None, ("uV",), waveform=True),
        Metric("pleth", 150452, "MDC_PULS_OXIM_PLETH", None, ("1",), waveform=True),
        # Research non-invasive glucose sensor (docs/research-sensor.md). No standard MDC code exists:
        # these are private, non-standard codes from IEEE 11073-10101's private range of partition 2
        # (term codes 0xF000-0xFBFF), and they have no LOINC code.
        Metric(
            "nig_s21_magnitude",
            PRIVATE_BASE,
            "DS4H_PRIVATE_NIG_S21_MAGNITUDE",
            None,
            ("dB",),
            spectrum=True,
            research_only=True,
        ),
        Metric(
            "nig_s21_phase",
            PRIVATE_BASE + 1,
            "DS4H_PRIVATE_NIG_S21_PHASE",
            None,
            ("deg",),
            spectrum=True,
            research_only=True,
        ),
        Metric(
            "glucose_research_estimate",
            PRIVATE_BASE + 2,
            "DS4H_PRIVATE_GLUCOSE_RESEARCH_ESTIMATE",
            None,
            ("mg/dL",),
            research_only=True,
        ),
    )
}

BY_MDC: dict[int, Metric] = {m.mdc: m for m in METRICS.values()}


def metric(name: str) -> Metric:
    """Look a metric up by name; unknown names are a payload error."""
    try:
        return METRICS[name]
    except KeyError:
        raise PayloadError(f"unknown metric {name!r} (see docs/schema.md)") from None


def check_unit(m: Metric, unit: str) -> None:
    if unit not in m.units:
        raise PayloadError(f"metric {m.name!r} takes units {', '.join(m.units)}, not {unit!r}")

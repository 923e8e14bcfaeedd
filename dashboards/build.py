"""Generate the Grafana dashboards in this directory from one description (docs/dashboards.md).

    python dashboards/build.py          # rewrite dashboards/prometheus/*.json and dashboards/influxdb/*.json
    python dashboards/build.py --check  # exit 1 if a committed file differs from what this script writes

Each panel is described once, with its PromQL (Prometheus / VictoriaMetrics datasource) and its
InfluxQL (InfluxDB 1.8, 2.x through a DBRP mapping, 3.x) queries side by side, so the two sets of
dashboards show the same views. Measurement, tag and field names come from ``gateway.schema_names``
(the schema of docs/schema.md); ``tests/test_dashboards.py`` executes every PromQL query against a real
VictoriaMetrics after a demo-like run and parses every InfluxQL query against the schema.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gateway import schema_names  # noqa: E402
from gateway.vocabulary import METRICS  # noqa: E402

SCHEMA_VERSION = 39
"""Grafana's dashboard JSON schema version (Grafana 10.4 – 11.x)."""

PROMETHEUS = {"type": "prometheus", "uid": "ds4h-prometheus"}
INFLUXDB = {"type": "influxdb", "uid": "ds4h-influxdb"}
EXPRESSION = {"type": "__expr__", "uid": "__expr__"}

CLINICAL = tuple(m for m in schema_names.MEASUREMENTS if not METRICS[m].research_only)
"""Measurements shown on the ward views (research-only sensor outputs are not care data)."""
READINGS = tuple(m for m in CLINICAL if schema_names.kind(m) == "reading")
"""Clinical measurements of readings (the ones with fields alert and absent; waveforms have neither)."""
GLUCOSE = tuple(m for m in CLINICAL if m.startswith("glucose_") and m != "glucose_trend")

GLUCOSE_UNIT = "mg/dL"
"""The glucose panels read mg/dL series (the unit tag is part of the series: mmol/L readings are others)."""
AGP_DAYS = 7
TIR_BANDS: tuple[tuple[str, str, str], ...] = (
    # (legend, PromQL 0/1 condition on X, InfluxQL condition) — the consensus time-in-range bands
    ("very low < 54", "(X < bool 54)", '"value" < 54'),
    ("low 54-69", "(X >= bool 54) * (X < bool 70)", '"value" >= 54 AND "value" < 70'),
    ("in range 70-180", "(X >= bool 70) * (X <= bool 180)", '"value" >= 70 AND "value" <= 180'),
    ("high 181-250", "(X > bool 180) * (X <= bool 250)", '"value" > 180 AND "value" <= 250'),
    ("very high > 250", "(X > bool 250)", '"value" > 250'),
)


def thresholds(below_1: str, from_1: str) -> dict[str, Any]:
    """Field defaults of a stat panel coloured ``below_1`` under 1 and ``from_1`` from 1 on."""
    return {
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": below_1, "value": None}, {"color": from_1, "value": 1}],
        }
    }


def _alternation(names: tuple[str, ...]) -> str:
    return "|".join(names)


def prom_any(fields: str, *, device: bool = True, measurements: tuple[str, ...] = CLINICAL) -> str:
    """A selector for the ``fields`` series (``value|absent`` …) of those ``measurements`` that have them.

    ``{__name__=~"(a|b)_(value)|(a)_(absent)"}``: one group per field, listing the measurements with that field.
    """
    groups = []
    for f in fields.split("|"):
        having = tuple(m for m in measurements if f in schema_names.fields(m))
        groups.append(f"({_alternation(having)})_({f})")
    matcher = ',device=~"$device"' if device else ""
    return f'{{__name__=~"{"|".join(groups)}"{matcher}}}'


INFLUX_ANY = f"/^({_alternation(CLINICAL)})$/"
INFLUX_READINGS = f"/^({_alternation(READINGS)})$/"
DEVICE_RE = '"device" =~ /^$device$/'


# --------------------------------------------------------------------------------------------------
# targets and panels


def prom(expr: str, legend: str = "{{device}}", *, instant: bool = False, fmt: str = "time_series") -> dict[str, Any]:
    return {
        "datasource": PROMETHEUS,
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "format": fmt,
    }


def iql(query: str, alias: str = "$tag_device", *, fmt: str = "time_series", hide: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": INFLUXDB, "query": query, "rawQuery": True, "resultFormat": fmt}
    if alias:
        t["alias"] = alias
    if hide:
        t["hide"] = True
    return t


def select(what: str, source: str, *, where: str = "", window: str = "$timeFilter", group: str = '"device"') -> str:
    """``SELECT what FROM source WHERE device AND where AND window GROUP BY group`` (InfluxQL)."""
    cond = " AND ".join(c for c in (DEVICE_RE, where, window) if c)
    return f"SELECT {what} FROM {source} WHERE {cond} GROUP BY {group}"


def expr_math(expression: str) -> dict[str, Any]:
    """A Grafana server-side expression (math over other queries of the panel, by refId)."""
    return {"datasource": EXPRESSION, "type": "math", "expression": expression}


@dataclass
class Panel:
    title: str
    type: str
    description: str
    prometheus: list[dict[str, Any]] | None
    influxdb: list[dict[str, Any]] | None
    """``None``: the panel cannot be written in that query language (docs/dashboards.md says why)."""
    w: int = 12
    h: int = 8
    unit: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    overrides: list[dict[str, Any]] = field(default_factory=list)
    time_from: str | None = None
    interval: str | None = None
    max_data_points: int | None = None
    transformations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Row:
    title: str


@dataclass
class Variable:
    name: str
    label: str
    prometheus: str
    influxdb: str | None
    multi: bool = True


@dataclass
class Dashboard:
    slug: str
    title: str
    description: str
    time_from: str
    variables: list[Variable]
    items: list[Panel | Row]
    influxdb: bool = True


STAT = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "textMode": "value_and_name"}
TABLE_MERGE = [{"id": "merge", "options": {}}]


def _glucose_sel(metric: str = "glucose_isf") -> str:
    return f'{metric}_value{{device=~"$device",unit="{GLUCOSE_UNIT}"}}'


def _influx_glucose(select: str, extra: str = "", group: str = 'GROUP BY "device"', metric: str = "glucose_isf") -> str:
    where = f"{DEVICE_RE} AND \"unit\" = '{GLUCOSE_UNIT}'{extra} AND $timeFilter"
    return f'SELECT {select} FROM "{metric}" WHERE {where} {group}'


def _agp_union() -> str:
    parts = []
    for d in range(AGP_DAYS):
        offset = f" offset {d}d" if d else ""
        parts.append(f'label_replace({_glucose_sel()}{offset}, "day", "{d}", "", "")')
    return " or ".join(parts)


DEVICE_VAR = Variable(
    "device",
    "Device",
    prometheus=f"label_values({prom_any('value|absent', device=False)}, device)",
    influxdb=f'SHOW TAG VALUES FROM {INFLUX_ANY} WITH KEY = "device"',
)

WARD = Dashboard(
    "ward-overview",
    "ds4h · Ward overview",
    "Every device on the ward: is it reporting, when did it last report, its latest vital signs, "
    "device-flagged readings and time-quality flags.",
    "now-6h",
    [DEVICE_VAR],
    [
        Panel(
            "Devices reporting (last 5 min)",
            "stat",
            "Devices with at least one stored point (value or absent value) in the last 5 minutes.",
            [
                prom(
                    f"count(count by (device) (count_over_time({prom_any('value|absent')}[5m])))",
                    "devices",
                    instant=True,
                )
            ],
            None,
            w=6,
            options=STAT,
        ),
        Panel(
            "Points per reporting device (last 5 min)",
            "stat",
            "Points each device stored in the last 5 minutes, one value per device and measurement "
            "(InfluxQL cannot count distinct tag values over a time window).",
            None,
            [iql(select('count("value")', INFLUX_ANY, window="time > now() - 5m"), "$tag_device $measurement")],
            w=6,
            options=STAT,
        ),
        Panel(
            "Freshness: seconds since each device's last point",
            "table",
            "Age of the newest stored point per device, looking back 1 h (10 s resolution). A device "
            "missing here sent nothing for an hour.",
            [
                prom(
                    f"time() - max by (device) (max_over_time(timestamp({prom_any('value|absent')})[1h:10s]))",
                    "{{device}}",
                    instant=True,
                    fmt="table",
                )
            ],
            None,
            w=18,
            unit="s",
            defaults={
                "thresholds": {
                    "mode": "absolute",
                    "steps": [
                        {"color": "green", "value": None},
                        {"color": "yellow", "value": 60},
                        {"color": "red", "value": 300},
                    ],
                }
            },
        ),
        Panel(
            "Freshness: each device's last point",
            "table",
            "Time of the newest stored value per device and measurement, looking back 1 h, shown as time "
            "ago. A device missing here sent nothing for an hour.",
            None,
            [iql(select('last("value")', INFLUX_ANY, window="time > now() - 1h"), "", fmt="table")],
            w=18,
            options={"sortBy": [{"displayName": "Time", "desc": False}]},
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "Time"},
                    "properties": [{"id": "unit", "value": "dateTimeFromNow"}],
                }
            ],
        ),
        Panel(
            "Latest vital signs per device",
            "table",
            "The newest value of each vital sign per device (heart rate, SpO2, CGM glucose, blood pressure).",
            [
                prom(
                    'last_over_time(heart_rate_value{device=~"$device"}[10m])', "{{device}}", instant=True, fmt="table"
                ),
                prom('last_over_time(spo2_value{device=~"$device"}[10m])', "{{device}}", instant=True, fmt="table"),
                prom(f"last_over_time({_glucose_sel()}[30m])", "{{device}}", instant=True, fmt="table"),
                prom(
                    'last_over_time(bp_systolic_value{device=~"$device",unit="mm[Hg]"}[2h])',
                    "{{device}}",
                    instant=True,
                    fmt="table",
                ),
                prom(
                    'last_over_time(bp_diastolic_value{device=~"$device",unit="mm[Hg]"}[2h])',
                    "{{device}}",
                    instant=True,
                    fmt="table",
                ),
            ],
            [
                iql(
                    select(f'last("value") AS "{label}"', f'"{m}"', where=where, window=f"time > now() - {w}"),
                    "",
                    fmt="table",
                )
                for label, m, where, w in (
                    ("heart rate", "heart_rate", "", "10m"),
                    ("SpO2", "spo2", "", "10m"),
                    ("glucose", "glucose_isf", f"\"unit\" = '{GLUCOSE_UNIT}'", "30m"),
                    ("systolic", "bp_systolic", "\"unit\" = 'mm[Hg]'", "2h"),
                    ("diastolic", "bp_diastolic", "\"unit\" = 'mm[Hg]'", "2h"),
                )
            ],
            w=24,
            transformations=TABLE_MERGE,
        ),
        Panel(
            "Points stored per device",
            "timeseries",
            "Points stored per device and interval (readings and waveform samples).",
            [prom(f"sum by (device) (count_over_time({prom_any('value|absent')}[$__interval]))")],
            [
                iql(
                    f'SELECT count("value") FROM {INFLUX_ANY} WHERE {DEVICE_RE} AND $timeFilter '
                    'GROUP BY time($__interval), "device" fill(none)',
                    "$tag_device $measurement",
                )
            ],
            w=24,
            options={"legend": {"displayMode": "table", "placement": "right"}},
        ),
        Panel(
            "Device-flagged readings (time range)",
            "bargauge",
            "Readings the device itself flagged (field alert, e.g. a CGM hypoglycaemia annunciation). "
            "Informational: the gateway is not a medical alarm system.",
            [
                prom(
                    f"sum by (device) (count_over_time({prom_any('alert', measurements=READINGS)}[$__range]))",
                    instant=True,
                )
            ],
            [
                iql(
                    select('count("alert")', INFLUX_READINGS),
                    "$tag_device $measurement",
                )
            ],
            w=8,
        ),
        Panel(
            "Absent values (time range)",
            "bargauge",
            "Readings without a value (field absent: nan, nres, +inf, -inf), e.g. a CGM below its range.",
            [
                prom(
                    f"sum by (device) (count_over_time({prom_any('absent', measurements=READINGS)}[$__range]))",
                    instant=True,
                )
            ],
            [
                iql(
                    select('count("absent")', INFLUX_READINGS),
                    "$tag_device $measurement",
                )
            ],
            w=8,
        ),
        Panel(
            "Points with time-quality flags (time range)",
            "bargauge",
            "Points whose time is not a corrected device time on a synchronised gateway clock (field tq "
            "non-zero: 1 gateway unsynchronised, 2 device time uncorrected, 4 receive time).",
            [prom(f"sum by (device) (count_over_time({prom_any('tq')}[$__range]))", instant=True)],
            [
                iql(
                    f'SELECT count("tq") FROM {INFLUX_ANY} WHERE {DEVICE_RE} AND $timeFilter GROUP BY "device"',
                    "$tag_device $measurement",
                )
            ],
            w=8,
        ),
    ],
)


def _tir_prom(cond: str) -> str:
    x = _glucose_sel()
    return f"100 * sum_over_time(({cond.replace('X', x)})[$__range:1m]) / count_over_time({x}[$__range:1m])"


PATIENT = Dashboard(
    "patient",
    "ds4h · Patient: glucose and cardiac signals",
    "One patient's devices (pick them in Device): CGM and meter glucose with an AGP-style day overlay, "
    "percentiles and time in range; heart rate, SpO2, blood pressure and ECG. The schema has no patient "
    "tag yet: select the patient's devices.",
    "now-24h",
    [DEVICE_VAR],
    [
        Row("Glucose"),
        Panel(
            "Glucose (mg/dL): CGM and meter",
            "timeseries",
            "CGM (glucose_isf) and capillary meter readings in mg/dL, with the 70–180 mg/dL target range.",
            [
                prom(_glucose_sel(), "CGM {{device}}"),
                prom(_glucose_sel("glucose_capillary_whole_blood"), "meter {{device}}"),
            ],
            [
                iql(_influx_glucose('"value"'), "CGM $tag_device"),
                iql(_influx_glucose('"value"', metric="glucose_capillary_whole_blood"), "meter $tag_device"),
            ],
            w=24,
            unit="suffix: mg/dL",
            defaults={
                "custom": {"thresholdsStyle": {"mode": "line+area"}},
                "thresholds": {
                    "mode": "absolute",
                    "steps": [
                        {"color": "red", "value": None},
                        {"color": "transparent", "value": 70},
                        {"color": "orange", "value": 180},
                    ],
                },
            },
        ),
        Panel(
            f"AGP: day overlay (last {AGP_DAYS} days)",
            "timeseries",
            "Each of the last days' CGM trace shifted onto the current 24 h (set the time range to 24 h).",
            [
                prom(_glucose_sel() + (f" offset {d}d" if d else ""), f"{d} d ago" if d else "today")
                for d in range(AGP_DAYS)
            ],
            None,
            w=12,
            h=10,
            unit="suffix: mg/dL",
        ),
        Panel(
            f"AGP: percentiles by time of day ({AGP_DAYS} days)",
            "timeseries",
            f"5th, 25th, 50th, 75th and 95th percentiles of CGM glucose at each time of day over the last "
            f"{AGP_DAYS} days (set the time range to 24 h).",
            [
                prom(f"quantile by (device) ({q}, {_agp_union()})", f"p{round(q * 100)}")
                for q in (0.05, 0.25, 0.5, 0.75, 0.95)
            ],
            None,
            w=12,
            h=10,
            unit="suffix: mg/dL",
        ),
        Panel(
            "Glucose percentiles per hour (time range)",
            "timeseries",
            "5th, 25th, 50th, 75th and 95th percentiles of CGM glucose in each hour of the time range. "
            "InfluxQL has no time-of-day grouping and no per-query time shift, so the AGP day overlay "
            "is available on the Prometheus dashboards only.",
            None,
            [
                iql(
                    _influx_glucose(
                        'percentile("value", 5) AS "p5", percentile("value", 25) AS "p25", median("value") AS "p50", '
                        'percentile("value", 75) AS "p75", percentile("value", 95) AS "p95"',
                        group='GROUP BY time(1h), "device" fill(none)',
                    ),
                    "$col",
                )
            ],
            w=24,
            h=10,
            unit="suffix: mg/dL",
        ),
        Panel(
            "Time in ranges (time range, % of CGM time)",
            "bargauge",
            "Share of the time range in each consensus band (CGM, mg/dL), time weighted at 1 min "
            "resolution (PromQL) or by reading count (InfluxQL, evenly spaced CGM readings).",
            [prom(_tir_prom(cond), label, instant=True) for label, cond, _ in TIR_BANDS],
            [iql(_influx_glucose('count("value")'), "", hide=True)]
            + [iql(_influx_glucose('count("value")', f" AND {cond}"), "", hide=True) for _, _, cond in TIR_BANDS]
            + [expr_math(f"${chr(ord('B') + k)} / $A * 100") for k in range(len(TIR_BANDS))],
            w=8,
            unit="percent",
            options={"orientation": "horizontal", "displayMode": "basic"},
        ),
        Panel(
            "Glucose statistics (time range)",
            "stat",
            "Mean CGM glucose, glucose management indicator (GMI % = 3.31 + 0.02392 × mean mg/dL) and "
            "coefficient of variation (CV % = 100 × SD / mean).",
            [
                prom(f"avg_over_time({_glucose_sel()}[$__range])", "mean mg/dL", instant=True),
                prom(f"3.31 + 0.02392 * avg_over_time({_glucose_sel()}[$__range])", "GMI %", instant=True),
                prom(
                    f"100 * stddev_over_time({_glucose_sel()}[$__range]) / avg_over_time({_glucose_sel()}[$__range])",
                    "CV %",
                    instant=True,
                ),
            ],
            [
                iql(
                    _influx_glucose(
                        'mean("value") AS "mean mg/dL", 3.31 + 0.02392 * mean("value") AS "GMI %", '
                        '100 * stddev("value") / mean("value") AS "CV %"'
                    ),
                    "$col",
                )
            ],
            w=8,
            options=STAT,
        ),
        Panel(
            "Device-flagged glucose readings (time range)",
            "stat",
            "Glucose readings the device flagged (e.g. CGM hypoglycaemia annunciation). Informational only.",
            [
                prom(
                    f"sum by (device) (count_over_time({prom_any('alert', measurements=GLUCOSE)}[$__range]))",
                    instant=True,
                )
            ],
            [iql(select('count("alert")', f"/^({_alternation(GLUCOSE)})$/"))],
            w=8,
            options=STAT,
        ),
        Row("Cardiac"),
        Panel(
            "Heart rate and pulse rate (/min)",
            "timeseries",
            "Heart rate (strap or ECG), pulse rate from the oximeter and from the blood-pressure cuff.",
            [
                prom('heart_rate_value{device=~"$device"}', "heart rate {{device}}"),
                prom('pulse_rate_oximeter_value{device=~"$device"}', "pulse (oximeter) {{device}}"),
                prom('pulse_rate_bp_value{device=~"$device"}', "pulse (cuff) {{device}}"),
            ],
            [
                iql(
                    select('mean("value")', f'"{m}"', group='time($__interval), "device" fill(none)'),
                    f"{label} $tag_device",
                )
                for m, label in (
                    ("heart_rate", "heart rate"),
                    ("pulse_rate_oximeter", "pulse (oximeter)"),
                    ("pulse_rate_bp", "pulse (cuff)"),
                )
            ],
            w=12,
            unit="suffix: /min",
        ),
        Panel(
            "SpO2 (%)",
            "timeseries",
            "Peripheral oxygen saturation.",
            [prom('spo2_value{device=~"$device"}')],
            [iql(select('mean("value")', '"spo2"', group='time($__interval), "device" fill(none)'))],
            w=12,
            unit="percent",
        ),
        Panel(
            "Blood pressure (mm[Hg])",
            "timeseries",
            "Non-invasive systolic, diastolic and mean arterial pressure, one point per cuff measurement.",
            [
                prom(f'{m}_value{{device=~"$device",unit="mm[Hg]"}}', f"{label} {{{{device}}}}")
                for m, label in (("bp_systolic", "systolic"), ("bp_diastolic", "diastolic"), ("bp_mean", "mean"))
            ],
            [
                iql(
                    select('"value"', f'"{m}"', where="\"unit\" = 'mm[Hg]'"),
                    f"{label} $tag_device",
                )
                for m, label in (("bp_systolic", "systolic"), ("bp_diastolic", "diastolic"), ("bp_mean", "mean"))
            ],
            w=12,
            unit="suffix: mmHg",
            defaults={"custom": {"drawStyle": "points", "pointSize": 6}},
        ),
        Panel(
            "ECG (last 10 s, µV)",
            "timeseries",
            "Raw ECG samples (250 Hz: one point every 4 ms) of the last 10 seconds, whatever the "
            "dashboard's time range.",
            [prom('ecg_value{device=~"$device"}')],
            [iql(f'SELECT "value" FROM "ecg" WHERE {DEVICE_RE} AND $timeFilter GROUP BY "device"')],
            w=12,
            unit="suffix: µV",
            time_from="10s",
            interval="4ms",
            max_data_points=2500,
        ),
    ],
)

INSTANCE = 'instance=~"$instance"'


def _g(name: str, extra: str = "") -> str:
    return f"{name}{{{INSTANCE}{extra}}}"


HEALTH = Dashboard(
    "gateway-health",
    "ds4h · Gateway health",
    "The gateway's own Prometheus metrics (GET /metrics, docs/operations.md), scraped by Prometheus or "
    "vmagent: delivery, outbox, sinks, quarantine, disk, clock and links.",
    "now-1h",
    [
        Variable(
            "instance",
            "Gateway",
            prometheus="label_values(ds4h_readings_committed_total, instance)",
            influxdb=None,
        )
    ],
    [
        Panel(
            "Points lost (must stay 0)",
            "stat",
            "Points lost after they were accepted; anything counted here is also logged.",
            [prom(f"sum by (instance) ({_g('ds4h_readings_lost_total')})", "{{instance}}", instant=True)],
            None,
            w=6,
            h=5,
            options=STAT,
            defaults=thresholds("green", "red"),
        ),
        Panel(
            "Back-pressure",
            "stat",
            "1 while ingest is refused (disk budget reached or stopping): sources keep their data.",
            [prom(f"max by (instance) ({_g('ds4h_backpressure')})", "{{instance}}", instant=True)],
            None,
            w=6,
            h=5,
            options=STAT,
            defaults=thresholds("green", "red"),
        ),
        Panel(
            "Clock synchronised",
            "stat",
            "0 while the gateway clock is not synchronised (stored times are flagged).",
            [prom(f"min by (instance) ({_g('ds4h_clock_synchronised')})", "{{instance}}", instant=True)],
            None,
            w=6,
            h=5,
            options=STAT,
            defaults=thresholds("red", "green"),
        ),
        Panel(
            "Dead letters held",
            "stat",
            "Batches a sink rejected, held in the dead-letter table (redrive with ds4h-gateway outbox).",
            [prom(f"sum by (instance, sink) ({_g('ds4h_dead_letters')})", "{{sink}}", instant=True)],
            None,
            w=6,
            h=5,
            options=STAT,
        ),
        Panel(
            "Points ingested and committed per second",
            "timeseries",
            "Points accepted for commit and points durably committed to the outbox.",
            [
                prom(
                    f"sum by (instance) (rate({_g('ds4h_readings_ingested_total')}[$__rate_interval]))",
                    "ingested {{instance}}",
                ),
                prom(
                    f"sum by (instance) (rate({_g('ds4h_readings_committed_total')}[$__rate_interval]))",
                    "committed {{instance}}",
                ),
            ],
            None,
            unit="short",
        ),
        Panel(
            "Points forwarded per second, by sink",
            "timeseries",
            "Points written to each sink (influx, local history, research …).",
            [
                prom(
                    f"sum by (instance, sink) (rate({_g('ds4h_readings_forwarded_total')}[$__rate_interval]))",
                    "{{sink}}",
                )
            ],
            None,
            unit="short",
        ),
        Panel(
            "Outbox depth, by sink (batches)",
            "timeseries",
            "Batches committed but not yet delivered to each sink.",
            [prom(_g("ds4h_outbox_depth"), "{{sink}}")],
            None,
        ),
        Panel(
            "Oldest undelivered batch, by sink",
            "timeseries",
            "Age of the oldest batch a sink has not delivered yet: grows while a sink is down.",
            [prom(_g("ds4h_outbox_oldest_age_seconds"), "{{sink}}")],
            None,
            unit="s",
        ),
        Panel(
            "Sink write errors, by kind",
            "timeseries",
            "Failed sink writes: retryable (connection, 5xx), throttled (429/503), rejected (4xx → dead letters).",
            [
                prom(
                    f"sum by (instance, sink, kind) (increase({_g('ds4h_sink_errors_total')}[$__rate_interval]))",
                    "{{sink}} {{kind}}",
                )
            ],
            None,
        ),
        Panel(
            "Quarantined inputs, by reason",
            "timeseries",
            "Inputs refused at ingest (unknown device, malformed …).",
            [
                prom(
                    f"sum by (instance, reason) (increase({_g('ds4h_rejected_total')}[$__rate_interval]))", "{{reason}}"
                )
            ],
            None,
        ),
        Panel(
            "Commit latency (receive → outbox COMMIT)",
            "timeseries",
            "50th and 99th percentile of the time from a batch's arrival to its durable commit.",
            [
                prom(
                    f"histogram_quantile({q}, sum by (instance, le) "
                    f"(rate({_g('ds4h_commit_latency_seconds_bucket')}[$__rate_interval])))",
                    f"p{round(q * 100)} {{{{instance}}}}",
                )
                for q in (0.5, 0.99)
            ],
            None,
            unit="s",
        ),
        Panel(
            "Duplicates answered per second",
            "timeseries",
            "Redelivered batches answered 'already committed' (normal after reconnects and replays).",
            [prom(f"sum by (instance) (rate({_g('ds4h_batches_duplicate_total')}[$__rate_interval]))", "{{instance}}")],
            None,
        ),
        Panel(
            "Disk used and budget",
            "timeseries",
            "Bytes used by outbox, provenance archive and history, against the configured budget "
            "(back-pressure starts at the budget).",
            [
                prom(_g("ds4h_disk_used_bytes"), "used {{instance}}"),
                prom(_g("ds4h_disk_budget_bytes"), "budget {{instance}}"),
            ],
            None,
            unit="bytes",
        ),
        Panel(
            "Device links",
            "timeseries",
            "MQTT broker connection (1 = connected), BLE devices connected, and link losses.",
            [
                prom(_g("ds4h_mqtt_connected"), "MQTT connected {{instance}}"),
                prom(_g("ds4h_ble_connected"), "BLE devices connected {{instance}}"),
                prom(f"increase({_g('ds4h_mqtt_reconnects_total')}[$__rate_interval])", "MQTT reconnects {{instance}}"),
                prom(f"increase({_g('ds4h_ble_disconnects_total')}[$__rate_interval])", "BLE disconnects {{instance}}"),
            ],
            None,
        ),
    ],
    influxdb=False,
)

DASHBOARDS = (WARD, PATIENT, HEALTH)


# --------------------------------------------------------------------------------------------------
# JSON


def _variable(v: Variable, flavour: str) -> dict[str, Any]:
    query = v.prometheus if flavour == "prometheus" else v.influxdb
    assert query is not None
    ds = PROMETHEUS if flavour == "prometheus" else INFLUXDB
    return {
        "name": v.name,
        "label": v.label,
        "type": "query",
        "datasource": ds,
        "definition": query,
        "query": {"query": query, "refId": f"{v.name}-variable"} if flavour == "prometheus" else query,
        "refresh": 2,
        "multi": v.multi,
        "includeAll": True,
        "allValue": ".+",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "regex": "",
        "sort": 1,
        "hide": 0,
    }


def _panel(p: Panel, targets: list[dict[str, Any]], flavour: str, pid: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {**p.defaults}
    if p.unit:
        defaults["unit"] = p.unit
    out: dict[str, Any] = {
        "id": pid,
        "type": p.type,
        "title": p.title,
        "description": p.description,
        "datasource": PROMETHEUS if flavour == "prometheus" else INFLUXDB,
        "gridPos": {"h": p.h, "w": p.w, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": p.overrides},
        "options": p.options,
        "targets": [{"refId": chr(ord("A") + k), **t} for k, t in enumerate(targets)],
    }
    if any(t["datasource"] == EXPRESSION for t in targets):
        out["datasource"] = {"type": "datasource", "uid": "-- Mixed --"}
    if p.transformations:
        out["transformations"] = p.transformations
    if p.time_from:
        out["timeFrom"] = p.time_from
    if p.interval:
        out["interval"] = p.interval
    if p.max_data_points:
        out["maxDataPoints"] = p.max_data_points
    return out


def render(d: Dashboard, flavour: str) -> dict[str, Any]:
    """The Grafana dashboard JSON of ``d`` for ``flavour`` (``prometheus`` or ``influxdb``)."""
    panels: list[dict[str, Any]] = []
    x = y = row_h = 0
    pid = 0
    for item in d.items:
        if isinstance(item, Row):
            if x:
                x, y = 0, y + row_h
            pid += 1
            panels.append(
                {
                    "id": pid,
                    "type": "row",
                    "title": item.title,
                    "collapsed": False,
                    "panels": [],
                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                }
            )
            y, row_h = y + 1, 0
            continue
        targets = item.prometheus if flavour == "prometheus" else item.influxdb
        if targets is None:
            continue
        if x + item.w > 24:
            x, y, row_h = 0, y + row_h, 0
        pid += 1
        panels.append(_panel(item, targets, flavour, pid, x, y))
        x += item.w
        row_h = max(row_h, item.h)
    suffix = "Prometheus" if flavour == "prometheus" else "InfluxDB"
    return {
        "uid": f"ds4h-{d.slug}-{'prom' if flavour == 'prometheus' else 'influx'}",
        "title": f"{d.title} ({suffix})",
        "description": d.description,
        "tags": ["ds4h", flavour],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": d.time_from, "to": "now"},
        "templating": {"list": [_variable(v, flavour) for v in d.variables]},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["ds4h", flavour], "asDropdown": True, "title": "ds4h dashboards"}],
        "panels": panels,
    }


def outputs() -> dict[Path, str]:
    """Every generated file (path → text)."""
    files: dict[Path, str] = {}
    for d in DASHBOARDS:
        for flavour in ("prometheus", "influxdb"):
            if flavour == "influxdb" and not d.influxdb:
                continue
            files[HERE / flavour / f"{d.slug}.json"] = (
                json.dumps(render(d, flavour), indent=2, ensure_ascii=False) + "\n"
            )
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only check that the committed files are up to date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print("out of date (run python dashboards/build.py):", *(str(p.relative_to(HERE.parent)) for p in stale))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The Grafana dashboards in dashboards/ are valid, name only what the gateway writes, and show data.

- structure: dashboard JSON (schemaVersion, unique uids and panel ids, non-overlapping grid, targets
  with unique refIds, datasource uids that the provisioning files define, defined template variables)
  and the provisioning YAML; the JSON files are what ``dashboards/build.py`` generates;
- InfluxQL: every query (panels and variables) is parsed by ``tests/influxql.py`` after the Grafana
  macros are substituted, and its measurements, tags, fields and unit values are resolved against
  ``gateway.schema_names``; ``gateway.schema_names`` in turn is checked against what
  ``gateway.sinks.lineproto`` writes;
- PromQL: every series and label a query names is a schema series (``<measurement>_<field>``) or a
  gateway metric; then a demo-like run — a real gateway with an influx sink writing to a real
  VictoriaMetrics, fed by the simulators' physiology over the ingest API, its /metrics scraped into the
  same VictoriaMetrics — and every panel query (each target) and variable query must return data.

Grafana itself is not run here (not packaged for Debian): rendering is not tested.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import math
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

from gateway import schema_names
from gateway.metrics import GatewayMetrics
from gateway.model import AbsentReason, Batch, Reading, SourceKey, Spectrum, TimeQuality, Waveform
from gateway.sinks.lineproto import encode_batch
from tests import influxql
from tests.faultproxy import FaultProxy
from tests.gw import get, make_config, post, running, wait_until
from tests.services import VICTORIA_METRICS_BIN, VictoriaMetrics, require_binary

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
PROVISIONING = DASHBOARDS / "provisioning"
FLAVOURS = ("prometheus", "influxdb")
GRAFANA_PATH = "/var/lib/grafana/dashboards"
BUILTIN_VARIABLES = {"__interval", "__interval_ms", "__rate_interval", "__range", "__range_s", "timeFilter", "__all"}


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboards_build", DASHBOARDS / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def dashboards(flavour: str | None = None) -> Iterator[tuple[str, Path, dict[str, Any]]]:
    for fl in FLAVOURS if flavour is None else (flavour,):
        for path in sorted((DASHBOARDS / fl).glob("*.json")):
            yield fl, path, json.loads(path.read_text(encoding="utf-8"))


def targets(d: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for p in d["panels"]:
        for t in p.get("targets", []):
            yield p, t


def datasources() -> dict[str, str]:
    """uid → type, from the datasource provisioning files."""
    out: dict[str, str] = {}
    for f in sorted((PROVISIONING / "datasources").glob("*.yaml")):
        doc = yaml.safe_load(f.read_text(encoding="utf-8"))
        assert doc["apiVersion"] == 1
        for ds in doc["datasources"]:
            assert ds["uid"] not in out, f"{f.name}: duplicate datasource uid {ds['uid']}"
            out[ds["uid"]] = ds["type"]
    return out


# --------------------------------------------------------------------------------------------------
# files and structure


def test_dashboard_files_are_generated_by_build_py() -> None:
    assert load_build().main(["--check"]) == 0, "dashboards/*.json are stale: run `python dashboards/build.py`"


def test_provisioning_files() -> None:
    ds = datasources()
    assert ds == {"ds4h-prometheus": "prometheus", "ds4h-influxdb": "influxdb"}
    influx = yaml.safe_load((PROVISIONING / "datasources" / "influxdb.yaml").read_text())["datasources"][0]
    assert influx["jsonData"]["version"] == "InfluxQL"
    assert "${DS4H_INFLUX_TOKEN}" in influx["secureJsonData"]["httpHeaderValue1"], "the token comes from the env"
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "ds4h.yaml").read_text())
    assert doc["apiVersion"] == 1
    paths = {p["options"]["path"] for p in doc["providers"]}
    assert paths == {f"{GRAFANA_PATH}/{fl}" for fl in FLAVOURS}
    assert len({p["name"] for p in doc["providers"]}) == len(doc["providers"])
    for fl in FLAVOURS:
        assert list((DASHBOARDS / fl).glob("*.json")), f"dashboards/{fl} holds no dashboard"


def test_the_expected_dashboards_exist() -> None:
    names = {(fl, p.stem) for fl, p, _ in dashboards()}
    assert names == {
        ("prometheus", "ward-overview"),
        ("prometheus", "patient"),
        ("prometheus", "gateway-health"),
        ("influxdb", "ward-overview"),
        ("influxdb", "patient"),
    }


def _overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]
    )


@pytest.mark.parametrize(("flavour", "path", "dash"), list(dashboards()), ids=lambda v: getattr(v, "name", ""))
def test_dashboard_structure(flavour: str, path: Path, dash: dict[str, Any]) -> None:
    uid = {"prometheus": "ds4h-prometheus", "influxdb": "ds4h-influxdb"}[flavour]
    provisioned = datasources()
    assert dash["schemaVersion"] >= 36
    assert dash["uid"] and len(dash["uid"]) <= 40
    assert dash["time"]["from"].startswith("now-")
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
    assert all(isinstance(i, int) and i > 0 for i in ids)
    for a, b in itertools.combinations(dash["panels"], 2):
        assert not _overlap(a["gridPos"], b["gridPos"]), f"{a['title']!r} overlaps {b['title']!r}"
    variables = {v["name"] for v in dash["templating"]["list"]}
    for v in dash["templating"]["list"]:
        assert v["datasource"]["uid"] == uid and provisioned[uid] == v["datasource"]["type"]
        assert v["definition"]
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
        if p["type"] == "row":
            assert "targets" not in p
            continue
        assert p["title"] and p["description"]
        assert p["targets"], f"panel {p['title']!r} has no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), f"panel {p['title']!r}: duplicate refIds"
        mixed = p["datasource"]["uid"] == "-- Mixed --"
        assert mixed or p["datasource"]["uid"] == uid
        for t in p["targets"]:
            ds = t["datasource"]
            if ds["uid"] == "__expr__":
                assert mixed, f"panel {p['title']!r}: expressions need the mixed datasource"
                assert set(re.findall(r"\$([A-Z])", t["expression"])) <= set(refs)
                continue
            assert ds["uid"] == uid and provisioned[ds["uid"]] == ds["type"]
            text = t["expr"] if flavour == "prometheus" else t["query"]
            assert text.strip()
            if flavour == "influxdb":
                assert t["rawQuery"] is True
            used = set(re.findall(r"\$\{?([A-Za-z_]\w*)", text))
            assert used <= variables | BUILTIN_VARIABLES, f"{p['title']!r}: undefined variables {used - variables}"


def test_docs_describe_every_panel_and_the_layout() -> None:
    doc = (ROOT / "docs" / "dashboards.md").read_text(encoding="utf-8")
    for flavour, path, dash in dashboards():
        assert f"`{dash['uid']}`" in doc, f"docs/dashboards.md does not name dashboard {dash['uid']}"
        assert f"{flavour}/{path.name}" in doc
        for p in dash["panels"]:
            if p["type"] != "row":
                assert f"| {p['title']} |" in doc, f"docs/dashboards.md has no row for panel {p['title']!r}"
    for f in sorted(PROVISIONING.rglob("*.yaml")):
        assert f.name in doc, f"docs/dashboards.md does not mention {f.name}"


# --------------------------------------------------------------------------------------------------
# schema module ↔ line protocol


def _parse_line(line: str) -> tuple[str, dict[str, str], dict[str, str]]:
    head, fields_text, _ts = re.split(r"(?<!\\) ", line)
    measurement, *tag_parts = re.split(r"(?<!\\),", head)
    tags = dict(t.split("=", 1) for t in tag_parts)
    fields = dict(f.split("=", 1) for f in re.split(r",(?=[a-z_]+=)", fields_text))
    return measurement, tags, fields


def _field_type(text: str) -> str:
    if text.endswith("i") and re.fullmatch(r"-?\d+i", text):
        return "integer"
    if text.startswith('"'):
        return "string"
    if text in {"true", "false"}:
        return "boolean"
    float(text)
    return "float"


def test_schema_names_cover_what_lineproto_writes() -> None:
    t = 1_767_225_600_000_000_000
    batch = Batch(
        SourceKey("p01-cgm", ("boot", 1)),
        received_ns=t,
        readings=(
            Reading("glucose_isf", 98.0, "mg/dL", t, precision=0, seq=3, time_quality=TimeQuality.DEVICE_UNCORRECTED),
            Reading(
                "glucose_isf",
                None,
                "mg/dL",
                t + 1,
                absent=AbsentReason.NRES,
                seq=4,
                status=4,
                alert=True,
                time_quality=1,
            ),
        ),
        waveforms=(Waveform("ecg", "uV", t, 4_000_000, np.array([1, -2, 3], dtype=np.int32), 2),),
        spectra=(Spectrum("nig_s21_magnitude", "dB", t, 1e9, 8e7, "Hz", np.array([-1.5, -2.0], np.float32), 2),),
    )
    seen: set[tuple[str, str]] = set()
    for line in encode_batch(batch).decode().split("\n"):
        measurement, tags, fields = _parse_line(line)
        assert measurement in schema_names.MEASUREMENTS
        assert tuple(tags) == schema_names.tags(measurement)
        assert tags["unit"] in schema_names.units(measurement)
        declared = schema_names.fields(measurement)
        for name, text in fields.items():
            assert name in declared, f"lineproto writes field {name!r} of {measurement!r}: add it to schema_names"
            assert _field_type(text) == declared[name], (measurement, name, text)
            seen.add((schema_names.kind(measurement), name))
    every = {
        (schema_names.kind(m), f) for m in ("glucose_isf", "ecg", "nig_s21_magnitude") for f in schema_names.fields(m)
    }
    assert seen == every, f"schema_names declares fields lineproto never writes: {every - seen}"


def test_prometheus_series_names() -> None:
    assert schema_names.measurement_of_series("heart_rate_value") == ("heart_rate", "value")
    assert schema_names.measurement_of_series("glucose_isf_alert") == ("glucose_isf", "alert")
    assert schema_names.measurement_of_series("ecg_alert") is None
    names = [s for s, _, _ in schema_names.prometheus_series()]
    assert len(names) == len(set(names)), "two (measurement, field) pairs give one series name"


# --------------------------------------------------------------------------------------------------
# InfluxQL: parse and resolve every query

MACROS = {"start_ms": 1_767_225_600_000, "end_ms": 1_767_312_000_000, "interval": "1m"}
DEVICE_VALUE = "(p01-hr|p01-cgm|p01-bgm)"


def influx_queries() -> Iterator[tuple[str, str]]:
    for _, path, dash in dashboards("influxdb"):
        for v in dash["templating"]["list"]:
            yield f"{path.stem}: variable {v['name']}", v["query"]
        for p, t in targets(dash):
            if "query" in t:
                yield f"{path.stem}: {p['title']} [{t['refId']}]", t["query"]


@pytest.mark.parametrize(("where", "query"), list(influx_queries()), ids=lambda v: v if len(v) < 80 else "")
def test_influxql_query_matches_schema(where: str, query: str) -> None:
    q = influxql.check(influxql.substitute(query, variables={"device": DEVICE_VALUE}, **MACROS))  # type: ignore[arg-type]
    assert influxql.measurements(q), where
    if q.statement == "select":
        assert any(c.ref == "time" for c in q.comparisons), f"{where}: no time filter"
        assert any(c.ref == "device" for c in q.comparisons), f"{where}: not filtered by $device"


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ('SELECT "value" FROM "heart_rates" WHERE time > now() - 1h', "unknown measurement"),
        ('SELECT "val" FROM "heart_rate" WHERE time > now() - 1h', "not a field"),
        ('SELECT "device" FROM "heart_rate" WHERE time > now() - 1h', "is a tag"),
        ('SELECT mean("absent") FROM "glucose_isf" WHERE time > now() - 1h', "numeric"),
        ('SELECT count("alert") FROM "ecg" WHERE time > now() - 1h', "not a field"),
        ('SELECT "value" FROM "glucose_isf" WHERE "unit" = \'mg/dl\' AND time > now() - 1h', "not a unit"),
        ('SELECT "value" FROM "heart_rate" WHERE "device" = 3', "tags are strings"),
        ('SELECT "value" FROM "heart_rate" GROUP BY "patient"', "not a tag"),
        ('SELECT "value" FROM /^(heart_rate|pulse)$/', "unknown measurement"),
        ('SELECT "value" FROM /heart/', "form"),
        ('SELECT "value" FROM "spo2", "nig_s21_magnitude" WHERE "hz" = \'1\'', "not a tag of every"),
        ('SELECT "value" FROM "spo2" WHERE "hz" = \'1\'', "not a field"),
        ('SHOW TAG VALUES FROM "spo2" WITH KEY = "hz"', "not a tag"),
        ('SELECT holt_winters("value", 10, 4) FROM "spo2"', "unsupported function"),
        ('DROP MEASUREMENT "spo2"', "only SELECT"),
        ('SELECT "value" FROM "spo2" WHERE $timeFilter', "unexpected character"),
    ],
)
def test_influxql_check_catches_drift(query: str, error: str) -> None:
    with pytest.raises(influxql.InfluxQLError, match=error):
        influxql.check(query)


def test_influxql_substitute_leaves_no_macro() -> None:
    q = influxql.substitute(
        'SELECT mean("value") FROM "spo2" WHERE "device" =~ /^$device$/ AND $timeFilter GROUP BY time($__interval)',
        variables={"device": "(a|b)"},
        **MACROS,  # type: ignore[arg-type]
    )
    assert q == (
        'SELECT mean("value") FROM "spo2" WHERE "device" =~ /^(a|b)$/ AND '
        "time >= 1767225600000ms and time <= 1767312000000ms GROUP BY time(1m)"
    )
    with pytest.raises(influxql.InfluxQLError, match="unsubstituted"):
        influxql.substitute("SELECT * FROM x WHERE $other", variables={}, **MACROS)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# PromQL: names, then execution after a demo-like run


def gateway_metric_names() -> dict[str, set[str]]:
    """Exposed sample name → label names, for every metric of gateway/metrics.py."""
    gm = GatewayMetrics()
    out: dict[str, set[str]] = {}
    for attr in vars(gm).values():
        labels = set(getattr(attr, "_labelnames", ()))
        for family in getattr(attr, "describe", lambda: [])():
            base = family.name
            kinds = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}[family.type]
            for suffix in kinds:
                out[base + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


SCRAPE_LABELS = {"instance", "job"}


def prometheus_exprs(dash: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for p, t in targets(dash):
        yield f"{p['title']} [{t['refId']}]", t["expr"]


def test_promql_names_match_schema_and_gateway_metrics() -> None:
    gw_names = gateway_metric_names()
    assert "ds4h_readings_lost_total" in gw_names and "ds4h_commit_latency_seconds_bucket" in gw_names
    checked = 0
    for _, path, dash in dashboards("prometheus"):
        exprs = list(prometheus_exprs(dash))
        for v in dash["templating"]["list"]:
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", v["definition"])
            assert m, v["definition"]
            exprs.append((f"variable {v['name']}", m.group(1) if "{" in m.group(1) else m.group(1) + "{}"))
        for where, expr in exprs:
            for sel in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\{([^}]*)\}", expr):
                name, body = sel.group(1), sel.group(2)
                matchers = re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', body)
                names: list[str] = [name] if name else []
                for label, _op, value in matchers:
                    if label == "__name__":
                        group = r"\(([a-z0-9_|]+)\)_\(([a-z|]+)\)"
                        assert re.fullmatch(f"{group}(\\|{group})*", value), (
                            f"{path.stem} {where}: __name__ regex not of the form (a|b)_(f)|(c)_(g): {value}"
                        )
                        for ms, fs in re.findall(group, value):
                            names += [f"{a}_{f}" for a in ms.split("|") for f in fs.split("|")]
                assert names, f"{path.stem} {where}: a selector without a metric name"
                for n in names:
                    checked += 1
                    series = schema_names.measurement_of_series(n)
                    if series is not None:
                        measurement = series[0]
                        allowed = set(schema_names.tags(measurement))
                    else:
                        assert n in gw_names, (
                            f"{path.stem} {where}: {n!r} is neither a schema series nor a gateway metric"
                        )
                        allowed = gw_names[n] | SCRAPE_LABELS
                    for label, _op, value in matchers:
                        if label == "__name__":
                            continue
                        assert label in allowed, f"{path.stem} {where}: {n!r} has no label {label!r}"
                        if label == "unit" and series is not None:
                            assert value in schema_names.units(series[0]), f"{path.stem} {where}: unit {value!r}"
            for by in re.findall(r"by \(([^)]*)\)", expr):
                known = {"device", "unit", "hz", "le"} | SCRAPE_LABELS | set().union(*gw_names.values())
                assert {b.strip() for b in by.split(",")} <= known, f"{path.stem} {where}: by ({by})"
    assert checked > 50


# -- the demo-like run

INSTANCE = "ward-3-gateway"
JOB = "ds4h-gateway"
DAY_S = 86_400
GLUCOSE_DAYS = 7
LIVE_S = 180
"""Seconds of live heart rate, SpO2 and ECG (the fleet simulator's 1 s frames) before the end."""


def _low_glucose_seed() -> int:
    """A physiology seed whose patient 0 dips below 70 mg/dL in the last day (device-flagged readings)."""
    from firmware_sim.physiology import Patient

    for seed in range(50):
        g = Patient(0, seed).glucose
        values = [g.cgm(k * 300.0) for k in range(GLUCOSE_DAYS * 288)]
        if min(values[-288:]) < 70 and max(values) > 180:
            return seed
    raise AssertionError("no seed gives a hypoglycaemic day")


def demo_batches(end_s: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """(batches with a device clock, batches without one, device id → kind) for one simulated patient.

    Live signals come from the fleet simulator (``firmware_sim.fleet``: heart rate, SpO2 and ECG 1 s
    frames); seven days of CGM and meter glucose from its glucose model and a day of cuff readings
    from its blood-pressure model, at their devices' usual periods.
    """
    from firmware_sim.fleet import Fleet
    from firmware_sim.models.vitals import BloodPressure
    from firmware_sim.physiology import Patient

    ns = 1_000_000_000
    seed = _low_glucose_seed()
    fleet = Fleet(1, seed=seed, start_ns=(end_s - LIVE_S) * ns)
    devices = {d: k for d, k in fleet.devices()} | {"p01-bp": "blood_pressure"}
    clocked: list[dict[str, Any]] = []
    hr_by_t: dict[int, int] = {}
    for b in fleet.tick(end_s * ns):
        for r in b.get("readings", []):
            if r["metric"] == "heart_rate":
                hr_by_t[r["t"]] = r["v"]
            if r["metric"] == "spo2":  # oximeters report a pulse rate too
                b["readings"].append({"metric": "pulse_rate_oximeter", "v": hr_by_t[r["t"]], "u": "/min", "t": r["t"]})
                break
        clocked.append(b)
    assert {b["device"] for b in clocked} >= {"p01-hr", "p01-spo2", "p01-ecg"}

    patient = Patient(0, seed)
    start = end_s - GLUCOSE_DAYS * DAY_S
    meter: list[dict[str, Any]] = []
    for k in range(GLUCOSE_DAYS * 288):
        t = (start + (k + 1) * 300) * ns
        if k == GLUCOSE_DAYS * 288 - 10:  # one reading below the sensor's range: an absent value
            reading = {"metric": "glucose_isf", "absent": "nres", "u": "mg/dL", "t": t, "seq": k, "status": 4}
        else:
            v = patient.glucose.cgm(k * 300.0)
            reading = {"metric": "glucose_isf", "v": v, "u": "mg/dL", "t": t, "p": 0, "seq": k, "alert": v < 70}
        clocked.append({"device": "p01-cgm", "key": ["cgm-boot", k], "readings": [reading]})
        if k % 72 == 36:  # a finger-stick every 6 h, from a meter that sends no clock
            v = patient.glucose.spot_check(k * 300.0)
            r = {"metric": "glucose_capillary_whole_blood", "v": v, "u": "mg/dL", "t": t + 60 * ns, "seq": k}
            meter.append({"device": "p01-bgm", "key": [k], "readings": [r]})

    t_min = np.arange(0.0, DAY_S / 60, 30.0)
    bp = BloodPressure(1, seed).sample(t_min)
    rng = np.random.default_rng(seed)
    for k, m in enumerate(t_min):
        t = (end_s - DAY_S + int(m * 60) + 30) * ns
        readings = [
            {"metric": metric, "v": round(float(a[0, k]), 1), "u": "mm[Hg]", "t": t, "p": 1}
            for metric, a in (
                ("bp_systolic", bp.systolic),
                ("bp_diastolic", bp.diastolic),
                ("bp_mean", bp.mean_arterial),
            )
        ]
        readings.append({"metric": "pulse_rate_bp", "v": int(rng.integers(60, 90)), "u": "/min", "t": t})
        clocked.append({"device": "p01-bp", "key": ["bp-boot", k], "readings": readings})
    return clocked, meter, devices


def _duration(seconds: float) -> str:
    ms = round(seconds * 1000)
    for unit, n in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % n == 0:
            return f"{ms // n}{unit}"
    return f"{ms}ms"


def _range_s(text: str) -> float:
    m = re.fullmatch(r"(?:now-)?(\d+)(ms|s|m|h|d)", text)
    assert m, text
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


SCRAPE_INTERVAL_S = 15.0
"""The datasource's ``timeInterval`` (provisioning): Grafana's minimum step and $__rate_interval base."""


def grafana_query(
    panel: dict[str, Any], dash: dict[str, Any], expr: str, end_s: float, variables: dict[str, str]
) -> dict[str, str]:
    """The /api/v1/query(_range) parameters Grafana would send for ``expr`` in ``panel``."""
    range_s = _range_s(panel.get("timeFrom") or dash["time"]["from"])
    min_step = _range_s(panel["interval"]) if "interval" in panel else SCRAPE_INTERVAL_S
    step = max(range_s / panel.get("maxDataPoints", 1000), min_step)
    values = {
        "__rate_interval": _duration(max(step + SCRAPE_INTERVAL_S, 4 * SCRAPE_INTERVAL_S)),
        "__interval": _duration(step),
        "__range": _duration(range_s),
        **variables,
    }
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    assert "$" not in expr, expr
    return {"query": expr, "start": f"{end_s - range_s:.3f}", "end": f"{end_s:.3f}", "step": f"{step:.3f}"}


def vm_json(vm: VictoriaMetrics, path: str, params: dict[str, str]) -> Any:
    body = json.loads(vm.get(path, params))
    assert body["status"] == "success", body
    return body["data"]


def has_data(result: list[dict[str, Any]]) -> bool:
    for series in result:
        points = series.get("values") or [series.get("value")]
        if any(p is not None and not math.isnan(float(p[1])) for p in points):
            return True
    return False


async def scrape(gw: Any, scrapes: list[str]) -> None:
    status, text = await get(gw, "/metrics", auth=False)
    assert status == 200
    scrapes.append(text)


def import_scrapes(vm: VictoriaMetrics, scrapes: list[str], end_s: float) -> None:
    """Store the scrapes as Prometheus or vmagent would have, one every SCRAPE_INTERVAL_S up to ``end_s``.

    The test scrapes a few times within seconds; stamping them at the scrape interval gives the store
    what a production scraper leaves (rates over $__rate_interval need samples a scrape interval apart).
    """
    query = urllib.parse.urlencode([("extra_label", f"job={JOB}"), ("extra_label", f"instance={INSTANCE}")])
    for n, text in enumerate(scrapes):
        ts_ms = round((end_s - (len(scrapes) - 1 - n) * SCRAPE_INTERVAL_S) * 1000)
        lines = [f"{ln} {ts_ms}" if ln and not ln.startswith("#") else ln for ln in text.splitlines()]
        body = "\n".join(lines).encode() + b"\n"
        req = urllib.request.Request(f"{vm.url}/api/v1/import/prometheus?{query}", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 204, resp.status


async def test_every_prometheus_panel_returns_data_after_a_demo_run(
    tmp_state_dir: Path, vm_private: VictoriaMetrics
) -> None:
    end_s = int(time.time()) - 1
    clocked, meter, devices = demo_batches(end_s)
    token = tmp_state_dir.parent / f"{tmp_state_dir.name}.token"
    token.write_text("test-token")
    token.chmod(0o600)
    proxy = FaultProxy(vm_private.url)
    with proxy.run_in_thread() as url:
        proxy.fail_next(2, 503, {"Retry-After": "0"})  # a throttling store: sink errors on the health view
        cfg = make_config(
            tmp_state_dir,
            devices={d: {"kind": k} for d, k in devices.items()},
            # bodies under 1 MiB: aiohttp warns about larger raw bodies (an error under this suite's filters)
            sinks={"influx": {"url": url, "token_file": str(token), "timeout_s": 5, "max_body_bytes": 1_000_000}},
        )
        scrapes: list[str] = []
        async with running(cfg) as gw:
            await scrape(gw, scrapes)
            chunks = [clocked[i : i + 250] for i in range(0, len(clocked), 250)]
            for n, chunk in enumerate(chunks):
                status, body = await post(gw, chunk, clock=time.time_ns())
                assert status == 200 and {r["status"] for r in body["results"]} == {"committed"}, body
                if n % 4 == 0:
                    await scrape(gw, scrapes)
            status, body = await post(gw, meter)  # no clock: stored flagged DEVICE_UNCORRECTED
            assert {r["status"] for r in body["results"]} == {"committed"}
            status, body = await post(gw, clocked[:3], clock=time.time_ns())  # a replay: duplicates
            assert {r["status"] for r in body["results"]} == {"duplicate"}
            status, body = await post(gw, [{**clocked[0], "device": "p99-unknown"}], clock=time.time_ns())
            assert body["results"][0]["status"] == "quarantined"

            def delivered() -> bool:
                c = gw.counters()
                return bool(c["readings_forwarded"].get("influx") == c["readings_committed"])

            await wait_until(delivered, timeout=120, what="every point forwarded to VictoriaMetrics")
            for _ in range(3):
                await asyncio.sleep(1.0)
                await scrape(gw, scrapes)
    health_end = time.time()
    import_scrapes(vm_private, scrapes, health_end)
    vm_private.force_flush()

    missing: list[str] = []
    ran = 0
    results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for _, path, dash in dashboards("prometheus"):
        end = health_end if path.stem == "gateway-health" else end_s
        for v in dash["templating"]["list"]:
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", v["definition"])
            assert m
            params = {"match[]": m.group(1), "start": str(int(end - 7 * DAY_S)), "end": str(int(end))}
            got = set(vm_json(vm_private, f"/api/v1/label/{m.group(2)}/values", params))
            want = set(devices) if v["name"] == "device" else {INSTANCE}
            if not want <= got:
                missing.append(f"{path.stem}: variable {v['name']} lacks {sorted(want - got)}")
        for p, t in targets(dash):
            # a multi-value selection of every device, as Grafana writes it for a regex matcher
            variables = {"device": "(" + "|".join(sorted(devices)) + ")", "instance": INSTANCE}
            q = grafana_query(p, dash, t["expr"], end, variables)
            if t.get("instant"):
                result = vm_json(vm_private, "/api/v1/query", {"query": q["query"], "time": q["end"]})["result"]
            else:
                result = vm_json(vm_private, "/api/v1/query_range", q)["result"]
            ran += 1
            results[(path.stem, p["title"], t["refId"])] = result
            if not has_data(result):
                missing.append(f"{path.stem}: {p['title']} [{t['refId']}]: {q['query'][:160]}")
    assert not missing, "queries without data:\n" + "\n".join(missing)
    assert ran >= 50

    # and the figures make sense for what was sent
    def values(stem: str, title: str, ref: str = "A") -> dict[str, float]:
        return {s["metric"].get("device", ""): float(s["value"][1]) for s in results[(stem, title, ref)]}

    assert values("ward-overview", "Devices reporting (last 5 min)") == {"": 4}  # hr, spo2, ecg, cgm
    fresh = values("ward-overview", "Freshness: seconds since each device's last point")
    assert set(fresh) == set(devices) - {"p01-bgm"} and fresh["p01-hr"] <= 20, fresh
    tir = [values("patient", "Time in ranges (time range, % of CGM time)", r)["p01-cgm"] for r in "ABCDE"]
    assert sum(tir) == pytest.approx(100.0, abs=0.5) and tir[2] > 30, tir
    assert values("patient", "Device-flagged glucose readings (time range)")["p01-cgm"] >= 1
    assert values("ward-overview", "Absent values (time range)") == {"p01-cgm": 1}
    assert values("ward-overview", "Points with time-quality flags (time range)") == {"p01-bgm": 1}  # 6 h: one
    assert values("gateway-health", "Points lost (must stay 0)") == {"": 0}


# --------------------------------------------------------------------------------------------------
# the production path for the gateway's metrics: a scraper reading dashboards/scrape/ds4h-gateway.yml

SCRAPE_CONFIG = DASHBOARDS / "scrape" / "ds4h-gateway.yml"


class ScrapingVictoriaMetrics(VictoriaMetrics):
    """VictoriaMetrics with ``-promscrape.config`` (what vmagent does, in the same process)."""

    def __init__(self, scrape_config: Path) -> None:
        super().__init__()
        self.scrape_config = scrape_config

    def command(self) -> list[str]:
        return [*super().command(), f"-promscrape.config={self.scrape_config}"]


def test_scrape_config_is_valid() -> None:
    doc = yaml.safe_load(SCRAPE_CONFIG.read_text(encoding="utf-8"))
    (job,) = doc["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["labels"]["instance"]
    binary = require_binary(VICTORIA_METRICS_BIN, "victoria-metrics")
    run = subprocess.run(
        [binary, f"-promscrape.config={SCRAPE_CONFIG}", "-promscrape.config.dryRun", "-loggerLevel=ERROR"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")


async def test_victoria_metrics_scraping_the_gateway_feeds_the_health_dashboard(
    tmp_state_dir: Path, tmp_path: Path
) -> None:
    async with running(make_config(tmp_state_dir, devices={"p01-hr": {"kind": "heart_rate"}})) as gw:
        doc = yaml.safe_load(SCRAPE_CONFIG.read_text(encoding="utf-8"))
        job = doc["scrape_configs"][0]
        job["scrape_interval"] = "1s"  # the shipped 15 s, shortened for the test
        job["scrape_timeout"] = "1s"
        job["static_configs"][0]["targets"] = [gw.url.removeprefix("http://")]
        instance = job["static_configs"][0]["labels"]["instance"]
        config = tmp_path / "scrape.yml"
        config.write_text(yaml.safe_dump(doc))
        with ScrapingVictoriaMetrics(config) as vm:
            batches = [
                {"device": "p01-hr", "key": ["b", i], "readings": [{"metric": "heart_rate", "v": 70, "u": "/min"}]}
                for i in range(20)
            ]
            status, _ = await post(gw, batches, clock=time.time_ns())
            assert status == 200
            query = f'ds4h_readings_committed_total{{job="ds4h-gateway",instance="{instance}"}}'

            def scraped() -> bool:
                result = vm_json(vm, "/api/v1/query", {"query": query})["result"]
                return bool(result) and float(result[0]["value"][1]) == 20

            await wait_until(scraped, timeout=30, what="the gateway's metrics scraped")
            _, _, health = next(d for d in dashboards("prometheus") if d[1].stem == "gateway-health")
            lost = next(p for p in health["panels"] if p["title"].startswith("Points lost"))
            expr = lost["targets"][0]["expr"].replace("$instance", instance)
            assert vm_json(vm, "/api/v1/query", {"query": expr})["result"][0]["value"][1] == "0"

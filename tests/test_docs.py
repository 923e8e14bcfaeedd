"""The documentation matches the code: vocabulary, config keys, example config, CLI, metrics, examples.

``python -m tests.test_docs`` prints the metric table of docs/schema.md, generated from
gateway/vocabulary.py.
"""

from __future__ import annotations

import argparse
import re
import tomllib
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from gateway.cli import build_parser
from gateway.config import Config, OutboxSection, load_config
from gateway.metrics import GatewayMetrics
from gateway.model import AbsentReason, Batch, Reading, SourceKey, TimeQuality, Waveform
from gateway.sinks.lineproto import encode_batch
from gateway.vocabulary import METRICS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLE_CONFIG = ROOT / "deploy" / "gateway.example.toml"


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


# --- metric vocabulary ---------------------------------------------------------------------------
def render_metric_table() -> str:
    """The metric table of docs/schema.md, exactly as it must appear there."""
    lines = [
        "| metric (measurement) | MDC reference id | MDC code | partition::term | LOINC"
        " | UCUM units (first = canonical) | kind |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in METRICS.values():
        units = ", ".join(f"`{u}`" for u in m.units)
        lines.append(
            f"| `{m.name}` | `{m.mdc_ref}` | {m.mdc} | {m.mdc >> 16}::{m.mdc & 0xFFFF} | {m.loinc or '—'}"
            f" | {units} | {'waveform' if m.waveform else 'spectrum' if m.spectrum else 'reading'} |"
        )
    return "\n".join(lines)


def test_schema_metric_table_is_generated_from_the_vocabulary() -> None:
    assert render_metric_table() in read("schema.md"), (
        "docs/schema.md's metric table differs from gateway/vocabulary.py; "
        "regenerate it with `python -m tests.test_docs`"
    )


def test_every_metric_row_has_its_codes_and_units() -> None:
    rows: dict[str, list[str]] = {}
    for line in read("schema.md").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and re.fullmatch(r"`[a-z0-9_]+`", cells[0]) and cells[2].isdigit():
            rows[cells[0].strip("`")] = cells
    assert set(rows) == set(METRICS)
    for name, m in METRICS.items():
        cells = rows[name]
        assert cells[1] == f"`{m.mdc_ref}`"
        assert int(cells[2]) == m.mdc
        assert cells[4] == (m.loinc or "—")
        assert re.findall(r"`([^`]+)`", cells[5]) == list(m.units)


# --- schema: names and examples ------------------------------------------------------------------
T_EXAMPLE = 1_767_225_600_000_000_000


def example_batches() -> list[Batch]:
    """The three example points of docs/schema.md."""
    return [
        Batch(
            SourceKey("p01-hr", ("4f2a9c1e", 1187)),
            T_EXAMPLE,
            readings=(Reading("heart_rate", 72.0, "/min", T_EXAMPLE, precision=0, seq=1187),),
        ),
        Batch(
            SourceKey("p01-cgm", ("4f2a9c1e", 12)),
            T_EXAMPLE,
            readings=(
                Reading(
                    "glucose_isf",
                    None,
                    "mg/dL",
                    T_EXAMPLE,
                    absent=AbsentReason.NRES,
                    status=4,
                    alert=True,
                    time_quality=TimeQuality.DEVICE_UNCORRECTED,
                ),
            ),
        ),
        Batch(
            SourceKey("p01-ecg", ("4f2a9c1e", 88)),
            T_EXAMPLE,
            waveforms=(Waveform("ecg", "uV", T_EXAMPLE, 4_000_000, np.array([-153, -140, 12, 410], dtype=np.int32)),),
        ),
    ]


def test_schema_example_lines_are_what_the_encoder_writes() -> None:
    doc = read("schema.md")
    for b in example_batches():
        chunk = encode_batch(b).decode()
        assert f"```\n{chunk}\n```" in doc, f"example missing or stale in docs/schema.md:\n{chunk}"


def test_schema_time_quality_flags_and_names() -> None:
    doc = read("schema.md")
    for flag in TimeQuality:
        assert re.search(rf"\| {int(flag)} \| `{flag.name}` \|", doc), flag
    for reason in AbsentReason:
        assert f"`{reason.value}`" in doc
    assert "`[a-z0-9][a-z0-9-]{0,63}`" in doc
    assert "`device/part/part" in doc
    for table in ("`readings`", "`waveforms`", "`spectra`"):
        assert table in doc


def test_schema_default_priority_rules() -> None:
    doc = read("schema.md")
    section = doc[doc.index("## Priority lane") :]
    rows = re.findall(r"^\| `(\w+)` \| `?([^|`]*?)`? \|\s*([\d.]*)\s*\|\s*([\d.]*)\s*\|$", section, re.M)
    documented = [(m, None if u == "any" else u, b or None, a or None) for m, u, b, a in rows]

    def num(x: float | None) -> str | None:
        return None if x is None else f"{x:g}"

    expected = [(r.metric, r.unit, num(r.below), num(r.above)) for r in OutboxSection().priority_rules]
    assert documented == expected


# --- config ----------------------------------------------------------------------------------------
def _models(annotation: Any) -> Iterator[tuple[str, type[BaseModel]]]:
    """Pydantic models inside an annotation, with the table suffix they live under."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield "", annotation
    elif origin is dict:
        yield from ((".<id>" + s, m) for s, m in _models(typing.get_args(annotation)[1]))
    elif origin is tuple or origin is list:
        yield from ((s, m) for s, m in _models(typing.get_args(annotation)[0]))
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _models(arg)


def config_tables(model: type[BaseModel] = Config, path: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """Every table of the config tree: (dotted path, model); the root is ``""``."""
    yield path, model
    for name, field in model.model_fields.items():
        for suffix, sub in _models(field.annotation):
            yield from config_tables(sub, f"{path}.{name}{suffix}".lstrip("."))


def doc_sections(text: str) -> dict[str, str]:
    """Sections of docs/config.md keyed by the table named in their heading (``### `[a.b]` ``)."""
    out: dict[str, str] = {}
    parts = re.split(r"^#{2,4} `\[\[?([^\]]+)\]\]?`\s*$", text, flags=re.M)
    for i in range(1, len(parts), 2):
        out[parts[i]] = parts[i + 1].split("\n## ")[0]
    return out


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str | Path):
        return f'"{v}"'
    return repr(v)


def test_config_doc_covers_every_key_with_its_default() -> None:
    sections = doc_sections(read("config.md"))
    for path, model in config_tables():
        if not path:
            continue
        assert path in sections, f"docs/config.md has no section for [{path}]"
        body = sections[path]
        for name, field in model.model_fields.items():
            row = re.search(rf"^\| `{name}` \|(.*)$", body, re.M)
            assert row, f"docs/config.md: [{path}] does not document {name}"
            if field.is_required():
                assert "**required**" in row.group(1), f"{path}.{name} must be marked required"
            elif field.default is None:
                assert "unset" in row.group(1), f"{path}.{name}: default is unset"
            elif isinstance(field.default, bool | int | float | str | Path):
                assert f"`{_toml(field.default)}`" in row.group(1), f"{path}.{name}: default {field.default!r}"


def test_config_doc_names_every_top_level_section_and_env_scheme() -> None:
    doc = read("config.md")
    for name in Config.model_fields:
        assert f"`[{name}" in doc
    assert "DS4H_<SECTION>__<KEY>" in doc
    assert "<file>: <key.path>: <message>" in doc
    assert "ds4h-gateway config check" in doc


def test_example_config_validates_and_covers_every_section() -> None:
    config = load_config(EXAMPLE_CONFIG, environ={})
    raw = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    assert set(raw) == set(Config.model_fields)
    assert config.sinks.influx is not None and config.sinks.influx.token_file is not None
    kinds = {d.kind: d for d in config.devices.values()}
    assert kinds["cgm"]
    assert kinds["heart_rate"].ble_address
    assert kinds["ecg"].mqtt_cn
    # the example's priority rules repeat the defaults (it says so)
    assert config.outbox.priority_rules == OutboxSection().priority_rules


# --- CLI and metrics -------------------------------------------------------------------------------
def cli_commands(parser: argparse.ArgumentParser, prefix: str = "ds4h-gateway") -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}"
                yield from cli_commands(sub, f"{prefix} {name}")


def test_operations_doc_covers_every_cli_command() -> None:
    doc = read("operations.md")
    commands = list(cli_commands(build_parser()))
    assert "ds4h-gateway outbox dead-letters" in commands
    for cmd in commands:
        *head, last = cmd.split(" ")
        # "ds4h-gateway devices add" or, in a heading, "ds4h-gateway devices list | add | …"
        grouped = re.search(rf"{re.escape(' '.join(head))} [\w| -]*\b{re.escape(last)}\b", doc)
        assert cmd in doc or grouped, f"docs/operations.md does not mention `{cmd}`"
        assert re.search(rf"^### `{re.escape(' '.join(cmd.split(' ')[:2]))}", doc, re.M), cmd


def metric_names() -> list[tuple[str, str]]:
    return [(m.name, m.type) for m in GatewayMetrics().registry.collect()]


def test_operations_doc_lists_every_prometheus_metric() -> None:
    doc = read("operations.md")
    names = metric_names()
    assert len(names) >= 20
    for name, kind in names:
        shown = f"{name}_total" if kind == "counter" else name
        assert re.search(rf"^\| `{shown}` \| {kind} \|", doc, re.M), f"docs/operations.md: {shown} ({kind})"


def test_operations_doc_state_dir_files() -> None:
    doc = read("operations.md")
    for f in ("gateway.key", "control.token", "control.json", "outbox.db", "registry.db", "history.db"):
        assert re.search(rf"^\| `{re.escape(f)}` \|", doc, re.M), f
    for endpoint in ("/healthz", "/metrics", "/api/v1/stats"):
        assert f"`GET {endpoint}`" in doc


# --- links -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["README.md", *(f"docs/{p.name}" for p in sorted(DOCS.glob("*.md")))])
def test_relative_links_resolve(name: str) -> None:
    path = ROOT / name
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
        if "://" in target:
            continue
        if target == "benchmarks/README.md":  # written with the benchmarks
            continue
        assert (path.parent / target).exists(), f"{name}: broken link {target}"


if __name__ == "__main__":
    print(render_metric_table())


def test_molar_loinc_codes_are_documented() -> None:
    text = (ROOT / "docs" / "schema.md").read_text()
    for m in METRICS.values():
        if m.loinc_moles:
            assert m.loinc_moles in text, m.name

"""The names of the stored point schema (``docs/schema.md``), for tools that read the store.

Dashboards (``dashboards/``) and their tests check every measurement, tag and field a query names
against this module; a test encodes batches with :mod:`gateway.sinks.lineproto` and checks that every
tag key and field key it writes is listed here, so the readers and the writer cannot drift apart.

- measurements: the metric names of :data:`gateway.vocabulary.METRICS`;
- tags: ``device`` and ``unit``, plus ``hz`` for spectrum metrics;
- fields: per kind of metric (reading, waveform, spectrum), with their line-protocol type;
- VictoriaMetrics (and other Prometheus-compatible stores fed with line protocol) names a field's
  series ``<measurement>_<field>``: :func:`prometheus_series` lists them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from gateway.vocabulary import METRICS, Metric

__all__ = [
    "MEASUREMENTS",
    "Kind",
    "fields",
    "kind",
    "measurement_of_series",
    "prometheus_series",
    "tags",
    "units",
]

Kind = Literal["reading", "waveform", "spectrum"]
FieldType = Literal["float", "integer", "string", "boolean"]

MEASUREMENTS: tuple[str, ...] = tuple(METRICS)
"""Every measurement the gateway may write (one per metric)."""

_TAGS: dict[Kind, tuple[str, ...]] = {
    "reading": ("device", "unit"),
    "waveform": ("device", "unit"),
    "spectrum": ("device", "hz", "unit"),
}

_FIELDS: dict[Kind, dict[str, FieldType]] = {
    "reading": {
        "value": "float",
        "absent": "string",
        "precision": "integer",
        "seq": "integer",
        "status": "integer",
        "alert": "boolean",
        "tq": "integer",
    },
    "waveform": {"value": "integer", "tq": "integer"},
    "spectrum": {"value": "float", "tq": "integer"},
}


def kind(metric: str | Metric) -> Kind:
    """``reading``, ``waveform`` or ``spectrum``; ``KeyError`` for a name not in the vocabulary."""
    m = METRICS[metric] if isinstance(metric, str) else metric
    return "waveform" if m.waveform else "spectrum" if m.spectrum else "reading"


def tags(measurement: str) -> tuple[str, ...]:
    """The tag keys of a measurement's points, sorted (as line protocol writes them)."""
    return _TAGS[kind(measurement)]


def fields(measurement: str) -> dict[str, FieldType]:
    """The field keys a measurement's points may carry, with their line-protocol types."""
    return dict(_FIELDS[kind(measurement)])


def units(measurement: str) -> tuple[str, ...]:
    """The values the ``unit`` tag may take for a measurement (its UCUM units)."""
    return METRICS[measurement].units


def prometheus_series() -> Iterator[tuple[str, str, str]]:
    """``(series name, measurement, field)`` for every field of every measurement."""
    for name in MEASUREMENTS:
        for field in _FIELDS[kind(name)]:
            yield f"{name}_{field}", name, field


_SERIES: dict[str, tuple[str, str]] = {s: (m, f) for s, m, f in prometheus_series()}


def measurement_of_series(series: str) -> tuple[str, str] | None:
    """``(measurement, field)`` of a Prometheus series name such as ``heart_rate_value``, else ``None``."""
    return _SERIES.get(series)

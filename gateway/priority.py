"""The urgent lane's rule set: which batches are forwarded ahead of bulk backlog.

A batch is URGENT when any of its readings (a) was flagged by the device itself (``alert``, e.g. a CGM
hypoglycaemia annunciation or an irregular-pulse flag) or (b) matches a configured threshold rule
(``outbox.priority_rules``: metric, optional unit, ``below`` and/or ``above``). Waveforms never make a
batch urgent. These are informational notices: the gateway is not a medical alarm system.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.config import PriorityRule
from gateway.model import Priority, Reading


class PriorityRules:
    def __init__(self, rules: Sequence[PriorityRule]) -> None:
        self._by_metric: dict[str, list[PriorityRule]] = {}
        for r in rules:
            self._by_metric.setdefault(r.metric, []).append(r)

    def classify(self, readings: Iterable[Reading]) -> Priority:
        for r in readings:
            if r.alert:
                return Priority.URGENT
            if r.value is None:
                continue
            for rule in self._by_metric.get(r.metric, ()):
                if rule.unit is not None and rule.unit != r.unit:
                    continue
                if (rule.below is not None and r.value < rule.below) or (
                    rule.above is not None and r.value > rule.above
                ):
                    return Priority.URGENT
        return Priority.BULK

"""Committed batches kept in memory until every sink has them, so forwarders need not decode them
back from the envelopes. After a restart, or when a sink falls far behind, the forwarder finds
nothing here and decodes from the outbox instead: the cache is only a shortcut, never the record.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from gateway.model import Batch


class HotBatches:
    def __init__(self, sinks: Sequence[str], max_points: int = 100_000) -> None:
        self._items: OrderedDict[int, Batch] = OrderedDict()
        self._points = 0
        self._max_points = max_points
        self._delivered = dict.fromkeys(sinks, 0)
        self._lock = threading.Lock()

    def add(self, items: Iterable[tuple[int, Batch]]) -> None:
        with self._lock:
            for batch_id, b in items:
                self._items[batch_id] = b
                self._points += b.n_points
            while self._points > self._max_points and self._items:
                self._points -= self._items.popitem(last=False)[1].n_points

    def get(self, batch_id: int) -> Batch | None:
        return self._items.get(batch_id)

    def delivered_upto(self, sink: str, batch_id: int) -> None:
        """``sink`` has every batch up to ``batch_id``: drop what all sinks have."""
        with self._lock:
            if batch_id <= self._delivered.get(sink, batch_id):
                return
            self._delivered[sink] = batch_id
            floor = min(self._delivered.values())
            while self._items:
                first = next(iter(self._items))
                if first > floor:
                    break
                self._points -= self._items.popitem(last=False)[1].n_points

    def __len__(self) -> int:
        return len(self._items)

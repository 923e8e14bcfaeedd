"""The gateway's side of a driver session: commit, quarantine, live values, per-device driver state."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence

from drivers.sdk.clock import DeviceClock
from gateway.devices import DeviceRegistry
from gateway.errors import BackpressureError, ShuttingDownError
from gateway.metrics import GatewayMetrics
from gateway.model import Batch
from gateway.outbox.committer import Committer, QuarantineRecord

log = logging.getLogger(__name__)

REJECT_LOG_INTERVAL_S = 10.0
"""Per device and reason, at most one log line this often (every rejection is counted in the metrics)."""
LIVE_KEEP = 256
"""Live-only values kept per device for display (never stored as results)."""


class DeviceContext:
    """Implements :class:`drivers.sdk.driver.SessionContext` for one connection of one device."""

    def __init__(
        self,
        device_id: str,
        driver: str,
        clock: DeviceClock,
        committer: Committer,
        registry: DeviceRegistry,
        metrics: GatewayMetrics,
        live: deque[object],
        *,
        gatt_timeout_s: float = 10.0,
        racp_timeout_s: float = 30.0,
    ) -> None:
        self.gatt_timeout_s = gatt_timeout_s
        self.racp_timeout_s = racp_timeout_s
        self._device_id = device_id
        self._driver = driver
        self._clock = clock
        self._committer = committer
        self._registry = registry
        self._metrics = metrics
        self._live = live
        self._pending: set[asyncio.Task[None]] = set()
        self._last_reject_log: dict[str, float] = {}
        self._log = logging.LoggerAdapter(logging.getLogger(f"gateway.ble.{driver}"), {"device": device_id})

    # --- SessionContext ------------------------------------------------------------------------
    @property
    def device_id(self) -> str:
        return self._device_id

    @property
    def clock(self) -> DeviceClock:
        return self._clock

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return self._log

    def now_ns(self) -> int:
        return time.time_ns()

    async def commit(self, batches: Sequence[Batch]) -> None:
        if batches:
            await self._committer.submit_many(batches)
            self._metrics.ble_records.labels(driver=self._driver).inc(len(batches))

    def commit_nowait(self, batches: Sequence[Batch]) -> None:
        if not batches:
            return
        self._metrics.ble_notifications.labels(driver=self._driver).inc()
        task = asyncio.get_running_loop().create_task(self._commit_live(list(batches)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def reject(self, reason: str, detail: str, payload: bytes) -> None:
        self._metrics.ble_notifications.labels(driver=self._driver).inc()
        self._committer.quarantine(QuarantineRecord.of(reason, detail, self._device_id, payload))
        now = time.monotonic()
        if now - self._last_reject_log.get(reason, -1e9) >= REJECT_LOG_INTERVAL_S:  # a noisy device must not flood
            self._last_reject_log[reason] = now
            # the detail may quote a decoded value: it is kept (encrypted) in the quarantine, not logged
            self._log.warning("notification quarantined (%s)", reason)

    def live(self, values: Sequence[object]) -> None:
        self._live.extend(values)

    def load_state(self, key: str) -> str | None:
        return self._registry.driver_state(self._device_id, f"{self._driver}.{key}")

    def save_state(self, key: str, value: str) -> None:
        self._registry.set_driver_state(self._device_id, f"{self._driver}.{key}", value)

    # --- the gateway's side ----------------------------------------------------------------------
    async def _commit_live(self, batches: list[Batch]) -> None:
        try:
            await self._committer.submit_many(batches)
        except (BackpressureError, ShuttingDownError) as e:
            # a notification cannot be refused or replayed: the loss is counted and logged, never silent
            points = sum(b.n_points for b in batches)
            self._metrics.readings_lost.inc(points)
            self._log.error("%d live point(s) lost: %s", points, e)

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for live commits still in flight. They are queued in the committer, which
        finishes them when it stops after the sources, so none is cancelled here."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout_s)

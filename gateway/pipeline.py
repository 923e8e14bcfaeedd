"""The running gateway: wiring of every stage, driven by the config, under one TaskGroup.

sources → committer (sign + group commit) → outbox → forwarder per sink → sinks;
housekeeping (archive, retention, disk budget, gauges) and the control API beside them.
SIGINT/SIGTERM: stop accepting, commit what is in flight, let sinks drain for
``gateway.shutdown_flush_s``, exit cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.clock import ClockMonitor, SkewTracker
from gateway.config import Config, influx_token
from gateway.control import ControlServer, write_control_file
from gateway.dataspace.credential import CredentialStore
from gateway.dataspace.service import ResearchPath, research_path
from gateway.devices import DeviceRegistry
from gateway.forwarder import Forwarder
from gateway.ingest import IngestSource
from gateway.metrics import GatewayMetrics
from gateway.outbox.committer import Committer
from gateway.outbox.hotcache import HotBatches
from gateway.outbox.housekeeping import HistoryPruner, Housekeeper
from gateway.outbox.schema import SEALED as OUTBOX_SEALED
from gateway.outbox.store import EnvelopeCache, OutboxStore, open_outbox
from gateway.priority import PriorityRules
from gateway.provenance.identity import GatewayIdentity
from gateway.provenance.keyring import load_gateway_keys
from gateway.sinks.base import Sink
from gateway.sinks.local import LocalSink
from gateway.state.files import ensure_state_dir, load_or_create_token
from gateway.state.sealing import reseal_some
from gateway.state.statekey import open_cipher
from gateway.web.live import LiveBoard
from gateway.web.server import StatusPage, load_status_token

if TYPE_CHECKING:
    from gateway.ble.manager import BleSource
    from gateway.mqtt.source import MqttSource

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 1.0
READY_COMMIT_FAILURE_S = 30.0
"""``/readyz`` says not ready for this long after a failed outbox commit."""
READY_HOUSEKEEPING_S = 10.0
"""``/readyz`` says not ready when housekeeping has not completed a pass for this long."""


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.state_dir: Path = ensure_state_dir(config.gateway.state_dir)
        self.cipher = open_cipher(self.state_dir, config.crypto)
        """Encryption at rest (None: off); every state database opened below uses it."""
        self.metrics = GatewayMetrics()
        self.keys = load_gateway_keys(self.state_dir, config.provenance.key_credential)
        self.identity: GatewayIdentity = self.keys.identity
        self.registry = DeviceRegistry.open(self.state_dir)
        added = self.registry.seed(config.devices)
        if added:
            log.info("registered %d device(s) from the config: %s", len(added), ", ".join(added))
        self.clock = ClockMonitor(config.gateway.clock)
        ob = config.outbox
        sink_names = ["local"] + (["influx"] if config.sinks.influx is not None else [])
        sink_names += ["research"] if config.research.enabled else []
        self.hot = HotBatches(sink_names, max_points=ob.hot_cache_points)
        envelopes = EnvelopeCache(self.keys.history.signer_for)
        self._writer_conn = open_outbox(self.state_dir, ob.synchronous)
        self.committer = Committer(
            self._writer_conn,
            self.identity,
            self.metrics,
            max_delay_s=ob.group_commit_max_delay_ms / 1000,
            max_batches=ob.group_commit_max_batches,
            max_points=ob.group_commit_max_points,
            queue_size=ob.queue_batches,
            hot=self.hot,
        )
        skew = SkewTracker(
            int(config.gateway.clock_skew_tolerance_s * 1e9), self.registry.clock_skews(), self.registry.set_clock_skew
        )
        self.ingest = IngestSource(self.registry, self.committer, self.clock, PriorityRules(ob.priority_rules), skew)
        self.mqtt: MqttSource | None = None
        if config.mqtt.enabled:
            from gateway.mqtt.source import MqttSource

            self.mqtt = MqttSource(
                config.mqtt,
                self.state_dir,
                self.registry,
                self.committer,
                self.clock,
                PriorityRules(ob.priority_rules),
                self.metrics,
            )
        self.ble: BleSource | None = None
        if config.ble.enabled:
            self.ble = self._ble_source()
        self.local = LocalSink(self.state_dir, config.sinks.local.retention_days)
        lc = config.sinks.local
        self.sinks: list[tuple[Sink, int, int]] = [(self.local, lc.max_batches_per_write, lc.max_points_per_write)]
        if config.sinks.influx is not None:
            from gateway.sinks.influx import InfluxSink

            ix = config.sinks.influx
            self.sinks.append(
                (
                    InfluxSink(
                        "influx",
                        ix.url,
                        ix.org,
                        ix.bucket,
                        influx_token(ix),
                        timeout_s=ix.timeout_s,
                        max_body_bytes=ix.max_body_bytes,
                        verify_tls=ix.verify_tls,
                        parallel_writes=ix.parallel_writes,
                    ),
                    ix.max_batches_per_write,
                    ix.max_points_per_write,
                )
            )
        self.research: ResearchPath | None = None
        if config.research.enabled:  # the research path (docs/consent.md)
            self.research = research_path(config, self.state_dir, self.identity, self.metrics)
            self.sinks.append((self.research.sink, self.research.max_batches, self.research.max_points))
        self.forwarders = [
            Forwarder(
                OutboxStore(open_outbox(self.state_dir, ob.synchronous), envelopes=envelopes, hot=self.hot),
                sink,
                self.metrics,
                max_batches=limit,
                max_points=points,
                retry_initial_s=config.sinks.retry_initial_s,
                retry_max_s=config.sinks.retry_max_s,
                linger_s=config.sinks.linger_ms / 1000,
            )
            for sink, limit, points in self.sinks
        ]
        for f in self.forwarders:
            self.committer.on_commit.append(f.wake.set)
        self._hk_store = OutboxStore(open_outbox(self.state_dir, ob.synchronous), self.keys.history.signer_for)
        self.housekeeper = Housekeeper(
            self._hk_store.conn,
            self.metrics,
            sinks=[s.name for s, *_ in self.sinks if s.name != "research"],  # research never holds care data
            retention_s=config.provenance.archive_retention_days * 86400,
            budget_bytes=int(ob.disk_budget_mb * 1024 * 1024),
            history=HistoryPruner(self.local.used_bytes, self.local.prune_oldest),
        )
        self.token = load_or_create_token(self.state_dir / "control.token")
        sp = config.web.status
        self.live = LiveBoard(ob.priority_rules, strip_s=sp.ecg_strip_s)
        """Recent curves and notices for the status page (fed with every committed batch)."""
        self.committer.activity.listeners.append(self.live.record)
        self.status_page: StatusPage | None = None
        if sp.enabled or sp.host is not None:
            self.status_page = StatusPage(
                sp,
                token=load_status_token(sp, self.state_dir),
                snapshot=self.status_snapshot,
                board=self.live,
                metrics=self.metrics,
            )
        self.control = ControlServer(
            token=self.token,
            metrics=self.metrics,
            ingest=self.ingest,
            stats=self.stats,
            health=self.health,
            max_body_bytes=config.web.max_body_bytes,
            ble_pair=self._ble_pair if self.ble is not None else None,
            credential=CredentialStore(self.state_dir, self.identity.did),
            routes=[
                *(self.research.routes if self.research is not None else ()),
                *(self.status_page.routes() if self.status_page is not None and sp.enabled else ()),
            ],
            readiness=self.readiness,
        )
        self._commit_failures_seen = 0.0
        self._commit_failed_at = -1e18
        self._hk_ok_at = time.monotonic()
        self._skews: tuple[float, dict[str, int]] = (-1e18, {})
        self._stats: dict[str, Any] = {}
        self._resealed_all = False
        self._started_ns = time.time_ns()
        self.url = ""
        self.ready = asyncio.Event()
        self._hk_stop = asyncio.Event()
        self.stop_requested = asyncio.Event()

    def _ble_source(self) -> BleSource:
        from drivers.sdk.registry import DriverRegistry
        from gateway.ble.manager import BleSource
        from gateway.ble.pairing import PairingPolicy
        from gateway.ble.stack import make_stack

        cfg = self.config.ble
        pairing = PairingPolicy(
            secure_connections_only=cfg.secure_connections_only,
            min_key_size=cfg.min_key_size,
            on_decision=lambda outcome: self.metrics.ble_pairing.labels(outcome=outcome).inc(),
        )
        drivers = DriverRegistry.from_entry_points()
        log.info("BLE drivers: %s", ", ".join(drivers.names()) or "none")
        return BleSource(
            cfg,
            make_stack(cfg, pairing, self.state_dir),
            drivers,
            self.registry,
            self.committer,
            self.clock,
            self.metrics,
            pairing,
        )

    def _ble_pair(self, window_s: float) -> dict[str, Any]:
        assert self.ble is not None
        self.ble.pairing.open_window(window_s)
        return {"pairing_window_s": window_s}

    # --- views ---------------------------------------------------------------------------------
    def _sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        v = self.metrics.registry.get_sample_value(name, labels or {})
        return float(v or 0.0)

    def counters(self) -> dict[str, Any]:
        m = self._sample
        return {
            "readings_ingested": int(m("ds4h_readings_ingested_total")),
            "readings_committed": int(m("ds4h_readings_committed_total")),
            "batches_committed": int(m("ds4h_batches_committed_total")),
            "batches_duplicate": int(m("ds4h_batches_duplicate_total")),
            "readings_forwarded": {
                s.name: int(m("ds4h_readings_forwarded_total", {"sink": s.name})) for s, *_ in self.sinks
            },
            "readings_lost": int(m("ds4h_readings_lost_total")),
            "backpressure_refusals": int(m("ds4h_backpressure_refusals_total")),
        }

    def stats(self) -> dict[str, Any]:
        activity = self.committer.activity.snapshot()
        return {
            "gateway": self.config.gateway.name,
            "did": self.identity.did,
            "uptime_s": (time.time_ns() - self._started_ns) / 1e9,
            "clock_synchronised": self.clock.synced(),
            "accepting": self.committer.accepting,
            "backpressure": self.committer.backpressure,
            "commit_queue": self.committer.queue_depth,
            "counters": self.counters(),
            "sinks": {f.sink.name: {"last_error": f.last_error} for f in self.forwarders},
            **({"mqtt": self.mqtt_stats()} if self.mqtt is not None else {}),
            **({"ble": self.ble.stats()} if self.ble is not None else {}),
            **({"research": {"batches": dict(self.research.sink.decided)}} if self.research is not None else {}),
            "devices": [
                {"id": d.id, "kind": d.kind, "enabled": d.enabled, **activity.get(d.id, {})}
                for d in self.registry.all()
            ],
            **self._stats,
        }

    def mqtt_stats(self) -> dict[str, Any]:
        assert self.mqtt is not None
        m = self._sample
        return {
            "connected": self.mqtt.connected.is_set(),
            "connected_since_ns": self.mqtt.connected_since_ns,
            "broker": f"{self.config.mqtt.host}:{self.config.mqtt.port}",
            "last_error": self.mqtt.last_error,
            "messages": {
                o: int(m("ds4h_mqtt_messages_total", {"outcome": o}))
                for o in ("committed", "duplicate", "quarantined", "status")
            },
            "device_status": self.mqtt.status,
        }

    def health(self) -> dict[str, Any]:
        ok = self.ready.is_set() and self.committer.accepting
        return {
            "status": "ok" if ok else "starting" if not self.ready.is_set() else "stopping",
            "did": self.identity.did,
        }

    def readiness(self) -> dict[str, Any]:
        """``/readyz``: ready to take data and keep it — the outbox is writable (accepting, not back-pressured,
        no failed commit in the last ``READY_COMMIT_FAILURE_S``, housekeeping running) and every sink is
        delivering or buffering within the disk budget."""
        now = time.monotonic()
        reasons: list[str] = []
        if not self.ready.is_set():
            reasons.append("starting")
        elif not self.committer.accepting:
            reasons.append("stopping")
        if self.committer.backpressure is not None:
            reasons.append(f"back-pressure: {self.committer.backpressure}")
        if now - self._commit_failed_at < READY_COMMIT_FAILURE_S:
            reasons.append(f"an outbox commit failed in the last {READY_COMMIT_FAILURE_S:g} s")
        if self.ready.is_set() and now - self._hk_ok_at > READY_HOUSEKEEPING_S:
            reasons.append(f"housekeeping (disk budget, gauges) has not completed for {now - self._hk_ok_at:.0f} s")
        sinks = {
            f.sink.name: "delivering" if f.last_error is None else f"buffering ({f.last_error})"
            for f in self.forwarders
        }
        return {
            "status": "ready" if not reasons else "not_ready",
            "reasons": reasons,
            "sinks": sinks,
            "disk": self._stats.get("disk"),
        }

    def status_snapshot(self) -> dict[str, Any]:
        """What the status page shows: :meth:`stats`, readiness, device clock offsets, quarantine overflow."""
        now = time.monotonic()
        if now - self._skews[0] > 5.0:
            self._skews = (now, self.registry.clock_skews())
        snap = self.stats()
        snap["ready"] = self.readiness()
        snap["clock_skews"] = self._skews[1]
        snap["counters"]["quarantine_overflow"] = int(self._sample("ds4h_quarantine_overflow_total"))
        return snap

    # --- lifecycle -----------------------------------------------------------------------------
    def request_stop(self) -> None:
        self.stop_requested.set()

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_stop)
        try:
            async with asyncio.TaskGroup() as tg:
                committer = tg.create_task(self.committer.run(), name="committer")
                fwd = [tg.create_task(f.run(), name=f"forward-{f.sink.name}") for f in self.forwarders]
                hk = tg.create_task(self._housekeeping(), name="housekeeping")
                mqtt = tg.create_task(self.mqtt.run(), name="mqtt") if self.mqtt is not None else None
                ble = tg.create_task(self.ble.run(), name="ble") if self.ble is not None else None
                self.url = await self.control.start(self.config.web.host, self.config.web.port)
                write_control_file(self.state_dir, self.url, os.getpid(), self.identity.did)
                log.info("gateway %s up; control API at %s", self.identity.did, self.url)
                await self._start_status_page()
                self.ready.set()
                await self.stop_requested.wait()
                log.info("stopping: no new batches; committing what is in flight")
                if self.mqtt is not None and mqtt is not None:
                    self.mqtt.stop()  # it acknowledges what it committed, then disconnects
                    await mqtt
                if self.ble is not None and ble is not None:
                    self.ble.stop()  # sessions stop streaming, commit what they hold, disconnect
                    await ble
                await self.committer.stop()
                await committer
                for f in self.forwarders:
                    f.finish_when_idle()
                _, late = await asyncio.wait(fwd, timeout=self.config.gateway.shutdown_flush_s)
                for t in late:
                    log.warning("sink %s still had data at shutdown; it stays in the outbox", t.get_name())
                    t.cancel()
                self._hk_stop.set()  # let a running pass finish: it uses connections closed below
                await hk
                if self.status_page is not None:
                    await self.status_page.stop_listener()
                await self.control.stop()
        finally:
            if install_signal_handlers:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            await self._close()

    async def _start_status_page(self) -> None:
        sp = self.config.web.status
        if self.status_page is None:
            return
        where = sp.token_file if sp.token_file is not None else self.state_dir / "status.token"
        if sp.enabled:
            log.info("status page at %s/status (login token in %s)", self.url, where)
        if sp.host is not None:
            url = await self.status_page.start_listener(sp.host, sp.port)
            log.info("status page also at %s (login token in %s)", url, where)

    async def _close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "control.json").unlink()
        if self.status_page is not None:
            await self.status_page.stop_listener()
        await self.control.stop()
        for sink, *_ in self.sinks:
            await sink.close()
        self.registry.close()
        self._hk_store.conn.close()
        for f in self.forwarders:
            f.close()
        self._writer_conn.close()

    def _reseal(self) -> None:
        """After a state key rotation: re-encrypt a bounded number of values under the current key."""
        limit = self.config.crypto.reseal_rows_per_pass
        if self.cipher is None or limit <= 0 or self._resealed_all:
            return
        n = reseal_some(self._hk_store.conn, OUTBOX_SEALED, limit)
        n += self.local.reseal(max(0, limit - n))
        if self.research is not None:
            n += self.research.sink.reseal(max(0, limit - n))
        if n:
            log.info("state encryption: %d value(s) re-encrypted with the current key", n)
        self._resealed_all = n == 0

    async def _housekeeping(self) -> None:
        while not self._hk_stop.is_set():
            try:
                self._stats = await asyncio.to_thread(self._housekeep_once)
                self._hk_ok_at = time.monotonic()
            except sqlite3.Error as e:  # e.g. the outbox locked for longer than the busy timeout: next round
                log.warning("housekeeping failed this round: %s", e)
            failures = self._sample("ds4h_commit_failures_total")
            if failures > self._commit_failures_seen:
                self._commit_failures_seen = failures
                self._commit_failed_at = time.monotonic()
            self.metrics.ready.set(1 if self.readiness()["status"] == "ready" else 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hk_stop.wait(), timeout=HOUSEKEEPING_INTERVAL_S)

    def _housekeep_once(self) -> dict[str, Any]:
        verdict = self.housekeeper.run_once()
        self._reseal()
        expired = self.local.prune_expired()
        if expired:
            self.metrics.pruned_history.labels(why="retention").inc(expired)
            log.info("local history: %d row(s) past sinks.local.retention_days removed", expired)
        self.committer.set_backpressure(verdict.backpressure)
        self.metrics.clock_synced.set(1 if self.clock.synced() else 0)
        store = self._hk_store
        outbox: dict[str, Any] = {}
        for sink, *_ in self.sinks:
            o = outbox[sink.name] = store.sink_summary(sink.name)
            self.metrics.outbox_depth.labels(sink=sink.name).set(o["pending_batches"])
            self.metrics.outbox_oldest_age.labels(sink=sink.name).set(o["oldest_age_s"])
            self.metrics.dead_letters.labels(sink=sink.name).set(o["dead_letters"])
        return {
            "outbox": outbox,
            "quarantine": store.quarantine_counts(),
            "disk": {"used_bytes": verdict.used_bytes, "budget_bytes": verdict.budget_bytes},
        }

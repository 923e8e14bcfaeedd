"""The MQTT source: SenML frames from 5G devices → batches → COMMIT → PUBACK and ack watermark.

Messages are taken in chunks, as they arrived since the last wake-up (no await per message): each chunk
is decoded, its good frames committed and its bad ones quarantined in one outbox transaction, and only
then is every message of the chunk acknowledged (PUBACK) and every frame settled in the device's ack
watermark. A chunk that cannot be committed (back-pressure, a failing disk) is retried, never acked.
Acks of a connection that has been lost are dropped: the broker redelivers those messages.

Device-signed frames (COSE_Sign1, :mod:`gateway.mqtt.devsig`) are parsed and matched to the device's
registered key per message, then verified per chunk (one worker-thread call for all its signatures),
then checked for replay in arrival order, before the frames are decoded and committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import cbor2
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError

from drivers.senml.codec import SENML_CBOR
from drivers.senml.cose import Sign1, external_aad, looks_signed, parse_sign1, tagged_sign1
from drivers.senml.profile import Frame, decode_frame, read_header
from gateway.backoff import backoff_delay
from gateway.clock import ClockMonitor
from gateway.config import MqttSection
from gateway.devices import Device, DeviceRegistry
from gateway.errors import BackpressureError, GatewayError, OutboxError, PayloadError, ShuttingDownError
from gateway.metrics import GatewayMetrics
from gateway.model import Batch, SourceKey, TimeQuality
from gateway.mqtt.acks import AckTracker
from gateway.mqtt.connection import V5, V311, build_client, disconnected, paho_client, tls_context
from gateway.mqtt.devsig import INLINE_MAX, SPLIT_MIN, DeviceKeys, ReplayGuard, VerifyJob, verify_all
from gateway.mqtt.fastpublish import Publish
from gateway.mqtt.topics import (
    READINGS_FILTER,
    STATUS_FILTER,
    ack_topic,
    gateway_status_topic,
    parse_device_topic,
)
from gateway.outbox.committer import CommitResult, Committer, QuarantineRecord
from gateway.priority import PriorityRules

log = logging.getLogger(__name__)

PLAIN_SENML_KIND = "senml"
"""Devices of this kind are third-party SenML publishers: no boot id / frame seq, absolute times only."""
CHUNK_MAX = 2000
"""Messages handled (and committed) together at most."""
CHUNK_BYTES = 256 * 1024
"""…and about this much payload (ECG frames: one commit stays a few tens of thousands of samples)."""
MAX_CHUNKS_IN_FLIGHT = 4
REPLAY_STATE_KEY = "mqtt_replay"
"""The device registry's driver_state key holding a device's replay-guard state."""
REPLAY_SAVE_S = 2.0
"""The replay state is saved at most this often (after a commit) and when the source stops."""
_UNCORRECTED = int(TimeQuality.DEVICE_UNCORRECTED)
_SETTLES_UNSIGNED = frozenset({"too_large", "unknown_device", "disabled_device", "decoder_error"})
"""Rejections before any signature check whose (unsigned) header may still settle the ack watermark."""
_NO_SETTLE = frozenset({"replay", "stale"})
"""Verified but refused: an old frame must not move the watermark."""
_REPLAY_DETAIL = {
    "replay": "device {} boot {} seq {}: below the boot's signed 'unacked' floor (the device freed it)",
    "stale": "device {} boot {} seq {}: a retired boot, or too far below the boot's highest seq",
}
_UNSUPPORTED_PROTOCOL = (1, 132)  # 3.1.1 CONNACK 'unacceptable protocol version', v5 0x84


@dataclass(slots=True)
class _Msg:
    """One received message and the connection it came on (acks of an older connection are dropped)."""

    mid: int
    qos: int
    topic: str
    payload: bytes
    content_type: str | None
    generation: int
    dup: bool = False
    """MQTT DUP flag: the broker delivered this message to the gateway before (not acknowledged then)."""


@dataclass(slots=True)
class _Admitted:
    """A message past the registry and signature-header checks, waiting for its chunk's verification."""

    index: int
    device_id: str
    msg: _Msg
    device: Device
    sign1: Sign1 | None
    job: VerifyJob | None = None


@dataclass(slots=True)
class _Settle:
    device_id: str
    boot: str
    seq: int
    unacked: int | None


class MqttSource:
    def __init__(
        self,
        cfg: MqttSection,
        state_dir: Path,
        registry: DeviceRegistry,
        committer: Committer,
        clock: ClockMonitor,
        rules: PriorityRules,
        metrics: GatewayMetrics,
    ) -> None:
        self._cfg = cfg
        self._state_dir = state_dir
        self._registry = registry
        self._committer = committer
        self._clock = clock
        self._rules = rules
        self._metrics = metrics
        self.acks = AckTracker(max_boots=cfg.ack_max_boots, boot_ttl_s=cfg.ack_boot_ttl_s)
        self._protocol = V311 if cfg.protocol == "3.1.1" else V5
        self._inbox: list[_Msg] = []
        self._ready = asyncio.Event()
        self._generation = 0
        self._client: aiomqtt.Client | None = None
        self._stopping = asyncio.Event()
        self.connected = asyncio.Event()
        self.status: dict[str, dict[str, Any]] = {}
        """Last status (birth / last will) each device published."""
        self.last_error: str | None = None
        self.connected_since_ns = 0
        """When the current (or last) connection was made, ns since the epoch."""
        self._keys = DeviceKeys()
        self.replay = ReplayGuard(cfg.replay_window, cfg.boot_grace_s)
        now = time.monotonic()
        for device_id, text in registry.driver_states(REPLAY_STATE_KEY).items():
            self.replay.restore(device_id, text, now)
        self._replay_saved = now
        self._verifier: ThreadPoolExecutor | None = None
        self._turn: asyncio.Future[None] | None = None
        """Done when the previous chunk has passed its replay checks (they run in arrival order)."""

    # --- lifecycle ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop taking messages; :meth:`run` returns after acknowledging what it committed."""
        self._stopping.set()
        self._ready.set()

    async def run(self) -> None:
        tls = tls_context(self._cfg, self._state_dir)
        self._verifier = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mqtt-verify")
        try:
            await self._run(tls)
        finally:
            self._verifier.shutdown(wait=False, cancel_futures=True)
            self._save_replay(force=True)

    async def _run(self, tls: Any) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                await self._session(tls)
                attempt = 0
            except MqttConnectError as e:
                if self._cfg.protocol == "auto" and self._protocol == V5 and e.rc in _UNSUPPORTED_PROTOCOL:
                    log.info("broker refused MQTT v5; falling back to 3.1.1")
                    self._protocol = V311
                    continue
                self._lost(f"broker refused the connection: {e}")
            except (aiomqtt.MqttError, OSError) as e:
                self._lost(f"connection lost: {e}")
            if self._stopping.is_set():
                break
            delay = backoff_delay(attempt, initial_s=self._cfg.reconnect_initial_s, max_s=self._cfg.reconnect_max_s)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    def _lost(self, why: str) -> None:
        self.connected.clear()
        self._metrics.mqtt_connected.set(0)
        self._metrics.mqtt_reconnects.inc()
        if why != self.last_error:
            log.warning("mqtt %s:%d: %s — reconnecting", self._cfg.host, self._cfg.port, why)
        self.last_error = why

    async def _session(self, tls: Any) -> None:
        client = build_client(self._cfg, self._protocol, tls, self._on_message)
        self._generation += 1
        self._inbox.clear()  # messages of a lost connection are redelivered by the broker
        async with client:
            self._client = client
            lost = disconnected(client)
            try:
                await client.subscribe([(READINGS_FILTER, 1), (STATUS_FILTER, 1)], timeout=self._cfg.connect_timeout_s)
                await client.publish(
                    gateway_status_topic(self._cfg.client_id),
                    b'{"state":"online"}',
                    qos=1,
                    retain=True,
                    timeout=self._cfg.connect_timeout_s,
                )
                self.acks.dirty.update(self.acks.devices())  # re-announce watermarks after a reconnect
                self.connected.set()
                self.connected_since_ns = time.time_ns()
                self.last_error = None
                self._metrics.mqtt_connected.set(1)
                log.info(
                    "mqtt connected to %s:%d (%s)",
                    self._cfg.host,
                    self._cfg.port,
                    "v5" if self._protocol == V5 else "3.1.1",
                )
                failure: BaseException | None = None
                try:
                    await self._serve(client, lost)
                except* (aiomqtt.MqttError, OSError, TimeoutError) as group:
                    failure = group.exceptions[0]
                if failure is not None:
                    raise aiomqtt.MqttError(str(failure) or type(failure).__name__)
            finally:
                self._client = None
                self.connected.clear()
                self._metrics.mqtt_connected.set(0)
        if lost.done() and not lost.cancelled():
            lost.exception()  # retrieved: the reason was logged by the caller

    async def _serve(self, client: aiomqtt.Client, lost: asyncio.Future[None]) -> None:
        """Hand messages to chunk tasks until the connection is down or the source stops.

        ``down`` resolves when the connection is lost or an ack publish fails; chunks in progress still
        finish their commits (their PUBACKs are dropped if the connection is gone: the broker redelivers).
        """
        gen = self._generation
        down: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def went_down(why: str) -> None:
            if not down.done():
                down.set_result(why)

        lost.add_done_callback(lambda f: went_down(_reason(f)))
        async with asyncio.TaskGroup() as tg:
            publisher = tg.create_task(self._publish_acks(client, went_down))
            stop = tg.create_task(self._stopping.wait())
            chunks: set[asyncio.Task[None]] = set()
            slots = asyncio.Semaphore(MAX_CHUNKS_IN_FLIGHT)
            while not down.done() and not self._stopping.is_set():
                if not self._inbox:
                    self._ready.clear()
                    waiter = asyncio.ensure_future(self._ready.wait())
                    await asyncio.wait((waiter, down, stop), return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    continue
                await slots.acquire()
                take = self._take_chunk()
                task = tg.create_task(self._handle(client, gen, take, down))
                chunks.add(task)

                def done(t: asyncio.Task[None]) -> None:
                    chunks.discard(t)
                    slots.release()

                task.add_done_callback(done)
            if chunks:  # let committed chunks be acknowledged before leaving
                await asyncio.wait(chunks)
            if not down.done():
                await self._flush_acks(client, went_down)
            if self._stopping.is_set() and not down.done():
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.publish(
                        gateway_status_topic(self._cfg.client_id), b'{"state":"offline"}', qos=1, retain=True, timeout=2
                    )
            publisher.cancel()
            stop.cancel()
        if down.done() and not self._stopping.is_set():
            raise aiomqtt.MqttError(down.result())

    def _take_chunk(self) -> list[_Msg]:
        """The oldest messages, at most CHUNK_MAX of them and about CHUNK_BYTES of payload."""
        n = size = 0
        inbox = self._inbox
        while n < len(inbox) and n < CHUNK_MAX and size < CHUNK_BYTES:
            size += len(inbox[n].payload)
            n += 1
        take = inbox[:n]
        del inbox[:n]
        return take

    # --- receiving ---------------------------------------------------------------------------------
    def _on_message(self, _client: paho.Client, _userdata: Any, m: paho.MQTTMessage | Publish) -> None:
        """paho's callback, on the event loop: queue without decoding anything."""
        ctype = None
        props = m.properties
        if props is not None:
            ctype = getattr(props, "ContentType", None)
        payload = m.payload if type(m.payload) is bytes else bytes(m.payload)
        self._inbox.append(_Msg(m.mid, m.qos, m.topic, payload, ctype, self._generation, bool(m.dup)))
        self._ready.set()

    async def _handle(self, client: aiomqtt.Client, gen: int, msgs: list[_Msg], down: asyncio.Future[str]) -> None:
        received_ns = time.time_ns()
        synced = self._clock.synced()
        self._registry.refresh(max_age_s=0.0)  # one PRAGMA per chunk: a revocation applies to the next chunk
        batches: list[Batch] = []
        settle: list[_Settle | None] = []
        quarantined: list[QuarantineRecord] = []
        q_settle: list[_Settle] = []
        admitted: list[_Admitted] = []
        for i, m in enumerate(msgs):
            parsed = parse_device_topic(m.topic)
            if parsed is None:
                quarantined.append(QuarantineRecord.of("bad_topic", "message on a topic outside the tree", None, b""))
                continue
            device_id, leaf = parsed
            if leaf == "status":
                self._device_status(device_id, m.payload)
                continue
            try:
                adm = self._admit(i, device_id, m)
            except Exception as e:  # a bug must not stop the source: quarantine, log the type only
                log.error("mqtt: checking a frame of %s failed unexpectedly (%s)", device_id, type(e).__name__)
                adm = QuarantineRecord.of("decoder_error", type(e).__name__, device_id, m.payload)
            if isinstance(adm, QuarantineRecord):
                quarantined.append(adm)
                known = self._registry.cached(device_id)
                if adm.reason in _SETTLES_UNSIGNED and not (known is not None and known.require_signature):
                    # an unauthenticated header may move the watermark only of a device that does not sign
                    hdr = read_header(m.payload, m.content_type)
                    if hdr is not None:
                        q_settle.append(_Settle(device_id, *hdr))
                continue
            admitted.append(adm)
        prev, mine = self._turn, asyncio.get_running_loop().create_future()
        self._turn = mine  # taken before the first await: the order chunks arrived in
        try:
            valid = await self._verify([a.job for a in admitted if a.job is not None])
            if prev is not None:
                await prev  # replay checks in arrival order, whichever chunk's verification finished first
            now = time.monotonic()
            results_iter = iter(valid)
            for a in admitted:
                if a.job is not None and not next(results_iter):
                    quarantined.append(
                        QuarantineRecord.of(
                            "signature_invalid",
                            f"COSE_Sign1 signature does not verify for device {a.device_id}",
                            a.device_id,
                            a.msg.payload,
                        )
                    )
                    continue
                outcome = self._decode_admitted(a, received_ns + a.index, synced, now)
                if isinstance(outcome, QuarantineRecord):
                    quarantined.append(outcome)
                    if outcome.reason not in _NO_SETTLE:
                        payload, ctype = self._inner(a)
                        hdr = read_header(payload, ctype)
                        if hdr is not None:
                            q_settle.append(_Settle(a.device_id, *hdr))
                    continue
                batch, st = outcome
                batches.append(batch)
                settle.append(st)
        finally:
            mine.set_result(None)
            if self._turn is mine:
                self._turn = None
        results = await self._commit(batches, quarantined, down)
        self._save_replay()
        if results is None:
            return  # stopping or disconnected: nothing acked, the broker keeps the messages
        n_new = sum(1 for r in results if r is CommitResult.COMMITTED)
        self._metrics.mqtt_messages.labels(outcome="committed").inc(n_new)
        self._metrics.mqtt_messages.labels(outcome="duplicate").inc(len(results) - n_new)
        self._metrics.mqtt_messages.labels(outcome="quarantined").inc(len(quarantined))
        now = time.monotonic()
        for st in settle:
            if st is not None:
                self.acks.settle(st.device_id, st.boot, st.seq, st.unacked, now)
        for st in q_settle:
            self.acks.settle(st.device_id, st.boot, st.seq, st.unacked, now)
        if gen != self._generation or self._client is not client or down.done():
            self._metrics.mqtt_acks_dropped.inc(len(msgs))
            return
        inner = paho_client(client)
        for m in msgs:
            if m.qos:
                inner.ack(m.mid, m.qos)

    def _admit(self, index: int, device_id: str, m: _Msg) -> QuarantineRecord | _Admitted:
        """Size, registry and signature-header checks (no signature verified yet)."""
        payload = m.payload
        if len(payload) > self._cfg.max_payload_bytes:
            return QuarantineRecord.of(
                "too_large",
                f"{len(payload)} bytes > mqtt.max_payload_bytes {self._cfg.max_payload_bytes}",
                device_id,
                payload,
            )
        device = self._registry.cached(device_id)
        if device is None:
            return QuarantineRecord.of("unknown_device", f"device {device_id} is not registered", device_id, payload)
        if device.revoked:
            return QuarantineRecord.of("revoked", f"device {device_id}'s certificate is revoked", device_id, payload)
        if not device.enabled:
            return QuarantineRecord.of("disabled_device", f"device {device_id} is disabled", device_id, payload)
        if not payload or not looks_signed(payload, m.content_type):
            if device.require_signature:
                return QuarantineRecord.of(
                    "signature_missing", f"device {device_id} must sign its frames (COSE_Sign1)", device_id, payload
                )
            return _Admitted(index, device_id, m, device, None)
        try:
            sign1 = parse_sign1(payload, m.content_type)
            job = self._keys.job(sign1, device.public_key, device_id, external_aad(m.topic))
        except PayloadError as e:
            return QuarantineRecord.of(e.reason, str(e), device_id, payload)
        return _Admitted(index, device_id, m, device, sign1, job)

    async def _verify(self, jobs: list[VerifyJob]) -> list[bool]:
        """Every signature of a chunk: on the event loop for a few, else on the two worker threads."""
        if not jobs:
            return []
        if len(jobs) <= INLINE_MAX or self._verifier is None:
            valid = verify_all(jobs)
        else:  # both workers on one chunk: with the broker's in-flight window a chunk is often all there is
            loop = asyncio.get_running_loop()
            half = (len(jobs) + 1) // 2 if len(jobs) >= SPLIT_MIN else len(jobs)
            parts = [jobs[:half], jobs[half:]] if half < len(jobs) else [jobs]
            done = await asyncio.gather(*(loop.run_in_executor(self._verifier, verify_all, p) for p in parts))
            valid = [ok for part in done for ok in part]
        self._metrics.mqtt_signatures.labels(outcome="valid").inc(sum(valid))
        self._metrics.mqtt_signatures.labels(outcome="invalid").inc(len(valid) - sum(valid))
        return valid

    @staticmethod
    def _inner(a: _Admitted) -> tuple[bytes, str | None]:
        """The SenML payload and its content type: a signed frame's payload is always SenML CBOR."""
        if a.sign1 is not None:
            return a.sign1.payload, SENML_CBOR
        return a.msg.payload, a.msg.content_type

    def _decode_admitted(
        self, a: _Admitted, received_ns: int, synced: bool, now: float
    ) -> QuarantineRecord | tuple[Batch, _Settle | None]:
        device_id, device = a.device_id, a.device
        payload, ctype = self._inner(a)
        try:
            frame = decode_frame(
                payload,
                ctype,
                device_id,
                received_ns,
                gateway_synced=synced,
                max_ahead_s=self._cfg.max_ahead_s,
            )
            if a.sign1 is not None:
                if frame.boot is None or frame.seq is None:
                    raise PayloadError(
                        "a signed frame must carry 'boot' and 'seq' (replay protection)", "missing_sequence"
                    )
                if not a.msg.dup:
                    why = self.replay.check(device_id, frame.boot, frame.seq, frame.unacked, now)
                    if why is not None:
                        raise PayloadError(_REPLAY_DETAIL[why].format(device_id, frame.boot, frame.seq), why)
            key, st = self._key(device_id, device.kind, frame, payload)
        except PayloadError as e:
            return QuarantineRecord.of(e.reason, str(e), device_id, a.msg.payload)
        batch = Batch(
            key=key,
            received_ns=received_ns,
            readings=frame.readings,
            waveforms=frame.waveforms,
            priority=self._rules.classify(frame.readings),
            kind=device.kind,
            spectra=frame.spectra,
            evidence=b"" if a.sign1 is None else tagged_sign1(a.msg.payload),
        )
        return batch, st

    @staticmethod
    def _key(device_id: str, kind: str, frame: Frame, payload: bytes) -> tuple[SourceKey, _Settle | None]:
        if frame.boot is not None and frame.seq is not None:
            return SourceKey(device_id, (frame.boot, frame.seq)), _Settle(
                device_id, frame.boot, frame.seq, frame.unacked
            )
        if kind != PLAIN_SENML_KIND:
            raise PayloadError(
                f"frame without 'boot' and 'seq' records: only devices of kind {PLAIN_SENML_KIND!r} may omit them",
                reason="missing_sequence",
            )
        times = [r.time_quality for r in frame.readings] + [w.time_quality for w in frame.waveforms]
        times += [s.time_quality for s in frame.spectra]
        if not all(tq & _UNCORRECTED for tq in times):
            raise PayloadError(
                "plain SenML frames must carry absolute times (≥ 2**28 s): relative times need 'boot' and 'seq'",
                reason="bad_time",
            )
        # no device counters: the payload itself identifies a redelivery (and point identity the rest)
        return SourceKey(device_id, ("senml", hashlib.sha256(payload).hexdigest()[:32])), None

    async def _commit(
        self, batches: list[Batch], quarantined: list[QuarantineRecord], down: asyncio.Future[str]
    ) -> list[CommitResult] | None:
        """Commit until it works; ``None`` when the gateway stops or the connection is lost first (then
        nothing may be acked: the broker redelivers the messages)."""
        attempt = 0
        while True:
            try:
                return await self._committer.submit_many(batches, quarantined)
            except ShuttingDownError:
                return None
            except (BackpressureError, OutboxError) as e:
                delay = e.retry_after_s if isinstance(e, BackpressureError) else backoff_delay(attempt, max_s=5.0)
                attempt += 1
                if attempt == 1:
                    log.warning("mqtt: holding %d frame(s) unacknowledged: %s", len(batches), e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                if self._stopping.is_set() or down.done():
                    return None

    def _save_replay(self, force: bool = False) -> None:
        """Persist the replay state of the devices it changed for (at most every REPLAY_SAVE_S)."""
        now = time.monotonic()
        if not self.replay.dirty or (not force and now - self._replay_saved < REPLAY_SAVE_S):
            return
        self._replay_saved = now
        dirty, self.replay.dirty = self.replay.dirty, set()
        states = {d: t for d in dirty if (t := self.replay.export(d, now)) is not None}
        try:
            self._registry.set_driver_states(REPLAY_STATE_KEY, states)
        except GatewayError as e:
            self.replay.dirty |= dirty
            log.warning("mqtt: could not save the replay state: %s", e)

    def _device_status(self, device_id: str, payload: bytes) -> None:
        try:
            doc = json.loads(payload) if payload[:1] == b"{" else cbor2.loads(payload)
        except (ValueError, cbor2.CBORDecodeError):
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("state"), str):
            self._metrics.mqtt_messages.labels(outcome="bad_status").inc()
            return
        self.status[device_id] = {"state": doc["state"][:16], "since_ns": time.time_ns()}
        self._metrics.mqtt_messages.labels(outcome="status").inc()

    # --- ack watermarks ----------------------------------------------------------------------------
    async def _publish_acks(self, client: aiomqtt.Client, went_down: Callable[[str], None]) -> None:
        interval = self._cfg.ack_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            if not await self._flush_acks(client, went_down):
                return

    async def _flush_acks(self, client: aiomqtt.Client, went_down: Callable[[str], None]) -> bool:
        """Publish the changed watermarks; False (and the connection marked down) when that fails."""
        devices = self.acks.take_dirty()
        if not devices:
            return True
        why = ""
        try:
            async with asyncio.TaskGroup() as tg:
                for d in devices:
                    tg.create_task(
                        client.publish(
                            ack_topic(d), self.acks.payload(d), qos=1, retain=True, timeout=self._cfg.connect_timeout_s
                        )
                    )
        except* (aiomqtt.MqttError, TimeoutError) as group:
            why = f"could not publish ack watermarks: {group.exceptions[0] or type(group.exceptions[0]).__name__}"
        if why:
            self.acks.dirty.update(devices)  # published again on the next round / connection
            went_down(why)
            return False
        self._metrics.mqtt_acks_published.inc(len(devices))
        return True


def _reason(f: asyncio.Future[None]) -> str:
    if f.cancelled():
        return "disconnected"
    exc = f.exception()
    return str(exc) if exc else "disconnected"

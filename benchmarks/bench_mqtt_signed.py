"""Device-signed MQTT ingest: what verifying each frame's COSE_Sign1 (Ed25519) costs, and what verifying per
chunk buys.

1. **verification strategies** (in process, no broker): N signed frames through the gateway's own parse +
   key lookup + verify code, (a) inline on the event loop, (b) one ``await run_in_executor`` per message,
   (c) one executor call per chunk of 2,000 (what the MQTT source does), (d) as (c) with two chunks in
   flight (the source allows several; cryptography releases the GIL while it verifies);
2. **end to end**: a paho publisher (its own process) queues single-reading SenML CBOR frames of 4
   devices in Mosquitto (loopback, no TLS, no persistence) for the gateway's persistent session while the
   gateway is stopped; then ``ds4h-gateway run`` (its own process) drains the backlog: decodes, commits
   (signed envelopes, synchronous=FULL) and acknowledges — with unsigned frames, and with every frame
   signed by its device and the devices registered with ``require_signature``; each with encryption at
   rest off and on (``[encryption]``, AES-256-GCM per envelope and per local-history value).

3. **verifying an export** (in process): ``verify_export`` on a file of envelopes of 100 one-reading batches,
   once with plain batches and once with every batch carrying its device's signed message (batch layout 3,
   which ``verify`` re-checks: device signature + re-decoding the SenML against the batch).

End-to-end rates are frames per second from the gateway's connection to its last commit
(``batches.committed_ns``): the gateway's own capacity, not the (slower) Python publisher's.

    python benchmarks/bench_mqtt_signed.py [--messages 40000] [--verify 20000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from benchmarks.common import GatewayProcess, log, machine  # noqa: E402
from drivers.senml.cose import COSE_CONTENT_TYPE, external_aad, parse_sign1  # noqa: E402
from firmware_sim.device_signing import DeviceSigner  # noqa: E402
from firmware_sim.senml import CBOR, Header, encode, frame_records  # noqa: E402
from gateway.mqtt.devsig import DeviceKeys, verify_all  # noqa: E402
from tests.services import Mosquitto  # noqa: E402

DEVICES = 4
CHUNK = 2000
T0 = 1_780_000_000.0
WINDOW = 10_000


class BenchBroker(Mosquitto):
    autosave_interval_s = 0


def device_ids() -> list[str]:
    return [f"sig-{i:02d}" for i in range(DEVICES)]


def frames(n: int, boot: str, signers: dict[str, DeviceSigner] | None) -> list[tuple[str, bytes]]:
    ids = device_ids()
    out = []
    for i in range(n):
        d, seq = ids[i % DEVICES], i // DEVICES
        pack = encode(
            frame_records(d, Header(boot, seq, seq), T0 + seq, [{"n": "heart-rate", "u": "1/s", "v": 1.2}]), CBOR
        )
        out.append((f"ds4h/v1/devices/{d}/readings", signers[d](pack) if signers else pack))
    return out


# --- 1. verification strategies ---------------------------------------------------------------------------
def verification(n: int) -> dict[str, Any]:
    key = Ed25519PrivateKey.generate()
    topic = "ds4h/v1/devices/sig-00/readings"
    signer = DeviceSigner(key, topic)
    msgs = [m for _, m in frames(n, "v", {d: signer for d in device_ids()})]
    keys = DeviceKeys()
    aad = external_aad(topic)
    t = time.perf_counter()
    jobs = [keys.job(parse_sign1(m, COSE_CONTENT_TYPE), signer.did, "sig-00", aad) for m in msgs]
    parse_s = time.perf_counter() - t
    pool = ThreadPoolExecutor(max_workers=2)

    async def inline() -> None:
        for i in range(0, n, CHUNK):
            assert all(verify_all(jobs[i : i + CHUNK]))

    async def per_message() -> None:
        loop = asyncio.get_running_loop()
        for j in jobs:
            assert (await loop.run_in_executor(pool, verify_all, [j]))[0]

    async def per_chunk(in_flight: int) -> None:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(in_flight)

        async def one(i: int) -> None:
            async with sem:
                assert all(await loop.run_in_executor(pool, verify_all, jobs[i : i + CHUNK]))

        await asyncio.gather(*(one(i) for i in range(0, n, CHUNK)))

    async def ticks(run: Any) -> tuple[float, int]:
        """Run ``run`` while counting 1 ms event-loop ticks (how responsive the loop stays meanwhile)."""
        done = False
        count = 0

        async def ticker() -> None:
            nonlocal count
            while not done:
                await asyncio.sleep(0.001)
                count += 1

        tk = asyncio.create_task(ticker())
        t0 = time.perf_counter()
        await run
        elapsed = time.perf_counter() - t0
        done = True
        await tk
        return elapsed, count

    out: dict[str, Any] = {"frames": n, "parse_and_key_per_s": round(n / parse_s)}
    for name, coro in (
        ("inline", lambda: inline()),
        ("per_message_await", lambda: per_message()),
        ("per_chunk", lambda: per_chunk(1)),
        ("per_chunk_2_in_flight", lambda: per_chunk(2)),
    ):
        elapsed, count = asyncio.run(ticks(coro()))
        out[name] = {"verified_per_s": round(n / elapsed), "loop_ticks_per_s": round(count / elapsed)}
        log(f"verify {name}: {out[name]}")
    pool.shutdown()
    return out


# --- 2. end to end ----------------------------------------------------------------------------------------
def publisher(port: int, path: Path) -> None:
    """Child process: publish every (topic, payload) of ``path`` at QoS 1, then print the seconds taken."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    todo, ctype = pickle.loads(path.read_bytes())
    room = threading.Semaphore(WINDOW)
    done = threading.Event()
    acked = 0

    def on_publish(*_: object) -> None:
        nonlocal acked
        acked += 1
        room.release()
        if acked == len(todo):
            done.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-signed-pub", protocol=paho.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = ctype
    t0 = time.perf_counter()
    for topic, payload in todo:
        room.acquire()
        c.publish(topic, payload, qos=1, properties=props)
    if not done.wait(600):
        raise SystemExit(f"publisher: {acked} of {len(todo)} acknowledged")
    print(json.dumps({"seconds": time.perf_counter() - t0}))
    c.disconnect()
    c.loop_stop()


def end_to_end(broker: Mosquitto, tmp: Path, n: int, signed: bool, tag: str, encrypted: bool = True) -> dict[str, Any]:
    from gateway.devices import DeviceRegistry
    from gateway.state.files import ensure_state_dir

    keys = {d: Ed25519PrivateKey.generate() for d in device_ids()}
    signers = {d: DeviceSigner(k, f"ds4h/v1/devices/{d}/readings") for d, k in keys.items()}
    todo = frames(n, tag, signers if signed else None)
    data = tmp / f"frames-{tag}.pickle"
    data.write_bytes(pickle.dumps((todo, COSE_CONTENT_TYPE if signed else "application/senml+cbor")))
    mqtt = {"enabled": True, "tls": False, "host": broker.host, "port": broker.port, "client_id": f"gw-{tag}"}
    encryption = {"insecure_key_on_disk": True} if encrypted else {"enabled": False}
    workdir = tmp / f"gw-{tag}"
    workdir.mkdir()
    reg = DeviceRegistry.open(ensure_state_dir(workdir / "state"))
    for d, s in signers.items():
        reg.add(d, "cardiac_monitor", public_key=s.did if signed else None, require_signature=signed)
    reg.close()
    extra = {"mqtt": mqtt, "encryption": encryption}
    with GatewayProcess(None, {}, extra=extra, workdir=workdir) as gw:  # creates its broker session
        _wait_connected(gw)
    pub = subprocess.run(  # the backlog waits in the broker: the gateway's drain rate is what is measured
        [sys.executable, __file__, "_publish", "--port", str(broker.port), "--file", str(data)],
        capture_output=True,
        text=True,
        check=True,
    )
    with GatewayProcess(None, {}, extra=extra, workdir=workdir) as gw:
        t0_ns = _wait_connected(gw)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if int(gw.stats()["counters"]["batches_committed"]) >= n:
                break
            time.sleep(0.1)
        gw.stop()
        conn = sqlite3.connect(gw.state_dir / "outbox.db")
        last, count = conn.execute("SELECT MAX(committed_ns), COUNT(*) FROM batches").fetchone()
        quarantined = conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
        conn.close()
    seconds = (last - t0_ns) / 1e9 if count else None
    return {
        "signed": signed,
        "encrypted": encrypted,
        "frames": n,
        "committed": count,
        "quarantined": quarantined,
        "frames_per_s": round(count / seconds) if seconds else None,
        "publisher_frames_per_s": round(n / json.loads(pub.stdout.strip().splitlines()[-1])["seconds"]),
        "payload_bytes": len(todo[0][1]),
    }


def _wait_connected(gw: GatewayProcess) -> int:
    """When the gateway connected to the broker (ns since the epoch)."""
    deadline = time.monotonic() + 60
    while True:
        mqtt = gw.stats().get("mqtt", {})
        if mqtt.get("connected"):
            return int(mqtt["connected_since_ns"])
        if time.monotonic() > deadline:
            raise RuntimeError("gateway did not connect")
        time.sleep(0.02)


# --- 3. verifying an export -------------------------------------------------------------------------------
def export_verification(n: int, tmp: Path) -> dict[str, Any]:
    from drivers.senml.codec import SENML_CBOR
    from drivers.senml.cose import tagged_sign1
    from drivers.senml.profile import decode_frame
    from gateway.batchcodec import encode_batch
    from gateway.model import Batch, SourceKey
    from gateway.provenance import GENESIS_PREV, GatewayIdentity, build_envelope, envelope_hash
    from gateway.provenance.export import write_export_file
    from gateway.provenance.keyhistory import KeyHistory, build_key_record
    from gateway.provenance.verify import verify_export

    gw = GatewayIdentity.generate()
    history = KeyHistory([build_key_record(gw, gw, 1, GENESIS_PREV, 1, 1)])
    signers = {d: DeviceSigner(Ed25519PrivateKey.generate(), f"ds4h/v1/devices/{d}/readings") for d in device_ids()}
    received = int((T0 + 10**6) * 1e9)
    out: dict[str, Any] = {"batches": n, "batches_per_envelope": 100}
    for carried in (False, True):
        batches = []
        for topic, msg in frames(n, "x", signers):
            device = topic.split("/")[3]
            frame = decode_frame(parse_sign1(msg).payload, SENML_CBOR, device, received)
            key = SourceKey(device, (frame.boot, frame.seq))
            evidence = tagged_sign1(msg) if carried else b""
            batches.append(
                encode_batch(Batch(key, received, frame.readings, kind="cardiac_monitor", evidence=evidence))
            )
        envelopes, prev = [], GENESIS_PREV
        for i in range(0, n, 100):
            env = build_envelope(gw, i // 100 + 1, prev, received, batches[i : i + 100])
            envelopes.append(env)
            prev = envelope_hash(env)
        path = tmp / f"export-{carried}.cborseq"
        write_export_file(path, gw, history, envelopes, since_ns=None, until_ns=None, created_ns=received)
        t = time.perf_counter()
        report = verify_export(path, gw.did)
        elapsed = time.perf_counter() - t
        assert report.ok and report.device_signed == (n if carried else 0), report.problems[:3]
        name = "device_signed" if carried else "plain"
        out[name] = {"batches_per_s": round(n / elapsed), "file_bytes": path.stat().st_size}
        log(f"verify export, {name}: {out[name]}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_publish"]:
        p = argparse.ArgumentParser()
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--file", type=Path, required=True)
        a = p.parse_args(argv[1:])
        publisher(a.port, a.file)
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=40_000, help="frames end to end, per run (default: 40000)")
    ap.add_argument("--verify", type=int, default=20_000, help="frames for the verification strategies")
    ap.add_argument("--quick", action="store_true", help="a tenth")
    args = ap.parse_args(argv)
    n, v = (args.messages // 10, args.verify // 10) if args.quick else (args.messages, args.verify)
    report: dict[str, Any] = {"machine": machine(), "verification": verification(v)}
    with tempfile.TemporaryDirectory(prefix="ds4h-bench-export-") as tmp:
        report["export_verification"] = export_verification(v, Path(tmp))
    with tempfile.TemporaryDirectory(prefix="ds4h-bench-signed-") as tmp, BenchBroker() as broker:
        for signed in (False, True):
            for encrypted in (False, True):
                name = f"{'signed' if signed else 'unsigned'}{'_encrypted' if encrypted else ''}"
                log(f"end to end, {name.replace('_', ', ')}: {n} frames")
                tag = f"{'s' if signed else 'u'}{'e' if encrypted else 'p'}"
                report[name] = end_to_end(broker, Path(tmp), n, signed, tag, encrypted)

    def ratio(a: str, b: str) -> float | None:
        x, y = report[a]["frames_per_s"], report[b]["frames_per_s"]
        return round(x / y, 3) if x and y else None

    report["signed_vs_unsigned"] = ratio("signed", "unsigned")
    report["encrypted_vs_plain"] = ratio("unsigned_encrypted", "unsigned")
    report["signed_encrypted_vs_unsigned_plain"] = ratio("signed_encrypted", "unsigned")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

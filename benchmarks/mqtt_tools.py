"""Helper processes for bench_mqtt.py: a fast QoS 1 publisher and a bare receive-only aiomqtt subscriber.

    python benchmarks/mqtt_tools.py publish --port P --messages N [--ecg-samples K] [--devices D]
    python benchmarks/mqtt_tools.py bare --port P --messages N --client-id ID [--session-only]

Each prints one JSON line. The payloads are SenML frames as a ds4h 5G device sends them (firmware_sim).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from firmware_sim.senml import JSON, Header, ecg_records, encode, frame_records  # noqa: E402

TOPIC_FILTER = "ds4h/v1/devices/+/readings"
WINDOW = 10_000
T0 = 1_780_000_000.0


def device_ids(n: int) -> list[str]:
    return [f"bench-{i:02d}" for i in range(n)]


def payloads(messages: int, devices: int, ecg_samples: int, boot: str) -> list[tuple[str, bytes]]:
    ids = device_ids(devices)
    wave = (np.sin(np.arange(ecg_samples) / 5) * 800).astype(np.int32) if ecg_samples else None
    step = max(1.0, ecg_samples / 250)
    out = []
    for i in range(messages):
        d = ids[i % devices]
        seq = i // devices
        m = ecg_records(wave, 250) if wave is not None else [{"n": "heart-rate", "u": "1/s", "v": 1.2}]
        pack = frame_records(d, Header(boot, seq, seq), T0 + seq * step, m)
        out.append((f"ds4h/v1/devices/{d}/readings", encode(pack)))
    return out


def write_lines(out_dir: Path, messages: int, devices: int, ecg_samples: int, boot: str) -> list[tuple[str, Path]]:
    """One file per device of JSON SenML frames, one per line: input for ``mosquitto_pub -l`` (a C publisher)."""
    ids = device_ids(devices)
    wave = (np.sin(np.arange(ecg_samples) / 5) * 800).astype(np.int32) if ecg_samples else None
    step = max(1.0, ecg_samples / 250)
    files: dict[str, list[bytes]] = {d: [] for d in ids}
    for i in range(messages):
        d = ids[i % devices]
        seq = i // devices
        m = ecg_records(wave, 250) if wave is not None else [{"n": "heart-rate", "u": "1/s", "v": 1.2}]
        files[d].append(encode(frame_records(d, Header(boot, seq, seq), T0 + seq * step, m), JSON))
    out = []
    for d, lines in files.items():
        path = out_dir / f"{d}-{boot}.senml.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        out.append((f"ds4h/v1/devices/{d}/readings", path))
    return out


def publish(port: int, messages: int, devices: int, ecg_samples: int, boot: str) -> dict[str, float]:
    todo = payloads(messages, devices, ecg_samples, boot)
    done = threading.Event()
    room = threading.Semaphore(WINDOW)
    acked = 0

    def on_publish(_c: paho.Client, _u: object, _mid: int, _rc: object, _p: object) -> None:
        nonlocal acked
        acked += 1
        room.release()
        if acked == messages:
            done.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{boot}", protocol=paho.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0 = time.perf_counter()
    for topic, payload in todo:
        room.acquire()  # paho's message ids are 16-bit: never more than WINDOW unacknowledged in its queue
        c.publish(topic, payload, qos=1)
    if not done.wait(600):
        raise SystemExit(f"publisher: only {acked} of {messages} acknowledged by the broker")
    elapsed = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return {"published": messages, "seconds": elapsed, "bytes": sum(len(p) for _, p in todo)}


async def bare(port: int, messages: int, client_id: str, session_only: bool, idle_s: float) -> dict[str, float]:
    """Receive-only, acks on receipt (aiomqtt's default), plain ``async for``: the client library's ceiling.

    Prints ``subscribed`` on its own line once subscribed (the live benchmark starts publishing then).
    Times are wall-clock (``time.time()``) so the benchmark can compare them with the publishers' start.
    """
    import aiomqtt

    n = 0
    first = last = 0.0
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=_session_props(),
    ) as c:
        connected = time.time()
        await c.subscribe(TOPIC_FILTER, qos=1)
        if session_only:
            return {"received": 0}
        print("subscribed", flush=True)

        async def count() -> None:
            nonlocal n, first, last
            async for _ in c.messages:
                n += 1
                if n == 1:
                    first = time.time()
                if n >= messages:
                    last = time.time()
                    return

        async def watchdog(task: asyncio.Task[None]) -> None:
            seen = -1
            while not task.done():
                await asyncio.sleep(idle_s)
                if n == seen and n > 0:
                    task.cancel()
                seen = n

        task = asyncio.create_task(count())
        dog = asyncio.create_task(watchdog(task))
        try:
            await asyncio.wait_for(task, timeout=600)
        except (TimeoutError, asyncio.CancelledError):
            last = last or time.time()
        dog.cancel()
    return {"received": n, "connected": connected, "first": first, "last": last}


def bare_paho(port: int, messages: int, client_id: str, idle_s: float) -> dict[str, float]:
    """Receive-only paho on its own network thread (``loop_start``), acks on receipt: paho's own ceiling."""
    n = 0
    first = last = 0.0
    done = threading.Event()

    def on_message(_c: paho.Client, _u: object, _m: paho.MQTTMessage) -> None:
        nonlocal n, first, last
        n += 1
        last = time.time()
        if n == 1:
            first = last
        if n >= messages:
            done.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    subscribed = threading.Event()
    c.on_subscribe = lambda *_: subscribed.set()
    c.subscribe(TOPIC_FILTER, qos=1)
    if not subscribed.wait(10):
        raise SystemExit("bare paho: no SUBACK")
    print("subscribed", flush=True)
    seen = -1
    while not done.wait(idle_s):
        if n == seen and n > 0:
            break
        seen = n
    c.disconnect()
    c.loop_stop()
    return {"received": n, "first": first, "last": last}


def _session_props() -> Properties:
    p = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    p.SessionExpiryInterval = 3600
    p.ReceiveMaximum = 2000
    return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("publish")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--messages", type=int, required=True)
    p.add_argument("--devices", type=int, default=10)
    p.add_argument("--ecg-samples", type=int, default=0)
    p.add_argument("--boot", default="b1")
    b = sub.add_parser("bare")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--messages", type=int, default=0)
    b.add_argument("--client-id", required=True)
    b.add_argument("--session-only", action="store_true")
    b.add_argument("--idle", type=float, default=10.0, help="stop after this many seconds without a message")
    b.add_argument("--uvloop", action="store_true")
    b.add_argument("--paho", action="store_true", help="paho on its own thread instead of aiomqtt")
    args = ap.parse_args()
    if args.cmd == "publish":
        out = publish(args.port, args.messages, args.devices, args.ecg_samples, args.boot)
    elif args.paho:
        out = bare_paho(args.port, args.messages, args.client_id, args.idle)
    else:
        coro = bare(args.port, args.messages, args.client_id, args.session_only, args.idle)
        if args.uvloop:
            import uvloop

            out = uvloop.run(coro)
        else:
            out = asyncio.run(coro)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

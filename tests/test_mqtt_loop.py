"""firmware_sim.mqtt_loop: many paho clients driven by one asyncio loop, against a real Mosquitto.

The simulated 5G devices of a fleet all run this way (no network thread per device): they must publish,
receive their ack topic, reconnect by themselves after the broker was killed and restarted, and stop
reconnecting once detached.
"""

from __future__ import annotations

import asyncio
import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from firmware_sim.mqtt_loop import LoopNetwork
from tests.gw import wait_until
from tests.services import Mosquitto

CLIENTS = 40


class _Probe:
    def __init__(self, i: int) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"loop-{i}", protocol=MQTTProtocolVersion.MQTTv5
        )
        self.topic = f"loop/{i}"
        self.received: list[bytes] = []
        self.connects = 0
        self.up = asyncio.Event()
        self.thread_ids: set[int] = set()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, *_: object) -> None:
        self.thread_ids.add(threading.get_ident())
        self.connects += 1
        client.subscribe(self.topic, qos=1)
        self.up.set()

    def _on_disconnect(self, *_: object) -> None:
        self.up.clear()

    def _on_message(self, _c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        self.thread_ids.add(threading.get_ident())
        self.received.append(m.payload)


async def test_clients_on_one_loop_publish_receive_reconnect_and_detach(mosquitto_private: Mosquitto) -> None:
    broker = mosquitto_private
    net = LoopNetwork(reconnect_min_s=0.1, reconnect_max_s=0.5)
    probes = [_Probe(i) for i in range(CLIENTS)]
    try:
        for p in probes:
            net.attach(p.client, broker.host, broker.port, keepalive=5)
        await wait_until(lambda: all(p.up.is_set() for p in probes), 20, "all connected")
        assert net.attached == CLIENTS
        await asyncio.sleep(0.3)  # SUBACKs
        for p in probes:  # each publishes to the next one's topic
            nxt = probes[(probes.index(p) + 1) % CLIENTS]
            p.client.publish(nxt.topic, f"hello {nxt.topic}".encode(), qos=1)
        await wait_until(lambda: all(p.received for p in probes), 20, "every client received")
        assert all(p.received == [f"hello {p.topic}".encode()] for p in probes)
        # every callback ran on the loop's thread: no network thread per client
        loop_thread = threading.get_ident()
        assert {t for p in probes for t in p.thread_ids} == {loop_thread}

        broker.kill()
        await wait_until(lambda: not any(p.up.is_set() for p in probes), 20, "all saw the broker go")
        broker.start()
        await wait_until(lambda: all(p.connects >= 2 and p.up.is_set() for p in probes), 30, "all reconnected")
        await asyncio.sleep(0.3)
        probes[0].client.publish(probes[1].topic, b"after restart", qos=1)
        await wait_until(lambda: b"after restart" in probes[1].received, 10, "delivery after restart")

        gone = probes[2]
        net.detach(gone.client)
        await asyncio.sleep(0.5)
        assert not gone.up.is_set() and gone.client.socket() is None
        assert net.attached == CLIENTS - 1
        net.reattach(gone.client)
        await wait_until(lambda: gone.up.is_set(), 10, "reattached")
    finally:
        await net.aclose()
    assert net.attached == 0
    assert all(p.client.socket() is None for p in probes)

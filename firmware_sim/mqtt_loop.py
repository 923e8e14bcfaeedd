"""Many paho clients on one asyncio loop, instead of one network thread per client.

paho's "external event loop" mode: the client's socket is watched by the loop (``add_reader`` calls
``loop_read``, ``add_writer`` — registered only while paho has bytes queued — calls ``loop_write``),
and one task calls every client's ``loop_misc`` once a second for keep-alives. The only blocking step
is the connect itself (TCP connect and TLS handshake inside ``reconnect()``): it runs on a small
thread pool, and paho's socket callbacks from that thread are handed to the loop with
``call_soon_threadsafe``. A lost connection is retried with exponential backoff and jitter, like
paho's own threaded loop.

A fleet of 1,000 simulated 5G devices then costs one thread and one loop: each device's callbacks
(acks from the gateway) and its publishes all run on the loop, so a device's lock is never contended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

log = logging.getLogger(__name__)

MISC_INTERVAL_S = 1.0
CONNECT_WORKERS = 4


@dataclass(slots=True)
class _Attached:
    client: paho.Client
    wanted: bool = True
    """False once detached: a closed socket is not reconnected."""
    fd: int | None = None
    connecting: bool = False
    attempt: int = 0


class LoopNetwork:
    """Drives paho clients on ``loop``; build it inside the running loop, :meth:`aclose` at the end."""

    def __init__(
        self,
        *,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 5.0,
        connect_workers: int = CONNECT_WORKERS,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._pool = ThreadPoolExecutor(connect_workers, thread_name_prefix="mqtt-connect")
        self._clients: dict[int, _Attached] = {}
        self._min, self._max = reconnect_min_s, reconnect_max_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._misc: asyncio.Task[None] | None = None
        self._rng = random.Random()

    # --- attach / detach -------------------------------------------------------------------------
    def attach(self, client: paho.Client, host: str, port: int, keepalive: int) -> None:
        """Connect ``client`` (its callbacks set) and keep it connected until :meth:`detach`."""
        if self._misc is None:
            self._misc = self._loop.create_task(self._misc_loop())
        a = _Attached(client)
        self._clients[id(client)] = a
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write
        client.connect_async(host, port, keepalive=keepalive)
        self._spawn(self._connect(a, delay=0.0))

    def detach(self, client: paho.Client) -> None:
        """Disconnect (a DISCONNECT packet is written if the link is up) and stop reconnecting."""
        a = self._clients.get(id(client))
        if a is None:
            return
        a.wanted = False
        client.disconnect()  # queues DISCONNECT; written by loop_write, then paho closes the socket
        if a.fd is not None:
            with contextlib.suppress(OSError):
                client.loop_write()
        self._clients.pop(id(client), None)
        self._forget(a)
        if client.socket() is not None:
            client._sock_close()  # paho has no public "close now" for external loops

    def reattach(self, client: paho.Client) -> None:
        """Connect again a client that was detached (same host, port and keep-alive)."""
        a = _Attached(client)
        self._clients[id(client)] = a
        self._spawn(self._connect(a, delay=0.0))

    async def aclose(self) -> None:
        for a in list(self._clients.values()):
            self.detach(a.client)
        tasks = [*self._tasks, *([self._misc] if self._misc is not None else [])]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._loop.run_in_executor(None, self._pool.shutdown)

    # --- connecting --------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        t: asyncio.Task[None] = self._loop.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _backoff(self, attempt: int) -> float:
        base: float = min(self._max, self._min * 2.0 ** max(0, attempt - 1))
        return base * (0.5 + self._rng.random() / 2)

    async def _connect(self, a: _Attached, delay: float) -> None:
        if a.connecting:
            return
        a.connecting = True
        try:
            if delay:
                await asyncio.sleep(delay)
            while a.wanted:
                try:
                    rc = await self._loop.run_in_executor(self._pool, a.client.reconnect)
                except (OSError, ssl.SSLError, ValueError) as exc:
                    rc = None
                    log.debug("connect failed: %s", exc)
                if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and a.client.socket() is not None:
                    a.attempt = 0
                    return
                a.attempt += 1
                await asyncio.sleep(self._backoff(a.attempt))
        finally:
            a.connecting = False

    # --- paho socket callbacks (any thread) --------------------------------------------------------
    def _socket_open(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._loop.call_soon_threadsafe(self._watch, client, sock)

    def _socket_close(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._loop.call_soon_threadsafe(self._unwatch, client, sock.fileno())

    def _register_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._loop.call_soon_threadsafe(self._want_write, client, sock, True)

    def _unregister_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._loop.call_soon_threadsafe(self._want_write, client, sock, False)

    # --- on the loop -------------------------------------------------------------------------------
    def _watch(self, client: paho.Client, sock: Any) -> None:
        a = self._clients.get(id(client))
        current = client.socket()
        if a is None or current is None or current is not sock:
            return  # detached meanwhile, or that socket is already gone
        a.fd = current.fileno()
        self._loop.add_reader(a.fd, self._readable, client)
        if client.want_write():
            self._loop.add_writer(a.fd, self._writable, client)

    def _unwatch(self, client: paho.Client, fd: int) -> None:
        a = self._clients.get(id(client))
        if a is None:
            return
        if a.fd == fd:
            self._forget(a)
        if a.wanted:
            self._spawn(self._connect(a, delay=self._backoff(a.attempt + 1)))

    def _forget(self, a: _Attached) -> None:
        if a.fd is not None:
            self._loop.remove_reader(a.fd)
            self._loop.remove_writer(a.fd)
            a.fd = None

    def _want_write(self, client: paho.Client, sock: Any, on: bool) -> None:
        a = self._clients.get(id(client))
        if a is None or a.fd is None or client.socket() is not sock:
            return
        if on:
            self._loop.add_writer(a.fd, self._writable, client)
        else:
            self._loop.remove_writer(a.fd)

    @staticmethod
    def _readable(client: paho.Client) -> None:
        rc = client.loop_read()
        # TLS: bytes already decrypted into the SSL object's buffer do not make the socket readable again
        sock = client.socket()
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and isinstance(sock, ssl.SSLSocket) and sock.pending():
            rc = client.loop_read()
            sock = client.socket()

    @staticmethod
    def _writable(client: paho.Client) -> None:
        client.loop_write()

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            for a in list(self._clients.values()):
                if a.fd is not None:
                    a.client.loop_misc()

    @property
    def attached(self) -> int:
        return len(self._clients)

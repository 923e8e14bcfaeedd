"""A virtual-radio hub: one bumble ``LocalLink`` shared by hosts in other processes, over HCI on TCP.

bumble dropped ``RemoteLink``; instead every TCP client of the hub gets its own virtual
controller on the hub's link and speaks HCI (H4 framing) to it over the socket, as with
bumble's ``tcp-server`` transport.  The gateway (central, ``tcp-client:127.0.0.1:PORT``) and
simulated peripherals (also ``tcp-client``) then share one radio.  When a client leaves, its
links are terminated (peers see a supervision timeout) and its controller leaves the link.

Run it: ``python -m firmware_sim.ble.hub --port 8710``, or in-process::

    async with BleHub(port=0) as hub:   # port 0: pick a free port, see hub.port / hub.spec
        ...

Binds 127.0.0.1 only.  Controllers get the same two fixes as the gateway's in-process one:
LE Create Connection Cancel really cancels, and LE ACL packets are 251 bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
from types import TracebackType
from typing import Self

from bumble import hci, ll
from bumble.controller import Controller
from bumble.link import LocalLink
from bumble.transport.common import StreamPacketSink, StreamPacketSource

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
LE_ACL_DATA_PACKET_LENGTH = 251


class HubController(Controller):
    """Virtual controller: cancellable LE connects (bumble 0.0.236 ignores the cancel), 251-byte ACL."""

    le_acl_data_packet_length = LE_ACL_DATA_PACKET_LENGTH
    supported_max_tx_octets = LE_ACL_DATA_PACKET_LENGTH
    supported_max_rx_octets = LE_ACL_DATA_PACKET_LENGTH
    suggested_max_tx_octets = LE_ACL_DATA_PACKET_LENGTH

    def on_hci_le_create_connection_cancel_command(
        self, _command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        event = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        # after the Command Complete that is queued when this handler returns
        asyncio.get_running_loop().call_soon(self.send_hci_packet, event)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def detach(self) -> None:
        """The host went away: stop advertising, drop every LE link, leave the radio."""
        self.le_legacy_advertiser.stop()
        for advertising_set in self.advertising_sets.values():
            advertising_set.stop()
        self.le_scan_enable = False
        self.pending_le_connection = None
        self.host = None
        for connection in list(self.le_connections.values()):
            with contextlib.suppress(Exception):  # the peer may have left in the same instant
                connection.send_ll_control_pdu(ll.TerminateInd(hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR))
        self.le_connections.clear()
        if self in self.link.controllers:
            self.link.remove_controller(self)


class _HciConnection(StreamPacketSource):
    """One TCP client: bytes in → HCI packets to its controller; controller packets → socket."""

    def __init__(self, hub: BleHub) -> None:
        super().__init__()
        self._hub = hub
        self._controller: HubController | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        name = f"hub-{next(self._hub.serial)}"
        self._controller = HubController(
            name, host_source=self, host_sink=StreamPacketSink(transport), link=self._hub.link
        )
        self._hub.clients.add(transport)
        log.debug("%s attached from %s", name, transport.get_extra_info("peername"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._controller is not None:
            log.debug("%s detached (%s)", self._controller.name, exc)
            self._controller.detach()
            self._controller = None
        self._hub.clients = {t for t in self._hub.clients if not t.is_closing()}
        self.on_transport_lost()


class BleHub:
    """Owns a ``LocalLink`` and serves one virtual controller per TCP connection on 127.0.0.1."""

    def __init__(self, port: int = 0) -> None:
        self.link = LocalLink()  # type: ignore[no-untyped-call]  # bumble leaves it unannotated
        self.serial = itertools.count(1)
        self.clients: set[asyncio.Transport] = set()
        self._requested_port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("hub not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def spec(self) -> str:
        """The bumble transport spec a host uses to attach: ``tcp-client:127.0.0.1:PORT``."""
        return f"tcp-client:{HOST}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _HciConnection(self), HOST, self._requested_port)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for transport in list(self.clients):
            transport.close()
        await self._server.wait_closed()
        self._server = None
        await asyncio.sleep(0)  # let connection_lost callbacks detach their controllers

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def serve_hub(host: str = HOST, port: int = 0) -> None:
    """Run a hub until cancelled; prints ``READY <port>`` once it accepts connections."""
    if host != HOST:
        raise ValueError(f"the hub binds {HOST} only")
    async with BleHub(port) as hub:
        print(f"READY {hub.port}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m firmware_sim.ble.hub", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_hub(HOST, args.port))


if __name__ == "__main__":
    main()

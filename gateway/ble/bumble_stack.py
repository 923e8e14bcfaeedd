"""bleak on Google's bumble stack (a virtual radio through a hub, or a USB dongle), with our pairing policy.

The radio is opened from a bumble transport spec. Pairing follows :class:`~gateway.ble.pairing.PairingPolicy`:

- a peripheral's Security Request starts pairing only while the operator's pairing window is open
  (otherwise it is refused and counted; a bonded peer is asked to encrypt with its stored key);
- a peer that answers without LE Secure Connections, or with keys shorter than ``min_key_size``, gets
  SMP "Pairing Failed" instead of a bond;
- a peripheral that tries to start pairing itself is refused.

Bonds are kept in ``<state_dir>/ble-bonds.json`` (mode 0600): they are keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from bumble import smp
from bumble.core import BaseBumbleError
from bumble.device import Connection, Device
from bumble.keys import JsonKeyStore
from bumble.pairing import PairingConfig

from gateway.ble.bumble.radio import BumbleRadio, RadioSettings
from gateway.ble.pairing import PairingPolicy

log = logging.getLogger(__name__)

BONDS_FILE = "ble-bonds.json"


class PrivateJsonKeyStore(JsonKeyStore):
    """bumble's JSON key store, but the file is written 0600 (bumble's temp file follows the umask)."""

    async def save(self, db: dict[str, dict[str, dict[str, Any]]]) -> None:
        temp = Path(self.filename).with_name(Path(self.filename).name + ".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(db, out, sort_keys=True, indent=4)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self.filename)


def policy_session(policy: PairingPolicy) -> type[smp.Session]:
    """An SMP session class that applies ``policy`` to the peer's pairing response."""

    class PolicySession(smp.Session):
        def on_smp_pairing_response_command(self, command: smp.SMP_Pairing_Response_Command) -> None:
            refusal = policy.decide(
                secure_connections=bool(command.auth_req & smp.AuthReq.SC),
                key_size=command.maximum_encryption_key_size,
            )
            if refusal == "refused_key_size":
                self.send_pairing_failed(smp.ErrorCode.ENCRYPTION_KEY_SIZE)
                return
            if refusal is not None:
                self.send_pairing_failed(smp.ErrorCode.AUTHENTICATION_REQUIREMENTS)
                return
            super().on_smp_pairing_response_command(command)

        def on_smp_pairing_request_command(self, command: smp.SMP_Pairing_Request_Command) -> None:
            policy.decide(secure_connections=False)  # counted; a peripheral does not start pairing
            self.send_pairing_failed(smp.ErrorCode.PAIRING_NOT_SUPPORTED)

    return PolicySession


class BumbleStack:
    def __init__(self, transport: str, pairing: PairingPolicy, state_dir: Path, *, active_scan: bool = False) -> None:
        self._transport = transport
        self._pairing = pairing
        self._state_dir = state_dir
        self._active_scan = active_scan
        self.radio: BumbleRadio | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        radio = await BumbleRadio.open(self._transport, settings=RadioSettings(active_scan=self._active_scan))
        device = radio.device
        bonds = self._state_dir / BONDS_FILE
        fd = os.open(bonds, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size == 0:
                os.write(fd, b"{}")  # bumble's key store cannot read an empty file
        finally:
            os.close(fd)
        os.chmod(bonds, 0o600)
        device.keystore = PrivateJsonKeyStore(namespace=None, filename=str(bonds))
        device.pairing_config_factory = lambda _connection: PairingConfig(sc=True, mitm=False, bonding=True)
        device.smp_manager.session_proxy = policy_session(self._pairing)
        device.on(Device.EVENT_CONNECTION, self._on_connection)
        self.radio = radio

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.radio is not None:
            await self.radio.aclose()
            self.radio = None

    def scanner_kwargs(self) -> dict[str, Any]:
        assert self.radio is not None, "open() first"
        return {"backend": self.radio.scanner_backend}

    def client_kwargs(self) -> dict[str, Any]:
        assert self.radio is not None, "open() first"
        return {"backend": self.radio.client_backend}

    # --- security requests ---------------------------------------------------------------------
    def _on_connection(self, connection: Connection) -> None:
        connection.on(Connection.EVENT_SECURITY_REQUEST, lambda _auth: self._security_request(connection))

    def _security_request(self, connection: Connection) -> None:
        task = asyncio.get_running_loop().create_task(self._secure(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _secure(self, connection: Connection) -> None:
        keystore = connection.device.keystore
        bonded = keystore is not None and await keystore.get(str(connection.peer_address)) is not None
        try:
            async with asyncio.timeout(30):
                if bonded:
                    await connection.encrypt()
                elif self._pairing.window_open():
                    await connection.pair()
                    log.info("BLE bonded with %s", connection.peer_address)
                else:
                    self._pairing.decide(secure_connections=True)  # counts and logs the refusal
        except (BaseBumbleError, TimeoutError) as e:
            log.warning("BLE security with %s failed: %s", connection.peer_address, e)

"""A bumble virtual controller with the two fixes the gateway needs.

* bumble 0.0.236's virtual controller acknowledges LE Create Connection Cancel but keeps the
  pending connection: the host then waits forever for the LE Connection Complete event, and
  every later connect is refused with Command Disallowed.  This controller drops the pending
  connection and reports it cancelled (status Unknown Connection Identifier, as the Core spec
  Vol 4 Part E 7.8.13 requires), so a connect with a timeout to an absent device fails cleanly.
* The default LE ACL data length is 27 bytes; real BLE 4.2+ links use 251.

``firmware_sim.ble.hub`` carries the same fix for the controllers it creates (``firmware_sim``
never imports ``gateway``); keep the two in step.
"""

from __future__ import annotations

import asyncio

from bumble import hci
from bumble.controller import Controller

LE_ACL_DATA_PACKET_LENGTH = 251


class GatewayController(Controller):
    """Virtual controller: cancellable LE connects, 251-byte LE ACL packets."""

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
        # The Command Complete for the cancel is queued when this handler returns; the
        # Connection Complete must follow it, hence one more loop turn.
        asyncio.get_running_loop().call_soon(self.send_hci_packet, event)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

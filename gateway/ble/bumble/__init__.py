"""A bleak backend on Google's bumble stack: virtual radio (``LocalLink``), hub over TCP, or USB dongle.

Import this package only when a configuration selects bumble (importing bumble costs ~0.3 s and
~20 MB).  See ``docs/ble-backend.md``.
"""

from gateway.ble.bumble.client import BleakClientBumble
from gateway.ble.bumble.radio import BumbleRadio, RadioSettings, random_static_address
from gateway.ble.bumble.scanner import BleakScannerBumble

__all__ = ["BleakClientBumble", "BleakScannerBumble", "BumbleRadio", "RadioSettings", "random_static_address"]

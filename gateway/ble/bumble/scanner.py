"""bleak ``BaseBleakScanner`` on bumble: advertising reports of a radio → bleak's helpers.

Use it through bleak: ``BleakScanner(backend=radio.scanner_backend)``, ``BleakScanner.discover(…)``,
``find_device_by_address(…)`` all work.  Scanning is passive unless the scanner asks for active
scanning (bleak's default mode) *and* the radio's settings allow it (``active_scan``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from bleak.backends.scanner import AdvertisementDataCallback, BaseBleakScanner
from bleak.exc import BleakError
from bumble.device import Advertisement

from gateway.ble.bumble.advertising import AdFields, parse_ad
from gateway.ble.bumble.radio import BumbleRadio


class BleakScannerBumble(BaseBleakScanner):
    """A bleak scanner backend listening to one bumble radio."""

    radio: ClassVar[BumbleRadio | None] = None  # bound by BumbleRadio.scanner_backend

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        *,
        radio: BumbleRadio | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        chosen = radio or type(self).radio
        if chosen is None:
            raise BleakError("no bumble radio: use backend=radio.scanner_backend or pass radio=")
        self._radio: BumbleRadio = chosen
        self._active = scanning_mode == "active" and chosen.settings.active_scan
        self._unregister: Any = None
        self._advertised: dict[str, AdFields] = {}
        self._scan_responses: dict[str, AdFields] = {}

    async def start(self) -> None:
        if self._unregister is not None:
            return
        self.seen_devices = {}
        self._advertised.clear()
        self._scan_responses.clear()
        self._unregister = self._radio.add_advertisement_listener(self._on_advertisement)
        try:
            await self._radio.start_scanning(active=self._active)
        except BaseException:
            self._unregister()
            self._unregister = None
            raise

    async def stop(self) -> None:
        if self._unregister is None:
            return
        self._unregister()
        self._unregister = None
        await self._radio.stop_scanning()

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        address = advertisement.address.to_string(False)
        fields = parse_ad(advertisement.data_bytes)
        if advertisement.is_scan_response:
            self._scan_responses[address] = fields
        else:
            self._advertised[address] = fields
        merged = self._advertised.get(address, AdFields()).merge(self._scan_responses.get(address, AdFields()))
        if not self.is_allowed_uuid(merged.service_uuids):
            return
        data = merged.to_bleak(advertisement.rssi, (advertisement,))
        device = self.create_or_update_device(address, address, merged.local_name, advertisement.address, data)
        self.call_detection_callbacks(device, data)

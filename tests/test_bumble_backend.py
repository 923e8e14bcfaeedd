"""The bumble bleak backend against real bumble peripherals on a virtual radio (no mocks)."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakError, BleakGATTProtocolError
from bumble.link import LocalLink

from firmware_sim.ble.hub import BleHub
from gateway.ble.bumble import BumbleRadio, RadioSettings
from gateway.ble.bumble.advertising import parse_ad
from tests.ble_radio import (
    APP_ERROR,
    BODY_SENSOR_LOCATION,
    ERROR_CHAR,
    HEART_RATE_MEASUREMENT,
    HEART_RATE_SERVICE,
    INDICATE_CHAR,
    MANUFACTURER_ID,
    SILENT_CHAR,
    TEST_SERVICE,
    WRITE_CHAR,
    TestPeripheral,
)

SETTINGS = RadioSettings(operation_timeout_s=1.0)


@pytest.fixture
async def link() -> LocalLink:
    return LocalLink()  # type: ignore[no-untyped-call]


@pytest.fixture
async def radio(link: LocalLink) -> AsyncIterator[BumbleRadio]:
    async with await BumbleRadio.on_link(link, settings=SETTINGS) as radio:
        yield radio


@pytest.fixture
async def peripheral(link: LocalLink) -> AsyncIterator[TestPeripheral]:
    async with await TestPeripheral.on_link(link, "HR-sim-1") as peripheral:
        yield await peripheral.start()


async def test_scan_reports_name_uuids_and_data(radio: BumbleRadio, peripheral: TestPeripheral) -> None:
    found = await BleakScanner.find_device_by_address(peripheral.address, timeout=5, backend=radio.scanner_backend)
    assert found is not None and found.name == "HR-sim-1"
    async with BleakScanner(service_uuids=[HEART_RATE_SERVICE], backend=radio.scanner_backend) as scanner:
        assert radio.device.scanning_is_passive  # bleak asks for "active"; the radio's default is passive
        async for device, data in scanner.advertisement_data():
            if device.address == peripheral.address:
                adv = data
                break
    assert adv.local_name == "HR-sim-1"
    assert adv.service_uuids == [HEART_RATE_SERVICE]
    assert adv.manufacturer_data == {MANUFACTURER_ID: b"sim"}
    assert adv.service_data == {HEART_RATE_SERVICE: b"\x2a"}
    assert isinstance(adv.rssi, int)


def test_advertising_data_is_deduplicated_and_merged() -> None:
    name = bytes([9, 0x09]) + b"HR-sim-1"
    uuids = bytes([3, 0x03, 0x0D, 0x18])
    maker = bytes([5, 0xFF, 0x0F, 0x0F]) + b"ab"
    fields = parse_ad(name + uuids + maker + uuids + name + bytes([3, 0x03]))  # repeated + truncated AD
    assert fields.local_name == "HR-sim-1"
    assert fields.service_uuids == [HEART_RATE_SERVICE]
    assert fields.manufacturer_data == {MANUFACTURER_ID: b"ab"}
    response = parse_ad(bytes([2, 0x0A, 0xF6]) + bytes([3, 0x03, 0x0F, 0x18]))
    merged = parse_ad(uuids).merge(response)
    assert merged.service_uuids == [HEART_RATE_SERVICE, "0000180f-0000-1000-8000-00805f9b34fb"]
    assert merged.tx_power == -10


async def test_connect_discover_read_write(radio: BumbleRadio, peripheral: TestPeripheral) -> None:
    async with BleakClient(peripheral.address, backend=radio.client_backend, timeout=5) as client:
        assert client.is_connected
        assert client.mtu_size == 517
        assert {HEART_RATE_SERVICE, TEST_SERVICE} <= {s.uuid for s in client.services}
        hr = client.services.get_characteristic(HEART_RATE_MEASUREMENT)
        assert hr is not None and "notify" in hr.properties
        assert any(d.uuid == "00002902-0000-1000-8000-00805f9b34fb" for d in hr.descriptors)
        assert await client.read_gatt_char(BODY_SENSOR_LOCATION) == bytearray(b"\x01")
        await client.write_gatt_char(WRITE_CHAR, b"with-response", response=True)
        assert await asyncio.wait_for(peripheral.writes.get(), 2) == b"with-response"
        await client.write_gatt_char(WRITE_CHAR, b"without", response=False)
        assert await asyncio.wait_for(peripheral.writes.get(), 2) == b"without"
        assert await client.read_gatt_char(WRITE_CHAR) == bytearray(b"without")
        big = bytes(range(256)) * 2  # > MTU: write long (prepare/execute)
        await client.write_gatt_char(WRITE_CHAR, big, response=True)
        assert await client.read_gatt_char(WRITE_CHAR) == bytearray(big)
    assert not client.is_connected


async def test_notifications_and_indications(radio: BumbleRadio, peripheral: TestPeripheral) -> None:
    received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    def on_value(char: BleakGATTCharacteristic, data: bytearray) -> None:
        received.put_nowait((char.uuid, bytes(data)))

    async with BleakClient(peripheral.address, backend=radio.client_backend, timeout=5) as client:
        await client.start_notify(HEART_RATE_MEASUREMENT, on_value)
        await client.start_notify(INDICATE_CHAR, on_value)
        await peripheral.notify(b"\x00\x4b")
        await peripheral.indicate(b"alert")
        got = {await asyncio.wait_for(received.get(), 2), await asyncio.wait_for(received.get(), 2)}
        assert got == {(HEART_RATE_MEASUREMENT, b"\x00\x4b"), (INDICATE_CHAR, b"alert")}
        await client.stop_notify(HEART_RATE_MEASUREMENT)
        await peripheral.notify(b"\x00\x4c")  # no longer subscribed: not delivered
        await peripheral.indicate(b"again")
        assert await asyncio.wait_for(received.get(), 2) == (INDICATE_CHAR, b"again")
        assert received.empty()


async def test_att_error_and_missing_response(radio: BumbleRadio, peripheral: TestPeripheral) -> None:
    async with BleakClient(peripheral.address, backend=radio.client_backend, timeout=5) as client:
        with pytest.raises(BleakGATTProtocolError) as refused:
            await client.read_gatt_char(ERROR_CHAR)
        assert refused.value.code == APP_ERROR
        with pytest.raises(TimeoutError):  # the server sends nothing: bounded by operation_timeout_s
            await client.read_gatt_char(SILENT_CHAR)
        assert await client.read_gatt_char(BODY_SENSOR_LOCATION) == bytearray(b"\x01")
        with pytest.raises(ValueError):  # bleak itself refuses direct CCCD writes
            cccd = client.services.get_characteristic(HEART_RATE_MEASUREMENT)
            assert cccd is not None
            await client.write_gatt_descriptor(cccd.descriptors[0].handle, b"\x01\x00")
    with pytest.raises(BleakError):
        await client.read_gatt_char(BODY_SENSOR_LOCATION)


async def test_peripheral_disconnect_then_reconnect(radio: BumbleRadio, peripheral: TestPeripheral) -> None:
    lost = asyncio.Event()
    client = BleakClient(peripheral.address, lambda _c: lost.set(), backend=radio.client_backend, timeout=5)
    for _ in range(3):
        await client.connect()
        assert await client.read_gatt_char(BODY_SENSOR_LOCATION) == bytearray(b"\x01")
        await peripheral.disconnect_all()
        await asyncio.wait_for(lost.wait(), 2)
        assert not client.is_connected
        lost.clear()
    await client.connect()  # a requested disconnect does not call the callback
    await client.disconnect()
    assert not lost.is_set()


async def test_absent_device_times_out_then_connect_works(radio: BumbleRadio, peripheral: TestPeripheral) -> None:
    absent = BleakClient("C1:22:33:44:55:66", backend=radio.client_backend, timeout=0.3)
    with pytest.raises(TimeoutError):
        await absent.connect()
    assert not absent.is_connected
    task = asyncio.create_task(absent.connect())  # a cancelled connect also frees the controller
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with BleakClient(peripheral.address, backend=radio.client_backend, timeout=5) as client:
        assert await client.read_gatt_char(BODY_SENSOR_LOCATION) == bytearray(b"\x01")


async def test_many_peripherals_concurrently(link: LocalLink, radio: BumbleRadio) -> None:
    count = 12
    peripherals = [await (await TestPeripheral.on_link(link, f"HR-{i}")).start(100) for i in range(count)]
    received: asyncio.Queue[str] = asyncio.Queue()
    clients = [BleakClient(p.address, backend=radio.client_backend, timeout=5) for p in peripherals]

    def on_value(address: str, _char: BleakGATTCharacteristic, _data: bytearray) -> None:
        received.put_nowait(address)

    try:
        await asyncio.gather(*(c.connect() for c in clients))
        for c in clients:
            await c.start_notify(HEART_RATE_MEASUREMENT, functools.partial(on_value, c.address))
        await asyncio.gather(*(p.notify(b"\x00\x50") for p in peripherals))
        got = {await asyncio.wait_for(received.get(), 2) for _ in range(count)}
        assert got == {p.address for p in peripherals}
        assert all(c.is_connected for c in clients)
    finally:
        await asyncio.gather(*(c.disconnect() for c in clients))
        for p in peripherals:
            await p.aclose()


async def test_pair_and_unpair(radio: BumbleRadio, peripheral: TestPeripheral) -> None:
    async with BleakClient(peripheral.address, backend=radio.client_backend, timeout=5) as client:
        await client.pair()
        assert radio.device.keystore is not None
        assert await radio.device.keystore.get_all()
        await client.unpair()
        assert not client.is_connected
        assert not await radio.device.keystore.get_all()


# hub: central and peripherals attach over HCI on TCP ---------------------------------------------


@pytest.fixture
async def hub() -> AsyncIterator[BleHub]:
    async with BleHub(port=0) as hub:
        yield hub


async def _exercise(radio: BumbleRadio, peripheral: TestPeripheral) -> None:
    """Scan, absent-device timeout, connect, read, notify: the path a manager takes."""
    found = await BleakScanner.find_device_by_name(peripheral.name, timeout=5, backend=radio.scanner_backend)
    assert found is not None and found.address == peripheral.address
    with pytest.raises(TimeoutError):
        await BleakClient("C1:22:33:44:55:66", backend=radio.client_backend, timeout=0.3).connect()
    received: asyncio.Queue[bytes] = asyncio.Queue()
    lost = asyncio.Event()
    async with BleakClient(found, lambda _c: lost.set(), backend=radio.client_backend, timeout=5) as client:
        assert await client.read_gatt_char(BODY_SENSOR_LOCATION) == bytearray(b"\x01")
        await client.start_notify(HEART_RATE_MEASUREMENT, lambda _c, d: received.put_nowait(bytes(d)))
        await peripheral.notify(b"\x00\x55")
        assert await asyncio.wait_for(received.get(), 2) == b"\x00\x55"
    assert not lost.is_set()


async def test_hub_in_process(hub: BleHub) -> None:
    async with (
        await TestPeripheral.open(hub.spec, "HR-hub") as peripheral,
        await BumbleRadio.open(hub.spec, settings=SETTINGS) as radio,
    ):
        await peripheral.start()
        await _exercise(radio, peripheral)


async def test_hub_peripheral_leaving_disconnects_central(hub: BleHub) -> None:
    async with await BumbleRadio.open(hub.spec, settings=SETTINGS) as radio:
        peripheral = await (await TestPeripheral.open(hub.spec, "HR-leaves")).start()
        lost = asyncio.Event()
        client = BleakClient(peripheral.address, lambda _c: lost.set(), backend=radio.client_backend, timeout=5)
        await client.connect()
        peripheral.drop_hci()  # as if its process died: no HCI Disconnect, the socket just closes
        await asyncio.wait_for(lost.wait(), 2)
        assert not client.is_connected
        await peripheral.aclose()
        async with await TestPeripheral.open(hub.spec, "HR-back") as again:  # a newcomer is reachable
            await again.start()
            async with BleakClient(again.address, backend=radio.client_backend, timeout=5) as c2:
                assert c2.is_connected


@pytest.fixture
def hub_process() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim.ble.hub", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "READY <port>" once listening
        assert line.startswith("READY "), line
        yield f"tcp-client:127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_hub_subprocess(hub_process: str) -> None:
    async with (
        await TestPeripheral.open(hub_process, "HR-remote") as peripheral,
        await BumbleRadio.open(hub_process, settings=SETTINGS) as radio,
    ):
        await peripheral.start()
        await _exercise(radio, peripheral)


async def test_discovery_limited_to_requested_services(radio: BumbleRadio, peripheral: TestPeripheral) -> None:
    client = BleakClient(peripheral.address, services=["180d"], backend=radio.client_backend, timeout=5)
    async with client:
        assert [s.uuid for s in client.services] == [HEART_RATE_SERVICE]

"""Bonding policy over the virtual radio: pairing only inside the operator's window, LE Secure
Connections only. The peripherals ask for security themselves (an SMP Security Request on connect)."""

from __future__ import annotations

import json
from pathlib import Path

from bumble.device import Connection
from bumble.pairing import PairingConfig, PairingDelegate

from firmware_sim.ble.devices.heart_rate import HeartRateStrap
from firmware_sim.ble.identity import DeviceIdentity, Profile
from tests.blegw import ble_gateway, device_id, ident, until


class SecureStrap(HeartRateStrap):
    """A strap that requests pairing on every connection; ``legacy`` peers cannot do Secure Connections."""

    def __init__(self, identity: DeviceIdentity, *, legacy: bool = False, key_size: int = 16) -> None:
        super().__init__(identity, interval_s=0.2)
        self.legacy = legacy
        self.key_size = key_size
        self.bonded: list[bool] = []

    def on_connection(self, connection: Connection) -> None:
        delegate = PairingDelegate(maximum_encryption_key_size=self.key_size)
        self.device.pairing_config_factory = lambda _c: PairingConfig(
            sc=not self.legacy, mitm=False, bonding=True, delegate=delegate
        )
        connection.on(connection.EVENT_PAIRING, lambda _keys: self.bonded.append(True))
        connection.request_pairing()


def outcomes(gw: object) -> dict[str, float]:
    registry = gw.metrics.registry  # type: ignore[attr-defined]
    return {
        o: registry.get_sample_value("ds4h_ble_pairing_total", {"outcome": o}) or 0.0
        for o in ("accepted", "refused_window", "refused_legacy", "refused_key_size")
    }


def bonds(state_dir: Path) -> dict[str, object]:
    path = state_dir / "ble-bonds.json"
    text = path.read_text() if path.exists() else ""
    data: dict[str, object] = json.loads(text) if text.strip() else {}
    return data


async def test_pairing_refused_outside_the_window_then_accepted_inside(tmp_path: Path) -> None:
    strap = SecureStrap(ident(Profile.HEART_RATE, 300))
    async with ble_gateway(tmp_path, [strap], reconnect_initial_s=0.2) as (gw, _sim):
        await until(lambda: outcomes(gw)["refused_window"] >= 1, what="a refusal outside the window")
        assert strap.bonded == []
        assert outcomes(gw)["accepted"] == 0
        assert (tmp_path / "ble-bonds.json").stat().st_mode & 0o777 == 0o600
        gw.ble.pairing.open_window(30)  # what `ds4h-gateway ble pair` does through the control API
        await strap.disconnect_all()  # the next connection asks again
        await until(lambda: bool(strap.bonded), what="a bond inside the window")
        assert outcomes(gw)["accepted"] >= 1
        await until(lambda: bool(bonds(tmp_path)), what="the bond stored")
        assert (tmp_path / "ble-bonds.json").stat().st_mode & 0o777 == 0o600  # keys

        def session_up() -> bool:  # a bonded connection got as far as its session (a reconnect may race first)
            s = gw.stats()["ble"]["devices"][device_id(strap.identity)]
            return bool(s["connected"]) and s["last_error"] is None

        await until(session_up, what="a session on the bonded link")


async def test_legacy_pairing_peer_is_refused_even_inside_the_window(tmp_path: Path) -> None:
    strap = SecureStrap(ident(Profile.HEART_RATE, 301), legacy=True)
    async with ble_gateway(tmp_path, [strap]) as (gw, _sim):
        gw.ble.pairing.open_window(30)
        await until(lambda: outcomes(gw)["refused_legacy"] >= 1, what="legacy pairing refused")
        assert strap.bonded == []
        assert outcomes(gw)["accepted"] == 0
    assert not bonds(tmp_path)


async def test_a_peer_offering_short_keys_is_refused(tmp_path: Path) -> None:
    strap = SecureStrap(ident(Profile.HEART_RATE, 302), key_size=7)
    async with ble_gateway(tmp_path, [strap]) as (gw, _sim):
        gw.ble.pairing.open_window(30)
        await until(lambda: outcomes(gw)["refused_key_size"] >= 1, what="a 7-byte key refused")
        assert strap.bonded == []
        assert outcomes(gw)["accepted"] == 0
    assert not bonds(tmp_path)

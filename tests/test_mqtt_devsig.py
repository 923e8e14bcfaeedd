"""Device-signed MQTT frames and revocation, end to end: real Mosquitto, mutual TLS, the site ACL and CRL,
the gateway in-process.

- a flood of > 10,000 messages mixing valid signed frames with tampered, replayed, stale, wrong-key,
  cross-device and unsigned-from-a-require-signature-device ones: none of the bad is stored, each is
  counted under its reason (metrics and the quarantine table), every valid frame is committed;
- ``pki revoke``: the device's frames are quarantined at once (``revoked``), a connected device is
  disconnected at its next publish after the broker's reload, and it cannot connect again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_sim.device_signing import COSE_CONTENT_TYPE, DeviceSigner
from firmware_sim.senml import CBOR, encode
from gateway.cli import main
from gateway.cli_pki import enroll_device
from gateway.devices import DeviceRegistry
from gateway.errors import RegistryError
from gateway.pipeline import Gateway
from gateway.pki.ca import SitePki, load_certificate
from gateway.pki.mosquitto import update_brokers
from gateway.provenance.verify import verify_export
from tests.gw import make_config, running, wait_until
from tests.mqtt_site import NO_MATCHING_SUBSCRIBERS, NOT_AUTHORIZED, MqttClient, MqttSite, tls_context
from tests.mqttgw import committed_keys, hr_frame, mqtt_count, props, quarantine_counts

SIGNED_CT = COSE_CONTENT_TYPE


def _topic(device: str) -> str:
    return f"ds4h/v1/devices/{device}/readings"


def _signer(site: MqttSite, device: str, topic_of: str | None = None) -> DeviceSigner:
    return DeviceSigner.load(site.pki.signing_key_file(device), _topic(topic_of or device))


def _frame(device: str, boot: str, seq: int, unacked: int | None = None) -> bytes:
    return encode(hr_frame(device, boot, seq, unacked=unacked), CBOR)


def _flip(msg: bytes, where: int) -> bytes:
    b = bytearray(msg)
    b[where] ^= 0x10
    return bytes(b)


class Publisher:
    """A device's paho client over mutual TLS that publishes many QoS 1 messages without waiting for each."""

    def __init__(self, site: MqttSite, device: str, *, v5: bool = True) -> None:
        cert, key = site.pki.device_files(device)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        )
        self.client.tls_set_context(tls_context(site.ca_cert, cert, key))
        self.client.max_inflight_messages_set(500)
        self.client.max_queued_messages_set(0)
        self.topic = _topic(device)
        self.v5 = v5
        self.client.connect(site.broker.host, site.broker.port)
        self.client.loop_start()

    def publish_all(self, messages: list[tuple[bytes, str | None]], timeout: float = 120.0) -> None:
        infos = [
            self.client.publish(self.topic, p, qos=1, properties=props(ct) if self.v5 else None) for p, ct in messages
        ]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            assert info.is_published(), f"{self.topic}: not acknowledged by the broker in {timeout}s"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _config(site: MqttSite, **mqtt_opts: Any) -> Any:
    return make_config(
        site.state_dir,
        devices={"sig-c": {"kind": "cardiac_monitor", "mqtt_cn": "sig-c", "require_signature": True}},
        mqtt={
            "enabled": True,
            "host": site.broker.host,
            "port": site.broker.port,
            "ack_interval_ms": 20,
            **mqtt_opts,
        },
    )


async def _connected(gw: Gateway) -> None:
    assert gw.mqtt is not None
    await asyncio.wait_for(gw.mqtt.connected.wait(), 20)


def _rejected(gw: Gateway, reason: str) -> int:
    return int(gw.metrics.registry.get_sample_value("ds4h_rejected_total", {"reason": reason}) or 0)


@pytest.fixture
def signing_site(mqtt_site: MqttSite) -> MqttSite:
    enroll_device(mqtt_site.state_dir, "sig-a", "cardiac_monitor", signing_key=True, require_signature=True)
    enroll_device(mqtt_site.state_dir, "sig-b", "cardiac_monitor", signing_key=True)
    enroll_device(mqtt_site.state_dir, "sig-c", "cardiac_monitor")  # the config requires its signatures
    return mqtt_site


def _flood_a(site: MqttSite, expect: Counter[str], valid: set[str]) -> list[tuple[bytes, str | None]]:
    """sig-a (MQTT v5, signatures required): boot a1 with unacked = seq - 5, boot w1 claiming to hold all."""
    sign = _signer(site, "sig-a")
    did = sign.did
    out: list[tuple[bytes, str | None]] = []
    frames: dict[tuple[str, int], bytes] = {}

    def send(msg: bytes, reason: str, ct: str | None = SIGNED_CT) -> None:
        out.append((msg, ct))
        expect[reason] += 1

    strangers = [Ed25519PrivateKey.generate() for _ in range(4)]
    for seq in range(4000):
        frames["a1", seq] = m = sign(_frame("sig-a", "a1", seq, max(0, seq - 5)))
        send(m, "committed")
        valid.add(f"sig-a/a1/{seq}")
        if seq >= 50 and seq % 4 == 0:
            send(frames["a1", seq - 40], "replay")  # below the signed floor (seq - 5)
        if seq % 13 == 0 and seq >= 2:
            send(frames["a1", seq - 2], "duplicate")  # a re-send at/above the floor: answered as before
        if seq % 10 == 1:
            send(_flip(m, len(m) - 70), "signature_invalid")  # a bit of the payload
        if seq % 10 == 2:
            send(_flip(m, len(m) - 1), "signature_invalid")  # a bit of the signature
        if seq % 10 == 3:
            k = strangers[seq % 4]
            send(DeviceSigner(k, _topic("sig-a"))(_frame("sig-a", "a1", seq)), "signature_unknown_key")
        if seq % 20 == 4:  # another key claiming the device's kid
            forged = DeviceSigner(strangers[0], _topic("sig-a"))
            forged._kid = did.encode()
            send(forged(_frame("sig-a", "a1", seq)), "signature_invalid")
        if seq % 10 == 5:
            send(_frame("sig-a", "a1", seq), "signature_missing", "application/senml+cbor")
    for seq in range(600):  # w1: 'unacked' 0 — the window (200) bounds how far back a frame may be
        frames["w1", seq] = m = sign(_frame("sig-a", "w1", seq, 0))
        send(m, "committed")
        valid.add(f"sig-a/w1/{seq}")
        if seq >= 300:
            send(frames["w1", seq - 250], "stale")
    return out


def _flood_b(site: MqttSite, expect: Counter[str], valid: set[str]) -> list[tuple[bytes, str | None]]:
    """sig-b (MQTT 3.1.1: no content type, recognised by tag 18): retired boots, cross-device frames."""
    sign = _signer(site, "sig-b")
    a_sign = _signer(site, "sig-a")
    b_for_a_topic = _signer(site, "sig-b", topic_of="sig-a")
    out: list[tuple[bytes, str | None]] = []

    def send(msg: bytes, reason: str) -> None:
        out.append((msg, None))
        expect[reason] += 1

    for r in range(20):
        send(sign(_frame("sig-b", f"r{r}", 0)), "committed")
        valid.add(f"sig-b/r{r}/0")
    for r in range(3):  # the oldest boots were pushed out of the last 16 boots: retired
        send(sign(_frame("sig-b", f"r{r}", 1)), "stale")
    for seq in range(2000):
        send(sign(_frame("sig-b", "b1", seq, max(0, seq - 3))), "committed")
        valid.add(f"sig-b/b1/{seq}")
        if seq % 7 == 0:  # signed by sig-a (a copy of its frame): not sig-b's key
            send(a_sign(_frame("sig-a", "a1", seq)), "signature_unknown_key")
        if seq % 7 == 1:  # sig-b's own key, but signed for sig-a's topic
            send(b_for_a_topic(_frame("sig-b", "b1", seq)), "signature_invalid")
    return out


async def test_a_flood_of_signed_and_bad_frames(signing_site: MqttSite) -> None:
    site = signing_site
    expect: Counter[str] = Counter()
    valid: set[str] = set()
    flood_a = _flood_a(site, expect, valid)
    flood_b = _flood_b(site, expect, valid)
    flood_c = [(_frame("sig-c", "c1", s), "application/senml+cbor") for s in range(200)]
    expect["signature_missing"] += len(flood_c)
    total = len(flood_a) + len(flood_b) + len(flood_c)
    assert total >= 10_000
    async with running(_config(site, replay_window=200)) as gw:
        await _connected(gw)
        pubs = [Publisher(site, "sig-a"), Publisher(site, "sig-b", v5=False), Publisher(site, "sig-c")]
        try:
            await asyncio.gather(
                *(asyncio.to_thread(p.publish_all, f) for p, f in zip(pubs, (flood_a, flood_b, flood_c), strict=True))
            )
            await wait_until(
                lambda: sum(mqtt_count(gw, o) for o in ("committed", "duplicate", "quarantined")) >= total,
                timeout=120,
                what="every message handled",
            )
        finally:
            for p in pubs:
                p.close()
        reasons = [r for r in expect if r not in ("committed", "duplicate")]
        assert {r: _rejected(gw, r) for r in reasons} == {r: expect[r] for r in reasons}
        assert mqtt_count(gw, "committed") == expect["committed"] == len(valid)
        assert mqtt_count(gw, "duplicate") == expect["duplicate"]
        signatures = gw.metrics.registry.get_sample_value("ds4h_mqtt_signatures_total", {"outcome": "valid"})
        assert signatures is not None and signatures >= len(valid)
    assert set(committed_keys(site.state_dir)) == valid  # nothing bad stored, nothing valid lost
    q = quarantine_counts(site.state_dir)
    assert {r: q.get(r, 0) for r in reasons} == {r: expect[r] for r in reasons}


async def test_signed_frames_from_the_simulated_device(signing_site: MqttSite) -> None:
    """``ds4h-sim mqtt`` signs when the device's signing key exists; its frames commit and get acked."""
    from firmware_sim.mqtt_fleet import FleetOptions, MqttFleet

    site = signing_site
    async with running(_config(site)) as gw:
        await _connected(gw)
        opts = FleetOptions(site.broker.host, site.broker.port, site.state_dir / "pki", ["sig-a", "sig-b"])
        fleet = MqttFleet(opts)
        assert all(d._signer is not None for d in fleet.devices)
        try:
            await asyncio.to_thread(fleet.start)
            stop = threading.Event()
            await asyncio.to_thread(fleet.run_flood, 100, 0, stop)
            assert await asyncio.to_thread(fleet.settle, 30.0)
        finally:
            await asyncio.to_thread(fleet.close)
        assert mqtt_count(gw, "committed") == 200 and mqtt_count(gw, "quarantined") == 0
        did = gw.identity.did
    # the signed messages travel inside the gateway's envelopes: an export shows every batch matches them
    out = site.state_dir.parent / "signed.cborseq"
    assert main(["outbox", "export", "--state-dir", str(site.state_dir), "--since", "1h", "--out", str(out)]) == 0
    report = verify_export(out, did)
    assert report.ok, report.problems
    assert report.batches == report.device_signed == 200
    reg = DeviceRegistry.open(site.state_dir)
    try:
        assert report.device_keys == {d: {reg.get(d).public_key} for d in ("sig-a", "sig-b")}  # type: ignore[union-attr]
        assert report.batches_by_device == {"sig-a": [100, 0], "sig-b": [100, 0]}
    finally:
        reg.close()


async def test_replay_protection_survives_a_gateway_restart(signing_site: MqttSite) -> None:
    """The replay state is kept in the registry: after a restart a copy below the floor is still a replay,
    a frame of a retired boot still stale, while a re-send at the floor is a duplicate as before."""
    site = signing_site
    sign = _signer(site, "sig-a")
    first = [(sign(_frame("sig-a", f"r{r}", 0, 0)), SIGNED_CT) for r in range(17)]  # 17 boots: r0 retired
    first += [(sign(_frame("sig-a", "a1", s, s)), SIGNED_CT) for s in range(10)]
    async with running(_config(site)) as gw:
        await _connected(gw)
        pub = Publisher(site, "sig-a")
        try:
            await asyncio.to_thread(pub.publish_all, first)
            await wait_until(lambda: mqtt_count(gw, "committed") == 27)
        finally:
            pub.close()
    after = [
        (sign(_frame("sig-a", "a1", 3, 3)), SIGNED_CT),  # below the floor 9
        (sign(_frame("sig-a", "a1", 9, 9)), SIGNED_CT),  # at the floor: a duplicate
        (sign(_frame("sig-a", "r0", 1, 0)), SIGNED_CT),  # retired (beyond the last 16 boots)
        (sign(_frame("sig-a", "r16", 1, 0)), SIGNED_CT),  # new
    ]
    async with running(_config(site)) as gw:
        await _connected(gw)
        pub = Publisher(site, "sig-a")
        try:
            await asyncio.to_thread(pub.publish_all, after)
            await wait_until(lambda: sum(mqtt_count(gw, o) for o in ("committed", "duplicate", "quarantined")) == 4)
        finally:
            pub.close()
        assert (_rejected(gw, "replay"), _rejected(gw, "stale")) == (1, 1)
        assert (mqtt_count(gw, "duplicate"), mqtt_count(gw, "committed")) == (1, 1)


# --- revocation -------------------------------------------------------------------------------------------
def _connect(site: MqttSite, device: str) -> MqttClient:
    cert, key = site.pki.device_files(device)
    c = MqttClient(site, device, cert, key)
    assert c.connect() == 0
    return c


def _refused(site: MqttSite, device: str) -> bool:
    cert, key = site.pki.device_files(device)
    c = MqttClient(site, device, cert, key)
    try:
        c.connect(timeout=5)
    except (ConnectionError, OSError):
        return True
    finally:
        c.close()
    return False


@pytest.fixture
def revocation_site(mqtt_site: MqttSite) -> Iterator[MqttSite]:
    enroll_device(mqtt_site.state_dir, "rev-1", "cardiac_monitor", signing_key=True)
    enroll_device(mqtt_site.state_dir, "ok-1", "cardiac_monitor")
    # the broker was configured before these devices existed: its directory is known to `pki revoke`
    yield mqtt_site


async def test_revoke_quarantines_disconnects_and_refuses(
    revocation_site: MqttSite, capsys: pytest.CaptureFixture[str]
) -> None:
    site = revocation_site
    sd = ["--state-dir", str(site.state_dir)]
    sign = _signer(site, "rev-1")
    async with running(_config(site)) as gw:
        await _connected(gw)
        dev = await asyncio.to_thread(_connect, site, "rev-1")
        other = await asyncio.to_thread(_connect, site, "ok-1")
        try:
            for seq in range(5):
                assert await asyncio.to_thread(dev.publish, _topic("rev-1"), sign(_frame("rev-1", "v1", seq))) == 0
            await wait_until(lambda: mqtt_count(gw, "committed") == 5)
            # 1. the registry first (no broker reload yet): the gateway quarantines the device's frames at once
            assert main(["pki", "revoke", *sd, "rev-1", "--no-reload"]) == 0
            out = capsys.readouterr().out
            assert "is now in" in out and "rev-1 disabled" in out and "crl.pem and acl updated" in out
            assert await asyncio.to_thread(dev.publish, _topic("rev-1"), sign(_frame("rev-1", "v1", 5))) == 0
            await wait_until(lambda: _rejected(gw, "revoked") == 1, what="the frame quarantined as revoked")
            # 2. the broker reloads (SIGHUP), no takeover: the connected device is disconnected at its next
            # publish (the ACL denies it everything)
            assert main(["pki", "revoke", *sd, "rev-1", "--no-kick"]) == 0
            out = capsys.readouterr().out
            assert "was already in" in out and f"sent SIGHUP to pid {site.broker.pid}" in out
            rc = 0
            deadline = time.monotonic() + 10
            while rc == 0 and time.monotonic() < deadline:  # the reload is asynchronous: until it took effect
                rc = await asyncio.to_thread(dev.publish, _topic("rev-1"), sign(_frame("rev-1", "v1", 6)))
            assert rc == NOT_AUTHORIZED
            await asyncio.to_thread(dev.wait_disconnected, 10)
            # 3. a new connection is refused in the TLS handshake (CRL); other devices are not affected
            assert await asyncio.to_thread(_refused, site, "rev-1")
            assert await asyncio.to_thread(other.publish, "ds4h/v1/devices/ok-1/status", b'{"state":"online"}') == 0
        finally:
            dev.close()
            other.close()
        assert mqtt_count(gw, "committed") == 5
    # 4. also after a broker restart (the config written at start carries the CRL and the ACL)
    site.broker.stop()
    site.broker.start()
    assert await asyncio.to_thread(_refused, site, "rev-1")
    assert not await asyncio.to_thread(_refused, site, "ok-1")
    assert sorted(committed_keys(site.state_dir)) == sorted(f"rev-1/v1/{s}" for s in range(5))


async def test_revoke_closes_a_silent_connection_at_once(
    revocation_site: MqttSite, capsys: pytest.CaptureFixture[str]
) -> None:
    """A revoked device that never publishes is disconnected by the takeover, not left connected."""
    site = revocation_site
    pki_files = sorted(p.name for p in site.pki.root.rglob("*"))
    crl_before = set(site.pki.revoked_serials())
    dev = await asyncio.to_thread(_connect, site, "rev-1")
    other = await asyncio.to_thread(_connect, site, "ok-1")
    try:
        t0 = time.monotonic()
        assert await asyncio.to_thread(main, ["pki", "revoke", "--state-dir", str(site.state_dir), "rev-1"]) == 0
        out = capsys.readouterr().out
        assert f"sent SIGHUP to pid {site.broker.pid}" in out
        assert "rev-1 cannot connect any more; its connection closed (session taken over)" in out
        # Mosquitto 2.0.11 closes the old connection without a DISCONNECT packet (no 0x8E reason code)
        await asyncio.to_thread(dev.wait_disconnected, 10)
        assert time.monotonic() - t0 < 10
        # the device cannot come back, the other device was not touched
        assert await asyncio.to_thread(_refused, site, "rev-1")
        assert not other.disconnected.event.is_set()
        rc = await asyncio.to_thread(other.publish, "ds4h/v1/devices/ok-1/status", b'{"state":"online"}')
        assert rc in (0, NO_MATCHING_SUBSCRIBERS)  # no gateway runs in this test
    finally:
        dev.close()
        other.close()
    # the probe and the kicker certificates: never written, both revoked (with the device's)
    assert sorted(p.name for p in site.pki.root.rglob("*")) == pki_files
    assert len(set(site.pki.revoked_serials()) - crl_before) == 3


TAKEOVER = "use_identity_as_username true\nuse_username_as_clientid true\n"


def test_listener_address_of_a_broker_directory(tmp_path: Path) -> None:
    from gateway.pki import PkiError
    from gateway.pki.kick import listener_address

    conf = tmp_path / "mosquitto.conf"
    for line, want in [
        ("listener 8883 10.1.2.3", ("10.1.2.3", 8883)),
        ("listener 8883 0.0.0.0", ("127.0.0.1", 8883)),
        ("listener 8883 ::", ("::1", 8883)),
        ("listener 1884", ("127.0.0.1", 1884)),
        ("listener 8883 broker.ward.example", ("broker.ward.example", 8883)),
    ]:
        conf.write_text(f"# conf\nallow_anonymous false\n{line}\nprotocol mqtt\n{TAKEOVER}")
        assert listener_address(tmp_path) == want
    for text, why in [
        (f"allow_anonymous false\n{TAKEOVER}", "found 0"),
        (f"listener 8883\nlistener 1883 127.0.0.1\n{TAKEOVER}", "found 2"),
        ("listener 8883\nuse_identity_as_username true\n", "use_username_as_clientid true"),
        ("listener 8883\n#use_identity_as_username true\nuse_username_as_clientid true\n", "use_identity_as"),
    ]:
        conf.write_text(text)
        with pytest.raises(PkiError, match=why):
            listener_address(tmp_path)
    # what `pki mosquitto-config` writes passes
    from gateway.pki.mosquitto import render_mosquitto_conf

    conf.write_text(render_mosquitto_conf(config_dir=tmp_path))
    assert listener_address(tmp_path) == ("127.0.0.1", 8883)


def test_revocation_records(revocation_site: MqttSite, capsys: pytest.CaptureFixture[str]) -> None:
    site = revocation_site
    pki = SitePki(site.state_dir)
    cert_path, _ = pki.device_files("rev-1")
    serial = load_certificate(cert_path).serial_number
    assert main(["pki", "revoke", "--state-dir", str(site.state_dir), "rev-1", "--no-reload"]) == 0
    crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    _, ca = pki.load_ca()
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert crl.next_update_utc == ca.not_valid_after_utc  # never lapses while the CA is in use
    assert (site.broker.config_dir / "crl.pem").read_bytes() == pki.crl.read_bytes()
    assert "user rev-1\ntopic deny #\n" in (site.broker.config_dir / "acl").read_text()
    reg = DeviceRegistry.open(site.state_dir)
    try:
        d = reg.get("rev-1")
        assert d is not None and d.revoked and not d.enabled and d.public_key
        with pytest.raises(RegistryError, match="revoked"):
            reg.set_enabled("rev-1", True)
        # a new certificate: out of the ACL's deny list, the mark cleared, still disabled until enabled
        assert main(["pki", "issue-device", "--state-dir", str(site.state_dir), "rev-1"]) == 0
        assert "was revoked" in capsys.readouterr().out
        reg.refresh(force=True)
        d = reg.get("rev-1")
        assert d is not None and not d.revoked and not d.enabled
        assert "user rev-1" not in (site.broker.config_dir / "acl").read_text()
        assert reg.set_enabled("rev-1", True).enabled
    finally:
        reg.close()
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert update_brokers(pki, reload=False)[0].config_dir == site.broker.config_dir

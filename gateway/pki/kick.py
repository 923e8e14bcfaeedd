"""Closing a revoked device's live connection on a Mosquitto 2.0 broker.

Mosquitto re-reads its CRL and ACL on SIGHUP but keeps existing connections: a revoked device that
stays silent would stay connected (unable to read or write) until it publishes or the broker
restarts. Mosquitto offers no "kick" without its dynamic-security plugin, so ``pki revoke`` uses the
broker's session takeover instead: the broker names every client after its certificate's CN
(``use_username_as_clientid``), and a second connection with the same client id closes the first
(Mosquitto 2.0.11 just closes it, without a DISCONNECT packet).

1. Before the reload, a *probe* certificate for the device (issued for minutes, never written to
   disk) is put in the CRL with the device's own certificate.
2. After the SIGHUP the probe connects until the broker refuses it: the new CRL is then in force, so
   the revoked device cannot come back. (Each probe connection the broker still admits takes the
   device's session over too.)
3. A *kicker* certificate for the device (not in the CRL) connects, which closes the device's
   connection, and disconnects with a clean start and no session expiry, so no session is left.
4. The kicker's certificate is revoked at once (CRL, SIGHUP).

Every network wait has a timeout; a broker that cannot be reached is reported, never waited for.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.pki import PkiError
from gateway.pki.ca import SitePki, Transient
from gateway.pki.mosquitto import CONF_NAME, BrokerUpdate, update_brokers

TRANSIENT_LIFETIME = dt.timedelta(minutes=10)
"""Validity of the probe and kicker certificates (both end up in the CRL well before)."""
RETRY_S = 0.2
_LISTENER_RE = re.compile(r"^\s*listener\s+(\d+)(?:\s+(\S+))?\s*$", re.MULTILINE)
_TAKEOVER_NEEDS = ("use_identity_as_username", "use_username_as_clientid")
"""The broker options that make a client's id its certificate's CN (pki mosquitto-config writes both)."""


@dataclass(frozen=True, slots=True)
class KickResult:
    config_dir: Path
    address: str
    kicked: bool
    """True: the CRL was in force and the device's connection (if any) was closed."""
    detail: str


def listener_address(config_dir: Path) -> tuple[str, int]:
    """Where to reach the broker of a ``mosquitto-config`` directory (its ``listener`` line); refuses a config
    in which a takeover would not close the device's connection (client ids not taken from certificates)."""
    conf = config_dir / CONF_NAME
    try:
        text = conf.read_text(encoding="utf-8")
    except OSError as e:
        raise PkiError(f"{conf}: unreadable ({e.strerror})") from e
    for option in _TAKEOVER_NEEDS:
        if not re.search(rf"^\s*{option}\s+true\s*$", text, re.MULTILINE):
            raise PkiError(f"{conf}: no `{option} true`, so a takeover would not reach the device's connection")
    listeners = _LISTENER_RE.findall(text)
    if len(listeners) != 1:
        raise PkiError(f"{conf}: expected one `listener PORT [ADDRESS]` line, found {len(listeners)}")
    m = _LISTENER_RE.search(text)
    assert m is not None
    host = m.group(2) or "127.0.0.1"
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_unspecified:  # listening everywhere: reach it on loopback
            host = "::1" if ipaddress.ip_address(host).version == 6 else "127.0.0.1"
    return host, int(m.group(1))


def probe_certificate(pki: SitePki, device_id: str) -> Transient:
    """The probe (step 1): call before the broker reload, it is added to the CRL."""
    probe = pki.transient_device_cert(device_id, TRANSIENT_LIFETIME)
    pki.write_crl([probe.serial])
    return probe


def disconnect_revoked(
    pki: SitePki,
    device_id: str,
    updates: Sequence[BrokerUpdate],
    probe: Transient,
    *,
    timeout_s: float = 10.0,
) -> list[KickResult]:
    """Steps 2–4 on every broker that was sent SIGHUP."""
    reloaded = [u for u in updates if u.reloaded_pid]
    if not reloaded:
        return []
    kicker = pki.transient_device_cert(device_id, TRANSIENT_LIFETIME)
    try:
        return [_kick(u.config_dir, device_id, probe, kicker, timeout_s) for u in reloaded]
    finally:
        pki.write_crl([kicker.serial])
        update_brokers(pki)


def _kick(config_dir: Path, device_id: str, probe: Transient, kicker: Transient, timeout_s: float) -> KickResult:
    try:
        host, port = listener_address(config_dir)
    except PkiError as e:
        return KickResult(config_dir, "?", False, str(e))
    address = f"{host}:{port}"
    ca = config_dir / "ca.crt"
    deadline = time.monotonic() + timeout_s
    try:
        while _session(host, port, ca, probe, device_id, deadline):  # admitted: the old CRL still applies
            if time.monotonic() >= deadline:
                why = f"the broker did not apply the new CRL in {timeout_s:g} s"
                return KickResult(config_dir, address, False, why)
            time.sleep(RETRY_S)
        if not _session(host, port, ca, kicker, device_id, deadline):
            return KickResult(config_dir, address, False, "the broker refused the takeover connection")
    except (OSError, TimeoutError) as e:
        return KickResult(config_dir, address, False, f"cannot reach the broker: {e}")
    return KickResult(config_dir, address, True, "connection closed (session taken over)")


def _session(host: str, port: int, ca: Path, cert: Transient, device_id: str, deadline: float) -> bool:
    """Connect with ``cert`` and disconnect: True when the broker admitted it (CONNACK success), False
    when it refused the certificate. Raises OSError/TimeoutError when the broker is not reachable."""
    outcome: dict[str, Any] = {}

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        outcome["connack"] = rc

    def on_disconnect(client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        outcome["closed"] = rc

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5, reconnect_on_failure=False
    )
    client.tls_set_context(_tls(ca, cert))
    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    client.connect_timeout = max(0.5, deadline - time.monotonic())
    try:
        try:
            client.connect(host, port, keepalive=30, clean_start=True, properties=props)
        except ssl.SSLCertVerificationError as e:  # ours: the broker's certificate is not the site's
            raise OSError(f"the broker's certificate does not verify against {ca}: {e.verify_message}") from None
        except ssl.SSLError:
            return False  # TLS 1.2: the handshake itself fails on a revoked certificate
        while "connack" not in outcome and "closed" not in outcome:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no CONNACK from {host}:{port}")
            try:
                rc = client.loop(timeout=0.1)
            except ssl.SSLError:
                return False  # TLS 1.3: the broker's alert arrives after the client's handshake
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN) and "connack" not in outcome:
                return False
        connack = outcome.get("connack")
        if not isinstance(connack, ReasonCode) or connack.is_failure:
            return False
        client.disconnect()
        end = min(deadline, time.monotonic() + 2)
        while "closed" not in outcome and time.monotonic() < end:
            client.loop(timeout=0.1)
        return True
    finally:
        sock = client.socket()
        if sock is not None:  # a refused or timed-out attempt: nothing more is read from it
            with contextlib.suppress(OSError):
                sock.close()


def _tls(ca: Path, cert: Transient) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    # The chain must lead to the site CA; the name is not checked: the address comes from the broker's
    # own config, and a wildcard listener is reached on loopback, which the certificate may not name.
    ctx.check_hostname = False
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads files only: anonymous in-memory files (memfd), so the short-lived key never
    # touches a file system, not even a temporary directory a crash would leave behind
    fds: list[int] = []
    try:
        for data in (cert.cert_pem, cert.key_pem):
            fd = os.memfd_create("ds4h-kick", os.MFD_CLOEXEC)
            fds.append(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
    finally:
        for fd in fds:
            os.close(fd)
    return ctx

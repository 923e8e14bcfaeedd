"""The site PKI, the `pki` commands and the broker configuration, proven against a real Mosquitto:
mutual TLS, the ACL, the client id rule and persistence across broker restarts.

Broker behaviours observed with Mosquitto 2.0.11 (asserted below):
- a client without a certificate completes a TLS 1.3 handshake on its side, then its first read fails
  with the alert "certificate required" (TLS 1.2: the handshake itself fails); no CONNACK ever comes;
- a publish the ACL denies gets PUBACK 0x87 (QoS 1) and then the broker closes the network connection
  without a DISCONNECT packet (QoS 0: just the close);
- subscriptions are not checked at SUBSCRIBE time with acl_file (SUBACK grants QoS 1 even for ``#``):
  what a client may not read is simply never delivered to it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import re
import socket
import ssl
import stat
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID

from gateway.cli import main
from gateway.devices import DeviceRegistry
from gateway.pki import CA_DAYS, LEAF_DAYS, PkiError
from gateway.pki.ca import SitePki, load_certificate
from gateway.pki.mosquitto import ACL_TEMPLATE, MOSQUITTO_CONF_TEMPLATE, render_acl, write_mosquitto_config
from tests.mqtt_site import NOT_AUTHORIZED, MqttClient, MqttSite, tls_context
from tests.services import wait_for

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "mosquitto"

READINGS = "ds4h/v1/devices/{}/readings"
STATUS = "ds4h/v1/devices/{}/status"
ACK = "ds4h/v1/devices/{}/ack"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    assert "PRIVATE KEY" not in out + err and "BEGIN" not in out + err, "key material printed"
    return rc, out, err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(cls)


@pytest.fixture
def pki(tmp_state_dir: Path) -> SitePki:
    p = SitePki(tmp_state_dir)
    p.init_ca("test site")
    return p


# --- certificates ----------------------------------------------------------------------------------
def test_ca_certificate(pki: SitePki) -> None:
    ca = load_certificate(pki.ca_cert)
    assert ca.version is x509.Version.v3
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert ca.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert ca.subject == ca.issuer
    bc = ext(ca, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0  # type: ignore[attr-defined]
    ku = ext(ca, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign  # type: ignore[attr-defined]
    assert not ku.value.digital_signature  # type: ignore[attr-defined]
    ski = ext(ca, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.public_key())
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days == CA_DAYS  # 10 years (+ the backdated hour)
    ca.verify_directly_issued_by(ca)


@pytest.mark.parametrize("which", ["device", "gateway", "server"])
def test_leaf_certificates(pki: SitePki, which: str) -> None:
    san: list[x509.GeneralName]
    if which == "device":
        issued = pki.issue_device("ecg-1")
        usage, san = ExtendedKeyUsageOID.CLIENT_AUTH, [x509.UniformResourceIdentifier("urn:ds4h:device:ecg-1")]
        assert issued.common_name == "ecg-1"
        assert (issued.cert, issued.key) == pki.device_files("ecg-1")
    elif which == "gateway":
        issued = pki.issue_gateway("edge-7")
        usage, san = ExtendedKeyUsageOID.CLIENT_AUTH, [x509.UniformResourceIdentifier("urn:ds4h:gateway:edge-7")]
        assert issued.common_name == "ds4h-gateway:edge-7"
    else:
        issued = pki.issue_server(["broker.example.org", "10.1.2.3", "::1"])
        usage = ExtendedKeyUsageOID.SERVER_AUTH
        san = [
            x509.DNSName("broker.example.org"),
            x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        assert issued.common_name == "broker.example.org"
    ca = load_certificate(pki.ca_cert)
    cert = load_certificate(issued.cert)
    cert.verify_directly_issued_by(ca)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert cert.issuer == ca.subject
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == issued.common_name
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca  # type: ignore[attr-defined]
    ku = ext(cert, x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign and not ku.crl_sign  # type: ignore[attr-defined]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [usage]  # type: ignore[call-overload]
    assert list(ext(cert, x509.SubjectAlternativeName).value) == san  # type: ignore[call-overload]
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    ca_ski = ext(ca, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest  # type: ignore[attr-defined]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc) == dt.timedelta(days=LEAF_DAYS, hours=1)
    assert not issued.replaced


def test_validity_is_configurable_and_never_beyond_the_ca(pki: SitePki) -> None:
    short = load_certificate(pki.issue_device("ecg-1", days=30).cert)
    assert (short.not_valid_after_utc - short.not_valid_before_utc) == dt.timedelta(days=30, hours=1)
    longest = pki.issue_device("ecg-2", days=3650)
    assert longest.not_after == load_certificate(pki.ca_cert).not_valid_after_utc
    for bad in (0, -1, 3651):
        with pytest.raises(PkiError, match="validity"):
            pki.issue_device("ecg-3", days=bad)


def test_names_are_checked(pki: SitePki) -> None:
    with pytest.raises(PkiError, match="gateway name"):
        pki.issue_gateway("Gate Way")
    with pytest.raises(PkiError, match="neither an IP address nor a DNS name"):
        pki.issue_server(["bad host"])
    with pytest.raises(PkiError, match="site name"):
        SitePki(pki.state_dir / "other").init_ca("bad\nname")


def test_keys_are_0600_from_the_first_instant(tmp_state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key reaches its final name through a temporary file that was already 0600."""
    seen: dict[str, int] = {}
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen[Path(dst).name] = stat.S_IMODE(os.stat(src).st_mode)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)  # what gateway.pki.ca renames with
    pki = SitePki(tmp_state_dir)
    pki.init_ca()
    pki.issue_device("ecg-1")
    pki.issue_gateway()
    pki.issue_server()
    keys = {n: m for n, m in seen.items() if n.endswith(".key")}
    assert set(keys) == {"ca.key", "ecg-1.key", "gateway.key", "server.key"}
    assert set(keys.values()) == {0o600}
    assert {m for n, m in seen.items() if n.endswith(".crt")} == {0o644}
    assert mode(pki.root) == 0o700 and mode(pki.devices_dir) == 0o700
    for key in pki.root.rglob("*.key"):
        assert mode(key) == 0o600, key
    assert not [p for p in pki.root.rglob("*") if p.name.endswith(".tmp")]


def test_a_loose_ca_key_is_refused(pki: SitePki) -> None:
    pki.ca_key.chmod(0o644)
    with pytest.raises(PkiError, match="too open"):
        pki.issue_device("ecg-1")


# --- the CLI ---------------------------------------------------------------------------------------
def test_cli_issues_everything_and_prints_paths_only(
    tmp_state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    sd = ["--state-dir", str(tmp_state_dir)]
    rc, out, _ = run_cli(capsys, "pki", "init", *sd, "--name", "Ward 3")
    assert rc == 0 and str(tmp_state_dir / "pki" / "ca.crt") in out
    prov = tmp_path / "provision"
    rc, out, _ = run_cli(capsys, "pki", "issue-device", *sd, "ecg-1", "--kind", "ecg_patch", "--out", str(prov))
    assert rc == 0
    assert str(tmp_state_dir / "pki" / "devices" / "ecg-1.key") in out
    assert "registered ecg-1 (kind ecg_patch) with mqtt_cn=ecg-1" in out
    assert sorted(p.name for p in prov.iterdir()) == ["ca.crt", "ecg-1.crt", "ecg-1.key"]
    assert mode(prov / "ecg-1.key") == 0o600 and mode(prov) == 0o700
    assert (prov / "ecg-1.crt").read_bytes() == (tmp_state_dir / "pki" / "devices" / "ecg-1.crt").read_bytes()
    rc, out, _ = run_cli(capsys, "pki", "issue-gateway", *sd, "--name", "edge-1")
    assert rc == 0 and "ds4h-gateway:edge-1" in out
    rc, out, _ = run_cli(capsys, "pki", "issue-server", *sd, "--host", "mqtt.ward3.example", "--host", "10.0.0.2")
    assert rc == 0
    san = ext(load_certificate(tmp_state_dir / "pki" / "server.crt"), x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.ward3.example"]  # type: ignore[attr-defined]
    broker = tmp_path / "broker"
    rc, out, _ = run_cli(capsys, "pki", "mosquitto-config", *sd, "--out", str(broker), "--gateway-name", "edge-1")
    assert rc == 0 and f"mosquitto -c {broker / 'mosquitto.conf'}" in out
    assert sorted(p.name for p in broker.iterdir()) == [
        "acl",
        "ca.crt",
        "crl.pem",
        "mosquitto.conf",
        "server.crt",
        "server.key",
    ]
    assert mode(broker / "server.key") == 0o600
    assert "user ds4h-gateway:edge-1\n" in (broker / "acl").read_text()
    # re-issuing replaces (rotation) and says so
    rc, out, _ = run_cli(capsys, "pki", "issue-device", *sd, "ecg-1")
    assert rc == 0 and "re-issued" in out and "is registered with mqtt_cn=ecg-1" in out
    assert "PRIVATE KEY" not in caplog.text
    for key in (tmp_state_dir / "pki").rglob("*.key"):
        assert mode(key) == 0o600


def test_issue_device_registers_the_device(pki: SitePki, capsys: pytest.CaptureFixture[str]) -> None:
    sd = ["--state-dir", str(pki.state_dir)]
    reg = DeviceRegistry.open(pki.state_dir)
    try:
        reg.add("cgm-1", "cgm", identities={"serial": "SN-1"})
        rc, out, _ = run_cli(capsys, "pki", "issue-device", *sd, "cgm-1", "--kind", "ignored")
        assert rc == 0 and "added mqtt_cn=cgm-1 to registered device cgm-1 (kind cgm)" in out
        rc, _, _ = run_cli(capsys, "pki", "issue-device", *sd, "ecg-9", "--kind", "ecg_patch")
        assert rc == 0
        reg.refresh(force=True)
        cgm, ecg = reg.get("cgm-1"), reg.get("ecg-9")
        assert cgm is not None and dict(cgm.identities) == {"serial": "SN-1", "mqtt_cn": "cgm-1"}
        assert cgm.kind == "cgm"
        assert ecg is not None and ecg.kind == "ecg_patch" and dict(ecg.identities) == {"mqtt_cn": "ecg-9"}
        assert reg.resolve("mqtt_cn", "ecg-9") == ecg
    finally:
        reg.close()


def test_cli_errors_exit_2_with_a_clear_message(tmp_state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sd = ["--state-dir", str(tmp_state_dir)]

    def fails(*args: str) -> str:
        rc, out, err = run_cli(capsys, "pki", *args)
        assert rc == 2, (args, out, err)
        assert out == ""
        return err

    assert "no site CA" in fails("issue-device", *sd, "ecg-1", "--kind", "x")
    assert "run `ds4h-gateway pki init` first" in fails("issue-gateway", *sd)
    assert "run `ds4h-gateway pki init` first" in fails("mosquitto-config", *sd, "--out", str(tmp_state_dir / "b"))
    assert not (tmp_state_dir / "registry.db").exists()  # nothing registered without a CA
    assert run_cli(capsys, "pki", "init", *sd)[0] == 0
    ca_before = (tmp_state_dir / "pki" / "ca.crt").read_bytes()
    assert "already exists" in fails("init", *sd)
    assert (tmp_state_dir / "pki" / "ca.crt").read_bytes() == ca_before
    assert "not canonical" in fails("issue-device", *sd, "ECG 1", "--kind", "x")
    assert "give its --kind" in fails("issue-device", *sd, "ecg-1")
    assert "is not valid" in fails("issue-gateway", *sd, "--name", "a:b")
    assert "neither an IP address nor a DNS name" in fails("issue-server", *sd, "--host", "a b")
    assert "validity" in fails("issue-device", *sd, "ecg-1", "--kind", "x", "--days", "0")
    assert "not a TCP port" in fails("mosquitto-config", *sd, "--out", str(tmp_state_dir / "b"), "--port", "0")
    assert "does not exist" in fails("init", "--state-dir", str(tmp_state_dir / "missing"))
    # an mqtt_cn already naming another device
    reg = DeviceRegistry.open(tmp_state_dir)
    try:
        reg.add("hr-1", "heart_rate", identities={"mqtt_cn": "hr-2"})
    finally:
        reg.close()
    assert "already identifies device 'hr-1'" in fails("issue-device", *sd, "hr-2", "--kind", "heart_rate")
    # --force replaces the CA
    rc, out, _ = run_cli(capsys, "pki", "init", *sd, "--force")
    assert rc == 0 and "re-issue" in out
    assert (tmp_state_dir / "pki" / "ca.crt").read_bytes() != ca_before


def test_cli_as_a_process(tmp_state_dir: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "pki", "issue-gateway", "--state-dir", str(tmp_state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert "no site CA" in r.stderr and "pki init" in r.stderr


# --- the broker configuration ---------------------------------------------------------------------
def _directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_deploy_templates_are_the_writers_templates(pki: SitePki, tmp_path: Path) -> None:
    conf_t = (DEPLOY / "mosquitto.conf").read_text(encoding="utf-8")
    acl_t = (DEPLOY / "acl").read_text(encoding="utf-8")
    hint = "copy it over: python -m gateway.pki.mosquitto deploy/mosquitto"
    assert conf_t == MOSQUITTO_CONF_TEMPLATE, f"deploy/mosquitto/mosquitto.conf differs from the writer's; {hint}"
    assert acl_t == ACL_TEMPLATE, f"deploy/mosquitto/acl differs from the writer's; {hint}"
    out = tmp_path / "conf"
    data = tmp_path / "data"
    files = write_mosquitto_config(pki, out, port=18883, bind="10.0.0.1", gateway_name="edge-1", persistence_dir=data)
    assert files.issued_server_cert
    values = {
        "user": "mosquitto",
        "acl_file": f"{out}/acl",
        "persistence_dir": str(data),
        "port": "18883",
        "bind": "10.0.0.1",
        "cafile": f"{out}/ca.crt",
        "certfile": f"{out}/server.crt",
        "keyfile": f"{out}/server.key",
        "crlfile": f"{out}/crl.pem",
        "pid_file": f"{out}/mosquitto.pid",
    }
    assert files.conf.read_text() == string.Template(conf_t).substitute(values)
    assert files.acl.read_text() == string.Template(acl_t).substitute(gateway_name="edge-1", revoked="# (none)\n")
    assert files.crl.exists()


def test_broker_config_content(pki: SitePki, tmp_path: Path) -> None:
    files = write_mosquitto_config(pki, tmp_path / "conf", persistence_dir=tmp_path / "data")
    lines = _directives(files.conf.read_text())
    opts = {line.split()[0]: line.split(None, 1)[1] for line in lines}
    assert [line for line in lines if line.split()[0] in ("listener", "port", "bind_address")] == [
        "listener 8883 127.0.0.1"
    ]
    for key, value in {
        "require_certificate": "true",
        "use_identity_as_username": "true",
        "use_username_as_clientid": "true",
        "tls_version": "tlsv1.2",
        "allow_anonymous": "false",
        "acl_file": str(files.acl),
        "cafile": str(files.ca_cert),
        "certfile": str(files.server_cert),
        "keyfile": str(files.server_key),
        "persistence": "true",
        "autosave_interval": "1",
        "max_queued_messages": "0",
        "max_inflight_messages": "1000",
        "persistent_client_expiration": "7d",
        "protocol": "mqtt",
        "crlfile": str(files.crl),
    }.items():
        assert opts.get(key) == value, key
    repeated = {k for k in (line.split()[0] for line in lines) if [x.split()[0] for x in lines].count(k) > 1}
    assert repeated == {"log_type"}
    # the ACL grants exactly this, nothing else
    assert _directives(render_acl("gateway")) == [
        "pattern write ds4h/v1/devices/%u/readings",
        "pattern write ds4h/v1/devices/%u/status",
        "pattern read ds4h/v1/devices/%u/ack",
        "user ds4h-gateway:gateway",
        "topic read ds4h/v1/devices/+/readings",
        "topic read ds4h/v1/devices/+/status",
        "topic write ds4h/v1/devices/+/ack",
        "topic readwrite ds4h/v1/gateway/#",
    ]


def test_server_key_goes_to_the_broker_user(pki: SitePki, tmp_path: Path) -> None:
    """Mosquitto 2.0 started as root reads its key after dropping privileges: as root, the copy is its user's."""
    if os.geteuid() == 0:
        files = write_mosquitto_config(pki, tmp_path / "conf", user="mosquitto")
        owner = pwd.getpwnam("mosquitto")
        st = files.server_key.stat()
        assert (st.st_uid, st.st_gid) == (owner.pw_uid, owner.pw_gid) and files.key_owner == "mosquitto"
        with pytest.raises(PkiError, match="no system user"):
            write_mosquitto_config(pki, tmp_path / "conf2", user="no-such-user-x")
    else:
        files = write_mosquitto_config(pki, tmp_path / "conf", user="mosquitto")
        assert files.key_owner is None and files.server_key.stat().st_uid == os.geteuid()
    assert mode(files.server_key) == 0o600


# --- against the real broker ------------------------------------------------------------------------
def test_site_fixture(mqtt_site: MqttSite) -> None:
    assert mqtt_site.broker.running
    assert mqtt_site.ca_cert == mqtt_site.state_dir / "pki" / "ca.crt"
    cert, key = mqtt_site.issue_device("ecg-1")
    assert mode(key) == 0o600 and cert.exists()
    reg = DeviceRegistry.open(mqtt_site.state_dir)
    try:
        device = reg.resolve("mqtt_cn", "ecg-1")
        assert device is not None and device.id == "ecg-1" and device.kind == "ecg_patch"
    finally:
        reg.close()


def test_mtls_device_and_gateway_exchange_messages(mqtt_site: MqttSite) -> None:
    cert, key = mqtt_site.issue_device("ecg-1")
    g = (mqtt_site.gateway_cert, mqtt_site.gateway_key)
    with (
        MqttClient.connected(mqtt_site, "gw", *g) as gw,
        MqttClient.connected(mqtt_site, "ecg-1", cert, key) as dev,
    ):
        tls = gw.client.socket()
        assert isinstance(tls, ssl.SSLSocket) and tls.version() in ("TLSv1.2", "TLSv1.3")
        assert gw.subscribe(READINGS.format("+")) == 1
        assert gw.subscribe(STATUS.format("+")) == 1
        assert gw.subscribe("ds4h/v1/gateway/#") == 1
        assert dev.subscribe(ACK.format("ecg-1")) == 1
        assert dev.publish(READINGS.format("ecg-1"), b"r1") == 0
        assert dev.publish(STATUS.format("ecg-1"), b"s1") == 0
        assert [(m.topic, m.payload) for m in (gw.receive(), gw.receive())] == [
            (READINGS.format("ecg-1"), b"r1"),
            (STATUS.format("ecg-1"), b"s1"),
        ]
        assert gw.publish(ACK.format("ecg-1"), b"a1") == 0
        m = dev.receive()
        assert (m.topic, m.payload) == (ACK.format("ecg-1"), b"a1")
        assert gw.publish("ds4h/v1/gateway/status", b"up") == 0
        assert gw.receive().payload == b"up"


def test_a_client_without_certificate_is_refused(mqtt_site: MqttSite) -> None:
    host, port = mqtt_site.broker.host, mqtt_site.broker.port
    # TLS 1.3: the client's side of the handshake completes; the broker then refuses with an alert
    ctx = tls_context(mqtt_site.ca_cert)
    with socket.create_connection((host, port), timeout=5) as sock, ctx.wrap_socket(sock, server_hostname=host) as t:
        assert t.version() == "TLSv1.3"
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
            t.recv(1)
    # TLS 1.2: the handshake itself fails
    ctx12 = tls_context(mqtt_site.ca_cert)
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((host, port), timeout=5) as sock, pytest.raises(ssl.SSLError):
        ctx12.wrap_socket(sock, server_hostname=host)
    # an MQTT client never gets a CONNACK
    anon = MqttClient(mqtt_site, "anon", None, None)
    try:
        with pytest.raises((ConnectionError, ssl.SSLError)):
            anon.connect()
    finally:
        anon.close()
    assert "peer did not return a certificate" in mqtt_site.broker.log_tail(50)


def test_a_certificate_from_another_ca_is_refused(mqtt_site: MqttSite, tmp_path: Path) -> None:
    rogue = SitePki(tmp_path / "rogue")
    rogue.init_ca("rogue site")
    forged = rogue.issue_device("ecg-1")  # same CN as a real device
    mqtt_site.issue_device("ecg-1")
    c = MqttClient(mqtt_site, "ecg-1", forged.cert, forged.key)
    try:
        with pytest.raises((ConnectionError, ssl.SSLError)):
            c.connect()
    finally:
        c.close()
    # the rogue CA's broker certificate is not trusted by clients either
    host, port = mqtt_site.broker.host, mqtt_site.broker.port
    ctx = tls_context(rogue.ca_cert, forged.cert, forged.key)
    with socket.create_connection((host, port), timeout=5) as sock, pytest.raises(ssl.SSLCertVerificationError):
        ctx.wrap_socket(sock, server_hostname=host)
    assert re.search(r"certificate verify failed|unknown ca", mqtt_site.broker.log_tail(50))


def test_a_device_cannot_publish_as_another(mqtt_site: MqttSite) -> None:
    a = mqtt_site.issue_device("dev-a")
    mqtt_site.issue_device("dev-b")
    g = (mqtt_site.gateway_cert, mqtt_site.gateway_key)
    with MqttClient.connected(mqtt_site, "gw", *g) as gw:
        assert gw.subscribe(READINGS.format("+")) == 1
        assert gw.subscribe(STATUS.format("+")) == 1
        assert gw.subscribe(ACK.format("+")) == 1  # granted, but the gateway may not read acks: none arrive
        for topic, qos in (
            (READINGS.format("dev-b"), 1),
            (STATUS.format("dev-b"), 1),
            (ACK.format("dev-a"), 1),  # a device cannot forge the gateway's acknowledgements
            ("ds4h/v1/gateway/status", 1),
            (READINGS.format("dev-b"), 0),
        ):
            with MqttClient.connected(mqtt_site, "dev-a", *a) as dev:
                if qos == 1:
                    assert dev.publish(topic, b"forged", qos=1) == NOT_AUTHORIZED, topic
                else:
                    dev.publish(topic, b"forged", qos=0)
                # Mosquitto 2.0 then closes the connection (no DISCONNECT packet)
                assert dev.wait_disconnected() == 0x80
                assert not dev.disconnect_packet_from_server
        # nothing forged was delivered: the first message the gateway sees is this later, legitimate one
        with MqttClient.connected(mqtt_site, "dev-a", *a) as dev:
            assert dev.publish(READINGS.format("dev-a"), b"genuine") == 0
        m = gw.receive()
        assert (m.topic, m.payload) == (READINGS.format("dev-a"), b"genuine")
        assert gw.messages.empty()
        # the gateway cannot forge device data either (a second connection with its certificate would
        # replace this one: the client id is the CN)
        assert gw.publish(READINGS.format("dev-b"), b"forged") == NOT_AUTHORIZED
        assert gw.wait_disconnected() == 0x80


def test_a_device_cannot_read_other_devices_topics(mqtt_site: MqttSite) -> None:
    a = mqtt_site.issue_device("dev-a")
    b = mqtt_site.issue_device("dev-b")
    g = (mqtt_site.gateway_cert, mqtt_site.gateway_key)
    with (
        MqttClient.connected(mqtt_site, "gw", *g) as gw,
        MqttClient.connected(mqtt_site, "dev-a", *a) as dev_a,
        MqttClient.connected(mqtt_site, "dev-b", *b) as dev_b,
    ):
        # Mosquitto 2.0's acl_file does not check at SUBSCRIBE time: SUBACK grants QoS 1 …
        for topic in (ACK.format("dev-b"), READINGS.format("+"), STATUS.format("dev-b"), "#"):
            assert dev_a.subscribe(topic) == 1, topic
        assert dev_a.subscribe(ACK.format("dev-a")) == 1
        # … but delivers nothing the ACL does not let it read
        assert dev_b.publish(READINGS.format("dev-b"), b"b-reading") == 0
        assert dev_b.publish(STATUS.format("dev-b"), b"b-status") == 0
        assert gw.publish(ACK.format("dev-b"), b"for-b") == 0
        assert gw.publish("ds4h/v1/gateway/status", b"gw") == 0
        assert gw.publish(ACK.format("dev-a"), b"for-a") == 0
        m = dev_a.receive()
        assert (m.topic, m.payload) == (ACK.format("dev-a"), b"for-a")
        # its own ack matches two of its subscriptions (the ack topic and "#"): MQTT lets the broker
        # deliver a copy per matching subscription. Anything else it received would be a leak.
        time.sleep(0.5)
        extra = []
        while not dev_a.messages.empty():
            extra.append(dev_a.messages.get_nowait())
        assert {(x.topic, x.payload) for x in extra} <= {(ACK.format("dev-a"), b"for-a")}, extra


def test_the_client_id_is_the_certificate_cn(mqtt_site: MqttSite) -> None:
    """A device that asks for the gateway's client id cannot take over the gateway's session."""
    a = mqtt_site.issue_device("dev-a")
    g = (mqtt_site.gateway_cert, mqtt_site.gateway_key)
    with MqttClient.connected(mqtt_site, "gateway-session", *g, clean_start=False, session_expiry_s=600) as gw:
        assert gw.subscribe(READINGS.format("+")) == 1
        with MqttClient.connected(mqtt_site, "gateway-session", *a) as intruder:
            assert intruder.publish(READINGS.format("dev-a"), b"still-delivered") == 0
        m = gw.receive()
        assert m.payload == b"still-delivered"
        assert not gw.disconnected.event.is_set()
    log = mqtt_site.broker.log_tail(50)
    assert f"as {mqtt_site.gateway_username} (p5, c0" in log and "as dev-a (p5, c1" in log


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_the_gateway_session_survives_a_broker_restart(mqtt_site: MqttSite, how: str) -> None:
    a = mqtt_site.issue_device("dev-a")
    g = (mqtt_site.gateway_cert, mqtt_site.gateway_key)
    with MqttClient.connected(mqtt_site, "gw", *g, clean_start=False, session_expiry_s=3600) as gw:
        assert gw.subscribe(READINGS.format("+")) == 1
    # the gateway is away: messages queue in its session
    with MqttClient.connected(mqtt_site, "dev-a", *a) as dev:
        for i in range(3):
            assert dev.publish(READINGS.format("dev-a"), f"m{i}".encode()) == 0
        after = time.time_ns()  # all three are stored (PUBACK received)
    broker = mqtt_site.broker
    if how == "kill":  # a crash: what the last autosave (every second) holds survives
        db = broker.data_dir / "mosquitto.db"
        wait_for(lambda: db.exists() and db.stat().st_mtime_ns > after, 10.0, "an autosave after the publishes")
        broker.kill()
    else:
        broker.stop()
    broker.start()
    with MqttClient.connected(mqtt_site, "gw", *g, clean_start=False, session_expiry_s=3600) as gw:
        got = [gw.receive().payload for _ in range(3)]
    assert got == [b"m0", b"m1", b"m2"]

"""Mosquitto 2.0 configuration for the site: one mTLS listener, the device/gateway ACL, persistence.

The two templates below are the single source: ``deploy/mosquitto/mosquitto.conf`` and
``deploy/mosquitto/acl`` are verbatim copies (``${…}`` are the placeholders), checked by
tests/test_pki.py. Change them here and copy them there (``python -m gateway.pki.mosquitto DIR``
writes both templates into DIR).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import pwd
import re
import signal
import string
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.model import check_device_id
from gateway.pki import (
    DEFAULT_BIND,
    DEFAULT_GATEWAY_NAME,
    DEFAULT_PERSISTENCE_DIR,
    DEFAULT_PORT,
    DEFAULT_USER,
    PkiError,
)
from gateway.pki.ca import SitePki, atomic_write, check_gateway_name, copy_file

CONF_NAME = "mosquitto.conf"
ACL_NAME = "acl"
CRL_NAME = "crl.pem"
PID_NAME = "mosquitto.pid"
BROKERS_NAME = "brokers.json"
"""In ``<state_dir>/pki``: the broker directories ``mosquitto-config`` wrote, which ``revoke`` updates."""

MOSQUITTO_CONF_TEMPLATE = """\
# Mosquitto 2.0 configuration for ds4h-gateway sites: 5G/MQTT devices and the gateway authenticate
# with client certificates issued by the site CA (mutual TLS); the ACL file confines each device to
# its own topics.
#
# Written by `ds4h-gateway pki mosquitto-config --out DIR` from the template in
# deploy/mosquitto/mosquitto.conf (its placeholders filled in), together with DIR/acl and copies of
# ca.crt, server.crt and server.key (0600) and the CRL. Run: `mosquitto -c DIR/mosquitto.conf`. See docs/pki.md.

# `ds4h-gateway pki revoke` sends SIGHUP to the pid written here, after it rewrote crl.pem and acl.
pid_file ${pid_file}

# Started as root, the broker drops privileges to this user; it must be able to read server.key
# and to write the persistence directory.
user ${user}

# --- authentication and access control ---------------------------------------------------------
# No client connects without a certificate from the site CA, and no anonymous MQTT session exists.
allow_anonymous false
# Topic access per certificate CN (devices: their canonical id; the gateway: ds4h-gateway:NAME).
acl_file ${acl_file}

# --- persistence: queued QoS 1 messages and sessions survive a broker restart -------------------
persistence true
persistence_location ${persistence_dir}/
# Save the in-memory database every second (the default is every 30 minutes).
autosave_interval 1
# The gateway keeps a persistent session (clean start off, a session expiry interval; its client id
# is its CN): its queued messages wait for it while it restarts. A session unused for this long is
# dropped (devices use clean sessions and are not affected).
persistent_client_expiration 7d

# --- queues --------------------------------------------------------------------------------------
# The default max_queued_messages (1000) silently drops QoS 1 messages for a subscriber that falls
# behind (a burst, a gateway restart): 0 means no limit, the gateway's persistent session queues all.
max_queued_messages 0
max_inflight_messages 1000

# --- logging (stderr: the systemd journal) --------------------------------------------------------
log_dest stderr
log_type error
log_type warning
log_type notice
connection_messages true

# --- the only listener: MQTT over TLS 1.2 or later with client certificates ---------------------
# There is no plain-TCP listener. Bind to the address the devices reach (the 5G interface);
# `--bind` defaults to the loopback address.
listener ${port} ${bind}
protocol mqtt
cafile ${cafile}
certfile ${certfile}
keyfile ${keyfile}
require_certificate true
use_identity_as_username true
# The client id is the certificate's CN too, whatever the client asks for: a device cannot take over
# (and, with a clean start, wipe) the gateway's persistent session or another device's connection.
use_username_as_clientid true
tls_version tlsv1.2
# Revoked device certificates (`ds4h-gateway pki revoke`). Read at start and again on SIGHUP (checked
# with Mosquitto 2.0.11): a revoked device cannot connect any more. Existing connections stay up: the
# ACL below denies a revoked device everything, so it is disconnected at its next publish.
crlfile ${crlfile}
"""

ACL_TEMPLATE = """\
# Mosquitto ACL for ds4h-gateway sites (template: deploy/mosquitto/acl; see docs/pki.md).
# The username is the client certificate's CN (use_identity_as_username): a device's canonical id,
# or ds4h-gateway:NAME for the gateway. Everything not granted here is denied.

# Every device: publish its own readings and status, receive its own acknowledgements.
pattern write ds4h/v1/devices/%u/readings
pattern write ds4h/v1/devices/%u/status
pattern read ds4h/v1/devices/%u/ack

# The gateway: receive every device's readings and status, acknowledge to any device, and publish
# and read its own status.
user ds4h-gateway:${gateway_name}
topic read ds4h/v1/devices/+/readings
topic read ds4h/v1/devices/+/status
topic write ds4h/v1/devices/+/ack
topic readwrite ds4h/v1/gateway/#

# Revoked devices (`ds4h-gateway pki revoke`): denied everything. Once the broker has reloaded this file
# (SIGHUP), a revoked device that is still connected receives nothing and its next publish gets
# "not authorized", upon which Mosquitto closes the connection.
${revoked}
"""

_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_HOST_RE = re.compile(r"[A-Za-z0-9.-]{1,253}")


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """What :func:`write_mosquitto_config` wrote."""

    out_dir: Path
    conf: Path
    acl: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    crl: Path
    issued_server_cert: bool
    """True when the broker certificate did not exist and was issued (default hosts) on the way."""
    key_owner: str | None
    """The user server.key was given to (run as root: the broker's ``user``), None if left as is."""


def _config_path(path: Path, what: str) -> str:
    text = str(path)
    if not path.is_absolute() or any(c.isspace() for c in text):
        raise PkiError(f"{what} {text!r}: use an absolute path without spaces (the broker config needs one)")
    return text


def _check_port(port: int) -> int:
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise PkiError(f"port {port!r} is not a TCP port (1 … 65535)")
    return port


def _check_bind(bind: str) -> str:
    try:
        ipaddress.ip_address(bind)
    except ValueError:
        if not _HOST_RE.fullmatch(bind):
            raise PkiError(f"bind address {bind!r} is neither an IP address nor a host name") from None
    return bind


def render_mosquitto_conf(
    *,
    config_dir: Path,
    port: int = DEFAULT_PORT,
    bind: str = DEFAULT_BIND,
    persistence_dir: Path = DEFAULT_PERSISTENCE_DIR,
    user: str = DEFAULT_USER,
) -> str:
    """The mosquitto.conf for files (ca.crt, server.crt, server.key, acl) in ``config_dir``."""
    if not _USER_RE.fullmatch(user):
        raise PkiError(f"user {user!r} is not a valid system user name")
    d = _config_path(config_dir, "config directory")
    return string.Template(MOSQUITTO_CONF_TEMPLATE).substitute(
        user=user,
        acl_file=f"{d}/{ACL_NAME}",
        persistence_dir=_config_path(persistence_dir, "persistence directory").rstrip("/"),
        port=_check_port(port),
        bind=_check_bind(bind),
        cafile=f"{d}/ca.crt",
        certfile=f"{d}/server.crt",
        keyfile=f"{d}/server.key",
        crlfile=f"{d}/{CRL_NAME}",
        pid_file=f"{d}/{PID_NAME}",
    )


def render_acl(gateway_name: str = DEFAULT_GATEWAY_NAME, revoked: Iterable[str] = ()) -> str:
    """The ACL; ``revoked`` device ids get a ``topic deny #`` section each."""
    sections = [f"user {check_device_id(d)}\ntopic deny #\n" for d in sorted(set(revoked))]
    return string.Template(ACL_TEMPLATE).substitute(
        gateway_name=check_gateway_name(gateway_name), revoked="\n".join(sections) or "# (none)\n"
    )


def _key_owner(user: str) -> tuple[tuple[int, int] | None, str | None]:
    """Mosquitto 2.0 started as root reads its key file *after* dropping privileges to ``user``:
    as root, hand the copy of server.key to that user (still 0600)."""
    if os.geteuid() != 0:
        return None, None
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PkiError(f"no system user {user!r} to run the broker as: install mosquitto or pass --user") from None
    return (pw.pw_uid, pw.pw_gid), user


def write_mosquitto_config(
    pki: SitePki,
    out_dir: Path,
    *,
    port: int = DEFAULT_PORT,
    bind: str = DEFAULT_BIND,
    gateway_name: str = DEFAULT_GATEWAY_NAME,
    persistence_dir: Path = DEFAULT_PERSISTENCE_DIR,
    user: str = DEFAULT_USER,
) -> BrokerFiles:
    """Write ``out_dir``/mosquitto.conf and acl, and copy ca.crt, server.crt, server.key (0600) there.

    Issues the broker certificate (for 127.0.0.1 and localhost) if there is none yet. Run as root, the
    copy of server.key is owned by ``user`` (the broker reads it after dropping privileges).
    """
    out_dir = Path(out_dir).absolute()
    conf = render_mosquitto_conf(config_dir=out_dir, port=port, bind=bind, persistence_dir=persistence_dir, user=user)
    acl = render_acl(gateway_name, pki.revoked_devices())
    owner, key_owner = _key_owner(user)
    pki.load_ca()  # fails early, with the "run pki init" message, when there is no CA
    issued = False
    if not (pki.server_cert.exists() and pki.server_key.exists()):
        pki.issue_server()
        issued = True
    try:
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as e:
        raise PkiError(f"{out_dir}: cannot create directory: {e.strerror}") from e
    files = BrokerFiles(
        out_dir=out_dir,
        conf=out_dir / CONF_NAME,
        acl=out_dir / ACL_NAME,
        ca_cert=copy_file(pki.ca_cert, out_dir / "ca.crt", 0o644),
        server_cert=copy_file(pki.server_cert, out_dir / "server.crt", 0o644),
        server_key=copy_file(pki.server_key, out_dir / "server.key", 0o600, owner),
        crl=copy_file(pki.ensure_crl(), out_dir / CRL_NAME, 0o644),
        issued_server_cert=issued,
        key_owner=key_owner,
    )
    atomic_write(files.acl, acl.encode(), 0o644)
    atomic_write(files.conf, conf.encode(), 0o644)
    _remember(pki, out_dir, gateway_name)
    return files


# --- keeping brokers in step with revocations ------------------------------------------------------
def _brokers(pki: SitePki) -> dict[str, str]:
    """Broker config directory → the gateway name its ACL was written for."""
    try:
        doc = json.loads((pki.root / BROKERS_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise PkiError(f"{pki.root / BROKERS_NAME}: unreadable ({e})") from e
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


def _remember(pki: SitePki, out_dir: Path, gateway_name: str) -> None:
    brokers = _brokers(pki)
    brokers[str(out_dir)] = gateway_name
    atomic_write(pki.root / BROKERS_NAME, json.dumps(brokers, indent=1).encode(), 0o600)


@dataclass(frozen=True, slots=True)
class BrokerUpdate:
    config_dir: Path
    reloaded_pid: int | None
    """The broker process sent SIGHUP, None when none was found running (then reload it yourself)."""


def update_brokers(pki: SitePki, *, reload: bool = True) -> list[BrokerUpdate]:
    """Copy the CRL and re-render the ACL (revoked devices denied) into every broker directory
    ``mosquitto-config`` wrote, then send each running broker SIGHUP (Mosquitto re-reads both)."""
    revoked = pki.revoked_devices()
    out = []
    for d, gateway_name in sorted(_brokers(pki).items()):
        config_dir = Path(d)
        if not (config_dir / CONF_NAME).exists():
            continue
        copy_file(pki.ensure_crl(), config_dir / CRL_NAME, 0o644)
        atomic_write(config_dir / ACL_NAME, render_acl(gateway_name, revoked).encode(), 0o644)
        out.append(BrokerUpdate(config_dir, _sighup(config_dir / PID_NAME) if reload else None))
    return out


def _sighup(pid_file: Path) -> int | None:
    """SIGHUP to the mosquitto whose pid ``pid_file`` holds; None if it is not running or not ours to signal."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    with contextlib.suppress(OSError):
        if b"mosquitto" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None  # a stale pid file: the number now belongs to another process
    try:
        os.kill(pid, signal.SIGHUP)
    except (ProcessLookupError, PermissionError):  # gone, or not ours to signal: the caller says to reload
        return None
    return pid


def write_templates(out_dir: Path) -> list[Path]:
    """Write the two templates verbatim (how deploy/mosquitto/ is kept in step with this module)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / CONF_NAME, out_dir / ACL_NAME]
    for path, text in zip(paths, (MOSQUITTO_CONF_TEMPLATE, ACL_TEMPLATE), strict=True):
        path.write_text(text, encoding="utf-8")
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m gateway.pki.mosquitto DIR   (writes the templates, e.g. into deploy/mosquitto)")
    for p in write_templates(Path(sys.argv[1])):
        print(p)

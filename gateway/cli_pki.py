"""``ds4h-gateway pki …``: the site CA, device / gateway / broker certificates and the broker config.

Prints paths, never key material. Errors are :class:`gateway.pki.PkiError` (exit status 2).
"""

from __future__ import annotations

import argparse
import os
import pwd
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli import _state_args, _state_dir
from gateway.pki import (
    DEFAULT_BIND,
    DEFAULT_GATEWAY_NAME,
    DEFAULT_PERSISTENCE_DIR,
    DEFAULT_PORT,
    DEFAULT_SERVER_HOSTS,
    DEFAULT_SITE_NAME,
    DEFAULT_USER,
    LEAF_DAYS,
    PkiError,
)

if TYPE_CHECKING:  # the commands import their modules when they run: `--help` stays fast
    from gateway.pki.ca import Issued


# --- device enrolment ----------------------------------------------------------------------------
def register_mqtt_device(
    state_dir: Path,
    device_id: str,
    kind: str | None,
    *,
    public_key: str | None = None,
    require_signature: bool | None = None,
) -> str:
    """Make ``device_id`` known to the registry with identity ``mqtt_cn = device_id``; says what it did.

    A new device needs ``kind``; a registered one gets the identity added (its kind is kept).
    ``public_key`` (did:key) and ``require_signature`` are registered when given. A revoked device
    loses its revoked mark (it gets a new certificate) but stays disabled until `devices enable`.
    """
    from gateway.devices import DeviceRegistry
    from gateway.errors import RegistryError

    reg = DeviceRegistry.open(state_dir)
    try:
        owner = reg.resolve("mqtt_cn", device_id)
        if owner is not None and owner.id != device_id:
            raise PkiError(f"mqtt_cn {device_id!r} already identifies device {owner.id!r} in the registry")
        device = reg.get(device_id)
        try:
            if device is None:
                if not kind:
                    raise PkiError(f"device {device_id} is not registered yet: give its --kind (e.g. ecg_patch)")
                reg.add(
                    device_id,
                    kind,
                    identities={"mqtt_cn": device_id},
                    public_key=public_key,
                    require_signature=bool(require_signature),
                )
                note = f"registered {device_id} (kind {kind}) with mqtt_cn={device_id}"
            elif owner is not None:
                note = f"{device_id} (kind {device.kind}) is registered with mqtt_cn={device_id}"
            else:
                reg.add_identity(device_id, "mqtt_cn", device_id)
                note = f"added mqtt_cn={device_id} to registered device {device_id} (kind {device.kind})"
            if device is not None and (public_key is not None or require_signature is not None):
                reg.set_signing(device_id, public_key=public_key, require_signature=require_signature)
            if device is not None and device.revoked:
                reg.unrevoke(device_id)
                note += "; it was revoked: enable it with `ds4h-gateway devices enable` once re-provisioned"
        except RegistryError as e:
            raise PkiError(str(e)) from e
        d = reg.get(device_id)
        if d is not None and d.public_key:
            note += f"; signing key {d.public_key}"
        if d is not None and d.require_signature:
            note += "; unsigned frames refused"
        return note
    finally:
        reg.close()


def enroll_device(
    state_dir: Path,
    device_id: str,
    kind: str | None = None,
    days: int = LEAF_DAYS,
    *,
    signing_key: bool = False,
    require_signature: bool | None = None,
) -> tuple[Issued, str]:
    """Issue a device certificate (CN = device id) and register the device; (issued, registry note).

    ``signing_key``: also generate the device's Ed25519 payload-signing key
    (``devices/<id>.signing.key``, 0600) and register its did:key.
    """
    from gateway.model import check_device_id
    from gateway.pki.ca import SitePki

    check_device_id(device_id)
    pki = SitePki(state_dir)
    pki.load_ca()  # no registry change when there is no CA
    did = None
    if signing_key:
        _, did, _ = pki.issue_signing_key(device_id)
    was_revoked = device_id in pki.revoked_devices()
    issued = pki.issue_device(device_id, days)
    note = register_mqtt_device(state_dir, device_id, kind, public_key=did, require_signature=require_signature)
    if was_revoked:  # its new certificate is not in the CRL: the brokers' ACL must stop denying it
        from gateway.pki.mosquitto import update_brokers

        update_brokers(pki)
    return issued, note


# --- commands ------------------------------------------------------------------------------------
def _show(issued: Issued, what: str) -> None:
    print(f"{what} {'re-issued' if issued.replaced else 'issued'} for {issued.common_name}")
    print(f"  certificate  {issued.cert}")
    print(f"  key (0600)   {issued.key}")
    print(f"  valid until  {issued.not_after:%Y-%m-%d %H:%M}Z")


def cmd_pki_init(args: argparse.Namespace) -> int:
    from gateway.pki.ca import SitePki
    from gateway.state.files import ensure_state_dir

    pki = SitePki(ensure_state_dir(_state_dir(args)))
    issued = pki.init_ca(args.name, force=args.force)
    _show(issued, "site CA")
    if issued.replaced:
        print("the previous CA was replaced: re-issue the broker, gateway and device certificates")
    return 0


def cmd_pki_issue_device(args: argparse.Namespace) -> int:
    from gateway.pki.ca import SitePki

    state_dir = _state_dir(args)
    issued, note = enroll_device(
        state_dir,
        args.device_id,
        args.kind,
        args.days,
        signing_key=args.signing_key,
        require_signature=args.require_signature,
    )
    pki = SitePki(state_dir)
    _show(issued, "device certificate")
    print(f"  CA           {pki.ca_cert}")
    signing = pki.signing_key_file(args.device_id)
    if args.signing_key:
        print(f"  signing key  {signing} (0600, Ed25519)")
    print(f"registry: {note}")
    if args.out is not None:
        copied = pki.copy_out(issued, args.out, [signing] if args.signing_key else [])
        print(f"copied for provisioning: {' '.join(str(p) for p in copied)}")
    return 0


def cmd_pki_revoke(args: argparse.Namespace) -> int:
    from gateway.devices import DeviceRegistry
    from gateway.errors import RegistryError
    from gateway.pki.ca import SitePki
    from gateway.pki.kick import disconnect_revoked, probe_certificate
    from gateway.pki.mosquitto import update_brokers

    state_dir = _state_dir(args)
    pki = SitePki(state_dir)
    serial, already = pki.revoke_device(args.device_id)
    kick = not (args.no_reload or args.no_kick)
    probe = probe_certificate(pki, args.device_id) if kick else None
    print(f"certificate of {args.device_id} (serial {serial:x}) {'was already' if already else 'is now'} in {pki.crl}")
    reg = DeviceRegistry.open(state_dir)
    try:
        reg.revoke(args.device_id, args.note or "certificate revoked")
    except RegistryError as e:
        print(f"registry: {e}")
    else:
        print(f"registry: {args.device_id} disabled: its frames are quarantined (revoked) from now on")
    finally:
        reg.close()
    updates = update_brokers(pki, reload=not args.no_reload)
    for u in updates:
        how = (
            f"sent SIGHUP to pid {u.reloaded_pid}"
            if u.reloaded_pid
            else "reload the broker (systemctl reload mosquitto)"
        )
        print(f"broker {u.config_dir}: crl.pem and acl updated; {how}")
    if not updates:
        print(f"no broker directory known: copy {pki.crl} where the broker's crlfile points and reload it")
    rc = 0
    for k in disconnect_revoked(pki, args.device_id, updates, probe) if probe is not None else []:
        if k.kicked:
            print(f"broker {k.address}: {args.device_id} cannot connect any more; its {k.detail}")
        else:
            rc = 1
            print(
                f"broker {k.address}: could not close {args.device_id}'s connection ({k.detail}); it can neither "
                "read nor write, and is disconnected at its next publish: restart the broker "
                "(systemctl restart mosquitto) to close it now"
            )
    return rc


def cmd_pki_issue_gateway(args: argparse.Namespace) -> int:
    from gateway.pki.ca import SitePki

    pki = SitePki(_state_dir(args))
    _show(pki.issue_gateway(args.name, args.days), "gateway client certificate")
    return 0


def cmd_pki_issue_server(args: argparse.Namespace) -> int:
    from gateway.pki.ca import SitePki

    pki = SitePki(_state_dir(args))
    _show(pki.issue_server(args.host or list(DEFAULT_SERVER_HOSTS), args.days), "broker certificate")
    return 0


def cmd_pki_mosquitto_config(args: argparse.Namespace) -> int:
    from gateway.pki.ca import SitePki
    from gateway.pki.mosquitto import write_mosquitto_config

    files = write_mosquitto_config(
        SitePki(_state_dir(args)),
        args.out,
        port=args.port,
        bind=args.bind,
        gateway_name=args.gateway_name,
        persistence_dir=args.persistence_dir,
        user=args.user,
    )
    if files.issued_server_cert:
        print(f"issued a broker certificate for {', '.join(DEFAULT_SERVER_HOSTS)} (use `pki issue-server` for others)")
    print(f"broker configuration in {files.out_dir}")
    for p in (files.conf, files.acl, files.ca_cert, files.server_cert, files.crl):
        print(f"  {p}")
    print(f"  {files.server_key} (0600)")
    print(f"run: mosquitto -c {files.conf}")
    if files.key_owner is not None:
        print(f"server.key belongs to {files.key_owner!r}: the broker reads it after dropping privileges")
    elif args.user != pwd.getpwuid(os.geteuid()).pw_name:
        print(f"note: a broker started as root runs as {args.user!r}, which must be able to read {files.server_key}")
    return 0


# --- parser --------------------------------------------------------------------------------------
def add_pki_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pki`` and its subcommands on the top-level subparsers of ``ds4h-gateway``."""
    pki = sub.add_parser(
        "pki",
        help="site CA and certificates for MQTT devices",
        description="The site PKI for 5G/MQTT devices: CA, certificates (mutual TLS) and the Mosquitto config. "
        "Files live in <state_dir>/pki/; keys are written 0600 and never printed.",
    )
    pki_sub = pki.add_subparsers(dest="pki_cmd", required=True, metavar="SUBCOMMAND")

    init = pki_sub.add_parser("init", help="create the site CA", description="Create the site CA (10 years).")
    _state_args(init)
    init.add_argument(
        "--name", default=DEFAULT_SITE_NAME, help=f"site name in the CA's subject ({DEFAULT_SITE_NAME!r})"
    )
    init.add_argument("--force", action="store_true", help="replace an existing CA (invalidates what it issued)")
    init.set_defaults(func=cmd_pki_init)

    days_help = f"validity in days (default {LEAF_DAYS}; never beyond the CA's)"

    dev = pki_sub.add_parser(
        "issue-device",
        help="issue a device certificate and register the device",
        description="Issue a client certificate with CN = the device id and register the device "
        "(identity mqtt_cn). Prints paths only.",
    )
    _state_args(dev)
    dev.add_argument("device_id", metavar="DEVICE_ID", help="canonical device id: lowercase [a-z0-9][a-z0-9-]{0,63}")
    dev.add_argument("--kind", help="device kind, needed when the device is not registered yet (e.g. ecg_patch)")
    dev.add_argument("--days", type=int, default=LEAF_DAYS, help=days_help)
    dev.add_argument("--out", type=Path, help="also copy the certificate, key (0600) and ca.crt to this directory")
    dev.add_argument(
        "--signing-key",
        action="store_true",
        help="also generate the device's Ed25519 payload-signing key (devices/<id>.signing.key, 0600) and "
        "register its did:key",
    )
    dev.add_argument(
        "--require-signature",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="refuse the device's unsigned MQTT frames (signature_missing); default: leave as registered",
    )
    dev.set_defaults(func=cmd_pki_issue_device)

    rv = pki_sub.add_parser(
        "revoke",
        help="revoke a device certificate and disable the device",
        description="Add the device's certificate to the CRL (signed by the site CA), disable the device in "
        "the registry, update crl.pem and the ACL in every broker directory `mosquitto-config` wrote, and "
        "send the running broker SIGHUP: the device can no longer connect. A connection it still holds is "
        "closed at once by taking its session over with a short-lived certificate (revoked right after). "
        "Exit status 1 when that failed (restart the broker then).",
    )
    _state_args(rv)
    rv.add_argument("device_id", metavar="DEVICE_ID")
    rv.add_argument("--note", help="why (shown in `devices list`)")
    rv.add_argument("--no-reload", action="store_true", help="do not signal the broker (implies --no-kick)")
    rv.add_argument(
        "--no-kick",
        action="store_true",
        help="do not close a live connection (the ACL still disconnects the device at its next publish)",
    )
    rv.set_defaults(func=cmd_pki_revoke)

    gw = pki_sub.add_parser(
        "issue-gateway",
        help="issue the gateway's MQTT client certificate",
        description="Issue the gateway's client certificate, CN = ds4h-gateway:NAME.",
    )
    _state_args(gw)
    gw.add_argument("--name", default=DEFAULT_GATEWAY_NAME, help=f"gateway name (default {DEFAULT_GATEWAY_NAME!r})")
    gw.add_argument("--days", type=int, default=LEAF_DAYS, help=days_help)
    gw.set_defaults(func=cmd_pki_issue_gateway)

    srv = pki_sub.add_parser(
        "issue-server",
        help="issue the broker's server certificate",
        description="Issue the MQTT broker's server certificate for the given host names / IP addresses.",
    )
    _state_args(srv)
    srv.add_argument(
        "--host",
        action="append",
        help=f"DNS name or IP address the devices connect to; repeatable (default {', '.join(DEFAULT_SERVER_HOSTS)})",
    )
    srv.add_argument("--days", type=int, default=LEAF_DAYS, help=days_help)
    srv.set_defaults(func=cmd_pki_issue_server)

    mc = pki_sub.add_parser(
        "mosquitto-config",
        help="write the Mosquitto config, ACL and TLS files",
        description="Write DIR/mosquitto.conf and DIR/acl and copy ca.crt, server.crt, server.key (0600) "
        "into DIR, issuing the broker certificate if there is none.",
    )
    _state_args(mc)
    mc.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write")
    mc.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TLS listener port (default {DEFAULT_PORT})")
    mc.add_argument(
        "--bind", default=DEFAULT_BIND, metavar="ADDRESS", help=f"listener address (default {DEFAULT_BIND})"
    )
    mc.add_argument(
        "--gateway-name", default=DEFAULT_GATEWAY_NAME, metavar="NAME", help="the gateway certificate's NAME"
    )
    mc.add_argument(
        "--persistence-dir",
        type=Path,
        default=DEFAULT_PERSISTENCE_DIR,
        metavar="DIR",
        help=f"broker database directory (default {DEFAULT_PERSISTENCE_DIR})",
    )
    mc.add_argument("--user", default=DEFAULT_USER, help=f"user the broker runs as (default {DEFAULT_USER})")
    mc.set_defaults(func=cmd_pki_mosquitto_config)

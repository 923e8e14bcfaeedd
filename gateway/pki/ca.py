"""The site CA and the certificates it issues: devices, the gateway (MQTT clients) and the broker.

Keys are ECDSA P-256 (what embedded TLS stacks such as mbedTLS and wolfSSL support), signatures
ECDSA-SHA256, certificates X.509 v3. Files under ``<state_dir>/pki/``:

    ca.key  ca.crt                    the site CA (10 years)
    server.key  server.crt            the MQTT broker (serverAuth, SAN = its host names / addresses)
    gateway.key  gateway.crt          the gateway's MQTT client certificate (CN ``ds4h-gateway:NAME``)
    devices/<device_id>.key  .crt     one per device (CN = the canonical device id)
    devices/<device_id>.signing.key   the device's Ed25519 payload-signing key (``--signing-key``)
    crl.pem                           the CRL of revoked device certificates (``pki revoke``)

Keys are unencrypted PKCS#8 PEM written atomically with mode 0600 (a private temporary file renamed
into place), never printed and never logged. Certificates are 0644.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.errors import GatewayError
from gateway.model import check_device_id
from gateway.pki import (
    CA_DAYS,
    DEFAULT_GATEWAY_NAME,
    DEFAULT_SERVER_HOSTS,
    DEFAULT_SITE_NAME,
    GATEWAY_CN_PREFIX,
    LEAF_DAYS,
    MAX_LEAF_DAYS,
    PkiError,
)
from gateway.state.files import read_secret

BACKDATE = dt.timedelta(hours=1)
"""Certificates are valid from an hour before issue: tolerates a device clock that is a little behind."""

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_SITE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,54}")
_DNS_RE = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its key as written to disk."""

    cert: Path
    key: Path
    common_name: str
    not_after: dt.datetime
    replaced: bool
    """True when an earlier certificate/key pair at the same paths was overwritten."""


def check_gateway_name(name: str) -> str:
    """Return ``name`` if usable as the gateway's name (same rule as device ids), else raise."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise PkiError(f"gateway name {name!r} is not valid: lowercase [a-z0-9][a-z0-9-]{{0,63}}")
    return name


def gateway_common_name(name: str = DEFAULT_GATEWAY_NAME) -> str:
    """``ds4h-gateway:NAME``: the colon means it can never equal a (canonical) device id."""
    return GATEWAY_CN_PREFIX + check_gateway_name(name)


def check_site_name(name: str) -> str:
    if not isinstance(name, str) or not _SITE_RE.fullmatch(name):
        raise PkiError(f"site name {name!r} is not valid: letters, digits, space . _ - (at most 55 characters)")
    return name


def parse_host(host: str) -> x509.GeneralName:
    """A broker host name or IP address as a subjectAltName entry."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    if not _DNS_RE.fullmatch(name):
        raise PkiError(f"host {host!r} is neither an IP address nor a DNS name")
    return x509.DNSName(name)


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise PkiError(f"{path}: not a readable PEM certificate ({e})") from e


def common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def _site_org(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(attrs[0].value) if attrs else None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _mkdir(path: Path, mode: int) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
    except OSError as e:
        raise PkiError(f"{path}: cannot create directory: {e.strerror}") from e


def atomic_write(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None = None) -> None:
    """Write ``path`` through a private temporary file (created 0600) that gets ``mode`` (and ``owner``,
    a (uid, gid) pair) before it is renamed into place.

    A reader sees the old file or the whole new one; a key is never readable by others, even briefly.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise PkiError(f"{path}: cannot write: {e.strerror}") from e
    try:
        try:
            os.fchmod(fd, mode)
            if owner is not None:
                os.fchown(fd, *owner)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise PkiError(f"{path}: cannot write: {e.strerror}") from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def copy_file(src: Path, dst: Path, mode: int, owner: tuple[int, int] | None = None) -> Path:
    """Copy ``src`` to ``dst`` atomically with ``mode`` (keys: read with the 0600 check, written 0600)."""
    try:
        data = read_secret(src) if mode & 0o077 == 0 else src.read_bytes()
    except FileNotFoundError as e:
        raise PkiError(f"{src} does not exist") from e
    except (OSError, GatewayError) as e:
        raise PkiError(f"{src}: cannot read: {e}") from e
    atomic_write(dst, data, mode, owner)
    return dst


@dataclass(frozen=True, slots=True)
class Transient:
    """A certificate and key held in memory only (PEM)."""

    key_pem: bytes
    cert_pem: bytes
    serial: int


def _leaf(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    cn: str,
    san: Iterable[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    lifetime: dt.timedelta,
    backdate: dt.timedelta = BACKDATE,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new P-256 key and a leaf certificate for it signed by the CA, valid for ``lifetime``."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    # a certificate never outlives its CA
    not_after = min(now + lifetime, ca_cert.not_valid_after_utc)
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    org = _site_org(ca_cert)
    if org:
        subject.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - backdate)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


class SitePki:
    """The PKI files of one gateway state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / "pki"
        self.ca_key = self.root / "ca.key"
        self.ca_cert = self.root / "ca.crt"
        self.server_key = self.root / "server.key"
        self.server_cert = self.root / "server.crt"
        self.gateway_key = self.root / "gateway.key"
        self.gateway_cert = self.root / "gateway.crt"
        self.devices_dir = self.root / "devices"
        self.crl = self.root / "crl.pem"

    def __repr__(self) -> str:
        return f"SitePki({str(self.root)!r})"

    def device_files(self, device_id: str) -> tuple[Path, Path]:
        """(certificate, key) paths of a device."""
        check_device_id(device_id)
        return self.devices_dir / f"{device_id}.crt", self.devices_dir / f"{device_id}.key"

    def signing_key_file(self, device_id: str) -> Path:
        """Where a device's Ed25519 payload-signing key is kept (next to its certificate)."""
        check_device_id(device_id)
        return self.devices_dir / f"{device_id}.signing.key"

    def issue_signing_key(self, device_id: str) -> tuple[Path, str, bool]:
        """A new Ed25519 key pair for a device's payload signatures: (key path, did:key, replaced)."""
        from gateway.provenance.didkey import did_key_from_public

        path = self.signing_key_file(device_id)
        _mkdir(self.devices_dir, 0o700)
        key = ed25519.Ed25519PrivateKey.generate()
        replaced = path.exists()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        atomic_write(path, pem, 0o600)
        return path, did_key_from_public(key.public_key().public_bytes_raw()), replaced

    def has_ca(self) -> bool:
        return self.ca_cert.exists() or self.ca_key.exists()

    # --- the CA --------------------------------------------------------------------------------
    def init_ca(self, name: str = DEFAULT_SITE_NAME, *, force: bool = False) -> Issued:
        """Create the site CA; refuses to replace an existing one unless ``force``."""
        check_site_name(name)
        replaced = self.has_ca()
        if replaced and not force:
            raise PkiError(
                f"a site CA already exists in {self.root}; `ds4h-gateway pki init --force` replaces it, "
                "and every certificate it issued (devices, gateway, broker) stops working"
            )
        _mkdir(self.root, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{name} MQTT CA"),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        not_after = now + dt.timedelta(days=CA_DAYS)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        atomic_write(self.ca_key, _key_pem(key), 0o600)
        atomic_write(self.ca_cert, _cert_pem(cert), 0o644)
        return Issued(self.ca_cert, self.ca_key, common_name(cert), cert.not_valid_after_utc, replaced)

    def load_ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """The CA key and certificate; raises :class:`PkiError` when there is none or it is unusable."""
        try:
            cert = load_certificate(self.ca_cert)
            pem = read_secret(self.ca_key)
        except FileNotFoundError as e:
            raise PkiError(f"no site CA in {self.root}: run `ds4h-gateway pki init` first") from e
        except GatewayError as e:
            raise PkiError(str(e)) from e
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as e:
            raise PkiError(f"{self.ca_key}: not an unencrypted PEM private key") from e
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{self.ca_key}: not an ECDSA key")
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
            raise PkiError(f"{self.ca_key} does not belong to {self.ca_cert}")
        if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC):
            raise PkiError(f"the site CA expired on {cert.not_valid_after_utc:%Y-%m-%d}; run `pki init --force`")
        return key, cert

    # --- leaves --------------------------------------------------------------------------------
    def issue_device(self, device_id: str, days: int = LEAF_DAYS) -> Issued:
        """A device's client certificate: CN = the canonical device id, SAN ``urn:ds4h:device:<id>``."""
        cert_path, key_path = self.device_files(device_id)
        ca = self.load_ca()
        _mkdir(self.devices_dir, 0o700)
        return self._issue(
            ca,
            cert_path,
            key_path,
            device_id,
            [x509.UniformResourceIdentifier(f"urn:ds4h:device:{device_id}")],
            ExtendedKeyUsageOID.CLIENT_AUTH,
            days,
        )

    def issue_gateway(self, name: str = DEFAULT_GATEWAY_NAME, days: int = LEAF_DAYS) -> Issued:
        """The gateway's client certificate: CN ``ds4h-gateway:NAME``, SAN ``urn:ds4h:gateway:NAME``."""
        cn = gateway_common_name(name)
        ca = self.load_ca()
        return self._issue(
            ca,
            self.gateway_cert,
            self.gateway_key,
            cn,
            [x509.UniformResourceIdentifier(f"urn:ds4h:gateway:{name}")],
            ExtendedKeyUsageOID.CLIENT_AUTH,
            days,
        )

    def issue_server(self, hosts: Sequence[str] = DEFAULT_SERVER_HOSTS, days: int = LEAF_DAYS) -> Issued:
        """The broker's server certificate: SAN = DNS names / IP addresses of ``hosts``, CN = the first."""
        if not hosts:
            raise PkiError("the broker certificate needs at least one host name or address")
        names = list(dict.fromkeys(parse_host(h) for h in hosts))
        ca = self.load_ca()
        return self._issue(
            ca,
            self.server_cert,
            self.server_key,
            str(names[0].value)[:64],
            names,
            ExtendedKeyUsageOID.SERVER_AUTH,
            days,
        )

    def _issue(
        self,
        ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
        cert_path: Path,
        key_path: Path,
        cn: str,
        san: Iterable[x509.GeneralName],
        usage: x509.ObjectIdentifier,
        days: int,
    ) -> Issued:
        if not isinstance(days, int) or not 1 <= days <= MAX_LEAF_DAYS:
            raise PkiError(f"validity {days!r} days: use 1 … {MAX_LEAF_DAYS}")
        key, cert = _leaf(ca, cn, san, usage, dt.timedelta(days=days))
        replaced = cert_path.exists() or key_path.exists()
        atomic_write(key_path, _key_pem(key), 0o600)
        atomic_write(cert_path, _cert_pem(cert), 0o644)
        return Issued(cert_path, key_path, cn, cert.not_valid_after_utc, replaced)

    def transient_device_cert(self, device_id: str, lifetime: dt.timedelta) -> Transient:
        """A short-lived client certificate for ``device_id`` that is never written to disk: what
        ``pki revoke`` connects with to take over (and so close) a revoked device's connection."""
        key, cert = _leaf(
            self.load_ca(),
            device_id,
            [x509.UniformResourceIdentifier(f"urn:ds4h:device:{device_id}")],
            ExtendedKeyUsageOID.CLIENT_AUTH,
            lifetime,
            backdate=dt.timedelta(minutes=1),
        )
        return Transient(_key_pem(key), _cert_pem(cert), cert.serial_number)

    # --- revocation ------------------------------------------------------------------------------
    def revoked_serials(self) -> dict[int, dt.datetime]:
        """Serial numbers in the CRL and their revocation dates (empty without a CRL)."""
        try:
            crl = x509.load_pem_x509_crl(self.crl.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise PkiError(f"{self.crl}: not a readable PEM CRL ({e})") from e
        return {r.serial_number: r.revocation_date_utc for r in crl}

    def write_crl(self, add: Iterable[int] = ()) -> Path:
        """(Re)sign the CRL with ``add`` revoked too. Valid until the CA expires: an expired CRL makes
        the broker refuse every client, so it must never lapse while the CA is in use."""
        ca_key, ca_cert = self.load_ca()
        entries = self.revoked_serials()
        now = dt.datetime.now(dt.UTC)
        for serial in add:
            entries.setdefault(serial, now)
        number = 1
        with contextlib.suppress(FileNotFoundError, ValueError, x509.ExtensionNotFound):
            old = x509.load_pem_x509_crl(self.crl.read_bytes())
            number = old.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - BACKDATE)
            .next_update(ca_cert.not_valid_after_utc)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        )
        for serial, when in sorted(entries.items()):
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        atomic_write(self.crl, b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), 0o644)
        return self.crl

    def ensure_crl(self) -> Path:
        if not self.crl.exists():
            self.write_crl()
        return self.crl

    def revoke_device(self, device_id: str) -> tuple[int, bool]:
        """Put the device's current certificate in the CRL: (its serial, whether it was already there)."""
        cert_path, _ = self.device_files(device_id)
        try:
            serial = load_certificate(cert_path).serial_number
        except FileNotFoundError as e:
            raise PkiError(f"device {device_id} has no certificate in {self.devices_dir}") from e
        already = serial in self.revoked_serials()
        self.write_crl([serial])
        return serial, already

    def revoked_devices(self) -> list[str]:
        """Devices whose current certificate is in the CRL (what the broker's ACL denies everything)."""
        revoked = self.revoked_serials()
        if not revoked or not self.devices_dir.exists():
            return []
        out = []
        for cert_path in sorted(self.devices_dir.glob("*.crt")):
            with contextlib.suppress(PkiError, OSError):
                if load_certificate(cert_path).serial_number in revoked:
                    out.append(cert_path.stem)
        return out

    # --- provisioning ----------------------------------------------------------------------------
    def copy_out(self, issued: Issued, out_dir: Path, extra: Iterable[Path] = ()) -> list[Path]:
        """Copy a certificate, its key (0600), ``ca.crt`` and ``extra`` keys (0600) into ``out_dir``."""
        _mkdir(out_dir, 0o700)
        return [
            copy_file(issued.cert, out_dir / issued.cert.name, 0o644),
            copy_file(issued.key, out_dir / issued.key.name, 0o600),
            copy_file(self.ca_cert, out_dir / self.ca_cert.name, 0o644),
            *(copy_file(p, out_dir / p.name, 0o600) for p in extra),
        ]

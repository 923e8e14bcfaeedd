"""The site PKI for 5G/MQTT devices: a site CA, device / gateway / broker certificates, broker config.

Everything lives under ``<state_dir>/pki/`` (see :class:`gateway.pki.ca.SitePki`); ``ds4h-gateway pki …``
drives it and docs/pki.md describes the files and the procedures.
"""

from __future__ import annotations

from pathlib import Path

from gateway.errors import GatewayError

# Defaults, here so that the CLI can show them without importing cryptography.
CA_DAYS = 3650
"""Validity of the site CA (10 years)."""
LEAF_DAYS = 825
"""Default validity of device, gateway and broker certificates (about 27 months)."""
MAX_LEAF_DAYS = 3650
DEFAULT_SITE_NAME = "ds4h site"
GATEWAY_CN_PREFIX = "ds4h-gateway:"
DEFAULT_GATEWAY_NAME = "gateway"
DEFAULT_SERVER_HOSTS = ("127.0.0.1", "localhost")

DEFAULT_PORT = 8883
DEFAULT_BIND = "127.0.0.1"
DEFAULT_PERSISTENCE_DIR = Path("/var/lib/mosquitto")
"""Where the Debian package keeps the broker's database (owned by the ``mosquitto`` user)."""
DEFAULT_USER = "mosquitto"


class PkiError(GatewayError):
    """A PKI operation was refused or failed (no CA yet, CA exists, bad name, unreadable file …)."""


__all__ = [
    "CA_DAYS",
    "DEFAULT_BIND",
    "DEFAULT_GATEWAY_NAME",
    "DEFAULT_PERSISTENCE_DIR",
    "DEFAULT_PORT",
    "DEFAULT_SERVER_HOSTS",
    "DEFAULT_SITE_NAME",
    "DEFAULT_USER",
    "GATEWAY_CN_PREFIX",
    "LEAF_DAYS",
    "MAX_LEAF_DAYS",
    "PkiError",
]

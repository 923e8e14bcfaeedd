"""From the ``[dataspace]`` config to what the provisioner needs: the offer, the connector URL and API key."""

from __future__ import annotations

from pathlib import Path

from gateway.config import Config
from gateway.dataspace import DataspaceError
from gateway.dataspace.edc import Offer, default_ids
from gateway.errors import ConfigError, StateError
from gateway.state.files import read_secret

PLACEHOLDER_PUBLIC_URL = "https://gateway.invalid"
"""Used by ``provision --dry-run`` when ``[dataspace] public_url`` is unset (``.invalid`` never resolves)."""


def make_offer(config: Config, gateway_did: str, public_url: str | None = None) -> Offer:
    ds = config.dataspace
    url = public_url or ds.public_url
    if url is None:
        raise DataspaceError(
            "[dataspace] public_url is not set: the connector needs the gateway's public base URL "
            "(e.g. https://gw-ward7.hospital.example) to reach /dataspace/v1/observations"
        )
    ids = default_ids(config.gateway.name)
    for kind, value in (("asset", ds.edc.asset_id), ("policy", ds.edc.policy_id), ("contract", ds.edc.contract_id)):
        if value is not None:
            ids[kind] = value  # type: ignore[index]
    return Offer(
        gateway_name=config.gateway.name,
        gateway_did=gateway_did,
        public_url=url.rstrip("/"),
        vault_secret=ds.edc.vault_secret,
        auth_header=ds.edc.auth_header,
        ids=ids,
    )


def management_url(config: Config) -> str:
    url = config.dataspace.edc.management_url
    if url is None:
        raise DataspaceError(
            "[dataspace.edc] management_url is not set (the connector's Management API, e.g. "
            "https://edc.hospital.example/management)"
        )
    return url


def api_key(config: Config) -> str:
    """The Management API key from ``[dataspace.edc] api_key_file`` (refused when group/other may read it)."""
    path = config.dataspace.edc.api_key_file
    if path is None:
        raise ConfigError("dataspace.edc.api_key_file: not set (a file holding the connector's Management API key)")
    try:
        key = read_secret(Path(path)).decode("utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"dataspace.edc.api_key_file: {path} does not exist") from None
    except StateError as e:
        raise ConfigError(f"dataspace.edc.api_key_file: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"dataspace.edc.api_key_file: {path} is not UTF-8 text") from None
    if not key:
        raise ConfigError(f"dataspace.edc.api_key_file: {path} is empty")
    return key

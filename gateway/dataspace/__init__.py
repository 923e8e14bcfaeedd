"""The dataspace link: EDC provisioning (:mod:`.edc`, :mod:`.client`, :mod:`.provision`) and the gateway
credential (:mod:`.credential`), docs/dataspace.md; patients and consent, pseudonyms, the research path and its
FHIR endpoint (:mod:`.patients`, :mod:`.consent`, :mod:`.pseudonym`, :mod:`.endpoint` …), docs/consent.md.

Errors are :class:`DataspaceError` and its subclasses (all :class:`gateway.errors.GatewayError`).
"""

from __future__ import annotations

from gateway.errors import GatewayError


class DataspaceError(GatewayError):
    """A dataspace operation failed (connector, credential, configuration of the dataspace link)."""


class ConnectorError(DataspaceError):
    """The connector answered with an error the gateway cannot resolve (the message names status and URL)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ConnectorAuthError(ConnectorError):
    """The connector refused the Management API key (401/403)."""


class ConnectorUnreachableError(ConnectorError):
    """The connector could not be reached: connection refused, DNS, TLS, or no answer within the timeout."""


class CredentialError(DataspaceError):
    """A credential (request) is malformed, does not verify, is out of its validity period or names another did."""

"""The one exception tree of the gateway.

Library errors are translated at the boundary with ``raise … from``; callers catch these.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration file or an environment override is invalid (message names key and file)."""


class StateError(GatewayError):
    """The state directory or one of its databases cannot be used."""


class RegistryError(GatewayError):
    """A device registry operation failed (unknown device, duplicate identity …)."""


class PayloadError(GatewayError, ValueError):
    """An input payload is malformed; the message says what and where.

    ``reason`` is the quarantine reason it is counted under (``ds4h_rejected_total{reason=…}``):
    ``malformed`` unless a source classifies more precisely (e.g. ``unknown_name``, ``bad_unit``).
    """

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class DeviceIdError(PayloadError):
    """A device id is not canonical (lowercase ``[a-z0-9][a-z0-9-]{0,63}``)."""


class ProvenanceError(GatewayError):
    """A signature, envelope or hash chain does not verify."""


class OutboxError(GatewayError):
    """The outbox refused or failed an operation."""


class BackpressureError(OutboxError):
    """The outbox is over its disk budget or its queue is full: the source must not be acknowledged."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ShuttingDownError(OutboxError):
    """The gateway is stopping and accepts no new batches."""


class SinkError(GatewayError):
    """A sink write failed. Subclasses classify the failure for the forwarder.

    ``summary`` is what may be logged: the full message can quote the store's answer, which may echo
    the data sent (values, line protocol); that goes only to the encrypted dead letters and the stats."""

    def __init__(self, message: str, *, summary: str | None = None) -> None:
        super().__init__(message)
        self.summary = summary if summary is not None else message


class RetryableSinkError(SinkError):
    """Transient failure (connection refused, 5xx, timeout): retry with backoff."""


class ThrottledSinkError(SinkError):
    """The store asked us to slow down (429/503); wait ``retry_after_s`` before retrying."""

    def __init__(self, message: str, retry_after_s: float, *, summary: str | None = None) -> None:
        super().__init__(message, summary=summary)
        self.retry_after_s = retry_after_s


class TooLargeSinkError(SinkError):
    """The store refused the request as too large (413): split it and retry the halves."""


class RejectedSinkError(SinkError):
    """The store rejected the data itself (4xx): retrying the same bytes cannot succeed."""


class ControlError(GatewayError):
    """Talking to a running gateway's control API failed."""

"""Bonding policy: LE Secure Connections only, full-length keys, and only while an operator has
opened a pairing window on the running gateway (``ds4h-gateway ble pair --window 120``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class PairingPolicy:
    def __init__(
        self,
        *,
        secure_connections_only: bool = True,
        min_key_size: int = 16,
        on_decision: Callable[[str], None] | None = None,
    ) -> None:
        self.secure_connections_only = secure_connections_only
        self._on_decision = on_decision
        self.min_key_size = min_key_size
        self._window_until = 0.0

    def open_window(self, seconds: float) -> float:
        """Allow pairing for ``seconds`` from now; returns the window's end (``time.monotonic``)."""
        self._window_until = time.monotonic() + seconds
        log.warning("BLE pairing window open for %.0f s", seconds)
        return self._window_until

    def close_window(self) -> None:
        self._window_until = 0.0

    def window_open(self) -> bool:
        return time.monotonic() < self._window_until

    def window_remaining_s(self) -> float:
        return max(0.0, self._window_until - time.monotonic())

    def decide(self, *, secure_connections: bool, key_size: int | None = None) -> str | None:
        """None to accept a pairing request, else the reason it is refused (``refused_window``,
        ``refused_legacy``, ``refused_key_size``)."""
        refusal = self._refusal(secure_connections, key_size)
        if self._on_decision is not None:
            self._on_decision(refusal or "accepted")
        if refusal:
            log.warning("BLE pairing request refused: %s", refusal)
        return refusal

    def _refusal(self, secure_connections: bool, key_size: int | None) -> str | None:
        if not self.window_open():
            return "refused_window"
        if self.secure_connections_only and not secure_connections:
            return "refused_legacy"
        if key_size is not None and key_size < self.min_key_size:
            return "refused_key_size"
        return None

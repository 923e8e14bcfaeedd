"""Sentinels that tests plant in patient data, payloads and keys, and the watch on everything logged.

Logging hygiene (docs/security.md): the gateway's logs carry device ids, counts, reasons and paths —
never key material, raw payloads, decoded values or patient identifiers. Tests put the strings below
into such places (tests/test_encryption.py, tests/test_log_hygiene.py); :class:`LogWatch`, installed on
the root logger for the whole test session by tests/conftest.py, checks every record the suite logs
(message, arguments and traceback) and the session fails if one carries a sentinel.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

PATIENT = "SENTINEL-Zq8Xw3-patient-Jane-Roe"
"""A patient identifier / free text planted in payloads."""
VALUE = 1234.5678901234
"""A reading whose decimal text (and float bytes) must appear nowhere in the clear."""
PAYLOAD = "SENTINEL-raw-payload-Kp4Tn7"
"""Planted in raw payloads that are refused (garbage, malformed JSON/CBOR)."""

TEXTS = (PATIENT, str(VALUE), PAYLOAD)


class LogWatch(logging.Handler):
    """Remembers every log record that contains a sentinel text."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.leaks: list[str] = []
        self.records = 0
        self._lock2 = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            text = f"{record.msg!r} {record.args!r}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]!r}"
        with self._lock2:
            self.records += 1
            for s in TEXTS:
                if s in text:
                    self.leaks.append(f"{record.name} {record.levelname}: {text[:300]}")


def scan_files(root: Path, pattern: str = "*.log") -> list[str]:
    """Log files (of gateways the tests ran as processes) under ``root`` that contain a sentinel."""
    out = []
    for f in root.rglob(pattern):
        try:
            data = f.read_text(errors="replace")
        except OSError:
            continue
        out += [f"{f.name}: {s}" for s in TEXTS if s in data]
    return out

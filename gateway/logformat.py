"""Log output of ``ds4h-gateway``: JSON lines for journald and log shippers, or a readable console line.

``[gateway] log_format``: ``json`` writes one object per line — ``time`` (UTC, ISO 8601 with ms), ``level``,
``logger``, ``message``, then the record's structured extras (``log.info("…", extra={"sink": "influx"})``)
and ``exc`` for a traceback; ``console`` writes ``time level logger: message key=value …``; ``auto`` picks
``json`` when stderr is not a terminal (under systemd) and ``console`` on a terminal.

What is logged is the callers' responsibility: never key material, tokens or patient data (device ids,
metric names, counts and reasons only; tests/test_log_hygiene.py checks with planted sentinels).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any, Literal

LogFormat = Literal["auto", "json", "console"]

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _utc(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _utc(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in _extras(record).items():
            doc.setdefault(k, v)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            first, _, rest = line.partition("\n")  # keep a traceback below the extras
            line = first + " " + " ".join(f"{k}={v}" for k, v in extras.items()) + (f"\n{rest}" if rest else "")
        return line


class _GatewayHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so that a second call replaces it."""


def resolve(fmt: LogFormat, stream: IO[str]) -> Literal["json", "console"]:
    if fmt != "auto":
        return fmt
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def setup_logging(fmt: LogFormat, level: int | str, stream: IO[str] | None = None) -> None:
    """Install (or replace) the gateway's handler on the root logger — like ``logging.basicConfig``, not when the
    root logger already has other handlers (e.g. the CLI called in-process under a test runner): then only the
    level is set."""
    out = stream if stream is not None else sys.stderr
    root = logging.getLogger()
    if any(not isinstance(h, _GatewayHandler) for h in root.handlers):
        root.setLevel(level)
        return
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = _GatewayHandler(out)
    handler.setFormatter(JsonFormatter() if resolve(fmt, out) == "json" else ConsoleFormatter())
    root.addHandler(handler)
    root.setLevel(level)

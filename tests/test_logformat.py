"""Log output: JSON lines (journald, log shippers) or a console line, with structured extras."""

from __future__ import annotations

import io
import json
import logging

from gateway.logformat import setup_logging


def test_log_formats() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        root.handlers = []
        out = io.StringIO()
        setup_logging("auto", logging.INFO, out)  # not a terminal: JSON lines
        logging.getLogger("gateway.test").warning("sink %s retrying", "influx", extra={"sink": "influx", "n": 3})
        doc = json.loads(out.getvalue().splitlines()[-1])
        assert doc["level"] == "WARNING" and doc["logger"] == "gateway.test"
        assert doc["message"] == "sink influx retrying" and doc["sink"] == "influx" and doc["n"] == 3
        assert doc["time"].endswith("Z") and "T" in doc["time"]
        out = io.StringIO()
        setup_logging("console", logging.INFO, out)
        assert len(root.handlers) == 1  # replaced, not added
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("gateway.test").exception("failed", extra={"sink": "local"})
        text = out.getvalue()
        assert " ERROR gateway.test: failed sink=local\n" in text and "ValueError: boom" in text
    finally:
        root.handlers, _ = saved
        root.setLevel(saved[1])

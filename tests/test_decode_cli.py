"""``ds4h-gateway decode`` as a user runs it: a subprocess, JSON on stdout, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "decode", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_heart_rate_example() -> None:
    p = run("2a37", "16482003", "0a03")
    assert p.returncode == 0, p.stderr
    out: list[dict[str, Any]] = json.loads(p.stdout)
    assert [(e["mdc"], e["value"], e["unit"]) for e in out] == [
        (147842, 72.0, "/min"),
        (147240, 781.25, "ms"),
        (147240, 759.765625, "ms"),
    ]
    for e in out:
        assert e["absent"] is None and e["time"] is None and e["status"] == 6


def test_time_stamped_packet_says_it_is_uncorrected() -> None:
    p = run("0x2A35", "1E 78 00 50 00 A5 F3 E8 07 03 0F 08 1E 00 48 00 01 04 00")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out[0]["time"] == "2024-03-15T08:30:00"
    assert out[2]["value"] == 93.3 and out[2]["precision"] == 1
    assert "no clock correction" in p.stderr


def test_special_value_and_full_uuid() -> None:
    p = run("00002a18-0000-1000-8000-00805f9b34fb", "060600E8070 30F0C0000FF0712")
    assert p.returncode == 0, p.stderr
    (e,) = json.loads(p.stdout)
    assert (e["value"], e["absent"], e["unit"], e["mdc"]) == (None, "nan", "mmol/L", 160188)


def test_malformed_input_exits_nonzero_with_one_line() -> None:
    for args in (("2a37", "16"), ("2a37", "zz"), ("2aa7", "0D 43 73 00")):
        p = run(*args)
        assert p.returncode != 0
        assert p.stdout == ""
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ds4h-gateway: "), p.stderr


def test_unknown_characteristic() -> None:
    p = run("2aff", "00")
    assert p.returncode != 0
    assert p.stderr.strip().splitlines() == [
        "ds4h-gateway: unknown characteristic 2aff (00002aff-0000-1000-8000-00805f9b34fb): no decoder"
    ]

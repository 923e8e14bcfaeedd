"""Progress of long work: plain lines when the output is not a terminal, a rich bar when it is (a pty).

Covered: ``outbox export``, ``outbox stats --watch`` (the backlog drain) and ``ds4h-sim fleet``'s display;
``dataspace provision`` keeps its plain lines off a terminal (tests/test_edc.py)."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware_sim.progress import FleetProgress
from gateway.cli import _watch_backlog
from gateway.progress import progress
from tests.gw import hr_batch, make_config, post, running

ANSI = re.compile(r"\x1b\[")
BAR = "━"  # rich's bar character


def gateway_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *args]


def run_piped(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def run_in_pty(argv: list[str], timeout: float = 60.0) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal; (exit status, everything it wrote)."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160"}
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=10), out.decode("utf-8", "replace")


async def _state_with_envelopes(state_dir: Path) -> None:
    async with running(make_config(state_dir)) as gw:
        for i in range(0, 12, 3):
            await post(gw, [hr_batch("hr-1", k) for k in range(i, i + 3)])


# --- the helper itself -----------------------------------------------------------------------------
def test_plain_mode_prints_lines_and_a_final_count() -> None:
    out = io.StringIO()
    with progress("export", 4, unit="envelopes", stream=out, interval_s=0.0) as bar:
        assert not bar.rich
        for _ in bar.track(range(4)):
            pass
        bar.log("a line of its own")
    lines = out.getvalue().splitlines()
    assert lines[0] == "export: 1/4 envelopes (25%)"
    assert "a line of its own" in lines
    assert re.fullmatch(r"export: 4/4 envelopes \(100%\) in \d+\.\d s", lines[-1])
    assert not ANSI.search(out.getvalue())


def test_plain_mode_without_counts_prints_only_the_log_lines() -> None:
    out = io.StringIO()
    with progress("provision", 3, stream=out, plain_counts=False) as bar:
        bar.log("asset: POST /v3/assets → 200 created")
        bar.advance()
    assert out.getvalue() == "asset: POST /v3/assets → 200 created\n"


def test_plain_lines_are_throttled() -> None:
    out = io.StringIO()
    with progress("work", 1000, stream=out, interval_s=3600) as bar:
        for _ in bar.track(range(1000)):
            pass
    assert len(out.getvalue().splitlines()) == 1  # only the final line


def test_dumb_terminal_gets_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway import progress as mod

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm")
    assert mod.is_terminal(Tty())
    monkeypatch.setenv("TERM", "dumb")
    assert not mod.is_terminal(Tty())
    assert not mod.is_terminal(io.StringIO())


# --- outbox export -------------------------------------------------------------------------------
async def test_export_plain_off_a_terminal_and_a_bar_on_one(tmp_state_dir: Path) -> None:
    await _state_with_envelopes(tmp_state_dir)
    sd = str(tmp_state_dir)
    out = tmp_state_dir.parent / "plain.cborseq"
    r = run_piped(gateway_cli("outbox", "export", "--state-dir", sd, "--since", "1d", "--out", str(out)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("exported 4 envelope(s)")
    progress_lines = [line for line in r.stderr.splitlines() if line.startswith("export: ")]
    assert progress_lines and re.fullmatch(r"export: 4/4 envelopes \(100%\) in \d+\.\d s", progress_lines[-1])
    assert not ANSI.search(r.stderr) and BAR not in r.stderr

    tty_out = tmp_state_dir.parent / "tty.cborseq"
    status, text = run_in_pty(
        gateway_cli("outbox", "export", "--state-dir", sd, "--since", "1d", "--out", str(tty_out))
    )
    assert status == 0, text
    assert BAR in text and ANSI.search(text) and "4/4" in text and "envelopes" in text
    assert "export: 4/4" not in text  # the bar, not the plain line
    assert "exported 4 envelope(s)" in text
    assert tty_out.stat().st_size == out.stat().st_size  # the same envelopes, a different trailer time


# --- backlog drain: outbox stats --watch -------------------------------------------------------
async def test_stats_watch_plain_and_on_a_terminal(tmp_state_dir: Path) -> None:
    await _state_with_envelopes(tmp_state_dir)
    sd = str(tmp_state_dir)
    r = run_piped(gateway_cli("outbox", "stats", "--state-dir", sd, "--watch", "--interval", "0.1"))
    assert r.returncode == 0, r.stderr
    assert '"pending_batches": 0' in r.stdout
    assert re.search(r"^backlog: 0 batches, every sink has every batch in \d+\.\d s$", r.stderr, re.M), r.stderr
    assert not ANSI.search(r.stderr)
    status, text = run_in_pty(gateway_cli("outbox", "stats", "--state-dir", sd, "--watch"))
    assert status == 0, text
    assert BAR in text and ANSI.search(text) and "backlog" in text and "every sink has every batch" in text


class _DrainingStore:
    """An outbox whose two sinks deliver three batches per look while one batch is committed."""

    def __init__(self) -> None:
        self.pending = {"influx": 9, "local": 3}
        self.max_id = 100
        self.looks = 0
        self.conn = self

    def sinks(self) -> list[str]:
        return sorted(self.pending)

    def pending_stats(self, sink: str) -> tuple[int, float]:
        return self.pending[sink], 1.5 * self.pending[sink]

    def execute(self, sql: str) -> _DrainingStore:
        assert "MAX(id)" in sql
        return self

    def fetchone(self) -> tuple[int]:
        self.looks += 1
        if self.looks > 1:  # after the first look: a new batch, and the sinks catch up
            self.max_id += 1
            for s in self.pending:
                self.pending[s] = max(0, self.pending[s] + 1 - 4)
        return (self.max_id,)


def test_watch_counts_the_backlog_plus_what_arrives(capsys: pytest.CaptureFixture[str]) -> None:
    store = _DrainingStore()
    assert _watch_backlog(store, 0.0, None) is True
    err = capsys.readouterr().err
    # 12 at start + 1 new batch per look, counted once per sink; all delivered in the end
    m = re.search(r"^backlog: (\d+)/(\d+) batches \(100%\), every sink has every batch", err, re.M)
    assert m and m.group(1) == m.group(2) and int(m.group(2)) > 12, err


def test_watch_gives_up_after_the_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    class Stuck(_DrainingStore):
        def fetchone(self) -> tuple[int]:
            return (self.max_id,)

    assert _watch_backlog(Stuck(), 0.01, 0.05) is False
    err = capsys.readouterr().err
    assert "backlog: 0/12 batches (0%), influx 9 pending (oldest 14 s), local 3 pending" in err
    assert "gave up after 0.05 s" in err


# --- ds4h-sim fleet ------------------------------------------------------------------------------
def test_fleet_progress_plain_lines_unchanged() -> None:
    out = io.StringIO()
    display = FleetProgress(out, 10.0)
    assert not display.rich
    display.line("[fleet] ward +0.5 min")
    display.tick("settling")
    display.close()
    assert out.getvalue() == "[fleet] ward +0.5 min\n"


def test_fleet_progress_on_a_terminal_draws_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    master, slave = pty.openpty()
    tty = os.fdopen(slave, "w", encoding="utf-8")
    display = FleetProgress(tty, 10.0)
    assert display.rich
    display.line("[fleet] ward +0.5 min")
    display.tick("settling")
    display.close()
    tty.close()
    data = b""
    while select.select([master], [], [], 0.2)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    os.close(master)
    text = data.decode("utf-8", "replace")
    assert "[fleet] ward +0.5 min" in text and BAR in text and ANSI.search(text)


# --- dataspace provision -------------------------------------------------------------------------
def test_provision_on_a_terminal_draws_a_bar_above_its_lines(tmp_path: Path) -> None:
    from tests.edc_double import EdcDouble
    from tests.test_edc import API_KEY, init_state, write_config

    state = init_state(tmp_path)
    double = EdcDouble("v3", API_KEY)
    with double.run_in_thread() as url:
        config = write_config(tmp_path, state, url, api="v3")
        status, text = run_in_pty(gateway_cli("dataspace", "provision", "--config", str(config)))
    assert status == 0, text
    assert "asset ward-7-observations: POST /v3/assets → 200 created" in text
    assert BAR in text and ANSI.search(text) and "4/4" in text and "done: 3 created, 0 updated" in text

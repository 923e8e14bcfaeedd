"""Shared helpers for the benchmark scripts: machine facts, the gateway as a separate process,
the synthetic source as a separate process, counters, RSS sampling and histogram quantiles.

Nothing here asserts a figure: the scripts print what they measured, next to the target.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.services import VictoriaMetrics, free_port  # noqa: E402

VALUE_SERIES = '{__name__=~".+_value"}'
"""Every stored point has exactly one ``value`` field: counting those counts points."""


# ---------------------------------------------------------------------------------------- machine


def load_text() -> str:
    """``load 1.23 0.80 0.40`` — the 1/5/15-minute load averages (also what ``uptime`` shows)."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load": load_text(),
    }


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- source


def fleet_devices(patients: int) -> dict[str, str]:
    """The flood source's device ids and kinds, asked from the source itself (``devices --json``)."""
    out = subprocess.run(
        [sys.executable, "-m", "firmware_sim", "devices", "--patients", str(patients), "--json"],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    devices: dict[str, dict[str, str]] = json.loads(out)["devices"]
    return {d: v["kind"] for d, v in devices.items()}


@dataclass
class FloodResult:
    summary: dict[str, Any]
    returncode: int
    wall_s: float
    stderr_tail: str


def run_flood(
    url: str,
    token_file: Path,
    *,
    batches: int,
    readings_per_batch: int,
    ecg_samples: int = 0,
    patients: int = 1,
    concurrency: int = 4,
    batches_per_request: int = 200,
    rate: float | None = None,
    max_time: float = 600.0,
) -> subprocess.Popen[bytes]:
    """Start ``python -m firmware_sim flood …`` in its own process; finish it with :func:`finish_flood`."""
    cmd = [
        sys.executable,
        "-m",
        "firmware_sim",
        "flood",
        "--url",
        url,
        "--token-file",
        str(token_file),
        "--batches",
        str(batches),
        "--readings-per-batch",
        str(readings_per_batch),
        "--ecg-samples",
        str(ecg_samples),
        "--patients",
        str(patients),
        "--concurrency",
        str(concurrency),
        "--batches-per-request",
        str(batches_per_request),
        "--max-time",
        str(max_time),
    ]
    if rate is not None:
        cmd += ["--rate", str(rate)]
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True
    )


def finish_flood(proc: subprocess.Popen[bytes], started: float, timeout: float = 900.0) -> FloodResult:
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        stop_process(proc)
        raise
    wall = time.monotonic() - started
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.strip().startswith("{")]
    summary: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    tail = "\n".join(err.decode(errors="replace").splitlines()[-10:])
    return FloodResult(summary, proc.returncode, wall, tail)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """SIGTERM by PID, wait, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=timeout)


# ---------------------------------------------------------------------------------------- gateway


@dataclass
class RssSampler:
    """Samples a process's RSS every ``interval_s`` on a daemon thread (psutil)."""

    pid: int
    interval_s: float = 0.1
    peak_bytes: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            p = psutil.Process(self.pid)
            while not self._stop.is_set():
                self.peak_bytes = max(self.peak_bytes, p.memory_info().rss)
                self.samples += 1
                self._stop.wait(self.interval_s)
        except psutil.Error:
            return

    def reset(self) -> None:
        self.peak_bytes = 0

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by ``pid`` (all its threads)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(t.user + t.system)


def vm_hwm_bytes(pid: int) -> int | None:
    """The kernel's peak RSS of ``pid`` (VmHWM in /proc/<pid>/status)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))


def gateway_config_toml(
    state_dir: Path,
    influx_url: str | None,
    token_file: Path,
    devices: dict[str, str],
    *,
    outbox: dict[str, Any] | None = None,
    influx: dict[str, Any] | None = None,
    extra: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The benchmark gateway's config; no ``[sinks.influx]`` when ``influx_url`` is None (local sink only)."""
    sections: dict[str, dict[str, Any]] = {
        "gateway": {"name": "bench", "state_dir": str(state_dir), "clock": "synced", "log_level": "WARNING"},
        "outbox": {"synchronous": "FULL", **(outbox or {})},
        "sinks": {"retry_initial_s": 0.1, "retry_max_s": 0.5},
        "web": {"host": "127.0.0.1", "port": 0},
        "encryption": {"insecure_key_on_disk": True},
        **(extra or {}),
    }
    if influx_url is not None:
        sections["sinks.influx"] = {"url": influx_url, "token_file": str(token_file), **(influx or {})}
    lines = ["# generated by benchmarks/common.py for one benchmark run", ""]
    for name, kv in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in kv.items()]
        lines.append("")
    for device_id, kind in devices.items():
        lines += [f"[devices.{json.dumps(device_id)}]", f"kind = {json.dumps(kind)}", ""]
    return "\n".join(lines)


def gateway_binary() -> list[str]:
    exe = Path(sys.executable).parent / "ds4h-gateway"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("ds4h-gateway")
    if found:
        return [found]
    raise RuntimeError("ds4h-gateway not found: install the project (pip install -e '.[dev,sim]')")


class GatewayProcess:
    """``ds4h-gateway run --config <tmp>`` as a child process, with its RSS sampled every 100 ms."""

    def __init__(
        self,
        influx_url: str | None,
        devices: dict[str, str],
        *,
        outbox: dict[str, Any] | None = None,
        influx: dict[str, Any] | None = None,
        extra: dict[str, dict[str, Any]] | None = None,
        workdir: Path | None = None,
        profile_to: Path | None = None,
    ) -> None:
        self.profile_to = profile_to
        self._spy: subprocess.Popen[bytes] | None = None
        self._owns_workdir = workdir is None
        self.workdir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="ds4h-bench-gw-"))
        self.state_dir = self.workdir / "state"
        self.config_path = self.workdir / "gateway.toml"
        self.log_path = self.workdir / "gateway.log"
        sink_token = self.workdir / "influx.token"
        sink_token.write_text("bench-token-ignored-by-victoria-metrics\n")
        sink_token.chmod(0o600)
        self.config_path.write_text(
            gateway_config_toml(
                self.state_dir, influx_url, sink_token, devices, outbox=outbox, influx=influx, extra=extra
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.token = ""
        self.token_file = self.state_dir / "control.token"
        self.rss: RssSampler | None = None
        self.hwm_bytes: int | None = None

    def start(self, timeout: float = 60.0) -> Self:
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [*gateway_binary(), "run", "--config", str(self.config_path)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C is for the benchmark; it stops the gateway itself
            )
        self.rss = RssSampler(self.proc.pid)
        self.rss.start()
        control = self.state_dir / "control.json"
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(control.read_text())
                if info.get("pid") == self.proc.pid:
                    self.url = str(info["url"])
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway not up after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)
        self.token = self.token_file.read_text().strip()
        if self.profile_to is not None:
            self._start_profiler(self.profile_to)
        return self

    def _start_profiler(self, out: Path) -> None:
        """py-spy (``pip install py-spy``) records the gateway until it stops: collapsed stacks per thread."""
        spy = Path(sys.executable).parent / "py-spy"
        exe = str(spy) if spy.exists() else shutil.which("py-spy")
        if exe is None:
            log("py-spy not installed: no profile")
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        self._spy = subprocess.Popen(
            [exe, "record", "-p", str(self.pid), "-o", str(out), "--format", "raw", "--threads", "--rate", "100"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _stop_profiler(self) -> None:
        spy, self._spy = self._spy, None
        if spy is None or spy.poll() is not None:
            return
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def get(self, path: str, *, auth: bool = True, timeout: float = 10.0) -> bytes:
        req = urllib.request.Request(f"{self.url}{path}")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body: bytes = r.read()
            return body

    def stats(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.get("/api/v1/stats"))
        return doc

    def counters(self) -> dict[str, Any]:
        c: dict[str, Any] = self.stats()["counters"]
        return c

    def forwarded(self, sink: str = "influx") -> int:
        return int(self.counters()["readings_forwarded"].get(sink, 0))

    def metrics_text(self) -> str:
        return self.get("/metrics", auth=False).decode()

    def peak_rss_bytes(self) -> int:
        sampled = self.rss.peak_bytes if self.rss else 0
        hwm = vm_hwm_bytes(self.pid) if self.proc is not None and self.proc.poll() is None else self.hwm_bytes
        return max(sampled, hwm or 0)

    def stop(self) -> None:
        self._stop_profiler()
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                self.hwm_bytes = vm_hwm_bytes(proc.pid)
            stop_process(proc, timeout=30.0)
            self.proc = proc  # keep the pid for reporting; the process is gone
        if self.rss is not None:
            self.rss.stop()

    def close(self) -> None:
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@contextlib.contextmanager
def victoria_metrics(port: int | None = None, start: bool = True) -> Iterator[VictoriaMetrics]:
    """A private VictoriaMetrics (``-dedup.minScrapeInterval=1ms``) on a free loopback port."""
    vm = VictoriaMetrics(port=port)
    try:
        if start:
            vm.start()
        yield vm
    finally:
        vm.close()


def closed_port() -> int:
    return free_port()


# ---------------------------------------------------------------------------------------- waiting


@dataclass
class Progress:
    """(monotonic time, counters) samples taken while a run goes on."""

    samples: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def first_time(self, key: str, sink: str | None = None, above: int = 0) -> float | None:
        for t, c in self.samples:
            if _count(c, key, sink) > above:
                return t
        return None

    def first_reaching(self, key: str, target: int, sink: str | None = None) -> float | None:
        for t, c in self.samples:
            if _count(c, key, sink) >= target:
                return t
        return None


def _count(c: dict[str, Any], key: str, sink: str | None) -> int:
    v = c.get(key, 0)
    if sink is not None:
        v = v.get(sink, 0) if isinstance(v, dict) else 0
    return int(v)


def watch(
    gw: GatewayProcess,
    until_forwarded: int,
    *,
    timeout: float,
    fast_interval: float = 0.01,
    interval: float = 0.1,
    source: subprocess.Popen[bytes] | None = None,
) -> Progress:
    """Poll /api/v1/stats (fast until the first batch arrives, then every ``interval``) until
    ``readings_forwarded.influx`` reaches ``until_forwarded``."""
    prog = Progress()
    deadline = time.monotonic() + timeout
    started = False
    while time.monotonic() < deadline:
        c = gw.counters()
        t = time.monotonic()
        prog.samples.append((t, c))
        started = started or c.get("readings_ingested", 0) > 0
        if _count(c, "readings_forwarded", "influx") >= until_forwarded:
            return prog
        if gw.proc is not None and gw.proc.poll() is not None:
            raise RuntimeError(f"gateway died:\n{gw.log_tail()}")
        if source is not None and source.poll() not in (None, 0) and not started:
            raise RuntimeError(f"source exited with {source.returncode} before sending")
        time.sleep(interval if started else fast_interval)
    raise TimeoutError(f"forwarded {_count(prog.samples[-1][1], 'readings_forwarded', 'influx')} < {until_forwarded}")


# ---------------------------------------------------------------------------------------- profiles


def summarise_profile(path: Path, top: int = 15) -> str:
    """Where the gateway's samples went: per thread, then by function (inclusive), from py-spy raw output."""
    threads: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        thread = frames[0].split(":", 1)[-1].strip().split("_")[0] if frames else "?"
        threads[thread] = threads.get(thread, 0) + n
        for f in set(frames[1:]):
            if f.startswith(("gateway", "aiohttp", "cbor2", "sqlite3")) or "gateway/" in f:
                incl[f] = incl.get(f, 0) + n
    if not total:
        return "(empty profile)"
    out = [f"{total} samples (100 Hz, active threads only)"]
    out += [f"  {n / total:6.1%}  thread {t}" for t, n in sorted(threads.items(), key=lambda kv: -kv[1])]
    out.append("  inclusive, project code:")
    out += [f"  {n / total:6.1%}  {f}" for f, n in sorted(incl.items(), key=lambda kv: -kv[1])[:top]]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------- histograms


def parse_histogram(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts ``{le: count}`` of an unlabelled Prometheus histogram."""
    buckets: dict[float, float] = {}
    prefix = f"{name}_bucket{{"
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        labels, _, value = line.rpartition(" ")
        le = labels.split('le="', 1)[1].split('"', 1)[0]
        buckets[float("inf") if le == "+Inf" else float(le)] = float(value)
    return buckets


def histogram_delta(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {le: after[le] - before.get(le, 0.0) for le in after}


def histogram_quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """Like PromQL ``histogram_quantile``: linear interpolation inside the bucket holding rank q·n."""
    les = sorted(cumulative)
    if not les:
        return None
    total = cumulative[les[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le in les:
        count = cumulative[le]
        if count >= rank:
            if le == float("inf"):
                return prev_le  # above the highest finite bucket: report its bound (a lower bound)
            in_bucket = count - prev_count
            frac = (rank - prev_count) / in_bucket if in_bucket > 0 else 1.0
            return prev_le + (le - prev_le) * frac
        prev_le, prev_count = le, count
    return None


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return None

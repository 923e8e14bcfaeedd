"""Real backing services for the test-suite, started from their Debian packages.

Each service runs as a child process of the test run, bound to 127.0.0.1 on a free port, with
its data in a private temporary directory.  It is stopped by PID (SIGTERM, wait, SIGKILL).

    vm = VictoriaMetrics(); vm.start(); ...; vm.close()      # or: with VictoriaMetrics() as vm:
    mq = Mosquitto(); mq.start(); ...; mq.close()

Install the binaries with ``make services`` (``apt-get install -y victoria-metrics mosquitto``).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

LOOPBACK = "127.0.0.1"

VICTORIA_METRICS_BIN = "/usr/bin/victoria-metrics"
MOSQUITTO_BIN = "/usr/sbin/mosquitto"

ALL_SERIES = '{__name__=~".+"}'


class ServiceError(RuntimeError):
    """A test service could not be found, started or queried."""


# --------------------------------------------------------------------------------------------------
# helpers


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def require_binary(path: str, package: str) -> str:
    """Return ``path`` if it is an executable, else fail naming the package to install."""
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    found = shutil.which(os.path.basename(path))
    if found:
        return found
    raise ServiceError(
        f"{path} not found: the Debian package {package!r} is not installed. "
        f"Install it with `make services` or `sudo apt-get install -y {package}`."
    )


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.05,
    alive: Callable[[], str | None] | None = None,
) -> None:
    """Poll ``predicate`` until it returns True; raise ServiceError after ``timeout`` seconds.

    ``alive`` (optional) returns an error message when the thing being waited for died, which
    ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if alive is not None:
            problem = alive()
            if problem:
                raise ServiceError(f"while waiting for {what}: {problem}")
        if time.monotonic() >= deadline:
            raise ServiceError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def tcp_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_tcp(host: str, port: int, timeout: float = 30.0) -> None:
    wait_for(lambda: tcp_accepts(host, port), timeout, f"TCP {host}:{port} to accept connections")


def http_get(url: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """GET ``url``; return (status, body).  HTTP error statuses are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read()


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        status, _ = http_get(url, timeout=timeout)
    except OSError:
        return False
    return 200 <= status < 300


def wait_for_http(url: str, timeout: float = 30.0) -> None:
    wait_for(lambda: http_ok(url), timeout, f"GET {url} to answer 2xx")


# every service that is running, so an aborted test run still stops its children
_RUNNING: set[ManagedProcess] = set()


@atexit.register
def _stop_leftovers() -> None:
    for service in list(_RUNNING):
        with contextlib.suppress(Exception):
            service.stop()


# --------------------------------------------------------------------------------------------------
# process management


class ManagedProcess:
    """A server child process with a private temp dir, started and stopped by PID."""

    name = "service"
    binary = ""
    package = ""
    start_timeout = 30.0
    stop_timeout = 30.0

    def __init__(self, port: int | None = None, workdir: str | os.PathLike[str] | None = None) -> None:
        self.host = LOOPBACK
        self.port = port if port is not None else free_port()
        self._owns_workdir = workdir is None
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix=f"ds4h-{self.name}-")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    # -- to be provided by subclasses
    def command(self) -> list[str]:
        raise NotImplementedError

    def is_ready(self) -> bool:
        return tcp_accepts(self.host, self.port)

    def prepare(self) -> None:
        """Write config files etc. before each start."""

    # -- lifecycle
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _death_notice(self) -> str | None:
        if self._proc is not None and self._proc.poll() is not None:
            return f"{self.name} exited with code {self._proc.returncode}; log {self.log_path}:\n{self.log_tail()}"
        return None

    def start(self) -> Self:
        if self.running:
            return self
        require_binary(self.binary, self.package)
        self.prepare()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # a Ctrl-C in the terminal is for pytest, not for the server
            )
        except BaseException:
            self._log.close()
            self._log = None
            raise
        _RUNNING.add(self)
        try:
            wait_for(
                self.is_ready,
                self.start_timeout,
                f"{self.name} on {self.host}:{self.port} to become ready",
                alive=self._death_notice,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server by PID: SIGTERM, wait, then SIGKILL.  Keeps the data directory."""
        proc, self._proc = self._proc, None
        _RUNNING.discard(self)
        try:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=self.stop_timeout)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL), as in a crash.  Keeps the data directory."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self.stop()

    def restart(self) -> Self:
        """Stop and start again on the same port with the same data directory."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and remove the temporary directory (if this object created it)."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"


# --------------------------------------------------------------------------------------------------
# VictoriaMetrics


class VictoriaMetrics(ManagedProcess):
    """Single-node VictoriaMetrics (Debian package ``victoria-metrics``).

    Influx line ``m,device=x value=1 <ns>`` written to ``/api/v2/write`` becomes the series
    ``m_value{device="x"}`` with a millisecond timestamp.
    """

    name = "victoria-metrics"
    binary = VICTORIA_METRICS_BIN
    package = "victoria-metrics"
    start_timeout = 60.0

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            require_binary(self.binary, self.package),
            f"-httpListenAddr={self.host}:{self.port}",
            f"-storageDataPath={self.data_dir}",
            "-retentionPeriod=100y",
            # drop exact (series, timestamp) duplicates at merge time
            "-dedup.minScrapeInterval=1ms",
            "-loggerLevel=ERROR",
            # make just-written samples visible to queries at once
            "-search.latencyOffset=0s",
            "-search.disableCache",
        ]

    def is_ready(self) -> bool:
        return http_ok(f"{self.url}/health")

    # -- HTTP API helpers
    def get(self, path: str, params: dict[str, str] | None = None, timeout: float = 30.0) -> bytes:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = http_get(url, timeout=timeout)
        if not 200 <= status < 300:
            raise ServiceError(f"GET {url} -> HTTP {status}: {body[:500]!r}")
        return body

    def write_lines(self, lines: str | bytes, precision: str = "ns", timeout: float = 30.0) -> int:
        """POST influx line protocol to ``/api/v2/write``; return the HTTP status (204 on success)."""
        body = lines.encode() if isinstance(lines, str) else lines
        query = urllib.parse.urlencode({"org": "ds4h", "bucket": "ds4h", "precision": precision})
        req = urllib.request.Request(
            f"{self.url}/api/v2/write?{query}",
            data=body,
            method="POST",
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                resp.read()
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            with exc:
                raise ServiceError(f"write -> HTTP {exc.code}: {exc.read()[:500]!r}") from None

    def force_flush(self) -> None:
        """Make recently written samples visible to export/queries now (instead of ~5 s later)."""
        self.get("/internal/force_flush")

    def export(
        self,
        match: str = ALL_SERIES,
        start: str | None = None,
        end: str | None = None,
        flush: bool = True,
    ) -> list[dict[str, Any]]:
        """Raw samples via ``/api/v1/export``: one dict per series with metric, values, timestamps.

        May include duplicates that VictoriaMetrics has not merged yet; see count_unique_points.
        """
        if flush:
            self.force_flush()
        params = {"match[]": match}
        if start is not None:
            params["start"] = start
        if end is not None:
            params["end"] = end
        body = self.get("/api/v1/export", params)
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def count_points(self, match: str = ALL_SERIES) -> int:
        """Total number of (series, timestamp) points exported, duplicates included."""
        return sum(len(series["timestamps"]) for series in self.export(match))

    def unique_points(self, match: str = ALL_SERIES) -> set[tuple[frozenset[tuple[str, str]], int]]:
        """Set of (series labels, timestamp ms) pairs, deduplicated client-side."""
        points: set[tuple[frozenset[tuple[str, str]], int]] = set()
        for series in self.export(match):
            labels = frozenset(series["metric"].items())
            points.update((labels, int(ts)) for ts in series["timestamps"])
        return points

    def count_unique_points(self, match: str = ALL_SERIES) -> int:
        """Number of distinct (series labels, timestamp) pairs."""
        return len(self.unique_points(match))

    def wait_for_points(self, match: str, expected: int, timeout: float = 30.0, unique: bool = True) -> int:
        """Poll until at least ``expected`` points match; return the final count."""
        counter = self.count_unique_points if unique else self.count_points
        last = 0

        def enough() -> bool:
            nonlocal last
            last = counter(match)
            return last >= expected

        try:
            wait_for(enough, timeout, f"{expected} points matching {match}", interval=0.2)
        except ServiceError as exc:
            raise ServiceError(f"{exc} (last count {last})") from None
        return last


# --------------------------------------------------------------------------------------------------
# Mosquitto


class Mosquitto(ManagedProcess):
    """Mosquitto 2.0 MQTT broker (Debian package ``mosquitto``) with on-disk persistence."""

    name = "mosquitto"
    binary = MOSQUITTO_BIN
    package = "mosquitto"
    autosave_interval_s = 1
    """Seconds between saves of the in-memory state; 0 disables persistence (benchmarks of the clients)."""

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # When started as root mosquitto switches to the `user` below; naming the current user
        # keeps it able to write its persistence file in our private temp dir.
        user = pwd.getpwuid(os.geteuid()).pw_name
        self.config_path.write_text(
            "\n".join(
                [
                    "# generated by tests/services.py for a test run",
                    f"listener {self.port} {self.host}",
                    # Anonymous access is acceptable ONLY here: this broker is a test fixture that
                    # listens on the loopback interface only and lives for one test run.
                    "allow_anonymous true",
                    f"user {user}",
                    f"persistence {'true' if self.autosave_interval_s else 'false'}",
                    f"persistence_location {self.data_dir}/",
                    f"autosave_interval {self.autosave_interval_s or 1800}",
                    "max_queued_messages 0",
                    "max_inflight_messages 100",
                    "log_dest stderr",
                    "log_type error",
                    "log_type warning",
                    "",
                ]
            )
        )

    def command(self) -> list[str]:
        return [require_binary(self.binary, self.package), "-c", str(self.config_path)]

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


class MosquittoSite(Mosquitto):
    """Mosquitto configured by the gateway's own writer (``gateway.pki.mosquitto``) from a state
    directory's PKI: one TLS listener requiring client certificates, the site ACL, persistence.

    The state directory must hold the site CA (``pki init``); the broker certificate is issued if
    missing. ``stop()`` / ``kill()`` then ``start()`` reuse the port and the persistence directory.
    Ready means a TLS handshake with ``ready_cert`` (a client certificate and key) succeeds, or — without
    one — that the port accepts TCP connections (no anonymous MQTT session is possible).
    """

    name = "mosquitto-site"

    def __init__(
        self,
        state_dir: Path,
        gateway_name: str = "gateway",
        port: int | None = None,
        workdir: str | os.PathLike[str] | None = None,
        ready_cert: tuple[Path, Path] | None = None,
    ) -> None:
        super().__init__(port, workdir)
        self.state_dir = Path(state_dir)
        self.gateway_name = gateway_name
        self.ready_cert = ready_cert

    @property
    def config_dir(self) -> Path:
        return self.workdir / "conf"

    @property
    def config_path(self) -> Path:
        return self.config_dir / "mosquitto.conf"

    @property
    def ca_cert(self) -> Path:
        return self.config_dir / "ca.crt"

    def prepare(self) -> None:
        from gateway.pki.ca import SitePki
        from gateway.pki.mosquitto import write_mosquitto_config

        self.data_dir.mkdir(parents=True, exist_ok=True)
        write_mosquitto_config(
            SitePki(self.state_dir),
            self.config_dir,
            port=self.port,
            bind=self.host,
            gateway_name=self.gateway_name,
            persistence_dir=self.data_dir,
            # as root the broker drops privileges to `user`: the current user keeps the files readable
            user=pwd.getpwuid(os.geteuid()).pw_name,
        )

    def is_ready(self) -> bool:
        if self.ready_cert is None:
            return tcp_accepts(self.host, self.port)
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        ctx.load_cert_chain(str(self.ready_cert[0]), str(self.ready_cert[1]))
        try:
            with (
                socket.create_connection((self.host, self.port), timeout=1.0) as sock,
                ctx.wrap_socket(sock, server_hostname=self.host),
            ):
                return True
        except OSError:  # ssl.SSLError is an OSError
            return False

    @property
    def url(self) -> str:
        return f"mqtts://{self.host}:{self.port}"

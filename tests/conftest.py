"""Shared fixtures: real VictoriaMetrics / Mosquitto servers and a fault-injecting proxy.

The servers come from Debian packages (``make services``).  If a binary is missing the fixture
errors with the install command: nothing is skipped silently.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import sentinels
from tests.faultproxy import FaultProxy
from tests.mqtt_site import MqttSite, make_site
from tests.services import Mosquitto, VictoriaMetrics

SERVICE_FIXTURES = frozenset(
    {"victoria_metrics", "vm_private", "mosquitto", "mosquitto_private", "fault_proxy", "mqtt_site"}
)


_WATCH = sentinels.LogWatch()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Watch everything the suite logs at the gateway's default level (INFO) for planted sentinels."""
    logging.getLogger().addHandler(_WATCH)
    for name in ("gateway", "drivers", "firmware_sim"):
        if logging.getLogger(name).getEffectiveLevel() > logging.INFO:
            logging.getLogger(name).setLevel(logging.INFO)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if anything logged (in this process, or a gateway process's log file under the
    session's temporary directory) carries a sentinel (tests/sentinels.py)."""
    logging.getLogger().removeHandler(_WATCH)
    leaks = list(_WATCH.leaks)
    with contextlib.suppress(Exception):
        leaks += sentinels.scan_files(session.config._tmp_path_factory.getbasetemp())  # type: ignore[attr-defined]
    if leaks:
        print(f"\nlog hygiene: {len(leaks)} logged record(s) carry planted sentinels:", *leaks[:20], sep="\n  ")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a real server with ``services`` (select with -m services)."""
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="session")
def victoria_metrics() -> Iterator[VictoriaMetrics]:
    """One VictoriaMetrics for the whole session: use unique metric names per test."""
    with VictoriaMetrics() as vm:
        yield vm


@pytest.fixture
def vm_private() -> Iterator[VictoriaMetrics]:
    """A private VictoriaMetrics the test may stop / restart / kill."""
    with VictoriaMetrics() as vm:
        yield vm


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Mosquitto]:
    """One Mosquitto broker for the whole session: use unique topics / client ids per test."""
    with Mosquitto() as broker:
        yield broker


@pytest.fixture
def mosquitto_private() -> Iterator[Mosquitto]:
    """A private Mosquitto broker the test may stop / restart / kill."""
    with Mosquitto() as broker:
        yield broker


@pytest.fixture
def fault_proxy(victoria_metrics: VictoriaMetrics) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the shared VictoriaMetrics, on its own event-loop thread.

    Works from sync and async tests alike; ``fault_proxy.url`` is the address to write to.
    """
    proxy = FaultProxy(victoria_metrics.url)
    with proxy.run_in_thread():
        yield proxy


@pytest.fixture
def tmp_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh, empty directory for a gateway's on-disk state."""
    return tmp_path_factory.mktemp("state")


@pytest.fixture
def mqtt_site(tmp_path: Path) -> Iterator[MqttSite]:
    """A site CA with gateway and broker certificates, and a private Mosquitto configured by
    ``gateway.pki.mosquitto`` (mutual TLS, site ACL, persistence) that the test may stop / kill / start.

    ``mqtt_site.issue_device(id)`` issues a device certificate and registers the device.
    """
    with make_site(tmp_path) as site:
        yield site

"""The live status page in a real browser during a demo run: headless Chromium (Debian's ``chromium``) driven
by Playwright's Python package — no browser download: ``executable_path=/usr/bin/chromium``.

It logs in with the status token, sees the ward's devices live and a moving ECG strip (the strip's data and
pixels change between two samples), loads nothing from outside the gateway, and saves a screenshot under the
test's tmp dir (copied to ``$DS4H_ARTEFACTS`` when set).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from playwright import sync_api

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _wait_for_control(state: Path, proc: subprocess.Popen[bytes], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    control = state / "control.json"
    while not control.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        assert time.monotonic() < deadline, "the demo did not publish its control URL"
        time.sleep(0.1)
    return str(json.loads(control.read_text())["url"])


def test_status_page_in_chromium_during_the_demo(tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "chromium is missing: make services (apt-get install -y chromium)"
    state = tmp_path / "demo-state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--duration", "90", "--json", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    shot = tmp_path / "status-page.png"
    try:
        url = _wait_for_control(state, proc)
        token = (state / "status.token").read_text().strip()
        requests: list[str] = []
        errors: list[str] = []
        with sync_api.sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),  # a fresh --user-data-dir
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 1000},
            )
            try:
                page = ctx.new_page()
                page.on("request", lambda r: requests.append(r.url))
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                # without a session: the login form, no data
                resp = page.goto(f"{url}/status")
                assert resp is not None and resp.status == 401
                assert page.locator("input[name=token]").count() == 1
                page.fill("input[name=token]", token)
                page.click("button[type=submit]")
                page.wait_for_selector("#devices tbody tr", timeout=30_000)
                assert "token" not in page.url
                assert "not a medical alarm system" in page.inner_text(".banner")
                # live devices: the ward's BLE links come up and their rows say so
                page.wait_for_function(
                    "() => document.querySelectorAll('#devices tr[data-link=connected]').length >= 3", timeout=45_000
                )
                # a moving ECG strip: its data and its pixels change between two samples
                page.wait_for_function(
                    "() => [...document.querySelectorAll('canvas.strip')]"
                    ".some(c => c.dataset.key.endsWith('/ecg') && +c.dataset.samples > 200)",
                    timeout=45_000,
                )
                key = page.evaluate(
                    "() => [...document.querySelectorAll('canvas.strip')]"
                    ".find(c => c.dataset.key.endsWith('/ecg') && +c.dataset.samples > 200).dataset.key"
                )
                sample = (
                    "key => { const c = [...document.querySelectorAll('canvas.strip')]"
                    ".find(c => c.dataset.key === key);"
                    " return {key: c.dataset.key, end: c.dataset.endMs, png: c.toDataURL()}; }"
                )
                first = page.evaluate(sample, key)
                page.wait_for_timeout(2000)
                page.wait_for_selector("#feed-state.ok")
                second = page.evaluate(sample, key)
                assert first["key"] == second["key"]
                assert second["end"] != first["end"], "the ECG strip did not advance"
                assert second["png"] != first["png"], "the ECG strip was not redrawn"
                # the trends and the counters
                assert page.locator("canvas.trend").count() >= 3
                assert page.get_attribute("#tiles", "data-lost") == "0"
                page.wait_for_timeout(1500)  # let the trends gather a few points for the picture
                page.screenshot(path=str(shot), full_page=True)
                # logging out ends the session
                page.click("header button[type=submit]")
                page.wait_for_selector("input[name=token]")
            finally:
                ctx.close()
        # the login page answers 401 on purpose (before logging in, and after logging out): nothing else
        assert [e for e in errors if "status of 401" not in e] == [], errors
        outside = [r for r in requests if not r.startswith(url) and not r.startswith("data:")]
        assert outside == [], f"the page loaded something from outside the gateway: {outside}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # the demo stops cleanly on Ctrl-C
        try:
            out, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        artefacts = os.environ.get("DS4H_ARTEFACTS")
        if artefacts and shot.exists():
            Path(artefacts).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(artefacts) / shot.name)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert json.loads(out.decode().strip().splitlines()[-1])["readings_lost"] == 0
    assert shot.stat().st_size > 10_000

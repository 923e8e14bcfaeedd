"""The status page's server side: login token and session cookie, the live feed (SSE), the second HTTPS
listener, /readyz under the disk budget, the live board's strips and trends."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config import OutboxSection
from gateway.errors import ConfigError
from gateway.model import Batch, Reading, SourceKey, Waveform
from gateway.web.live import LiveBoard
from tests.gw import get, hr_batch, make_config, post, running, wait_until
from tests.services import free_port

T0 = 1_780_000_000_000_000_000


def ecg_batch(seq: int, n: int = 250, period_ns: int = 4_000_000) -> dict[str, Any]:
    samples = (np.sin(np.arange(seq * n, (seq + 1) * n) / 10) * 1000).astype("<i4")
    t0 = T0 + seq * n * period_ns
    return {
        "device": "ecg-1",
        "key": ["boot1", seq],
        "waveforms": [{"metric": "ecg", "u": "uV", "t0": t0, "period": period_ns, "i32le": samples.tobytes()}],
    }


async def next_update(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    event = None
    async with asyncio.timeout(10):
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "update":
                doc: dict[str, Any] = json.loads(line.removeprefix("data: "))
                return doc
    raise AssertionError("the feed ended")


# --- login, session, feed -------------------------------------------------------------------------
async def test_status_page_needs_its_token_and_feeds_curves(
    tmp_state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(make_config(tmp_state_dir, web={"status": {"update_interval_s": 0.2}})) as gw:
        assert gw.status_page is not None
        token = (tmp_state_dir / "status.token").read_text().strip()
        assert (tmp_state_dir / "status.token").stat().st_mode & 0o077 == 0
        jar = aiohttp.CookieJar(unsafe=True)  # keeps cookies of an IP address host
        async with aiohttp.ClientSession(cookie_jar=jar) as s:
            # no session: the login form (no data), the feed refused; the page's own assets are public
            async with s.get(f"{gw.url}/status") as r:
                assert r.status == 401 and 'name="token"' in await r.text()
                assert "default-src 'none'" in r.headers["Content-Security-Policy"]
            async with s.get(f"{gw.url}/status/feed") as r:
                assert r.status == 401
            async with s.get(f"{gw.url}/status/static/status.js") as r:
                assert r.status == 200 and r.content_type == "text/javascript"
            async with s.get(f"{gw.url}/status/static/login.html") as r:
                assert r.status == 404
            # the control API's token is not the status token (and the other way round)
            async with s.get(f"{gw.url}/status/feed", headers={"Authorization": f"Bearer {gw.token}"}) as r:
                assert r.status == 401
            async with s.get(f"{gw.url}/api/v1/stats", headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 401
            async with s.get(f"{gw.url}/status", params={"token": "wrong"}) as r:
                assert r.status == 401 and "not the status token of this gateway" in await r.text()
            # ?token= once: a cookie (an HMAC of the token, not the token) and a redirect without it
            async with s.get(f"{gw.url}/status", params={"token": token}, allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/status"
                cookie = r.cookies["ds4h_status"]
                assert cookie.value and token not in cookie.value
                assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/status"
            async with s.get(f"{gw.url}/status") as r:
                assert r.status == 200 and "not a medical alarm system" in await r.text()

            status, _ = await post(gw, [ecg_batch(0), hr_batch("hr-1", 1, value=72), hr_batch("hr-1", 2, value=35)])
            assert status == 200
            async with s.get(f"{gw.url}/status/feed") as feed:
                assert feed.status == 200 and feed.content_type == "text/event-stream"
                first = await next_update(feed)
                strip = first["series"]["ecg-1/ecg"]
                assert strip["kind"] == "strip" and strip["full"] and len(strip["v"]) == 250
                assert strip["period_ms"] == 4.0
                trend = first["series"]["hr-1/heart_rate"]
                assert trend["v"] == [72.0, 35.0] and trend["unit"] == "/min"
                # heart rate 35 /min is below the default rule: a threshold notice, not an alarm
                assert [(n["device"], n["why"]) for n in first["notices"]] == [("hr-1", "threshold: below 40")]
                st = first["status"]
                assert {d["id"] for d in st["devices"]} == {"hr-1", "cgm-1", "ecg-1"}
                assert st["counters"]["readings_lost"] == 0 and st["ready"]["status"] == "ready"
                assert set(st["sinks"]) == {"local"}
                # then only what is new: the next ECG chunk, nothing else again
                await post(gw, [ecg_batch(1)])
                while True:
                    upd = await next_update(feed)
                    if "ecg-1/ecg" in upd["series"]:
                        break
                assert not upd["series"]["ecg-1/ecg"]["full"] and len(upd["series"]["ecg-1/ecg"]["v"]) == 250
                assert "hr-1/heart_rate" not in upd["series"] and upd["notices"] == []
                _, metrics = await get(gw, "/metrics", auth=False)
                assert "ds4h_status_viewers 1.0" in metrics
            # log out: the cookie is gone
            async with s.post(f"{gw.url}/status/logout", allow_redirects=False) as r:
                assert r.status == 303
            async with s.get(f"{gw.url}/status/feed") as r:
                assert r.status == 401
        _, metrics = await get(gw, "/metrics", auth=False)
        assert 'ds4h_status_logins_total{outcome="accepted"} 1.0' in metrics
        assert 'ds4h_status_logins_total{outcome="refused"} 1.0' in metrics
    for rec in caplog.records:
        assert token not in rec.getMessage(), rec.getMessage()


async def test_demo_link_carries_the_token_once(tmp_state_dir: Path) -> None:
    from gateway.demo import status_url

    async with running(make_config(tmp_state_dir)) as gw:
        url = status_url(gw)
        assert url is not None and url.startswith(f"{gw.url}/status?token=")
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as s, s.get(url) as r:
            # followed the redirect: logged in, the token gone from the address
            assert r.status == 200 and r.url.query_string == "" and "live curves" in await r.text()


async def test_status_page_can_be_turned_off(tmp_state_dir: Path) -> None:
    async with running(make_config(tmp_state_dir, web={"status": {"enabled": False}})) as gw:
        assert gw.status_page is None
        status, _ = await get(gw, "/status", auth=False)
        assert status == 404


# --- the second listener (HTTPS) -----------------------------------------------------------------
def self_signed(dir_: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ward-gateway")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = dir_ / "status.crt", dir_ / "status.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return cert_file, key_file


async def test_second_listener_serves_only_the_status_page_over_tls(tmp_state_dir: Path, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    cfg = make_config(
        tmp_state_dir,
        web={"status": {"host": "127.0.0.1", "port": 0, "cert_file": str(cert), "key_file": str(key)}},
    )
    async with running(cfg) as gw:
        assert gw.status_page is not None
        url = gw.status_page.url
        assert url.startswith("https://127.0.0.1:") and url.endswith("/status")
        base = url.removesuffix("/status")
        token = (tmp_state_dir / "status.token").read_text().strip()
        tls = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            async with s.get(f"{base}/status", ssl=tls) as r:
                assert r.status == 401
            for path in ("/metrics", "/healthz", "/api/v1/stats", "/api/v1/ingest"):
                async with s.get(f"{base}{path}", ssl=tls) as r:
                    assert r.status == 404, path  # the control API stays on loopback
            async with s.post(f"{base}/status/login", data={"token": token}, ssl=tls, allow_redirects=False) as r:
                assert r.status == 303
                assert r.cookies["ds4h_status"]["secure"]
            async with s.get(f"{base}/status/feed", ssl=tls) as feed:
                assert feed.status == 200
                assert "status" in await next_update(feed)
            with pytest.raises(aiohttp.ClientError):
                async with s.get(f"http{base.removeprefix('https')}/status") as r:
                    pass


async def test_unreadable_certificate_stops_the_start_with_a_config_error(tmp_state_dir: Path, tmp_path: Path) -> None:
    cfg = make_config(
        tmp_state_dir,
        web={"status": {"host": "127.0.0.1", "cert_file": str(tmp_path / "no.crt"), "key_file": str(tmp_path / "k")}},
    )
    with pytest.raises(ConfigError, match=r"web\.status\.cert_file"):
        async with running(cfg):
            pass


def test_status_page_off_loopback_needs_tls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"web.status: .*needs TLS"):
        make_config(tmp_path, web={"status": {"host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match="both cert_file and key_file"):
        make_config(tmp_path, web={"status": {"cert_file": str(tmp_path / "c.pem")}})


# --- /readyz and the disk budget ------------------------------------------------------------------
async def test_readyz_not_ready_when_the_budget_is_full_and_ready_after_draining(tmp_state_dir: Path) -> None:
    token = tmp_state_dir.parent / "ready.token"
    token.write_text("influx-test-token")
    token.chmod(0o600)
    port = free_port()  # nothing listens yet: the store is down, data stays in the outbox
    cfg = make_config(
        tmp_state_dir,
        outbox={"disk_budget_mb": 0.5},
        sinks={"influx": {"url": f"http://127.0.0.1:{port}", "token_file": str(token), "timeout_s": 1}},
    )
    written = 0

    async def write(request: web.Request) -> web.Response:
        nonlocal written
        written += (await request.read()).count(b"\n") + 1
        return web.Response(status=204)

    async with running(cfg) as gw:
        status, body = await get(gw, "/readyz", auth=False)
        assert status == 200 and json.loads(body)["status"] == "ready"
        seq = 0
        while gw.committer.backpressure is None:
            status, _ = await post(gw, [hr_batch("hr-1", seq + i) for i in range(200)])
            if status == 503:
                break
            seq += 200
            assert seq < 200_000, "the budget never applied back-pressure"
            if seq % 2000 == 0:
                await asyncio.sleep(1.1)  # housekeeping measures the disk every second
        await wait_until(lambda: gw.committer.backpressure is not None, what="back-pressure")
        status, body = await get(gw, "/readyz", auth=False)
        doc = json.loads(body)
        assert status == 503 and doc["status"] == "not_ready"
        assert any("disk budget" in r for r in doc["reasons"]), doc
        assert doc["sinks"]["influx"].startswith("buffering")
        assert doc["sinks"]["local"] == "delivering"
        await wait_until(lambda: gw.metrics.ready._value.get() == 0, what="ds4h_ready 0")
        # the store comes back: the outbox drains, the budget frees, ready again
        app = web.Application()
        app.router.add_post("/api/v2/write", write)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            await wait_until(lambda: gw.readiness()["status"] == "ready", timeout=60, what="ready after draining")
            status, body = await get(gw, "/readyz", auth=False)
            assert status == 200 and json.loads(body)["reasons"] == []
            # ready once back under budget: the rest of the backlog may still be on its way
            await wait_until(lambda: written >= seq, what="the whole backlog written")
            _, metrics = await get(gw, "/metrics", auth=False)
            await wait_until(lambda: gw.metrics.ready._value.get() == 1, what="ds4h_ready 1")
            assert "ds4h_backpressure 0.0" in metrics
            assert gw.counters()["readings_lost"] == 0
        finally:
            await runner.cleanup()


# --- the live board ------------------------------------------------------------------------------
def test_live_board_strips_are_decimated_rings_and_viewers_get_only_news() -> None:
    from gateway.web.live import Cursor

    board = LiveBoard(OutboxSection().priority_rules, strip_s=2.0)
    period = 2_000_000  # 500 Hz → every 2nd sample kept (≤ 260 Hz)

    def wave(i: int, n: int = 101) -> Batch:
        samples = np.arange(i * n, (i + 1) * n, dtype=np.int32)
        w = Waveform("ecg", "uV", T0 + i * n * period, period, samples)
        return Batch(SourceKey("ecg-1", ("b", i)), T0, waveforms=(w,))

    board.record(wave(0), 0)
    board.record(wave(1), 0)
    s = board.strips["ecg-1/ecg"]
    assert s.stride == 2 and s.period_ns == 4_000_000 and s.buf.size == 500
    kept = s.latest(s.n).tolist()
    assert kept == list(range(0, 202, 2))  # decimation runs on across batches
    assert s.end_ns == T0 + 202 * period
    viewer = Cursor()
    full = board.delta(viewer)["series"]["ecg-1/ecg"]
    assert full["full"] and full["v"] == kept
    assert board.delta(viewer)["series"] == {}
    for i in range(2, 6):
        board.record(wave(i), 0)
    news = board.delta(viewer)["series"]["ecg-1/ecg"]
    assert not news["full"] and news["v"] == list(range(202, 606, 2))
    for i in range(6, 20):  # the ring wraps: the newest 500 kept samples (2 s at 250 Hz)
        board.record(wave(i), 0)
    assert s.n == 500 and s.latest(3).tolist() == [2014, 2016, 2018]
    assert s.latest(500).tolist() == list(range(2020 - 1000, 2020, 2))
    assert board.delta(viewer)["series"]["ecg-1/ecg"]["full"]  # fell behind by more than the ring: all of it
    # a gap restarts the strip: viewers take it whole
    board.record(wave(40), 0)
    again = board.delta(viewer)["series"]["ecg-1/ecg"]
    assert again["full"] and len(again["v"]) == s.n < 60

    # trends: one point per 250 ms at most, forward only; alerts are notices
    for k, t in enumerate((0, 100, 300, 200, 600)):
        r = Reading("heart_rate", 60.0 + k, "/min", T0 + t * 1_000_000, alert=k == 4)
        board.record(Batch(SourceKey("hr-1", ("b", k)), T0, readings=(r,)), 0)
    trend = board.trends["hr-1/heart_rate"]
    assert list(trend.v) == [60.0, 62.0, 64.0]
    assert [n["why"] for n in board.delta(Cursor())["notices"]] == ["device alert"]

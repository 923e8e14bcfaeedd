"""The status page's view of the gateway: one JSON-ready dict built from the gateway's stats snapshot.

Pure (no I/O): :func:`status_view` takes what ``Gateway.status_snapshot()`` returns and the live board,
and says per device how it is connected (BLE link and slot, RSSI, 5G status), its battery, clock drift
and latest reading; per sink the outbox depth and dead letters; quarantine by reason; loss counters.
"""

from __future__ import annotations

from typing import Any

from gateway.web.live import LiveBoard


def _device(
    d: dict[str, Any], ble: dict[str, Any], g5: dict[str, Any], skews: dict[str, int], board: LiveBoard
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": d["id"],
        "kind": d["kind"],
        "enabled": d["enabled"],
        "patient": board.patient_of(d["id"]),
        "points": d.get("points", 0),
        "last_commit_age_s": d.get("last_commit_age_s"),
        "latest": d.get("latest"),
        "battery_pct": None,
        "clock_skew_s": None,
        "rssi": None,
        "slot": None,
    }
    b = ble.get(d["id"])
    if b is not None:
        out["transport"] = "ble"
        out["link"] = "connected" if b["connected"] else "connecting" if b.get("connecting") else "down"
        out["rssi"] = b.get("rssi")
        out["battery_pct"] = b.get("battery_pct")
        out["clock_skew_s"] = b.get("clock_skew_s")
        out["reconnects"] = max(0, int(b.get("connects", 0)) - 1)
        out["failures"] = b.get("failures", 0)
        held = b["connected"] or b.get("connecting")
        out["slot"] = f"{b.get('slot', 'stream')} slot" if held else "no slot"
        out["detail"] = b.get("last_error") if not b["connected"] else b.get("model_number")
    elif d["id"] in g5:
        out["transport"] = "5g"
        out["link"] = str(g5[d["id"]].get("state") or "unknown")
    else:
        out["transport"] = "ingest"
        out["link"] = "active" if (d.get("last_commit_age_s") or 1e9) < 30 else "idle"
    if out["clock_skew_s"] is None and d["id"] in skews:
        out["clock_skew_s"] = round(skews[d["id"]] / 1e9, 3)
    if out["battery_pct"] is None and d["id"] in board.battery:
        out["battery_pct"] = board.battery[d["id"]][0]
    return out


def status_view(snap: dict[str, Any], board: LiveBoard, rate: float) -> dict[str, Any]:
    """What the page shows besides the curves, from ``Gateway.status_snapshot()``."""
    c = snap.get("counters", {})
    ble = snap.get("ble", {}).get("devices", {})
    g5 = snap.get("mqtt", {}).get("device_status", {})
    skews: dict[str, int] = snap.get("clock_skews", {})
    outbox = snap.get("outbox", {})
    sinks = {}
    for name, s in snap.get("sinks", {}).items():
        o = outbox.get(name, {})
        sinks[name] = {
            "pending_batches": o.get("pending_batches"),
            "oldest_age_s": o.get("oldest_age_s"),
            "dead_letters": o.get("dead_letters"),
            "forwarded": c.get("readings_forwarded", {}).get(name, 0),
            "last_error": s.get("last_error"),
        }
    return {
        "gateway": snap.get("gateway"),
        "did": snap.get("did"),
        "uptime_s": round(snap.get("uptime_s", 0.0), 1),
        "clock_synchronised": snap.get("clock_synchronised"),
        "accepting": snap.get("accepting"),
        "backpressure": snap.get("backpressure"),
        "ready": snap.get("ready", {}),
        "rate": round(rate, 1),
        "counters": {
            "readings_committed": c.get("readings_committed", 0),
            "batches_duplicate": c.get("batches_duplicate", 0),
            "readings_lost": c.get("readings_lost", 0),
            "backpressure_refusals": c.get("backpressure_refusals", 0),
            "quarantine_overflow": c.get("quarantine_overflow", 0),
        },
        "sinks": sinks,
        "quarantine": snap.get("quarantine", {}),
        "disk": snap.get("disk", {}),
        "mqtt": None
        if "mqtt" not in snap
        else {"connected": snap["mqtt"]["connected"], "broker": snap["mqtt"]["broker"]},
        "ble": None
        if "ble" not in snap
        else {
            "scanning": snap["ble"].get("scanning"),
            "max_connections": snap["ble"].get("max_connections"),
            "connected": sum(1 for b in ble.values() if b["connected"]),
        },
        "devices": [_device(d, ble, g5, skews, board) for d in snap.get("devices", [])],
    }

"""Talking to a running gateway's control API from the command line (loopback, bearer token)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.errors import ControlError

TIMEOUT_S = 10.0


def control_call(state_dir: Path, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """``method path`` on the gateway whose state directory is ``state_dir``; returns the JSON answer."""
    try:
        url = json.loads((state_dir / "control.json").read_text())["url"]
        token = (state_dir / "control.token").read_text().strip()
    except (OSError, ValueError, KeyError) as e:
        raise ControlError(f"no running gateway found in {state_dir} (control.json/control.token: {e})") from e
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            answer: dict[str, Any] = json.loads(resp.read() or b"{}")
            return answer
    except urllib.error.HTTPError as e:
        try:
            reason = json.loads(e.read()).get("error", e.reason)
        except ValueError:
            reason = e.reason
        raise ControlError(f"{method} {path}: {e.code} {reason}") from e
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise ControlError(f"{method} {path}: gateway at {url} not reachable: {e}") from e

"""Progress of a fleet run: the plain ``[fleet] …`` lines on a pipe or a file (what ``ds4h-gateway
demo`` and the tests read), and on a terminal the same lines above a rich bar of the run's time
against its ``--duration``. Its own small helper: ``firmware_sim`` never imports ``gateway``."""

from __future__ import annotations

import os
import time
from typing import Any, TextIO


def is_terminal(stream: TextIO) -> bool:
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


class FleetProgress:
    """``line(text)`` for each progress line, ``tick()`` as often as convenient, ``close()`` at the end."""

    def __init__(self, stream: TextIO, duration_s: float | None, *, use_rich: bool | None = None) -> None:
        self._stream = stream
        self._duration_s = duration_s
        self._started = time.monotonic()
        self._rich: Any = None
        self._task: Any = None
        if use_rich if use_rich is not None else is_terminal(stream):
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._rich = Progress(
                TextColumn("[bold]fleet"),
                BarColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(file=stream, highlight=False),
            )
            self._rich.start()
            self._task = self._rich.add_task("fleet", total=duration_s, status="running")

    @property
    def rich(self) -> bool:
        return self._rich is not None

    def tick(self, status: str | None = None) -> None:
        if self._rich is None:
            return
        elapsed = time.monotonic() - self._started
        if self._duration_s is not None:
            elapsed = min(elapsed, self._duration_s)
        fields = {} if status is None else {"status": status}
        self._rich.update(self._task, completed=elapsed, **fields)

    def line(self, text: str) -> None:
        if self._rich is None:
            self._stream.write(text + "\n")
            self._stream.flush()
        else:
            self._rich.console.print(text, markup=False, highlight=False, soft_wrap=True)
            self.tick()

    def close(self) -> None:
        if self._rich is not None:
            self.tick()
            self._rich.stop()
            self._rich = None

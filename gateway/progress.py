"""Progress of long work (export, backlog drain, provisioning): a rich progress bar on a terminal,
plain lines otherwise (a pipe, a file, the journal, ``TERM=dumb``), so logs stay greppable.

    with progress("export", total=n, unit="envelopes") as bar:
        for env in bar.track(envelopes):
            ...
        bar.log("a line of its own")        # above the bar on a terminal, as is otherwise

Plain mode prints ``<label>: <done>/<total> <unit> (<pct>%)[, <status>]`` at most every
``interval_s`` seconds and once at the end (``… in <s> s``). Output goes to stderr by default, so
stdout keeps what a command prints as its result.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO, TypeVar

T = TypeVar("T")


def is_terminal(stream: TextIO) -> bool:
    """Does ``stream`` go to an interactive terminal that can redraw a bar?"""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


def _num(x: float) -> str:
    return f"{int(x)}" if float(x).is_integer() else f"{x:.1f}"


class ProgressBar:
    """One unit of long work; made by :func:`progress`."""

    def __init__(
        self, label: str, total: float | None, unit: str, stream: TextIO, interval_s: float, plain_counts: bool
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.completed = 0.0
        self.status = ""
        self._stream = stream
        self._interval_s = interval_s
        self._plain_counts = plain_counts
        self._started = time.monotonic()
        self._last_line = self._started
        self._rich: Any = None
        self._task: Any = None

    # --- the rich side ---------------------------------------------------------------------------
    def _start_rich(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(file=self._stream, highlight=False)
        self._rich = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(self.unit),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            transient=False,
        )
        self._rich.start()
        self._task = self._rich.add_task(self.label, total=self.total, status="")

    @property
    def rich(self) -> bool:
        return self._rich is not None

    # --- updates ---------------------------------------------------------------------------------
    def update(self, *, completed: float | None = None, total: float | None = None, status: str | None = None) -> None:
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        if status is not None:
            self.status = status
        if self._rich is not None:
            self._rich.update(self._task, completed=self.completed, total=self.total, status=self.status)
        elif self._plain_counts and time.monotonic() - self._last_line >= self._interval_s:
            self._line()

    def advance(self, n: float = 1) -> None:
        self.update(completed=self.completed + n)

    def track(self, items: Iterable[T]) -> Iterator[T]:
        """Yield ``items``, advancing by one for each."""
        for item in items:
            yield item
            self.advance()

    def log(self, text: str) -> None:
        """A line of its own: printed above the bar on a terminal, as is otherwise."""
        if self._rich is not None:
            self._rich.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=self._stream, flush=True)

    def describe(self, *, final: bool = False) -> str:
        done = _num(self.completed)
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            pct = min(100.0, 100.0 * self.completed / self.total)
            text = f"{self.label}: {done}/{_num(self.total)}{unit} ({pct:.0f}%)"
        else:
            text = f"{self.label}: {done}{unit}"
        if self.status:
            text += f", {self.status}"
        if final:
            text += f" in {time.monotonic() - self._started:.1f} s"
        return text

    def _line(self, *, final: bool = False) -> None:
        self._last_line = time.monotonic()
        print(self.describe(final=final), file=self._stream, flush=True)

    def _close(self) -> None:
        if self._rich is not None:
            self._rich.update(self._task, completed=self.completed, total=self.total, status=self.status)
            self._rich.stop()
        elif self._plain_counts:
            self._line(final=True)


@contextmanager
def progress(
    label: str,
    total: float | None = None,
    *,
    unit: str = "",
    stream: TextIO | None = None,
    interval_s: float = 2.0,
    plain_counts: bool = True,
    use_rich: bool | None = None,
) -> Iterator[ProgressBar]:
    """A progress bar for one unit of work: rich on a terminal, plain lines otherwise.

    ``plain_counts=False``: in plain mode print only what :meth:`ProgressBar.log` is given (for work
    that already reports each step). ``use_rich`` overrides the terminal detection."""
    out = stream if stream is not None else sys.stderr
    bar = ProgressBar(label, total, unit, out, interval_s, plain_counts)
    if use_rich if use_rich is not None else is_terminal(out):
        bar._start_rich()
    try:
        yield bar
    finally:
        bar._close()

"""Progress of long steps (items done / total, rate, time left) and where a step's time went.

``Progress`` logs a line every few seconds (Dagster's event log, in assets) and, when a
display is installed in this process (the headless command installs one), shows every
update there: a live bar on a terminal, plain periodic lines otherwise.
``Stopwatch`` adds up seconds per named stage for a step's metadata and the summary.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_DISPLAY: list[Callable[[Progress, bool], None]] = []  # at most one, set by show_progress


def show_progress(display: Callable[[Progress, bool], None] | None) -> None:
    """Send every update of every ``Progress`` of this process to ``display(progress, finished)``."""
    _DISPLAY[:] = [display] if display else []


class Progress:
    def __init__(self, what: str, total: int | None, log: Callable[[str], None], every_s: float = 5.0):
        self.what, self.total, self.log, self.every_s = what, total, log, every_s
        self.done = 0
        self.start = self.last = time.perf_counter()
        self._lock = threading.Lock()  # advanced from worker threads too

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            now = time.perf_counter()
            due = now - self.last >= self.every_s
            if due:
                self.last = now
        if due:
            self.log(self.line())
        if _DISPLAY:
            _DISPLAY[0](self, False)

    def finish(self) -> None:
        if _DISPLAY:
            _DISPLAY[0](self, True)

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rate(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def left_s(self) -> float | None:
        if not self.total or self.rate <= 0:
            return None
        return max(self.total - self.done, 0) / self.rate

    def line(self) -> str:
        text = f"{self.what}: {self.done}" + (f"/{self.total}" if self.total else "")
        text += f" ({self.rate:.1f}/s"
        if (left := self.left_s) is not None:
            text += f", ~{left:.0f} s left"
        return text + ")"


class Stopwatch:
    """Seconds per named stage, in the order stages first ran. ``add`` also takes time
    measured elsewhere (busy seconds summed over worker threads)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def rounded(self) -> dict[str, float]:
        return {name: round(s, 3) for name, s in self.seconds.items()}

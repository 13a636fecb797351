"""Progress lines for long steps: items done / total, rate, time left, every few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    def __init__(self, what: str, total: int | None, log: Callable[[str], None], every_s: float = 5.0):
        self.what, self.total, self.log, self.every_s = what, total, log, every_s
        self.done = 0
        self.start = self.last = time.perf_counter()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            self.log(self.line())

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rate(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        text = f"{self.what}: {self.done}" + (f"/{self.total}" if self.total else "")
        text += f" ({self.rate:.1f}/s"
        if self.total and self.rate > 0:
            text += f", ~{max(self.total - self.done, 0) / self.rate:.0f} s left"
        return text + ")"

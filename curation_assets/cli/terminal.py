"""The headless command's live view of long steps, on stderr.

On a terminal a bar redrawn in place (items done / total, rate, time left) at most ten
times a second; when stderr is a file or a pipe (cron, CI), a plain line every few seconds.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from curation_assets.core.progress import Progress

BAR = 24


class TerminalProgress:
    def __init__(self, stream: TextIO = sys.stderr, every_s: float | None = None):
        self.stream = stream
        self.tty = stream.isatty()
        self.every_s = every_s if every_s is not None else (0.1 if self.tty else 5.0)
        self._shown: dict[int, float] = {}
        self._lock = threading.Lock()

    def __call__(self, progress: Progress, finished: bool) -> None:
        now = time.perf_counter()
        with self._lock:
            first = id(progress) not in self._shown
            if not (finished or first) and now - self._shown[id(progress)] < self.every_s:
                return
            self._shown[id(progress)] = now
            if finished:
                self._shown.pop(id(progress))
            text = self.finished(progress) if finished else self.bar(progress)
            if self.tty:
                self.stream.write("\r\x1b[2K" + text + ("\n" if finished else ""))
            elif not first or finished:
                self.stream.write(text + "\n")
            self.stream.flush()

    @staticmethod
    def bar(p: Progress) -> str:
        if p.total:
            filled = min(BAR, round(BAR * p.done / p.total))
            text = f"{p.what} [{'#' * filled}{'.' * (BAR - filled)}] {p.done}/{p.total}"
        else:
            text = f"{p.what} {p.done}"
        text += f"  {p.rate:.1f}/s"
        if (left := p.left_s) is not None:
            text += f"  ~{left:.0f} s left"
        return text

    @staticmethod
    def finished(p: Progress) -> str:
        return f"{p.what}: {p.done} in {p.elapsed_s:.1f} s ({p.rate:.1f}/s)"

"""A one-line progress bar on standard error, rewritten in place with '\\r': done/total, rate, time left."""

from __future__ import annotations

import sys
import time
from typing import IO

BAR_WIDTH = 24  # characters of the bar itself


class ProgressBar:
    """Counts results as they come; draws nothing when `stream` is not a terminal or `quiet` is set."""

    def __init__(self, total: int, done: int, *, quiet: bool = False, stream: IO[str] | None = None):
        self.stream = stream or sys.stderr
        self.total, self.done, self.already = total, done, done  # `already`: done by earlier runs
        self.shown = not quiet and self.stream.isatty()
        self.started = time.monotonic()

    def advance(self) -> None:
        self.done += 1
        self.draw()

    def draw(self) -> None:
        if self.shown:
            self.stream.write("\r" + self.line())
            self.stream.flush()

    def line(self) -> str:
        """'[#########---------------]  24/64  37%  3.1/s  eta 0:13': the rate counts this run's results only."""
        fraction = self.done / self.total if self.total else 1.0
        filled = round(BAR_WIDTH * fraction)
        width = len(str(self.total))
        made, seconds = self.done - self.already, time.monotonic() - self.started
        rate = made / seconds if seconds > 0 else 0.0
        left = f"eta {_clock((self.total - self.done) / rate)}" if rate > 0 else "eta -"
        return (
            f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {self.done:>{width}}/{self.total}  {fraction:4.0%}  "
            f"{rate:.1f}/s  {left}"
        )

    def finish(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, second = divmod(round(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}" if hours else f"{minute}:{second:02d}"

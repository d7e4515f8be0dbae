"""A small progress bar for training, on stderr: redrawn in place on a terminal, a line now and then otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """`update(step, ...)` after every step; `note(text)` prints a line (e.g. a validation loss) above the bar."""

    WIDTH = 24  # characters in the bar itself
    REDRAW_SECONDS = 0.1  # a terminal is redrawn at most this often
    LINES = 20  # without a terminal, about this many progress lines over the whole run

    def __init__(self, total: int, start: int = 0, stream: TextIO | None = sys.stderr):
        self.total = total  # the step the run ends at
        self.start = start  # the step it starts from (after a resume)
        self.stream = stream
        self.interactive = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._line = ""
        self._every = max(1, (total - start) // self.LINES)

    def update(self, step: int, loss: float, tokens_per_second: float, seconds_left: float) -> None:
        if self.stream is None:
            return
        done = (step - self.start) / max(self.total - self.start, 1)
        filled = round(self.WIDTH * step / max(self.total, 1))
        self._line = (
            f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] step {step}/{self.total}  loss {loss:.3f}  "
            f"{tokens_per_second:,.0f} tok/s  {_clock(seconds_left)} left"
        )
        if self.interactive:
            now = time.monotonic()
            if now - self._last_draw >= self.REDRAW_SECONDS or step == self.total:
                self.stream.write("\r" + self._line + "\033[K")
                self.stream.flush()
                self._last_draw = now
        elif step == self.total or (step - self.start) % self._every == 0 or done == 0:
            self.stream.write(self._line + "\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        if self.stream is None:
            return
        if self.interactive:
            self.stream.write("\r" + text + "\033[K\n" + self._line)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None and self.interactive and self._line:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(max(int(seconds), 0), 60)
    return f"{minutes}:{seconds:02d}"

"""A small progress display for long sweeps: a redrawn bar on a terminal, plain lines otherwise.

On a TTY the bar is one line rewritten in place (`\\r`), at most every `redraw` seconds:
`[#########...........]  120/200  60%  45.2 runs/s  ETA 2s  (1 with violations)`. When the
stream is a file or a pipe (CI logs), carriage returns would make a mess, so it writes a plain
line each time another tenth of the runs is done or `every` seconds have passed, whichever comes
first. It reads a real clock (the caller's `clock`), which is fine: it only talks to a human and
never feeds anything back into a simulated run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 30


def format_eta(seconds: float) -> str:
    """`0s`, `42s`, `3m05s`, `2h04m`."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Call `update(done, failed)` after each finished run and `close()` at the end."""

    def __init__(
        self,
        total: int,
        stream: TextIO,
        *,
        tty: bool | None = None,
        label: str = "sweep",
        clock: Callable[[], float] = time.monotonic,
        redraw: float = 0.1,
        every: float = 30.0,
    ) -> None:
        self.total = total
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.label = label
        self.clock = clock
        self.redraw = redraw
        self.every = every
        self.started = clock()
        self._last_draw = float("-inf") if self.tty else self.started
        self._last_tenth = 0
        self._width = 0  # characters of the bar on screen, to blank it out when it shrinks or closes
        self._done = 0
        self._failed = 0

    def status(self, done: int, failed: int, now: float) -> str:
        """`120/200  60%  45.2 runs/s  ETA 2s` (+ the count of runs with violations, if any)."""
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        pct = 100 * done // self.total if self.total else 100
        text = f"{done}/{self.total}  {pct}%  {rate:.1f} runs/s"
        if done < self.total:
            text += f"  ETA {format_eta((self.total - done) / rate)}" if done else "  ETA ?"
        if failed:
            text += f"  ({failed} with violations)"
        return text

    def bar(self, done: int) -> str:
        filled = BAR_WIDTH * done // self.total if self.total else BAR_WIDTH
        return "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]"

    def update(self, done: int, failed: int = 0) -> None:
        self._done, self._failed = done, failed
        now = self.clock()
        if self.tty:
            if now - self._last_draw >= self.redraw or done == self.total:
                self._draw(f"{self.bar(done)}  {self.status(done, failed, now)}")
                self._last_draw = now
            return
        tenth = 10 * done // self.total if self.total else 10
        if tenth > self._last_tenth or now - self._last_draw >= self.every:
            self._last_tenth = tenth
            self._last_draw = now
            self.stream.write(f"{self.label}: {self.status(done, failed, now)}\n")
            self.stream.flush()

    def _draw(self, text: str) -> None:
        pad = " " * max(0, self._width - len(text))
        self.stream.write(f"\r{text}{pad}")
        self.stream.flush()
        self._width = len(text)

    def close(self) -> None:
        """Leave the last state on screen (TTY: end the line); plain mode: the final count once."""
        if self.tty:
            if self._width:
                self._draw(f"{self.bar(self._done)}  {self.status(self._done, self._failed, self.clock())}")
                self.stream.write("\n")
                self.stream.flush()
        elif self._last_tenth < 10 and self._done:
            self.stream.write(f"{self.label}: {self.status(self._done, self._failed, self.clock())} (stopped)\n")
            self.stream.flush()

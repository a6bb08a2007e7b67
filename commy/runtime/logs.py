"""Structured logs: one record per event, as JSON lines for machines or readable lines for people.

Every actor logs through its context as `(node, actor, level, event, fields)`; a node hands each
record to its `LogSink`. `log_sink_for(stream, level, fmt)` picks the sink `commy serve` writes with:
`fmt="auto"` (the default) gives readable lines when `stream` is a terminal and JSON lines (one
object per line: `t`, `node`, `actor`, `level`, `event`, then the event's fields, flushed at once so
a supervisor tailing a file sees it live) when it is not -- a file, a pipe, a log collector.
Records below `level` ("debug", "info", "warning", "error") are left out either way.

A readable line is `HH:MM:SS.mmm LEVEL node actor event key=value ...`, values that need it quoted
as JSON strings, the level coloured on a terminal unless `NO_COLOR` is set. The operator-relevant
events -- `peer_state` (peer, old, new), `node_failed`, `migration`, `session_revoked`,
`file_rotated`, `honeypot_touched` -- are single records carrying their fields, so either form can
be searched by event name.

`EventCounts` wraps a sink and counts every record by level and by event before the level filter,
so the metrics see warnings, errors and alerts even when the log shows only some of them.

Off a terminal, `log_sink_for` never lets the node's loop wait on the stream: a record is formatted
on the loop and queued (`QueuedStream`, at most `QUEUE_LINES` lines), and a thread of its own
writes and flushes the queue. A reader that does not keep up (a stalled pipe, a full disk) costs
records, not the node: when the queue is full a record is dropped and counted, and once the writer
gets through again it writes one `log_records_dropped` record (warning, field `dropped`). What is
queued at exit is written then (bounded by `CLOSE_TIMEOUT`). A terminal, and a stream without a
file descriptor (a `StringIO`), is written directly.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import threading
import time
from collections import Counter
from typing import TextIO, cast

from commy.core.node import LogSink
from commy.runtime.standalone import LEVELS, json_log_sink

__all__ = ["FORMATS", "LEVELS", "EventCounts", "QueuedStream", "close_log_writers", "log_sink_for", "text_log_sink"]

QUEUE_LINES = 10_000  # records waiting for a slow reader before new ones are dropped
CLOSE_TIMEOUT = 5.0  # seconds `close` waits for the queue to be written

FORMATS = ("auto", "json", "text")
_COLOURS = {"debug": "\033[2m", "info": "\033[36m", "warning": "\033[33m", "error": "\033[1;31m"}
_RESET = "\033[0m"
_BARE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/@+-")


def _show(value: object) -> str:
    """A field value for a readable line: bare when that is unambiguous, else JSON."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value and set(value) <= _BARE:
        return value
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, default=str, separators=(",", ":"))


def text_log_sink(stream: TextIO, min_level: str = "info", *, colour: bool = False) -> LogSink:
    """A sink writing each record as one readable line (see the module docstring)."""
    threshold = LEVELS[min_level]

    def sink(node: str, actor: str, level: str, event: str, fields: dict[str, object]) -> None:
        if LEVELS.get(level, 50) < threshold:
            return
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        shown = f"{level.upper():7}"
        if colour:
            shown = _COLOURS.get(level, "") + shown + _RESET
        parts = [stamp, shown, node, actor, event, *(f"{k}={_show(v)}" for k, v in fields.items())]
        stream.write(" ".join(parts) + "\n")
        stream.flush()

    return sink


def log_sink_for(stream: TextIO, min_level: str = "info", fmt: str = "auto") -> LogSink:
    """The sink for `stream`: readable lines on a terminal, JSON lines elsewhere (`fmt` may insist)."""
    if min_level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {min_level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    tty = _isatty(stream)
    text = fmt == "text" or (fmt == "auto" and tty)
    target = stream if tty or not _has_fd(stream) else cast(TextIO, QueuedStream(stream, json_form=not text))
    if text:
        return text_log_sink(target, min_level, colour=tty and not os.environ.get("NO_COLOR"))
    return json_log_sink(target, min_level)


def _has_fd(stream: TextIO) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return False
    return True


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return False


class EventCounts:
    """Counts of the records that went through `wrap`'s sink, by level and by event name."""

    def __init__(self) -> None:
        self.levels: Counter[str] = Counter()
        self.events: Counter[str] = Counter()

    def wrap(self, sink: LogSink) -> LogSink:
        levels, events = self.levels, self.events

        def counting(node: str, actor: str, level: str, event: str, fields: dict[str, object]) -> None:
            levels[level] += 1
            events[event] += 1
            sink(node, actor, level, event, fields)

        return counting


_WRITERS: list[QueuedStream] = []


class QueuedStream:
    """A write-only text stream whose lines a thread writes to `stream` (see the module docstring).

    Each `write` must be whole lines (the sinks write one record per call); `flush` does nothing:
    the thread flushes after each batch. `dropped` counts the lines refused while the queue was full.
    """

    def __init__(self, stream: TextIO, capacity: int = QUEUE_LINES, *, json_form: bool = True) -> None:
        self.stream = stream
        self.json_form = json_form
        self.dropped = 0  # lines refused since the start
        self._reported = 0  # of those, already told in a log_records_dropped record
        self._queue: queue.Queue[str | None] = queue.Queue(capacity)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="commy-log-writer", daemon=True)
        self._thread.start()
        _WRITERS.append(self)

    def write(self, text: str) -> int:
        if self._closed:
            return 0
        try:
            self._queue.put_nowait(text)
        except queue.Full:
            self.dropped += 1
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Write what is queued (waiting at most `timeout` seconds), then stop the thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _notice(self) -> str:
        n = self.dropped - self._reported
        self._reported += n
        if self.json_form:
            return json.dumps({"t": round(time.time(), 6), "node": "", "actor": "log", "level": "warning",
                               "event": "log_records_dropped", "dropped": n}) + "\n"
        return f"{time.strftime('%H:%M:%S')}.000 WARNING - log log_records_dropped dropped={n}\n"

    def _run(self) -> None:
        done = False
        while not done:
            batch = [self._queue.get()]
            while len(batch) < 512:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            done = None in batch
            lines = [line for line in batch if line is not None]
            if self.dropped > self._reported:
                lines.append(self._notice())
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except (OSError, ValueError):  # the reader is gone or the stream closed: nothing to tell
                self.dropped += len(lines)
                self._reported = self.dropped


@atexit.register
def close_log_writers() -> None:
    """Write out every `QueuedStream`'s queue (at exit, each bounded by `CLOSE_TIMEOUT`)."""
    while _WRITERS:
        _WRITERS.pop().close()

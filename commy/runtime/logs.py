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
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from typing import TextIO

from commy.core.node import LogSink
from commy.runtime.standalone import LEVELS, json_log_sink

__all__ = ["FORMATS", "LEVELS", "EventCounts", "log_sink_for", "text_log_sink"]

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
    if fmt == "text" or (fmt == "auto" and tty):
        return text_log_sink(stream, min_level, colour=tty and not os.environ.get("NO_COLOR"))
    return json_log_sink(stream, min_level)


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

"""Reading a trace one row at a time: which rows matter, one line for each, and a pager.

`notable(row)` picks the rows a person stepping through a run wants to stop at: faults, heartbeat
view changes, warnings and errors nodes logged, what clients lived through (lost, resumed, revoked,
refused, moved), broken links and dead letters -- not the thousands of ordinary deliveries.
`step_text(row, style)` says a row in one line (`  5.628s n2 sees n1 SUSPECTED (was healthy)`), and
`walk(lines, out, ask)` prints lines one by one, calling `ask` after each: Enter goes on, `c`
prints the rest without stopping, `q` stops; with no `ask` (stdin is not a terminal) it prints all.
`narrate(rows)` is the notebook's form: the notable rows of a table, in words, as one string.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

from sim.checkers import peer_change
from sim.console import STATE_STYLE, Style
from sim.timeline import FAULT_EVENTS
from sim.timeline import _describe as describe_fault

CLIENT_EVENTS = frozenset({"c:lost", "c:resumed", "c:revoked", "c:logged_out", "c:migrate", "c:admin", "c:timeout",
                           "c:error", "c:intrusion", "c:refused"})
NET_EVENTS = frozenset({"link_error", "LinkDown", "rogue"})


def notable(row: Mapping[str, Any]) -> bool:
    event = str(row["event"])
    if row["actor"] == "recorder":  # a snapshot of the state, not something that happened
        return False
    if row["actor"] == "sim":
        return event in FAULT_EVENTS or event == "disk_lost"
    if event == "log:peer_state":
        return True
    if event.startswith("log:"):
        return isinstance(row["detail"], tuple | list) and row["detail"][0] in ("warning", "error")
    return event in CLIENT_EVENTS or event in NET_EVENTS or event == "dead"


def _fields(fields: Any) -> str:
    if isinstance(fields, Mapping):
        return " ".join(f"{k}={v}" for k, v in fields.items())
    return str(fields)


def describe(row: Mapping[str, Any], style: Style = Style()) -> str:
    """One row in words (any row: the notable ones read best)."""
    node, actor, event, detail = row["node"], row["actor"], str(row["event"]), row["detail"]
    if actor == "sim" and event in FAULT_EVENTS:
        return style.paint(describe_fault(node, event, detail), "magenta", "bold")
    if event == "disk_lost":
        return style.paint(f"{node} loses its disk", "magenta", "bold")
    change = peer_change((row["time"], node, actor, event, detail))
    if change is not None:
        peer, old, new = change
        return f"{node} sees {peer} {style.paint(new.upper(), 'bold', STATE_STYLE.get(new.upper(), 'dim'))} (was {old})"
    if event.startswith("log:"):
        level, fields = detail if isinstance(detail, tuple | list) and len(detail) == 2 else ("info", detail)
        text = f"{node}/{actor} {event[4:]} {_fields(fields)}".rstrip()
        return style.paint(text, "red" if level == "error" else "yellow") if level != "info" else text
    if event.startswith("c:"):
        return style.paint(f"client {node}", "cyan") + f" {event[2:]} {_plain(detail)}".rstrip()
    if event == "drop":
        reason, dst, what = detail
        return f"{node} -> {dst} dropped ({reason}, {what})"
    if event in ("recv", "local", "dead"):
        mtype, sender, msg_id = detail
        text = f"{node}/{actor} {event} {mtype} from {sender}" + (f" #{msg_id}" if msg_id else "")
        return style.paint(text, "red") if event == "dead" else text
    return f"{node}/{actor} {event} {_plain(detail)}".rstrip()


def _plain(detail: Any) -> str:
    if detail is None:
        return ""
    if isinstance(detail, tuple | list):
        return " ".join(_plain(d) for d in detail)
    return str(detail)


def step_text(row: Mapping[str, Any], style: Style = Style()) -> str:
    return style.paint(f"{row['time']:8.3f}s", "dim") + " " + describe(row, style)


def walk(lines: Sequence[str], out: TextIO, ask: Callable[[str], str] | None = None) -> int:
    """Print `lines`, asking after each (see the module docstring); returns how many were shown."""
    for i, line in enumerate(lines):
        print(line, file=out, flush=True)
        if ask is None or i == len(lines) - 1:
            continue
        try:
            answer = ask("").strip().lower()
        except EOFError:  # stdin closed: show the rest
            ask = None
            continue
        if answer == "q":
            print(f"(stopped after {i + 1} of {len(lines)})", file=out)
            return i + 1
        if answer == "c":
            ask = None
    return len(lines)


def narrate(rows: Iterable[Mapping[str, Any]], style: Style = Style(), *, indent: int = 0, every: bool = False) -> str:
    """The notable rows (or `every` row) in words, one line each, for printing in a notebook."""
    pad = " " * indent
    return "\n".join(pad + step_text(r, style) for r in rows if every or notable(r))

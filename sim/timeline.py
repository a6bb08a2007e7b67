"""A short, readable timeline of a run, built from the trace as it happens.

Lines are `  5.000s n1 sees n3 SUSPECTED` for heartbeat peer-state changes and `  5.000s n3
crashes` for faults; times are seconds since the start. To stay short it folds two kinds of
noise: the initial JOINING -> HEALTHY transitions of the first incarnations become one "all N
nodes see each other HEALTHY" line, and a SUSPECTED that recovers to HEALTHY without reaching DOWN
(a lost heartbeat or two) is removed and only counted. A DOWN caused by a crash or a partition
says how long after the fault it came. Very long timelines keep their head and tail.
"""

from __future__ import annotations

from typing import Any

from sim.checkers import PARTITIONS, peer_change
from sim.trace import Row, Trace

FAULT_EVENTS = PARTITIONS | {"crash", "restart", "pause", "resume", "heal", "break_link", "skew", "configure"}
MAX_LINES = 60


def _fmt_time(t: float) -> str:
    return f"{t:8.3f}s"


def _describe(node: str, event: str, detail: Any) -> str:
    if event == "crash":
        return f"{node} crashes"
    if event == "restart":
        return f"{node} restarts (incarnation {detail})"
    if event == "pause":
        return f"{node} pauses"
    if event == "resume":
        return f"{node} resumes ({detail} held events replayed)"
    if event == "partition":
        return "partition " + " | ".join("{" + ", ".join(g) + "}" for g in detail)
    if event == "partition_one_way":
        return f"one-way partition {{{', '.join(detail[0])}}} -> {{{', '.join(detail[1])}}} blocked"
    if event == "bridge":
        return f"bridge partition {{{', '.join(detail[0])}}} | {{{', '.join(detail[1])}}} (others reach both)"
    if event == "heal":
        return "heal: every partition removed"
    if event == "break_link":
        return f"connection {node} <-> {detail} breaks"
    if event == "skew":
        return f"{node} clock skew set to {detail:+.3f}s"
    if event == "configure":
        dst, changes = detail
        where = "every link" if node == "*" and dst is None else f"links {node} -> {dst or '*'}"
        return f"{where}: " + ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in changes)
    return f"{node} {event} {detail}"


class Timeline:
    """Listens to a trace and keeps the lines worth reading."""

    def __init__(self, trace: Trace, node_ids: list[str]) -> None:
        self.node_ids = node_ids
        self._lines: list[tuple[float, str] | None] = []
        self._joining_left = len(node_ids) * (len(node_ids) - 1)
        self._restarted: set[str] = set()
        self._suspect_line: dict[tuple[str, str], int] = {}  # (observer, peer) -> index of a held SUSPECTED line
        self._fault_at: dict[str, tuple[float, str]] = {}  # node -> (time, what) of the last crash/pause
        self._cut_at: float | None = None
        self.flaps = 0
        trace.subscribe(self._on_row, FAULT_EVENTS | {"log:peer_state"})

    def add(self, t: float, text: str) -> None:
        self._lines.append((t, text))

    def _on_row(self, row: Row) -> None:
        t, node, _, event, detail = row
        if event in FAULT_EVENTS:
            self.add(t, _describe(node, event, detail))
            if event in ("crash", "pause"):
                self._fault_at[node] = (t, "crash" if event == "crash" else "pause")
            elif event in ("restart", "resume"):
                self._fault_at.pop(node, None)
                if event == "restart":
                    self._restarted.add(node)
            elif event in PARTITIONS:
                self._cut_at = t
            elif event == "heal":
                self._cut_at = None
            return
        change = peer_change(row)
        if change is None:
            return
        peer, old, new = change
        if old == "joining" and new == "healthy" and node not in self._restarted:
            self._joining_left -= 1
            if self._joining_left == 0:
                self.add(t, f"all {len(self.node_ids)} nodes see each other HEALTHY")
            return
        key = (node, peer)
        held = self._suspect_line.pop(key, None)
        if new == "healthy" and held is not None:
            self._lines[held] = None  # a brief suspicion: fold it
            self.flaps += 1
            return
        text = f"{node} sees {peer} {new.upper()}"
        if new == "down":
            text += self._cause(peer, t)
        if new == "suspected":
            self._suspect_line[key] = len(self._lines)
        self.add(t, text)

    def _cause(self, peer: str, t: float) -> str:
        fault = self._fault_at.get(peer)
        if fault is not None:
            return f" ({t - fault[0]:.3f}s after its {fault[1]})"
        if self._cut_at is not None:
            return f" ({t - self._cut_at:.3f}s after the partition)"
        return ""

    def lines(self, end: tuple[float, str] | None = None) -> list[str]:
        """The timeline so far, then the folded-suspicions count, then `end` (a closing line)."""
        kept = [entry for entry in self._lines if entry is not None]
        out = [f"{_fmt_time(t)} {text}" for t, text in kept]
        if self.flaps:
            out.append(f"{'':9} ({self.flaps} brief suspicions folded: SUSPECTED, then HEALTHY at the next answer)")
        if end is not None:
            out.append(f"{_fmt_time(end[0])} {end[1]}")
        if len(out) > MAX_LINES:
            head, tail = out[: MAX_LINES - 11], out[-10:]
            out = [*head, f"{'':9} ... {len(out) - len(head) - len(tail)} lines omitted ...", *tail]
        return out

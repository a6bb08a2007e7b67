"""Traces as plain tables: lists of dicts with a few helpers, for notebooks, plots and exports.

A `Table` is rows (dicts) and the column names in first-seen order. It filters (`where`,
`between`), picks columns (`select`, `column`), sorts, and shows itself as text or, in a notebook,
as HTML -- nothing more: anyone who wants pandas can call `pandas.DataFrame(table.rows)`.

`TraceRecorder` listens to a cluster's trace and keeps every row it sees (or only some events) as
`{time, node, actor, event, detail}`; `detail` stays the Python value the simulator recorded
(`sim.trace_export` turns it into JSON). Listening changes nothing in the run or its hash.

The derived tables read a trace table and name what is in it:

- `peer_state_table`: each heartbeat view change, `{time, observer, peer, old, new}`;
- `fault_table`: crashes, restarts, pauses, partitions, heals, link settings, `{time, node, event, detail}`;
- `client_table`: what simulated clients lived through, `{time, client, node, event, detail}`, where
  `node` is the node the client was connected to at the time (events are `connect`, `auth`, `lost`,
  `resumed`, `ack`, `error`, `recv`, ... without their `c:` prefix);
- `write_table`: each write a client sent and learned the outcome of, or gave up waiting for
  (`c:timeout` of a `SetVariables`: outcome `unknown`), `{time, client, node, variable, outcome,
  stamp, origin, concern}` (`origin`: the node index in the stamp, the node that ordered it);
- `state_spans`: the peer-state changes as intervals `{observer, peer, state, start, end}`
  ("joining" from 0 until the first change, unless the recording began with a snapshot).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

from commy.core.hlc import origin_of
from sim.checkers import peer_change, peer_state
from sim.timeline import FAULT_EVENTS
from sim.trace import Row

if TYPE_CHECKING:
    from sim.cluster import SimCluster

TEXT_ROWS = 20
SNAPSHOT = "snapshot:peer_state"


class Table:
    """Rows of plain dicts (see the module docstring)."""

    def __init__(self, rows: Iterable[Mapping[str, Any]] = (), columns: Sequence[str] | None = None) -> None:
        self.rows: list[dict[str, Any]] = [dict(r) for r in rows]
        if columns is None:
            seen: dict[str, None] = {}
            for r in self.rows:
                seen.update(dict.fromkeys(r))
            columns = list(seen)
        self.columns: list[str] = list(columns)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> Table: ...

    def __getitem__(self, i: int | slice) -> dict[str, Any] | Table:
        return Table(self.rows[i], self.columns) if isinstance(i, slice) else self.rows[i]

    def column(self, name: str) -> list[Any]:
        return [r.get(name) for r in self.rows]

    def where(self, pred: Callable[[dict[str, Any]], bool] | None = None, **equals: Any) -> Table:
        """Rows where `pred(row)` holds and each named column equals the value (a set/tuple: is in it)."""
        def keep(r: dict[str, Any]) -> bool:
            for k, v in equals.items():
                if (r.get(k) not in v) if isinstance(v, set | frozenset | tuple | list) else r.get(k) != v:
                    return False
            return pred is None or pred(r)

        return Table([r for r in self.rows if keep(r)], self.columns)

    def between(self, start: float, end: float, column: str = "time") -> Table:
        """Rows with `start <= row[column] <= end`."""
        return self.where(lambda r: start <= r[column] <= end)

    def select(self, *columns: str) -> Table:
        return Table([{c: r.get(c) for c in columns} for r in self.rows], columns)

    def sort(self, column: str, *, reverse: bool = False) -> Table:
        return Table(sorted(self.rows, key=lambda r: _sort_key(r.get(column)), reverse=reverse), self.columns)

    def count_by(self, column: str) -> dict[Any, int]:
        out: dict[Any, int] = {}
        for r in self.rows:
            out[r.get(column)] = out.get(r.get(column), 0) + 1
        return out

    def head(self, n: int = 10) -> Table:
        return self[:n]

    def tail(self, n: int = 10) -> Table:
        return self[-n:] if n else Table([], self.columns)

    # ---- showing it

    def to_text(self, limit: int = TEXT_ROWS) -> str:
        shown = self.rows[:limit]
        cells = [[_cell(r.get(c)) for c in self.columns] for r in shown]
        widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
        if len(self.rows) > limit:
            lines.append(f"... {len(self.rows) - limit} more rows")
        return "\n".join(lines) if self.columns else "(no rows)"

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"Table({len(self.rows)} rows: {', '.join(self.columns)})"

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in self.columns) + "</tr>"
                       for r in self.rows[:TEXT_ROWS * 2])
        more = f"<p>... {len(self.rows) - TEXT_ROWS * 2} more rows</p>" if len(self.rows) > TEXT_ROWS * 2 else ""
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _sort_key(value: Any) -> tuple[int, Any]:
    """None sorts first; anything else by itself (a column holds values of one kind)."""
    return (0, 0) if value is None else (1, value)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if value == value else "nan"
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


class TraceRecorder:
    """Keeps the rows of a cluster's trace as they are recorded (all, or only `events`)."""

    def __init__(self, events: Iterable[str] | None = None) -> None:
        self.events = None if events is None else tuple(events)
        self.rows: list[dict[str, Any]] = []

    def attach(self, cluster: SimCluster) -> None:
        """Listen from now on; on a cluster that already ran, first note each heartbeat view as it
        stands (`snapshot:peer_state` rows, actor `recorder`: what the earlier rows would have said)."""
        if cluster.now > 0:
            for a in cluster.node_ids:
                for b in cluster.node_ids:
                    state = peer_state(cluster, a, b) if a != b and cluster.running(a) else None
                    if state is not None:
                        self.rows.append({"time": cluster.now, "node": a, "actor": "recorder",
                                          "event": SNAPSHOT, "detail": (b, state)})
        cluster.trace.subscribe(self.on_row, self.events)

    def on_row(self, row: Row) -> None:
        t, node, actor, event, detail = row
        self.rows.append({"time": t, "node": node, "actor": actor, "event": event, "detail": detail})

    def table(self) -> Table:
        return Table(self.rows, ("time", "node", "actor", "event", "detail"))


def _as_row(r: Mapping[str, Any]) -> Row:
    return (r["time"], r["node"], r["actor"], r["event"], r["detail"])


def peer_state_table(trace: Table) -> Table:
    """Heartbeat view changes; a snapshot (see `TraceRecorder.attach`) is a row whose `old` is None."""
    rows = []
    for r in trace.where(event=("log:peer_state", SNAPSHOT)):
        if r["event"] == SNAPSHOT:
            rows.append({"time": r["time"], "observer": r["node"], "peer": r["detail"][0], "old": None,
                         "new": r["detail"][1]})
            continue
        change = peer_change(_as_row(r))
        if change is not None:
            rows.append({"time": r["time"], "observer": r["node"], "peer": change[0], "old": change[1],
                         "new": change[2]})
    return Table(rows, ("time", "observer", "peer", "old", "new"))


def fault_table(trace: Table) -> Table:
    events = FAULT_EVENTS | {"disk_lost"}
    return trace.where(lambda r: r["event"] in events and r["actor"] == "sim").select("time", "node", "event",
                                                                                       "detail")


def client_table(trace: Table) -> Table:
    at: dict[str, str] = {}  # client -> the node it is connected to
    rows = []
    for r in trace.where(actor="client"):
        who, event, detail = r["node"], str(r["event"]).removeprefix("c:"), r["detail"]
        if event in ("connect", "auth", "resumed", "lost") and isinstance(detail, tuple | list) and detail:
            at[who] = str(detail[0])
        rows.append({"time": r["time"], "client": who, "node": at.get(who, ""), "event": event, "detail": detail})
    return Table(rows, ("time", "client", "node", "event", "detail"))


def write_table(trace: Table) -> Table:
    """Acknowledged writes, refused or failed ones (`outcome` is `acked` or the error code) and
    timed-out ones (`unknown`: the client gave up waiting and never learned the outcome)."""
    rows = []
    for r in client_table(trace):
        detail, event = r["detail"], r["event"]
        if event == "ack":
            name, stamp, concern = detail
            rows.append({"time": r["time"], "client": r["client"], "node": r["node"], "variable": name,
                         "outcome": "acked", "stamp": stamp, "origin": origin_of(stamp), "concern": concern})
        elif event in ("error", "timeout") and isinstance(detail, tuple | list) and len(detail) == 2 and (
                detail[0 if event == "error" else 1] == "SetVariables"):
            rows.append({"time": r["time"], "client": r["client"], "node": r["node"], "variable": "",
                         "outcome": str(detail[1]) if event == "error" else "unknown", "stamp": 0, "origin": 0,
                         "concern": ""})
    return Table(rows, ("time", "client", "node", "variable", "outcome", "stamp", "origin", "concern"))


def state_spans(peer_states: Table, nodes: Sequence[str], end: float) -> Table:
    """Each observer's view of each peer as intervals (see the module docstring)."""
    rows = []
    for a in nodes:
        for b in nodes:
            if a == b:
                continue
            changes = peer_states.where(observer=a, peer=b).rows
            state, since = "joining", 0.0
            if changes and changes[0]["old"] is None:  # a snapshot: nothing is known before it
                state, since = changes[0]["new"], changes[0]["time"]
                changes = changes[1:]
            for c in changes:
                if c["time"] > since:
                    rows.append({"observer": a, "peer": b, "state": state, "start": since, "end": c["time"]})
                state, since = c["new"], c["time"]
            rows.append({"observer": a, "peer": b, "state": state, "start": since, "end": max(end, since)})
    return Table(rows, ("observer", "peer", "state", "start", "end"))


def crash_detections(trace: Table) -> Table:
    """For each crash, how long each other node took to see the victim DOWN, whatever the bound:
    `{observer, peer, crashed_at, latency}` (a node that never did before the victim restarted,
    or before the end, is left out)."""
    rows = []
    pending: dict[tuple[str, str], float] = {}  # (observer, victim) -> crash time
    nodes = sorted(set(trace.where(actor="heartbeat").column("node")) | set(fault_table(trace).column("node")) - {"*"})
    for r in trace:
        event = r["event"]
        if r["actor"] == "sim" and event == "crash":
            pending.update({(o, r["node"]): r["time"] for o in nodes if o != r["node"]})
            pending = {k: v for k, v in pending.items() if k[0] != r["node"]}
        elif r["actor"] == "sim" and event == "restart":
            pending = {k: v for k, v in pending.items() if r["node"] not in k}
        elif event == "log:peer_state":
            change = peer_change(_as_row(r))
            if change is not None and change[2] == "down" and (r["node"], change[0]) in pending:
                since = pending.pop((r["node"], change[0]))
                rows.append({"observer": r["node"], "peer": change[0], "crashed_at": since,
                             "latency": r["time"] - since})
    return Table(rows, ("observer", "peer", "crashed_at", "latency"))


def outage_spans(trace: Table, end: float) -> Table:
    """When each node was crashed or paused: `{node, kind, start, end}` (kind `crashed` or `paused`)."""
    rows = []
    since: dict[tuple[str, str], float] = {}
    for f in fault_table(trace):
        node, event = f["node"], f["event"]
        if event in ("crash", "pause"):
            since.setdefault((node, "crashed" if event == "crash" else "paused"), f["time"])
        elif event in ("restart", "resume"):
            key = (node, "crashed" if event == "restart" else "paused")
            if key in since:
                rows.append({"node": node, "kind": key[1], "start": since.pop(key), "end": f["time"]})
    rows += [{"node": n, "kind": k, "start": t, "end": end} for (n, k), t in since.items()]
    return Table(sorted(rows, key=lambda r: (r["start"], r["node"])), ("node", "kind", "start", "end"))

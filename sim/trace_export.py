"""A run's trace as JSON lines (schema `commy-trace/1`, documented in docs/trace-schema.md).

One JSON object per line, UTF-8, keys in a fixed order, so a file is byte-for-byte the same for the
same run and any tool (jq, pandas, a notebook) can read it line by line:

- first, `{"type": "header", "schema": "commy-trace/1", "scenario", "seed", "nodes", "duration",
  "node_ids", "faults" (command-line options, a list of strings), "replay" (a command)}`;
- then one `{"type": "event", "seq", "time", "node", "actor", "event", "detail"}` per trace row,
  `seq` counting from 0 and `time` in simulated seconds since the start (rounded to the nanosecond);
- last, `{"type": "end", "events", "rows", "delivered", "trace_hash", "violations"}`: `events` is
  the count of events folded into `trace_hash` (the hash `commy sim run` prints), `rows` the count
  of event lines above.

`detail` is the simulator's own value made JSON: tuples become arrays, bytes become
`{"bytes": "<base64>"}`, enums their value, non-finite floats strings, anything else its `repr`.
The writer listens to the trace while the run goes (it never changes the run or its hash) and
streams rows to the file; `read_trace` reads a file back and checks its shape.
"""

from __future__ import annotations

import base64
import enum
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sim.cluster import SimCluster
from sim.faults import FaultPlan, parse_fault_args
from sim.replay import node_ids, run, run_command
from sim.scenarios import ScenarioResult, resolve
from sim.trace import Row

SCHEMA = "commy-trace/1"
HEADER_KEYS = ("type", "schema", "scenario", "seed", "nodes", "duration", "node_ids", "faults", "replay")
EVENT_KEYS = ("type", "seq", "time", "node", "actor", "event", "detail")
END_KEYS = ("type", "events", "rows", "delivered", "trace_hash", "violations")


def jsonable(value: Any) -> Any:
    """The simulator's values as JSON values (see the module docstring)."""
    if value is None or (isinstance(value, bool | int | str) and not isinstance(value, enum.Enum)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((jsonable(v) for v in value), key=repr)  # sets have no order of their own
    return repr(value)


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


class TraceWriter:
    """Streams a run's rows to `out` as they are recorded; `finish(result)` writes the end line."""

    def __init__(self, out: IO[str], header: dict[str, Any], events: Sequence[str] | None = None) -> None:
        self.out = out
        self.events = None if events is None else tuple(events)
        self.rows = 0
        out.write(_line({"type": "header", "schema": SCHEMA, **header}))

    def attach(self, cluster: SimCluster) -> None:
        cluster.trace.subscribe(self.on_row, self.events)

    def on_row(self, row: Row) -> None:
        t, node, actor, event, detail = row
        self.out.write(_line({"type": "event", "seq": self.rows, "time": round(t, 9), "node": node, "actor": actor,
                              "event": event, "detail": jsonable(detail)}))
        self.rows += 1

    def finish(self, result: ScenarioResult) -> None:
        self.out.write(_line({"type": "end", "events": result.events, "rows": self.rows,
                              "delivered": result.delivered, "trace_hash": result.trace_hash,
                              "violations": list(result.violations)}))


def export_run(
    out: IO[str],
    name: str,
    *,
    seed: int,
    nodes: int | None = None,
    duration: float | None = None,
    faults: FaultPlan | None = None,
    events: Sequence[str] | None = None,
) -> tuple[ScenarioResult, int]:
    """Run the scenario and write its trace to `out`; returns the result and the rows written."""
    _, n, d = resolve(name, nodes, duration)
    header = {"scenario": name, "seed": seed, "nodes": n, "duration": d, "node_ids": node_ids(n),
              "faults": faults.args() if faults is not None else [],
              "replay": run_command(name, seed, n, d, faults)}
    writer = TraceWriter(out, header, events)
    result = run(name, seed=seed, nodes=n, duration=d, faults=faults, on_cluster=writer.attach)
    writer.finish(result)
    return result, writer.rows


@dataclass
class TraceFile:
    """A trace read back: its header, its event rows (plain dicts) and its end line."""

    header: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] = field(default_factory=dict)

    @property
    def trace_hash(self) -> str:
        return str(self.end.get("trace_hash", ""))


def _lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc.msg}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{number}: not a JSON object")
            yield number, obj


def read_trace(path: str | Path, *, events: bool = True) -> TraceFile:
    """Read and check a `commy-trace/1` file (ValueError says which line is wrong and why)."""
    trace: TraceFile | None = None
    rows = 0
    for number, obj in _lines(path):
        kind = obj.get("type")
        where = f"{path}:{number}"
        if trace is None:
            if kind != "header" or obj.get("schema") != SCHEMA:
                raise ValueError(f"{where}: a {SCHEMA} file starts with its header line")
            _keys(obj, HEADER_KEYS, where)
            trace = TraceFile(obj)
        elif trace.end:
            raise ValueError(f"{where}: a line after the end line")
        elif kind == "event":
            _keys(obj, EVENT_KEYS, where)
            if obj["seq"] != rows:
                raise ValueError(f"{where}: seq {obj['seq']}, expected {rows}")
            rows += 1
            if events:
                trace.events.append(obj)
        elif kind == "end":
            _keys(obj, END_KEYS, where)
            trace.end = obj
        else:
            raise ValueError(f"{where}: unknown line type {kind!r}")
    if trace is None or not trace.end:
        raise ValueError(f"{path}: the file ends before its end line (an interrupted export?)")
    if trace.end["rows"] != rows:
        raise ValueError(f"{path}: the end line counts {trace.end['rows']} rows, the file has {rows}")
    return trace


def _keys(obj: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    if tuple(obj) != keys:
        raise ValueError(f"{where}: expected the keys {', '.join(keys)}, got {', '.join(obj)}")


def plan_of(header: dict[str, Any]) -> FaultPlan | None:
    """The fault plan a trace header names (its `faults` are command-line options)."""
    options = [str(a) for a in header.get("faults", [])]
    return parse_fault_args(options) if options else None

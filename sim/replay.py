"""Runs that can be replayed: a scenario plus command-line faults, recorded, and schedules stepped.

`run(name, seed=..., faults=plan)` is `sim.scenarios.run_scenario` with a `FaultPlan` put on the
cluster before the scenario's own plan; its result's `replay_command` carries the fault options,
so the command it prints repeats the run event for event. Without faults (or with an empty plan) it
is exactly `run_scenario`: same events, same trace hash.

`record(...)` does the same run while collecting every trace row into a `sim.tables.Table` (for
notebooks, `commy sim replay --step` and the JSON-lines export); listening to the trace changes
nothing in the run or its hash. `Recording.result` is the usual `ScenarioResult`.

`ScheduleStepper(seed, schedule)` replays a `sim.schedule.ClusterRun` schedule (what the hypothesis
state machine prints when it shrinks a failure) one action at a time: each `step()` does one action
and returns what it did, the trace rows it caused, the writes and reads so far, which node holds
which service and what each node's disk holds, and the violations found -- a snapshot taken right
after the action, which later steps leave as it was. A schedule is checked before anything runs
(`check_schedule`: an unknown action or node, a wrong argument count or value is a ValueError
naming the step). The cluster's first
`WARMUP` second (joins and logins) runs inside `ClusterRun`'s constructor before anyone can
listen, so its rows are not in the tables (the recorder starts with a snapshot of the heartbeat
views instead); the hash covers them all the same.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sim.cluster import SimCluster
from sim.faults import FaultPlan, format_time
from sim.scenarios import QUIESCE, ScenarioResult, resolve, run_scenario
from sim.schedule import ACTIONS, CONCERNS, NODES, TENANTS, ClusterRun, Step
from sim.tables import Table, TraceRecorder, peer_state_table

OnCluster = Callable[[SimCluster], None]


def node_ids(count: int) -> list[str]:
    return [f"n{i}" for i in range(1, count + 1)]


def check_faults(name: str, nodes: int | None, duration: float | None, faults: FaultPlan | None) -> None:
    """ValueError (before any run) for a bad scenario, size or duration, or faults that do not fit."""
    _, n, d = resolve(name, nodes, duration)
    if faults is not None:
        faults.validate(node_ids(n), d - QUIESCE)


def _seconds(duration: float) -> str:
    """`14` for 14.0, and every digit otherwise (`:g` would round: a replay must be exact)."""
    return format_time(float(duration))[:-1]


def run_command(name: str, seed: int, nodes: int, duration: float, faults: FaultPlan | None = None) -> str:
    """`commy sim run NAME --seed S --nodes N --duration D [fault options]`."""
    text = f"commy sim run {shlex.quote(name)} --seed {seed} --nodes {nodes} --duration {_seconds(duration)}"
    return text + (" " + faults.command_text() if faults is not None and not faults.empty else "")


def replay_command(name: str, seed: int, nodes: int, duration: float, faults: FaultPlan | None = None,
                   expect: str = "") -> str:
    """`commy sim replay SEED --scenario NAME ... [--expect HASH]`: the same run, its hash checked."""
    text = f"commy sim replay {seed} --scenario {shlex.quote(name)} --nodes {nodes} --duration {_seconds(duration)}"
    if faults is not None and not faults.empty:
        text += " " + faults.command_text()
    return text + (f" --expect {expect}" if expect else "")


def run(
    name: str,
    *,
    seed: int,
    nodes: int | None = None,
    duration: float | None = None,
    faults: FaultPlan | None = None,
    on_cluster: OnCluster | None = None,
) -> ScenarioResult:
    """Run a scenario with command-line faults (see the module docstring)."""
    if faults is None or faults.empty:
        return run_scenario(name, seed=seed, nodes=nodes, duration=duration, on_cluster=on_cluster)
    check_faults(name, nodes, duration, faults)
    plan = faults

    def prepare(cluster: SimCluster) -> None:
        if on_cluster is not None:  # first: a listener must see the faults put on at time 0
            on_cluster(cluster)
        plan.apply(cluster)

    result = run_scenario(name, seed=seed, nodes=nodes, duration=duration, on_cluster=prepare)
    return dataclasses.replace(result, replay_command=run_command(name, seed, result.nodes, result.duration, plan))


@dataclass
class Recording:
    """A run's result with every trace row, as tables."""

    result: ScenarioResult
    trace: Table
    faults: FaultPlan | None = None

    @property
    def nodes(self) -> list[str]:
        return node_ids(self.result.nodes)

    @property
    def peer_states(self) -> Table:
        return peer_state_table(self.trace)

    def replay_command(self) -> str:
        r = self.result
        return replay_command(r.name, r.seed, r.nodes, r.duration, self.faults, expect=r.trace_hash)


def record(
    name: str,
    *,
    seed: int,
    nodes: int | None = None,
    duration: float | None = None,
    faults: FaultPlan | None = None,
    on_cluster: OnCluster | None = None,
    events: Sequence[str] | None = None,
) -> Recording:
    """Run and keep every trace row (or only the `events` named, e.g. `("crash", "log:peer_state")`)."""
    recorder = TraceRecorder(events)

    def attach(cluster: SimCluster) -> None:
        recorder.attach(cluster)
        if on_cluster is not None:
            on_cluster(cluster)

    result = run(name, seed=seed, nodes=nodes, duration=duration, faults=faults, on_cluster=attach)
    return Recording(result, recorder.table(), faults)


# --------------------------------------------------------------------------- schedules, step by step


@dataclass(frozen=True)
class StepView:
    """What one action of a schedule did, and the state right after it.

    A snapshot: every table is taken when the step ran, so a view kept while the schedule goes on
    still shows its own moment (`ScheduleStepper.run` is the live cluster).
    """

    index: int
    time: float
    action: str
    args: tuple[Any, ...]
    rows: Table
    """The trace rows recorded while the action ran (a `run` action: everything in its time)."""
    writes: Table
    """Every write and read so far with what had become of it."""
    services: Table
    """Which node held which service, and how many variables it had there."""
    disks: Table
    """Every node's entries: (node, tenant, name, value, stamp)."""
    violations: tuple[str, ...]

    def __str__(self) -> str:
        what = " ".join(str(a) for a in self.args)
        return f"{self.time:8.3f}s #{self.index} {self.action} {what}".rstrip()

    def narrate(self, indent: int = 11) -> str:
        """This step's line, then the notable rows it caused, in words."""
        from sim.stepper import narrate

        told = narrate(self.rows, indent=indent)
        return f"{self}\n{told}" if told else str(self)


def writes_table(run: ClusterRun) -> Table:
    """Every write and read of a scripted run so far, with its outcome as the client knows it now."""
    return Table([{"id": w.wid, "kind": "intrude" if w.intrusion else "write", "node": w.node, "tenant": w.tenant,
                   "name": w.name, "value": w.value.decode(errors="replace"), "concern": w.concern,
                   "sent_at": round(w.sent_at, 6), "outcome": w.outcome, "stamp": w.stamp} for w in run.writes]
                 + [{"id": r.rid, "kind": "read", "node": r.node, "tenant": r.tenant, "name": r.name,
                     "value": (r.value or b"").decode(errors="replace"), "concern": "",
                     "sent_at": round(r.sent_at, 6), "outcome": r.outcome, "stamp": r.stamp} for r in run.reads])


def services_table(run: ClusterRun) -> Table:
    return Table([{"node": node, "tenant": tenant, "service": service, "variables": len(handle.entries())}
                  for node in run.nodes
                  for (tenant, service), handle in sorted(run.app.disks[node].store.files.items())],
                 ("node", "tenant", "service", "variables"))


def disks_table(run: ClusterRun) -> Table:
    rows = []
    for node in run.nodes:
        for tenant in sorted({t for t, _ in run.app.disks[node].store.files}):
            for name, (value, stamp) in sorted((run.entries(node, tenant) or {}).items()):
                rows.append({"node": node, "tenant": tenant, "name": name, "value": value.decode(errors="replace"),
                             "stamp": stamp})
    return Table(rows, ("node", "tenant", "name", "value", "stamp"))


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _arg_error(param: str, value: Any, nodes: Sequence[str]) -> str | None:
    """What is wrong with `value` for the `ClusterRun` action parameter `param`, or None."""
    if param == "node":
        return None if value in nodes else f"unknown node {value!r}; the nodes are {', '.join(nodes)}"
    if param in ("left", "right", "srcs", "dsts"):
        ok = isinstance(value, list | tuple) and value and all(isinstance(n, str) and n in nodes for n in value)
        return None if ok else f"{param} must be a non-empty tuple of nodes among {', '.join(nodes)}, got {value!r}"
    if param == "tenant":
        return None if value in TENANTS else f"unknown tenant {value!r}; one of {', '.join(TENANTS)}"
    if param == "concern":
        return None if value in CONCERNS else f"unknown concern {value!r}; one of {', '.join(CONCERNS)}"
    if param == "name":
        return None if isinstance(value, str) and value else f"a variable name is a non-empty string, got {value!r}"
    if param in ("loss", "duplicate", "reorder"):
        return None if _is_number(value) and 0 <= value <= 1 else f"{param} is a probability in [0, 1], got {value!r}"
    if param in ("dt", "quiesce"):
        return None if _is_number(value) and value >= 0 else f"{param} is a number of seconds >= 0, got {value!r}"
    if param == "seconds":
        return None if _is_number(value) else f"{param} is a number of seconds, got {value!r}"
    return None


def check_schedule(steps: Sequence[Step], nodes: Sequence[str] = NODES) -> None:
    """ValueError naming the first step `ClusterRun.do` could not take: an unknown action, the wrong
    number of arguments, or an argument that is not a node, tenant, concern, probability or time."""
    for i, (_, action, args) in enumerate(steps, 1):
        where = f"step {i} {(_, action, args)!r}"
        if action not in ACTIONS:
            raise ValueError(f"{where}: unknown action {action!r}; one of {', '.join(sorted(ACTIONS))}")
        signature = inspect.signature(getattr(ClusterRun, "_" + action))
        try:
            bound = signature.bind(None, *args)
        except TypeError:
            params = ", ".join(list(signature.parameters)[1:])
            raise ValueError(f"{where}: {action} takes ({params}), got {len(args)} argument(s)") from None
        for param, value in list(bound.arguments.items())[1:]:
            error = _arg_error(param, value, nodes)
            if error is not None:
                raise ValueError(f"{where}: {error}")


class ScheduleStepper:
    """Replays `schedule` on `ClusterRun(seed)` one action per `step()` (or iterate over it).

    The schedule is checked first (`check_schedule`: ValueError names a step that cannot run).
    `done` is True once every step ran; `step()` then raises IndexError.
    """

    def __init__(self, seed: int, schedule: Sequence[Step], *, finish: bool = True) -> None:
        self.seed = seed
        self.steps: list[Step] = list(schedule)
        check_schedule(self.steps)
        if finish and not any(action == "finish" for _, action, _ in self.steps):
            self.steps.append((self.steps[-1][0] if self.steps else 0.0, "finish", ()))
        self.run = ClusterRun(seed)
        self.recorder = TraceRecorder()
        self.recorder.attach(self.run.cluster)
        self.index = 0

    @property
    def done(self) -> bool:
        """Every step ran: `step()` would raise IndexError."""
        return self.index >= len(self.steps)

    def step(self) -> StepView:
        """Run the next step and return a snapshot of what it did; IndexError when `done`."""
        if self.done:
            raise IndexError(f"the schedule is done: all {len(self.steps)} steps ran (see `done`)")
        _, action, args = self.steps[self.index]
        before = len(self.recorder.rows)
        at = self.run.cluster.now
        run = self.run
        run.do(action, *args)
        self.index += 1
        return StepView(self.index, at, action, tuple(args), Table(self.recorder.rows[before:]), writes_table(run),
                        services_table(run), disks_table(run), tuple(run.violations))

    def __iter__(self) -> Iterator[StepView]:
        while not self.done:
            yield self.step()

    def run_all(self) -> ClusterRun:
        for _ in self:
            pass
        return self.run

    @property
    def trace(self) -> Table:
        return self.recorder.table()

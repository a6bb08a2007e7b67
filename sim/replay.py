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
which service and what each node's disk holds, and the violations found. The cluster's first
`WARMUP` second (joins and logins) runs inside `ClusterRun`'s constructor before anyone can
listen, so its rows are not in the tables (the recorder starts with a snapshot of the heartbeat
views instead); the hash covers them all the same.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sim.cluster import SimCluster
from sim.faults import FaultPlan, format_time
from sim.scenarios import QUIESCE, ScenarioResult, resolve, run_scenario
from sim.schedule import ClusterRun, Step
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


@dataclass
class StepView:
    """What one action of a schedule did."""

    index: int
    time: float
    action: str
    args: tuple[Any, ...]
    rows: Table
    """The trace rows recorded while the action ran (a `run` action: everything in its time)."""
    run: ClusterRun

    @property
    def writes(self) -> Table:
        """Every write and read so far with what became of it."""
        return Table([{"id": w.wid, "kind": "intrude" if w.intrusion else "write", "node": w.node, "tenant": w.tenant,
                       "name": w.name, "value": w.value.decode(errors="replace"), "concern": w.concern,
                       "sent_at": round(w.sent_at, 6), "outcome": w.outcome, "stamp": w.stamp} for w in self.run.writes]
                     + [{"id": r.rid, "kind": "read", "node": r.node, "tenant": r.tenant, "name": r.name,
                         "value": (r.value or b"").decode(errors="replace"), "concern": "",
                         "sent_at": round(r.sent_at, 6), "outcome": r.outcome, "stamp": r.stamp}
                        for r in self.run.reads])

    @property
    def services(self) -> Table:
        """Which node holds which service, and how many variables it has there."""
        return Table([{"node": node, "tenant": tenant, "service": service, "variables": len(handle.entries())}
                      for node in self.run.nodes
                      for (tenant, service), handle in sorted(self.run.app.disks[node].store.files.items())],
                     ("node", "tenant", "service", "variables"))

    @property
    def disks(self) -> Table:
        """Every node's entries: (node, tenant, name, value, stamp)."""
        rows = []
        for node in self.run.nodes:
            for tenant in sorted({t for t, _ in self.run.app.disks[node].store.files}):
                for name, (value, stamp) in sorted((self.run.entries(node, tenant) or {}).items()):
                    rows.append({"node": node, "tenant": tenant, "name": name, "value": value.decode(errors="replace"),
                                 "stamp": stamp})
        return Table(rows)

    @property
    def violations(self) -> list[str]:
        return self.run.violations

    def __str__(self) -> str:
        what = " ".join(str(a) for a in self.args)
        return f"{self.time:8.3f}s #{self.index} {self.action} {what}".rstrip()

    def narrate(self, indent: int = 11) -> str:
        """This step's line, then the notable rows it caused, in words."""
        from sim.stepper import narrate

        told = narrate(self.rows, indent=indent)
        return f"{self}\n{told}" if told else str(self)


class ScheduleStepper:
    """Replays `schedule` on `ClusterRun(seed)` one action per `step()` (or iterate over it)."""

    def __init__(self, seed: int, schedule: Sequence[Step], *, finish: bool = True) -> None:
        self.seed = seed
        self.steps: list[Step] = list(schedule)
        if finish and not any(action == "finish" for _, action, _ in self.steps):
            self.steps.append((self.steps[-1][0] if self.steps else 0.0, "finish", ()))
        self.run = ClusterRun(seed)
        self.recorder = TraceRecorder()
        self.recorder.attach(self.run.cluster)
        self.index = 0

    @property
    def done(self) -> bool:
        return self.index >= len(self.steps)

    def step(self) -> StepView:
        if self.done:
            raise StopIteration
        _, action, args = self.steps[self.index]
        before = len(self.recorder.rows)
        at = self.run.cluster.now
        self.run.do(action, *args)
        self.index += 1
        return StepView(self.index, at, action, tuple(args), Table(self.recorder.rows[before:]), self.run)

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

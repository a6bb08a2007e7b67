"""Experiments for notebooks: seed sweeps as tables, failure-detector studies, replica probes.

- `sweep_table(name, seeds, faults=...)` runs a scenario over seeds in this process (a notebook
  sweeps tens of seeds, not thousands: `commy sim sweep --workers` is for those) and returns one
  row per run: `seed, ok, violations, false_down, detection, failover, replication_lag,
  write_latency, trace_hash`, the timing columns holding that run's samples in seconds.
  `samples(table, column)` pools a column's samples over all rows.
- `detector_study(name, settings, seeds)` does the same for each failure-detector setting (`"interval=
  0.3,suspect=2,down=5"` texts, as `commy sim --detector` takes them) and labels the rows with it.
- `StoreProbe` samples every node's service store every `every` simulated seconds while a
  cluster scenario runs (`record(..., on_cluster=probe.attach)`): `probe.values` is a table of
  `time, node, tenant, variable, stamp, age, origin, writer` (age: seconds since the value was
  stamped; origin: the index of the node that stamped it; writer: the client whose write it is),
  and `probe.divergence()` counts, per sample and tenant, the variables whose holders disagree.
  It only reads: the run and its hash do not change (its reads are extra events on the
  scheduler, which keep the order of all the others). `probe.conflicts()` sums the replicators'
  conflict counters at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from commy.core.hlc import millis_of, origin_of
from commy.core.replication import REPLICATOR, Replicator
from sim.checkers import NoFalseDown
from sim.faults import FaultPlan, format_detector, parse_detector
from sim.replay import record
from sim.sweep import checker_of
from sim.tables import Table, crash_detections

DETECTION_EVENTS = ("crash", "restart", "log:peer_state")

if TYPE_CHECKING:
    from sim.cluster import SimCluster


def run_row(name: str, seed: int, *, nodes: int | None = None, duration: float | None = None,
            faults: FaultPlan | None = None) -> dict[str, Any]:
    rec = record(name, seed=seed, nodes=nodes, duration=duration, faults=faults, events=DETECTION_EVENTS)
    r = rec.result
    return {
        "seed": seed, "ok": r.ok, "violations": list(r.violations),
        "false_down": sum(checker_of(v) == NoFalseDown.name for v in r.violations),
        "detection": tuple(d[-1] for d in r.detection_times), "failover": tuple(r.failover_times),
        "replication_lag": tuple(r.metrics.get("replication_lag", ())),
        "write_latency": tuple(r.metrics.get("write_latency", ())),
        "detected": tuple(crash_detections(rec.trace).column("latency")), "trace_hash": r.trace_hash,
    }


def sweep_table(name: str, seeds: Iterable[int], *, nodes: int | None = None, duration: float | None = None,
                faults: FaultPlan | None = None) -> Table:
    return Table([run_row(name, s, nodes=nodes, duration=duration, faults=faults) for s in seeds])


def samples(table: Table, column: str) -> list[float]:
    """Every sample of a timing column, pooled over the rows."""
    return [float(x) for value in table.column(column) for x in (value or ())]


def detector_study(name: str, settings: Sequence[str], seeds: Iterable[int], *, nodes: int | None = None,
                   duration: float | None = None, faults: FaultPlan | None = None) -> Table:
    """One row per (setting, seed), `setting` being the detector's settings in canonical form."""
    seeds = list(seeds)
    rows = []
    for text in settings:
        detector = parse_detector(text)
        plan = replace(faults or FaultPlan(), detector=detector)
        label = format_detector(detector)
        for row in sweep_table(name, seeds, nodes=nodes, duration=duration, faults=plan):
            rows.append({"setting": label, **row})
    return Table(rows)


class StoreProbe:
    """Reads every node's store every `every` simulated seconds (see the module docstring)."""

    def __init__(self, every: float = 0.05) -> None:
        self.every = every
        self.rows: list[dict[str, Any]] = []
        self.samples: list[float] = []
        self.cluster: SimCluster | None = None

    def attach(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        cluster.sched.at(cluster.sched.now, self._sample)

    def _sample(self, _: Any) -> None:
        cluster = self.cluster
        assert cluster is not None
        app = cluster.app
        if app is not None:  # the scenario's application exists from the first event on
            t = cluster.now
            self.samples.append(t)
            for node in cluster.node_ids:
                if not cluster.alive(node):
                    continue
                for (tenant, _service), handle in sorted(app.disks[node].store.files.items()):
                    for e in handle.entries():
                        age = cluster.sched.now - millis_of(e.stamp) / 1000  # by virtual time: skews aside
                        self.rows.append({"time": t, "node": node, "tenant": tenant, "variable": e.name,
                                          "stamp": e.stamp, "age": age, "origin": origin_of(e.stamp),
                                          "writer": e.value.split(b":", 1)[0].decode(errors="replace")})
        cluster.sched.after(self.every, self._sample)

    @property
    def values(self) -> Table:
        return Table(self.rows, ("time", "node", "tenant", "variable", "stamp", "age", "origin", "writer"))

    def divergence(self) -> Table:
        """Per sample and tenant: holders, and how many variables they do not all agree on."""
        seen: dict[tuple[float, str], dict[str, dict[str, int]]] = {}
        for r in self.rows:
            seen.setdefault((r["time"], r["tenant"]), {}).setdefault(r["node"], {})[r["variable"]] = r["stamp"]
        rows = []
        for (t, tenant), by_node in sorted(seen.items()):
            names = {n for entries in by_node.values() for n in entries}
            differ = sum(len({entries.get(n) for entries in by_node.values()}) > 1 for n in names)
            rows.append({"time": t, "tenant": tenant, "holders": len(by_node), "differing": differ})
        return Table(rows, ("time", "tenant", "holders", "differing"))

    def conflicts(self) -> dict[str, int]:
        """Concurrent writes each running node's replicator detected and resolved."""
        cluster = self.cluster
        if cluster is None:
            return {}
        out = {}
        for node in cluster.node_ids:
            rep = cluster.node(node).actors.get(REPLICATOR) if cluster.alive(node) else None
            if isinstance(rep, Replicator):
                out[node] = rep.stats["conflicts"]
        return out


def study_summary(study: Table) -> Table:
    """Per detector setting: detection percentiles (however long), false DOWNs, runs with violations."""
    from sim.stats import Distribution

    rows = []
    for setting in dict.fromkeys(study.column("setting")):
        runs = study.where(setting=setting)
        dist = Distribution.of(samples(runs, "detected"))
        rows.append({"setting": setting, "runs": len(runs), "detections": dist.count if dist else 0,
                     "p50": round(dist.p50, 3) if dist else None, "p99": round(dist.p99, 3) if dist else None,
                     "false_down": sum(runs.column("false_down")),
                     "runs_with_violations": sum(not ok for ok in runs.column("ok"))})
    return Table(rows)

"""Run one scenario over many seeds and summarise: the engine behind `commy sim sweep`.

`parse_seeds("1..200,500")` turns a seed spec into a sorted list. `sweep(name, seeds, workers=K)`
resolves the scenario's size and duration once (bad arguments fail before any run), then runs
`run_scenario` for every seed -- in this process when K is 1, else in a pool of K processes
started with 'forkserver' (or 'spawn' where there is none), so each worker imports the simulator
fresh and shares nothing with the parent. A worker returns a small `RunRecord` per seed (the
violations, the timing samples, the trace hash), never the cluster. Records arrive in any order
and are sorted by seed, so the summary is the same for the same seeds whatever K is; only the
wall-time lines differ. `faults` (a `sim.faults.FaultPlan`, from `commy sim sweep --loss ...`)
goes with every task and is put on each run by `sim.replay.run`. A run that raises is recorded
as an `exception` violation with its replay command instead of stopping the sweep; `fail_fast`
stops at the first run with a violation.

The sweep is duck-typed on the result: it needs `violations` (strings `"checker: text"`),
`detection_times` (latencies, or tuples whose last item is one), `replay_command`, `trace_hash`,
`delivered`, `duration`, and reads `failover_times` and `metrics` (name -> samples) when present.
"""

from __future__ import annotations

import hashlib
import importlib
import multiprocessing
import os
import signal
import time
import traceback
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sim.checkers import NoFalseDown
from sim.scenarios import replay_command, resolve, run_scenario
from sim.stats import Distribution, describe

if TYPE_CHECKING:
    from sim.faults import FaultPlan

Task = tuple[str, int, int, float, "FaultPlan | None"]

MAX_SEEDS = 1_000_000
MAX_LISTED = 20
EXCEPTION = "exception"


def parse_seeds(spec: str) -> list[int]:
    """`1..200` (inclusive), `1,5,9`, or both (`1..10,20`) -> sorted unique seeds; ValueError otherwise."""
    seeds: set[int] = set()
    for item in spec.split(","):
        item = item.strip()
        if not item:
            raise ValueError(f"empty item in seed list {spec!r}")
        lo_text, sep, hi_text = item.partition("..")
        try:
            lo, hi = int(lo_text), int(hi_text if sep else lo_text)
        except ValueError:
            raise ValueError(f"not a seed or a range a..b of seeds: {item!r}") from None
        if lo < 0:
            raise ValueError(f"seeds are non-negative integers, got {lo}")
        if hi < lo:
            raise ValueError(f"empty seed range {item!r}: the end is below the start")
        if hi - lo + 1 + len(seeds) > MAX_SEEDS:
            raise ValueError(f"too many seeds (at most {MAX_SEEDS:,})")
        seeds.update(range(lo, hi + 1))
    return sorted(seeds)


def format_seeds(seeds: Sequence[int]) -> str:
    """Sorted unique seeds back to a short spec: `[1, 2, 3, 7]` -> `1..3,7`."""
    parts: list[str] = []
    i = 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if i == j else f"{seeds[i]},{seeds[j]}" if j == i + 1 else f"{seeds[i]}..{seeds[j]}")
        i = j + 1
    return ",".join(parts)


@dataclass(frozen=True)
class RunRecord:
    """What a sweep keeps of one run (small and picklable: it crosses the process boundary)."""

    seed: int
    duration: float
    violations: tuple[str, ...]
    replay_command: str
    trace_hash: str
    delivered: int
    detection_times: tuple[float, ...]
    failover_times: tuple[float, ...] = ()
    metrics: dict[str, tuple[float, ...]] = field(default_factory=dict)


def checker_of(violation: str) -> str:
    """The checker named before the first `: ` of a violation (`other` if none is)."""
    name, sep, _ = violation.partition(": ")
    return name if sep and name and " " not in name else "other"


def _latency(item: Any) -> float:
    return float(item[-1] if isinstance(item, tuple | list) else item)


def _samples(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values) if isinstance(values, Iterable) else (float(values),)


def record_of(seed: int, result: Any) -> RunRecord:
    """A `RunRecord` from any scenario result (see the module docstring for what it reads)."""
    metrics = getattr(result, "metrics", None) or {}
    return RunRecord(
        seed=seed, duration=float(result.duration), violations=tuple(str(v) for v in result.violations),
        replay_command=str(result.replay_command), trace_hash=str(result.trace_hash),
        delivered=int(result.delivered), detection_times=tuple(_latency(x) for x in result.detection_times),
        failover_times=_samples(getattr(result, "failover_times", None) or ()),
        metrics={str(k): _samples(v) for k, v in sorted(metrics.items())},
    )


def run_one(task: Task) -> RunRecord:
    """One seed (module-level so a worker process can unpickle it). Exceptions become violations."""
    name, seed, nodes, duration, faults = task
    try:
        if faults is not None:
            from sim.replay import run

            return record_of(seed, run(name, seed=seed, nodes=nodes, duration=duration, faults=faults))
        return record_of(seed, run_scenario(name, seed=seed, nodes=nodes, duration=duration))
    except Exception as exc:  # a crash in node code is a finding, with a seed to replay, not the end of the sweep
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{os.path.relpath(frame.filename)}:{frame.lineno}"
        first = (str(exc).splitlines() or [""])[0]  # one line per violation in the summary
        text = f"{EXCEPTION}: {type(exc).__name__}: {first} (at {where})"
        if faults is not None:
            from sim.replay import run_command

            return RunRecord(seed, duration, (text,), run_command(name, seed, nodes, duration, faults), "", 0, ())
        return RunRecord(seed, duration, (text,), replay_command(name, seed, nodes, duration), "", 0, ())


def lines_for_run(record: RunRecord) -> list[str]:
    """The timing lines `commy sim run` prints after its timeline."""
    false_down = sum(checker_of(v) == NoFalseDown.name for v in record.violations)
    return [*_timing_lines([record]), f"false-down: {false_down}"]


def _timing_lines(records: Sequence[RunRecord]) -> list[str]:
    out = [describe("detection", Distribution.of(x for r in records for x in r.detection_times), "detection",
                    none="no crash or cut was seen DOWN")]
    failover = Distribution.of(x for r in records for x in r.failover_times)
    if failover is not None:
        out.append(describe("failover", failover, "failover"))
    for name in sorted({k for r in records for k in r.metrics}):
        out.append(describe(f"metric {name}", Distribution.of(x for r in records for x in r.metrics.get(name, ())),
                            "sample", unit="", spec=".4g"))
    return out


@dataclass
class SweepSummary:
    """The records of a sweep (sorted by seed) and what it says about them."""

    scenario: str
    seeds: list[int]
    nodes: int
    duration: float
    records: list[RunRecord]
    workers: int
    wall_time: float
    stopped_early: bool = False

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.records if r.violations]

    @property
    def by_checker(self) -> dict[str, tuple[int, int]]:
        """checker -> (violations, runs with one), sorted by checker name."""
        count: Counter[str] = Counter(checker_of(v) for r in self.records for v in r.violations)
        runs: Counter[str] = Counter(c for r in self.records for c in {checker_of(v) for v in r.violations})
        return {name: (count[name], runs[name]) for name in sorted(count)}

    @property
    def simulated(self) -> float:
        return sum(r.duration for r in self.records)

    @property
    def sweep_hash(self) -> str:
        """SHA-256 over every run's `seed trace-hash`: equal hashes, equal sweeps."""
        h = hashlib.sha256()
        for r in self.records:
            h.update(f"{r.seed} {r.trace_hash}\n".encode())
        return h.hexdigest()

    def lines(self) -> list[str]:
        done = len(self.records)
        runs = f"{done} of {len(self.seeds)} runs (stopped at the first violation)" if self.stopped_early \
            else f"{done} runs"
        out = [f"sweep: {self.scenario}, seeds {format_seeds(self.seeds)}: {runs}, "
               f"{self.nodes} nodes, {self.duration:g} simulated s each"]
        failed = self.failed
        out.append(f"runs with violations: {len(failed)}")
        for r in failed[:MAX_LISTED]:
            more = f" (+{len(r.violations) - 1} more)" if len(r.violations) > 1 else ""
            out += [f"  seed {r.seed}: {r.violations[0]}{more}", f"    replay: {r.replay_command}"]
        if len(failed) > MAX_LISTED:
            rest = len(failed) - MAX_LISTED
            out.append(f"  ... and {rest} more run{'s' * (rest != 1)} with violations (--json lists them all)")
        checkers = self.by_checker
        out.append("violations by checker:" + ("" if checkers else " none"))
        out += [f"  {name}: {n} in {k} run{'s' * (k != 1)}" for name, (n, k) in checkers.items()]
        out += _timing_lines(self.records)
        out.append(f"false-down: {checkers.get(NoFalseDown.name, (0, 0))[0]}")
        out.append(f"delivered: {sum(r.delivered for r in self.records)} messages")
        out.append(f"sweep-hash: {self.sweep_hash}")
        rate = done / self.wall_time if self.wall_time > 0 else 0.0
        workers = f"{self.workers} worker{'s' * (self.workers != 1)}"
        out.append(f"wall time: {self.wall_time:.2f} s with {workers} ({rate:.1f} runs/s)")
        ratio = self.simulated / self.wall_time if self.wall_time > 0 else 0.0
        out.append(f"simulated/real: {ratio:,.0f}x ({self.simulated:,.0f} simulated s)")
        return out

    def as_json(self) -> dict[str, Any]:
        def dist(values: Iterable[float]) -> dict[str, float] | None:
            d = Distribution.of(values)
            return None if d is None else d.as_dict()

        return {
            "scenario": self.scenario, "seeds": format_seeds(self.seeds), "nodes": self.nodes,
            "duration": self.duration, "runs": len(self.records), "stopped_early": self.stopped_early,
            "runs_with_violations": len(self.failed),
            "failed": [{"seed": r.seed, "violations": list(r.violations), "replay": r.replay_command}
                       for r in self.failed],
            "violations_by_checker": {k: n for k, (n, _) in self.by_checker.items()},
            "detection": dist(x for r in self.records for x in r.detection_times),
            "failover": dist(x for r in self.records for x in r.failover_times),
            "metrics": {k: dist(x for r in self.records for x in r.metrics.get(k, ()))
                        for k in sorted({k for r in self.records for k in r.metrics})},
            "false_down": self.by_checker.get(NoFalseDown.name, (0, 0))[0],
            "delivered": sum(r.delivered for r in self.records), "sweep_hash": self.sweep_hash,
            "workers": self.workers, "wall_time_s": self.wall_time,
            "simulated_per_real": self.simulated / self.wall_time if self.wall_time > 0 else None,
        }


def _start_method() -> str:
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _init_worker(module: str) -> None:
    """Ignore Ctrl-C (the parent handles it and ends the pool); import the scenario's module.

    A fresh process only has the scenarios `sim.scenarios` registers itself; others come with the
    module that defines their plan.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with suppress(Exception):  # a raising initializer makes Pool respawn workers forever; the run reports it
        importlib.import_module(module)


def _records(tasks: list[Task], workers: int, module: str) -> Generator[RunRecord, None, None]:
    if workers == 1:
        yield from map(run_one, tasks)
        return
    ctx = multiprocessing.get_context(_start_method())
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["sim.sweep", module])  # workers fork with the simulator imported
    chunk = max(1, min(16, len(tasks) // (workers * 8)))  # small chunks: a smooth bar, little idle at the end
    with ctx.Pool(workers, initializer=_init_worker, initargs=(module,)) as pool:  # exit terminates it
        yield from pool.imap_unordered(run_one, tasks, chunksize=chunk)


def sweep(
    name: str,
    seeds: Sequence[int],
    *,
    workers: int = 1,
    nodes: int | None = None,
    duration: float | None = None,
    fail_fast: bool = False,
    progress: Callable[[int, int], None] | None = None,
    faults: FaultPlan | None = None,
) -> SweepSummary:
    """Run `name` for every seed; `progress(done, with_violations)` after each run. workers 0 = one per CPU.

    ValueError (before any run) for an unknown scenario, a bad size or duration, or workers < 0.
    """
    if workers < 0:
        raise ValueError(f"workers must be 0 (one per CPU) or more, got {workers}")
    sc, n, d = resolve(name, nodes, duration)
    if faults is not None:
        from sim.replay import check_faults

        check_faults(name, n, d, faults)
        faults = None if faults.empty else faults
    seeds = sorted(set(seeds))
    workers = max(1, min(workers or os.cpu_count() or 1, len(seeds)))
    tasks: list[Task] = [(name, seed, n, d, faults) for seed in seeds]
    got: list[RunRecord] = []
    failed = 0
    stopped = False
    start = time.perf_counter()
    with closing(_records(tasks, workers, sc.plan.__module__)) as records:
        for record in records:
            got.append(record)
            failed += bool(record.violations)
            if progress is not None:
                progress(len(got), failed)
            if fail_fast and record.violations:
                stopped = len(got) < len(tasks)
                break
    wall = time.perf_counter() - start
    got.sort(key=lambda r: r.seed)
    return SweepSummary(name, seeds, n, d, got, workers, wall, stopped)

"""The seed sweep: seed specs, percentiles, the summary, parallel runs, the progress display."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sim.scenarios as scenarios
from sim.network import LinkConfig
from sim.progress import Progress, format_eta
from sim.stats import Distribution, describe, percentile
from sim.sweep import SweepSummary, checker_of, format_seeds, lines_for_run, parse_seeds, record_of, sweep
from tests.helpers import sweep_size

WALL_LINES = ("wall time:", "simulated/real:")


def stable(summary: SweepSummary) -> list[str]:
    """The summary minus the lines that measure real time."""
    return [line for line in summary.lines() if not line.startswith(WALL_LINES)]


def explain(summary: SweepSummary) -> str:
    return "\n".join(summary.lines())


@pytest.fixture
def lossy(monkeypatch: pytest.MonkeyPatch) -> str:
    """A scenario that loses half its messages: live peers get marked DOWN (no-false-down fires)."""
    broken = scenarios.Scenario("lossy-on-purpose", "lossy", lambda c, d: None, 3, 10.0, LinkConfig(loss=0.5), 2, 6.0)
    monkeypatch.setitem(scenarios._REGISTRY, broken.name, broken)
    return broken.name


# --------------------------------------------------------------------------- seed specs


@pytest.mark.parametrize(("spec", "seeds"), [
    ("1..5", [1, 2, 3, 4, 5]),
    ("7", [7]),
    ("9,1,5", [1, 5, 9]),
    (" 1..3 , 10, 2 ", [1, 2, 3, 10]),
    ("0..0", [0]),
])
def test_seed_specs(spec: str, seeds: list[int]) -> None:
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize(("spec", "message"), [
    ("1..0", "empty seed range"),
    ("a..b", "not a seed"),
    ("1..", "not a seed"),
    ("", "empty item"),
    ("1,,2", "empty item"),
    ("-3", "non-negative"),
    ("1..2000000", "too many seeds"),
])
def test_bad_seed_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_seeds(spec)


@given(st.sets(st.integers(0, 300), min_size=1))
def test_format_seeds_round_trips(seeds: set[int]) -> None:
    text = format_seeds(sorted(seeds))
    assert parse_seeds(text) == sorted(seeds)
    assert len(text) <= len(",".join(map(str, sorted(seeds))))


# --------------------------------------------------------------------------- statistics


def test_percentiles_are_nearest_rank_samples() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert [percentile(xs, p) for p in (1, 50, 90, 99, 100)] == [1.0, 50.0, 90.0, 99.0, 100.0]
    assert percentile([3.0], 50) == 3.0
    dist = Distribution.of([0.5, 0.1, 0.3])
    assert dist == Distribution(3, 0.3, 0.5, 0.5, 0.5, pytest.approx(0.9))
    assert Distribution.of([]) is None
    with pytest.raises(ValueError):
        percentile([], 50)


def test_describe_prints_a_plain_line() -> None:
    assert describe("detection", Distribution.of([1.5]), "detection") == \
        "detection: 1 detection, p50 1.500s, p90 1.500s, p99 1.500s, max 1.500s"
    assert describe("failover", None, "failover", none="nothing failed") == "failover: none (nothing failed)"


def test_records_read_any_result_shape() -> None:
    result = SimpleNamespace(duration=10, violations=["no-false-down: x", "odd text"], replay_command="r",
                             trace_hash="h", delivered=3, detection_times=[("n1", "n3", 5.0, 1.5), 0.25],
                             metrics={"lag": 0.1, "sizes": [1, 2]})
    record = record_of(4, result)
    assert record.detection_times == (1.5, 0.25) and record.failover_times == ()
    assert record.metrics == {"lag": (0.1,), "sizes": (1.0, 2.0)}
    assert [checker_of(v) for v in record.violations] == ["no-false-down", "other"]


def test_failover_and_metrics_get_lines_when_a_scenario_reports_them() -> None:
    result = SimpleNamespace(duration=20.0, violations=[], replay_command="r", trace_hash="h", delivered=9,
                             detection_times=[], failover_times=[1.25, 0.75], metrics={"lag": [0.002, 0.00425]})
    record = record_of(1, result)
    assert lines_for_run(record) == [
        "detection: none (no crash or cut was seen DOWN)",
        "failover: 2 failovers, p50 0.750s, p90 1.250s, p99 1.250s, max 1.250s",
        "metric lag: 2 samples, p50 0.002, p90 0.00425, p99 0.00425, max 0.00425",
        "false-down: 0",
    ]
    summary = SweepSummary("x", [1, 2], 3, 20.0, [record, record_of(2, result)], 1, 2.0)
    assert "failover: 4 failovers, p50 0.750s, p90 1.250s, p99 1.250s, max 1.250s" in summary.lines()
    assert summary.as_json()["metrics"]["lag"]["count"] == 4
    assert "simulated/real: 20x (40 simulated s)" in summary.lines()


# --------------------------------------------------------------------------- sweeps


@pytest.mark.slow
@pytest.mark.timeout(900)  # 500 seeds of heartbeat-steady take about a minute on two CPUs
@pytest.mark.parametrize("name", ["heartbeat-steady", "heartbeat-crash"])
def test_heartbeat_scenarios_hold_over_a_sweep(name: str) -> None:
    seeds = range(1, 1 + sweep_size(20, 500))
    summary = sweep(name, seeds, workers=0 if len(seeds) > 100 else 1)  # --slow: one worker per CPU
    assert not summary.failed, explain(summary)
    assert len(summary.records) == len(seeds) and summary.records[0].seed == 1
    if name == "heartbeat-crash":  # every survivor sees the victim DOWN within the 2 s bound
        detections = [x for r in summary.records for x in r.detection_times]
        assert len(detections) == 2 * len(seeds) and max(detections) <= 2.0


def test_the_same_seeds_give_the_same_summary() -> None:
    assert stable(sweep("heartbeat-crash", [3, 1, 2])) == stable(sweep("heartbeat-crash", range(1, 4)))


def test_violations_are_listed_with_replay_commands_and_counted(lossy: str) -> None:
    summary = sweep(lossy, range(1, 6))
    assert summary.failed and all(r.violations for r in summary.failed)
    lines = summary.lines()
    first = summary.failed[0]
    assert f"  seed {first.seed}: {first.violations[0]}" in "\n".join(lines)
    assert f"    replay: commy sim run {lossy} --seed {first.seed} --nodes 3 --duration 10" in lines
    count, runs = summary.by_checker["no-false-down"]
    assert runs == len(summary.failed) and count >= runs
    assert f"false-down: {count}" in lines
    assert summary.as_json()["violations_by_checker"] == {"no-false-down": count}


def test_fail_fast_stops_at_the_first_violation(lossy: str) -> None:
    summary = sweep(lossy, range(1, 50), fail_fast=True)
    assert len(summary.records) == 1 and summary.stopped_early
    assert "1 of 49 runs (stopped at the first violation)" in summary.lines()[0]


def test_a_run_that_raises_is_a_violation_not_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(cluster: object, duration: float) -> None:
        raise RuntimeError("boom")

    sc = scenarios.Scenario("explodes", "raises", explode, 3, 10.0, LinkConfig(), 2, 6.0)
    monkeypatch.setitem(scenarios._REGISTRY, sc.name, sc)
    summary = sweep(sc.name, [1, 2])
    assert [r.seed for r in summary.failed] == [1, 2]
    assert summary.failed[0].violations[0].startswith("exception: RuntimeError: boom (at ")
    assert summary.by_checker == {"exception": (2, 2)}


def test_bad_arguments_fail_before_any_run() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        sweep("no-such-scenario", [1])
    with pytest.raises(ValueError, match="at least 2 nodes"):
        sweep("heartbeat-crash", [1], nodes=1)
    with pytest.raises(ValueError, match="workers"):
        sweep("heartbeat-crash", [1], workers=-1)


def test_progress_is_reported_after_every_run() -> None:
    seen: list[tuple[int, int]] = []
    sweep("heartbeat-crash", [1, 2, 3], progress=lambda done, failed: seen.append((done, failed)))
    assert seen == [(1, 0), (2, 0), (3, 0)]


# --------------------------------------------------------------------------- the progress display


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_plain_progress_writes_a_line_per_tenth() -> None:
    out, clock = io.StringIO(), FakeClock()
    bar = Progress(20, out, tty=False, clock=clock)
    for done in range(1, 21):
        clock.t = done * 0.5
        bar.update(done, failed=1 if done > 10 else 0)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in out.getvalue()
    assert lines[0] == "sweep: 2/20  10%  2.0 runs/s  ETA 9s"
    assert lines[-1] == "sweep: 20/20  100%  2.0 runs/s  (1 with violations)"


def test_tty_progress_redraws_one_line() -> None:
    out, clock = io.StringIO(), FakeClock()
    bar = Progress(4, out, tty=True, clock=clock)
    for done in range(1, 5):
        clock.t = float(done)
        bar.update(done)
    bar.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "\r[" + "#" * 30 + "]  4/4  100%  1.0 runs/s" in text
    assert "ETA 3s" in text  # after the first of four runs at one per second


@pytest.mark.parametrize(("seconds", "text"), [(0.2, "0s"), (42, "42s"), (185, "3m05s"), (7440, "2h04m")])
def test_eta_format(seconds: float, text: str) -> None:
    assert format_eta(seconds) == text

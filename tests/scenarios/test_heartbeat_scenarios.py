"""The heartbeat scenarios hold their invariants, and a failing run says how to replay it."""

from __future__ import annotations

import re

import pytest

import sim.scenarios as scenarios
from commy.cli import main
from sim.checkers import DETECTION_BOUND
from sim.network import LinkConfig
from sim.scenarios import ScenarioResult, list_scenarios, run_scenario
from tests.helpers import sweep_size

SEEDS = (1, 2, 3, 4)


def explain(result: ScenarioResult) -> str:
    return f"seed {result.seed}: {result.violations}\nreplay: {result.replay_command}"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", [name for name, _ in list_scenarios()])
def test_invariants_hold(name: str, seed: int) -> None:
    result = run_scenario(name, seed=seed)
    assert result.ok, explain(result)
    expected = f"commy sim run {name} --seed {seed} --nodes {result.nodes} --duration {result.duration:g}"
    assert result.replay_command == expected
    assert result.delivered > 0 and re.fullmatch(r"[0-9a-f]{64}", result.trace_hash)


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name, _ in list_scenarios()])
def test_seed_sweep(name: str) -> None:
    """More seeds (hundreds under --slow): every failure listed with its replay command."""
    failures = []
    for seed in range(100, 100 + sweep_size(3, 300)):
        result = run_scenario(name, seed=seed)
        if not result.ok:
            failures.append(explain(result))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(("nodes", "seed"), [(3, 1), (3, 7), (5, 2), (7, 3)])
def test_a_crash_is_seen_down_by_everyone_within_the_bound(nodes: int, seed: int) -> None:
    result = run_scenario("heartbeat-crash", seed=seed, nodes=nodes)
    assert result.ok, explain(result)
    victim = f"n{nodes}"
    seen = {(observer, peer) for observer, peer, _, _ in result.detection_times}
    assert seen == {(f"n{i}", victim) for i in range(1, nodes)}, explain(result)
    assert all(0 < latency <= DETECTION_BOUND for *_, latency in result.detection_times), explain(result)
    assert any(re.fullmatch(rf" +\d+\.\d{{3}}s n1 sees {victim} SUSPECTED", line) for line in result.timeline)
    assert any(f"n1 sees {victim} DOWN" in line for line in result.timeline)


@pytest.mark.parametrize(("nodes", "seed"), [(3, 1), (4, 5)])
def test_a_partition_is_seen_from_both_sides_then_heals(nodes: int, seed: int) -> None:
    result = run_scenario("heartbeat-partition", seed=seed, nodes=nodes)
    assert result.ok, explain(result)
    seen = {(observer, peer) for observer, peer, _, _ in result.detection_times}
    rest = [f"n{i}" for i in range(2, nodes + 1)]
    assert seen == {("n1", r) for r in rest} | {(r, "n1") for r in rest}, explain(result)
    healed = result.timeline.index(next(line for line in result.timeline if "heal" in line))
    assert sum("HEALTHY" in line for line in result.timeline[healed:]) >= 2 * len(rest)
    assert "every running node sees every peer HEALTHY" in result.timeline[-1]


def test_short_runs_and_small_clusters_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="at least"):
        run_scenario("heartbeat-crash", seed=1, duration=2.0)
    with pytest.raises(ValueError, match="at least"):
        run_scenario("heartbeat-chaos", seed=1, nodes=2)
    with pytest.raises(ValueError, match="unknown scenario"):
        run_scenario("no-such-thing", seed=1)


def test_cli_prints_timeline_verdict_and_hash(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "run", "heartbeat-crash", "--seed", "7"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == "invariants: ok"
    assert re.fullmatch(r"trace-hash: [0-9a-f]{64}", out[-1])
    assert any(re.fullmatch(r" +\d+\.\d{3}s n1 sees n3 SUSPECTED", line) for line in out)
    assert main(["sim", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name, _ in list_scenarios())


def test_a_violation_prints_the_seed_and_the_replay_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Half the messages lost: the monitor marks live peers DOWN, which the checker must catch.
    broken = scenarios.Scenario("heartbeat-broken", "lossy on purpose", lambda c, d: None, 3, 10.0,
                                LinkConfig(loss=0.5), 2, 6.0)
    monkeypatch.setitem(scenarios._REGISTRY, "heartbeat-broken", broken)
    result = run_scenario("heartbeat-broken", seed=1)
    assert result.violations and any("no-false-down" in v for v in result.violations)
    assert main(["sim", "run", "heartbeat-broken", "--seed", "1"]) == 1
    out = capsys.readouterr().out
    assert "invariants: VIOLATED: no-false-down" in out
    assert "replay: commy sim run heartbeat-broken --seed 1 --nodes 3 --duration 10" in out

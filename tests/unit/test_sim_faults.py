"""Fault options (`sim.faults`): parsing, the canonical form replays carry, and their effect on a run."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commy.cli import build_parser
from commy.core.heartbeat import HEARTBEAT, HeartbeatConfig
from sim.commands import plan_of
from sim.faults import FaultPlan, Outage, Partition, format_time, parse_detector, parse_fault_args, parse_time
from sim.replay import check_faults, record, run, run_command
from sim.scenarios import run_scenario
from sim.tables import crash_detections, fault_table


@pytest.mark.parametrize(("text", "seconds"), [
    ("5s", 5.0), ("200ms", 0.2), ("1.5", 1.5), ("0", 0.0), ("12.25s", 12.25), ("1ms", 0.001),
])
def test_times(text: str, seconds: float) -> None:
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "five", "-1s", "+1s", "1 s", "nan", "inf", "3h"])
def test_bad_times(text: str) -> None:
    with pytest.raises(ValueError, match="not a time"):
        parse_time(text)


def test_signed_times() -> None:
    assert parse_time("+200ms", signed=True) == 0.2
    assert parse_time("-0.3s", signed=True) == -0.3
    assert format_time(-0.3, signed=True) == "-0.3s" and format_time(0.2, signed=True) == "+0.2s"


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False), st.booleans())
def test_times_print_back_exactly(seconds: float, signed: bool) -> None:
    assert parse_time(format_time(seconds, signed=signed), signed=signed) == seconds


def test_a_plan_prints_its_options_canonically_and_parses_back() -> None:
    plan = FaultPlan.parse(latency="5ms", jitter="2ms", loss=0.05, dup=0.01, reorder=0.02,
                           partition=["5s..15s:n1,n2|n3", "20s:n4"], crash=["n2@10s", "n3@11s..12.5s"],
                           pause=["n1@4s..7s"], skew=["n3=+200ms", "n1=-1s"], detector="interval=0.2,down=6")
    assert plan.args() == [
        "--latency", "0.005s", "--jitter", "0.002s", "--loss", "0.05", "--dup", "0.01", "--reorder", "0.02",
        "--partition", "5s..15s:n1,n2|n3", "--partition", "20s:n4", "--crash", "n2@10s", "--crash", "n3@11s..12.5s",
        "--pause", "n1@4s..7s", "--skew", "n3=+0.2s", "--skew", "n1=-1s",
        "--detector", "interval=0.2,suspect=2,down=6"]
    assert parse_fault_args(plan.args()) == plan
    assert plan_of(build_parser().parse_args(["sim", "run", "x", *plan.args()])) == plan  # the CLI agrees
    assert "'5s..15s:n1,n2|n3'" in plan.command_text()  # quoted: `|` is a pipe to a shell
    assert plan.partitions[0] == Partition(5.0, 15.0, (("n1", "n2"), ("n3",)))
    assert plan.crashes[1] == Outage("n3", 11.0, 12.5)
    assert plan.detector == HeartbeatConfig(0.2, 2, 6)


def test_an_empty_plan_is_no_plan() -> None:
    assert FaultPlan().empty and FaultPlan.parse().empty and FaultPlan().args() == []
    assert not FaultPlan.parse(loss=0.0).empty  # --loss 0 is a choice: it removes a scenario's loss


@pytest.mark.parametrize(("options", "message"), [
    ({"loss": 1.5}, "--loss is a probability"),
    ({"dup": -0.1}, "--dup is a probability"),
    ({"latency": "0"}, "--latency must be above 0"),
    ({"partition": ["5s..15s"]}, "say START..END:GROUPS"),
    ({"partition": ["9s..5s:n1"]}, "ends before it starts"),
    ({"partition": ["5s:n1,n1|n2"]}, "a node is in two groups"),
    ({"partition": ["5s:n1,|n2"]}, "an empty node name"),
    ({"crash": ["n2"]}, "say NODE@TIME"),
    ({"crash": ["n2@ten"]}, "not a time"),
    ({"skew": ["n3:+1s"]}, "say NODE=OFFSET"),
    ({"detector": "interval=0.3,up=2"}, "say interval=0.3"),
    ({"detector": "suspect=6,down=2"}, "suspect_after <= down_after"),
])
def test_bad_options_say_what_is_wrong(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaultPlan.parse(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize(("options", "message"), [
    ({"crash": ["n9@2s"]}, "unknown node n9 in the fault options; this run has n1..n3"),
    ({"crash": ["n2@8s"]}, "faults must start before the heal-and-quiesce phase, at 7s"),
    ({"partition": ["2s:n1,n2,n3"]}, "cuts nothing"),
])
def test_plans_that_do_not_fit_the_run_are_refused_before_it(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_faults("heartbeat-crash", None, None, FaultPlan.parse(**options))  # type: ignore[arg-type]


def test_no_faults_is_the_scenario_itself() -> None:
    base = run_scenario("heartbeat-crash", seed=7)
    assert run("heartbeat-crash", seed=7).trace_hash == base.trace_hash
    assert run("heartbeat-crash", seed=7, faults=FaultPlan()).trace_hash == base.trace_hash
    assert record("heartbeat-crash", seed=7).result.trace_hash == base.trace_hash  # listening changes nothing


def test_faults_happen_when_asked_and_the_replay_command_carries_them() -> None:
    plan = FaultPlan.parse(loss=0.02, partition=["1s..3s:n1|n2,n3"], crash=["n2@4s..5s"], pause=["n1@2.5s..3.5s"],
                           skew=["n3=+200ms"])
    rec = record("heartbeat-crash", seed=2, faults=plan)
    faults = [(round(f["time"], 6), f["node"], f["event"]) for f in fault_table(rec.trace)]
    assert faults[:8] == [(0.0, "*", "configure"), (0.0, "n3", "skew"), (1.0, "*", "partition"),
                          (2.5, "n1", "pause"), (3.0, "*", "heal"), (3.5, "n1", "resume"), (4.0, "n2", "crash"),
                          (5.0, "n2", "restart")]
    assert rec.result.replay_command == run_command("heartbeat-crash", 2, 3, 10.0, plan)
    assert rec.result.replay_command.endswith("--loss 0.02 --partition '1s..3s:n1|n2,n3' --crash n2@4s..5s "
                                              "--pause n1@2.5s..3.5s --skew n3=+0.2s")
    again = run("heartbeat-crash", seed=2, faults=parse_fault_args(plan.args()))
    assert again.trace_hash == rec.result.trace_hash
    assert run("heartbeat-crash", seed=2, faults=FaultPlan.parse(loss=0.03)).trace_hash != rec.result.trace_hash


@pytest.mark.parametrize(("crash", "skips"), [
    ("n3@2s..4s", [(3.0, ("crash", "crashed")), (6.0, ("restart", "running"))]),  # the plan's outage first
    ("n3@4s..8s", [(4.0, ("crash", "crashed")), (8.0, ("restart", "running"))]),  # the scenario's first
    ("n3@2s..6.5s", [(3.0, ("crash", "crashed")), (6.5, ("restart", "running"))]),  # they overlap
])
def test_a_plan_and_the_scenario_may_crash_and_restart_one_node_in_either_order(
        crash: str, skips: list[tuple[float, tuple[str, str]]]) -> None:
    # heartbeat-restart crashes n3 at 3 s and restarts it at 6 s; whichever comes second does nothing, traced.
    plan = FaultPlan.parse(crash=[crash])
    rec = record("heartbeat-restart", seed=1, faults=plan)
    assert rec.result.ok, rec.result.violations
    skipped = rec.trace.where(actor="sim", event="skip")
    assert [(round(r["time"], 6), r["detail"]) for r in skipped] == skips and set(skipped.column("node")) == {"n3"}
    assert [r["event"] for r in fault_table(rec.trace) if r["node"] == "n3"] == ["crash", "restart"]
    assert run("heartbeat-restart", seed=1, faults=plan).trace_hash == rec.result.trace_hash  # still replayable


def test_the_detector_settings_reach_every_monitor_and_every_restarted_one() -> None:
    slow = FaultPlan.parse(detector="interval=0.5,suspect=2,down=6", crash=["n1@2s..3s"])
    seen: list[HeartbeatConfig] = []

    def watch(cluster: object) -> None:
        from sim.cluster import SimCluster

        assert isinstance(cluster, SimCluster)
        cluster.sched.at(cluster.sched.epoch + 6.0, lambda _: seen.extend(  # n1 restarted, n3 crashed at 5 s
            cluster.node(n).actors[HEARTBEAT].config for n in ("n1", "n2")))  # type: ignore[attr-defined]

    rec = record("heartbeat-crash", seed=1, duration=14, faults=slow, on_cluster=watch)
    assert seen == [HeartbeatConfig(0.5, 2, 6)] * 2
    latencies = crash_detections(rec.trace).where(peer="n3").column("latency")
    assert len(latencies) == 2 and all(2.5 < x < 3.8 for x in latencies)  # about 6 rounds of 0.5 s
    assert any("down-detection" in v for v in rec.result.violations)  # over the checkers' 2 s bound
    assert parse_detector("down=7").down_after == 7

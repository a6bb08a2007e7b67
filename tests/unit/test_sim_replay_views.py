"""Stepping through a schedule (`sim.replay.ScheduleStepper`): each step is a snapshot, the end is
an IndexError, and a step the cluster cannot take is refused before anything runs."""

from __future__ import annotations

import pytest

from sim.replay import ScheduleStepper, check_schedule
from sim.schedule import Step

TWO_WRITES = [
    (1.0, "write", ("n1", "acme", "x", "replicated")),
    (1.0, "run", (1.0,)),
    (2.0, "write", ("n1", "acme", "x", "replicated")),
    (2.0, "run", (1.0,)),
]


def test_a_step_view_is_a_snapshot_of_its_moment() -> None:
    stepper = ScheduleStepper(1, TWO_WRITES)
    sent = stepper.step()
    first = stepper.step()
    assert sent.writes.column("outcome") == ["pending"] and sent.disks.rows == []
    assert first.writes.column("outcome") == ["acked"]
    assert {r["value"] for r in first.disks} == {"acme:w1"} and len(first.services) >= 2
    views = list(stepper)  # the second write, its run, and the added finish
    assert [v.action for v in views] == ["write", "run", "finish"] and stepper.done
    # the views taken earlier still show their own moment, not the cluster as it is now
    assert sent.writes.column("outcome") == ["pending"] and sent.disks.rows == []
    assert first.writes.column("outcome") == ["acked"] and {r["value"] for r in first.disks} == {"acme:w1"}
    assert views[-1].writes.column("outcome") == ["acked", "acked"]
    assert {r["value"] for r in views[-1].disks} == {"acme:w2"}
    assert views[-1].violations == () and first.index == 2 and views[-1].index == 5


def test_stepping_past_the_end_is_an_index_error() -> None:
    stepper = ScheduleStepper(1, [(1.0, "run", (0.5,))], finish=False)
    assert not stepper.done
    stepper.step()
    assert stepper.done
    with pytest.raises(IndexError, match="the schedule is done: all 1 steps ran"):
        stepper.step()
    assert list(stepper) == []  # iterating a finished stepper yields nothing, and raises nothing


@pytest.mark.parametrize(("steps", "message"), [
    ([(1.0, "crash", ("n4",))], r"step 1 \(1.0, 'crash', \('n4',\)\): unknown node 'n4'"),
    ([(1.0, "run", ())], r"run takes \(dt\), got 0 argument"),
    ([(1.0, "cut", ("n1",))], "left must be a non-empty tuple of nodes"),
    ([(1.0, "bridge", (("n1",), ("n7",)))], "right must be a non-empty tuple of nodes"),
    ([(1.0, "write", ("n1", "initech", "x", "local"))], "unknown tenant 'initech'"),
    ([(1.0, "flaky", (0.1, 2, 0))], r"duplicate is a probability in \[0, 1\]"),
    ([(1.0, "run", (-1.0,))], "dt is a number of seconds >= 0"),
    ([(1.0, "jump", ("n1", "1s"))], "seconds is a number of seconds"),
    ([(1.0, "run", (1.0,)), (2.0, "teleport", ("n1",))], "step 2 .*unknown action 'teleport'"),
])
def test_a_step_the_cluster_cannot_take_is_refused_before_anything_runs(steps: list[Step], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScheduleStepper(1, steps)


def test_every_kind_of_step_a_shrunk_schedule_holds_passes_the_check() -> None:
    check_schedule([
        (1.0, "write", ("n1", "acme", "x", "quorum")), (1.0, "intrude", ("n2", "globex", "y")),
        (1.0, "read", ("n3", "acme", "x")), (1.0, "cut", (("n2",),)), (1.0, "one_way", (["n1"], ["n2", "n3"])),
        (1.0, "bridge", (("n1",), ("n3",))), (1.0, "heal", ()), (1.0, "crash", ("n1",)), (1.0, "restart", ("n1",)),
        (1.0, "pause", ("n2",)), (1.0, "resume", ("n2",)), (1.0, "jump", ("n3", -0.5)),
        (1.0, "flaky", (0.1, 0.0, 1)), (1.0, "run", (2,)), (1.0, "finish", ()), (1.0, "finish", (4.0,)),
    ])

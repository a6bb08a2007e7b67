"""The director's bookkeeping (`commy.launch.supervision`), driven without thespian or a clock."""

from __future__ import annotations

import random

import pytest

from commy.launch.control import NodeReady, NodeStatus
from commy.launch.supervision import STABLE, NodeState, SupervisionError, Supervisor

S = NodeState


def sup(restart_min: float = 0.5, restart_max: float = 4.0) -> Supervisor:
    return Supervisor.build("c", "/c.toml", [("n1", "h1"), ("n2", "h1"), ("n3", "h2")],
                            restart_min=restart_min, restart_max=restart_max, rng=random.Random(1))


def running(s: Supervisor, now: float = 0.0) -> Supervisor:
    for host in ("h1", "h2"):
        for node in s.host_changed(host, True):
            start = s.start(node)
            assert s.ready(NodeReady(node, start.generation, 100, f"ws://{node}", f"{node}:1"), now)
    return s


def status(node: str, peers: dict[str, str]) -> NodeStatus:
    return NodeStatus(node, 1, 1, 0, 0, -1.0, tuple(peers.items()))


def test_nodes_wait_for_their_host_then_start_with_a_new_generation() -> None:
    s = sup()
    assert s.host_changed("h1", True) == ["n1", "n2"]
    assert s.records["n3"].state is S.WAITING
    first = s.start("n1")
    assert (first.node_id, first.generation, first.cluster) == ("n1", 1, "c")
    assert not s.settled() and not s.settled(["h1"])
    assert s.ready(NodeReady("n1", 1, 100, "", ""), 0.0)
    running(s)
    assert s.settled() and [r.state for r in s.records.values()] == [S.READY] * 3


def test_an_exit_restarts_after_a_backoff_that_doubles_and_is_capped() -> None:
    s = running(sup(restart_min=0.5, restart_max=2.0))
    delays = []
    for _ in range(5):
        r = s.records["n1"]
        delays.append(s.exited("n1", r.generation, 1.0, "its process ended"))
        assert r.state is S.BACKOFF and s.due("n1", r.generation)
        s.start("n1")
    assert s.records["n1"].restarts == 5
    assert all(d is not None for d in delays)
    assert delays[0] <= 0.5 and delays[2] > delays[0] and max(d for d in delays if d) <= 2.0  # type: ignore[operator]


def test_the_second_exit_notice_and_a_late_ready_of_an_old_generation_change_nothing() -> None:
    s = running(sup())
    gen = s.records["n2"].generation
    assert s.exited("n2", gen, 1.0, "ended") is not None
    assert s.exited("n2", gen, 1.0, "ended") is None  # thespian's second ChildActorExited
    s.start("n2")
    assert not s.ready(NodeReady("n2", gen, 1, "", ""), 2.0)  # the previous attempt's
    assert s.records["n2"].state is S.STARTING and s.records["n2"].restarts == 1


def test_a_node_that_stayed_up_restarts_at_the_shortest_delay_again() -> None:
    s = running(sup(restart_min=0.5, restart_max=8.0))
    for _ in range(3):  # quick deaths: the delay grows
        gen = s.records["n1"].generation
        s.exited("n1", gen, 0.0, "")
        s.due("n1", gen)
        s.ready(NodeReady("n1", s.start("n1").generation, 1, "", ""), 0.0)
    delay = s.exited("n1", s.records["n1"].generation, STABLE + 1, "")
    assert delay is not None and delay <= 0.5


def test_a_restart_due_while_the_host_is_gone_waits_for_the_host() -> None:
    s = running(sup())
    gen = s.records["n3"].generation
    s.host_changed("h2", False)
    assert s.running_on("h2") == [("n3", gen)] and s.running_on("h1") == [("n1", 1), ("n2", 1)]
    s.exited("n3", gen, 1.0, "")
    assert not s.due("n3", gen) and s.records["n3"].state is S.WAITING
    assert s.host_changed("h2", True) == ["n3"]


def test_a_silent_ready_node_most_peers_see_down_is_lost() -> None:
    s = running(sup())
    answers = {"n1": status("n1", {"n2": "healthy", "n3": "down"}), "n2": status("n2", {"n1": "healthy", "n3": "down"})}
    asked = s.pollable()
    assert s.lost_by_membership(asked, answers) == [("n3", 1)]
    answers["n2"] = status("n2", {"n1": "healthy", "n3": "suspected"})
    assert s.lost_by_membership(asked, answers) == []  # one of two: not most
    assert s.lost_by_membership(asked, {}) == []  # nobody answered: the director knows nothing


def test_a_node_that_became_ready_during_the_poll_is_not_judged() -> None:
    s = running(sup())
    asked = s.pollable()
    gen = s.records["n3"].generation
    s.exited("n3", gen, 1.0, "")
    s.due("n3", gen)
    s.ready(NodeReady("n3", s.start("n3").generation, 1, "", ""), 2.0)  # a new life, ready mid-poll
    answers = {"n1": status("n1", {"n3": "down"}), "n2": status("n2", {"n3": "down"})}  # they saw the old one die
    assert s.lost_by_membership(asked, answers) == []
    assert s.lost_by_membership(s.pollable(), answers) == [("n3", gen + 1)]  # asked, silent, seen DOWN


def test_restarts_count_every_start_after_the_first_even_after_waiting_for_the_host() -> None:
    s = running(sup())
    gen = s.records["n3"].generation
    s.host_changed("h2", False)
    s.exited("n3", gen, 1.0, "")
    s.due("n3", gen)  # its host is gone: WAITING
    s.host_changed("h2", True)
    s.start("n3")
    assert s.records["n3"].restarts == 1


def test_a_start_no_retry_can_mend_fails_for_good_and_settles_the_launch() -> None:
    s = sup()
    s.host_changed("h1", True)
    s.host_changed("h2", True)
    for node in ("n1", "n2"):
        s.ready(NodeReady(node, s.start(node).generation, 1, "", ""), 0.0)
    gen = s.start("n3").generation
    assert not s.settled()
    assert s.failed_for_good("n3", gen, "h2's configuration names another cluster")
    assert s.records["n3"].state is S.FAILED and s.settled()
    assert s.exited("n3", gen, 1.0, "its process ended") is None  # no restart
    assert s.stop_all() == [("n1", 1), ("n2", 1)] and s.records["n3"].state is S.STOPPED


def test_stop_all_tells_running_nodes_and_ends_the_rest() -> None:
    s = running(sup())
    gen = s.records["n3"].generation
    s.exited("n3", gen, 1.0, "")
    told = s.stop_all()
    assert told == [("n1", 1), ("n2", 1)] and s.records["n3"].state is S.STOPPED
    assert not s.due("n3", gen)  # the pending restart is void
    s.stopped("n1", 1)
    assert s.exited("n2", 1, 2.0, "") is None  # an exit while stopping is the stop
    assert s.all_stopped()


def test_transitions_outside_the_table_are_refused() -> None:
    s = sup()
    with pytest.raises(SupervisionError, match="waiting -> ready"):
        s.records["n1"].move(S.READY)


def test_rows_show_what_status_prints() -> None:
    s = running(sup(), now=10.0)
    rows = s.rows({"n1": NodeStatus("n1", 1, 1, 4, 2, 3.5, (("n2", "healthy"),))}, now=25.0)
    n1, n2, _ = rows
    assert (n1.state, n1.uptime, n1.clients, n1.services, n1.lag_p99_ms, n1.pid) == ("ready", 15.0, 4, 2, 3.5, 100)
    assert (n2.clients, n2.lag_p99_ms) == (-1, -1.0)  # did not answer

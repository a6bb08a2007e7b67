"""Draining a node (its clients move to the least-loaded peer, then it leaves), the load reports
that choose the targets, and the failover manager's record of failures and migrations."""

from __future__ import annotations

import pytest

from commy.core.drain_ops import DRAIN_TIMEOUT, DrainState
from commy.core.failover import FailoverManager, NodeFailure
from commy.errors import BAD_REQUEST, FORBIDDEN, NOT_FOUND, UNAUTHENTICATED, UNAVAILABLE
from commy.messages import (
    AdminDone,
    Authenticate,
    ClientMigration,
    ClientMigrationAck,
    CloseClient,
    DrainNode,
    DrainRequest,
    Error,
    GetVariables,
    Leave,
    LoadReport,
    MigrationReason,
    MigrationRecorded,
    PeerStateChanged,
    Resume,
    client_address,
)
from tests.helpers.fake_context import FakeContext, deliver
from tests.helpers.hub import HubHarness, in_cluster


def code(reply: object) -> str:
    assert isinstance(reply, Error), reply
    return reply.code


def session(h: HubHarness, client: str, tenant: str = "acme") -> str:
    conn = h.connect()
    h.login(conn, tenant, h.setup_tenant(tenant, client))
    return conn


def migration(h: HubHarness, conn: str) -> ClientMigration:
    got = h.events(conn, ClientMigration)
    assert len(got) == 1, got
    assert isinstance(got[0], ClientMigration)
    return got[0]


def outcomes(h: HubHarness) -> list[tuple[str, str, str]]:
    return [(m.client_id, m.to_node, m.outcome) for m in h.to_actor("failover", MigrationRecorded)
            if isinstance(m, MigrationRecorded)]


def drain_here(h: HubHarness) -> None:
    """A peer's hub forwards an admin's DrainNode for this node."""
    h.from_peer("n2", DrainRequest("n1", "admin"))


@pytest.fixture
def h() -> HubHarness:
    h = HubHarness(cluster=in_cluster(size=3))
    h.peer_up("n2", "n3")
    return h


# ---------------------------------------------------------------- the request


def test_drain_node_needs_a_server_admin(h: HubHarness) -> None:
    assert code(h.ask(h.connect(), DrainNode("n2"))) == UNAUTHENTICATED
    assert code(h.ask(session(h, "alice"), DrainNode("n2"))) == FORBIDDEN
    assert h.to_peer("n2", DrainRequest) == [] and h.hub.drain_state is DrainState.SERVING


def test_an_unknown_or_unreachable_node_is_refused(h: HubHarness) -> None:
    admin = h.admin()
    assert code(h.ask(admin, DrainNode("ghost"))) == NOT_FOUND
    h.peer_down("n3")
    assert code(h.ask(admin, DrainNode("n3"))) == UNAVAILABLE
    assert h.to_peer("n3", DrainRequest) == []


def test_a_live_peer_is_asked_to_drain(h: HubHarness) -> None:
    admin = h.admin()
    assert isinstance(h.ask(admin, DrainNode("n2")), AdminDone)
    [env] = h.to_peer("n2", DrainRequest)
    assert env.receiver.name == "clients" and env.body == DrainRequest("n2", "admin")
    assert h.hub.drain_state is DrainState.SERVING  # this node goes on serving


def test_a_drain_request_for_another_node_is_ignored(h: HubHarness) -> None:
    h.from_peer("n2", DrainRequest("n3", "admin"))
    assert h.hub.drain_state is DrainState.SERVING


def test_a_single_server_cannot_be_drained() -> None:
    # Fixed: a server outside a cluster used to start draining -- refusing every new session --
    # with no load timer to ever end the drain and no membership actor to announce a leave to.
    h = HubHarness()
    admin = h.admin()
    assert code(h.ask(admin, DrainNode("n1"))) == BAD_REQUEST
    assert h.hub.drain_state is DrainState.SERVING
    assert h.hub.conns[admin].sessions and h.events(admin, ClientMigration) == []


# ---------------------------------------------------------------- load reports and targets


def test_each_hub_reports_its_load_to_its_live_peers(h: HubHarness) -> None:
    session(h, "alice")
    h.peer_down("n3")
    h.host.advance(1.0)
    reports = [(e.receiver, e.body) for e in h.host.transmitted if isinstance(e.body, LoadReport)]
    assert {(r.node, r.name) for r, _ in reports} == {("n2", "clients")}
    assert reports[-1][1] == LoadReport(1, False)


def test_clients_move_to_the_least_loaded_peer_counting_the_ones_sent_there(h: HubHarness) -> None:
    h.from_peer("n2", LoadReport(2, False))
    h.from_peer("n3", LoadReport(1, False))
    conns = [session(h, c) for c in ("a", "b", "c")]
    drain_here(h)
    moves = [migration(h, c) for c in conns]
    assert [m.target_node for m in moves] == ["n3", "n2", "n3"]  # 1 < 2; then 2 = 2 (by id); then 2 < 3
    assert [m.target_url for m in moves] == [h.hub.members[m.target_node].client_url for m in moves]
    a = h.hub.conns[conns[0]].sessions["acme"]
    assert (moves[0].session_id, moves[0].client_id, moves[0].reason) == (a.session_id, "a", MigrationReason.DRAINING)


def test_a_draining_peer_is_no_target(h: HubHarness) -> None:
    # Fixed: a peer reporting that it drains too was only made to look very loaded, so with no
    # other choice clients were sent to a node that refuses them.
    h.from_peer("n2", LoadReport(50, False))
    h.from_peer("n3", LoadReport(0, True))
    c = session(h, "alice")
    drain_here(h)
    assert migration(h, c).target_node == "n2"
    h2 = HubHarness(cluster=in_cluster(size=2))
    h2.peer_up("n2")
    h2.from_peer("n2", LoadReport(0, True))
    c2 = session(h2, "alice")
    h2.from_peer("n2", DrainRequest("n1", "admin"))
    assert h2.events(c2, ClientMigration) == []  # nowhere to go: closed when the drain times out


def test_draining_this_node_answers_the_admin_before_moving_it(h: HubHarness) -> None:
    # Fixed: the requester's own connection is one of those asked to move, and it was told to go
    # before it got its answer (a client that moves at once may lose that answer).
    admin = h.admin()
    rid = h.send(admin, DrainNode("n1"))
    to_admin = [e for e in h.host.transmitted if e.receiver == client_address(admin)]
    assert [type(e.body) for e in to_admin[-2:]] == [AdminDone, ClientMigration]
    assert to_admin[-2].request_id == rid and h.hub.drain_state is DrainState.DRAINING


# ---------------------------------------------------------------- the drain


def test_a_draining_node_refuses_new_sessions_and_serves_the_ones_it_has(h: HubHarness) -> None:
    key = h.setup_tenant("acme", "zed")
    c = session(h, "alice")
    token = h.login(h.connect(), "acme", key).token
    drain_here(h)
    late = h.connect()
    assert code(h.ask(late, Authenticate("acme", "api_key", key))) == UNAVAILABLE
    assert code(h.ask(late, Resume("s1", token, ()))) == UNAVAILABLE
    assert code(h.ask(c, GetVariables("acme", "s", ()))) == NOT_FOUND  # served, not refused


def test_outcomes_are_recorded_and_the_node_leaves_once_every_client_is_gone(h: HubHarness) -> None:
    moved, vanished, refused = session(h, "a"), session(h, "b"), session(h, "c")
    drain_here(h)
    h.send(moved, ClientMigrationAck(migration(h, moved).session_id, True, ""))
    h.disconnect(moved)
    h.disconnect(vanished)  # never acknowledged
    h.send(refused, ClientMigrationAck(migration(h, refused).session_id, False, "busy"))
    assert [o[2] for o in outcomes(h)] == ["moved", "closed", "refused"]
    assert h.to_actor("membership") == [] and h.hub.drain_state is DrainState.DRAINING
    h.disconnect(refused)
    assert h.to_actor("membership") == [Leave()] and h.hub.drain_state is DrainState.RETIRED
    assert len(outcomes(h)) == 3  # the refusal was its record
    h.host.advance(DRAIN_TIMEOUT + 2)
    assert h.to_actor("membership") == [Leave()]  # once
    assert LoadReport(0, True) in [e.body for e in h.to_peer("n2")]


def test_clients_still_there_after_the_timeout_are_closed(h: HubHarness) -> None:
    stays, anonymous = session(h, "a"), h.connect()
    drain_here(h)
    h.host.advance(DRAIN_TIMEOUT / 2)
    assert h.to_actor("membership") == []
    h.host.advance(DRAIN_TIMEOUT / 2 + 1.1)
    for conn in (stays, anonymous):
        assert [type(m) for m in h.events(conn, CloseClient)] == [CloseClient]
        closed = h.events(conn, CloseClient)[0]
        assert isinstance(closed, CloseClient) and closed.code == UNAVAILABLE
    assert outcomes(h) == [("a", migration(h, stays).target_node, "closed")]
    assert h.to_actor("membership") == [Leave()] and not h.hub.conns


def test_a_node_with_no_clients_leaves_at_once(h: HubHarness) -> None:
    drain_here(h)
    assert h.to_actor("membership") == [Leave()] and h.hub.drain_state is DrainState.RETIRED
    assert outcomes(h) == []


def test_a_second_drain_request_changes_nothing(h: HubHarness) -> None:
    c = session(h, "a")
    drain_here(h)
    drain_here(h)
    assert len(h.events(c, ClientMigration)) == 1


# ---------------------------------------------------------------- the failover manager


def failover() -> tuple[FailoverManager, FakeContext]:
    ctx = FakeContext()
    return FailoverManager(ctx, limit=3), ctx


def peer(manager: FailoverManager, peer_id: str, old: str, new: str, at: float) -> None:
    deliver(manager, PeerStateChanged(peer_id, old, new, at))


def test_the_failover_manager_records_failures_and_recoveries() -> None:
    m, ctx = failover()
    peer(m, "n2", "healthy", "suspected", 1.0)
    peer(m, "n2", "suspected", "healthy", 1.5)  # a false alarm is no failure
    peer(m, "n2", "healthy", "down", 2.0)
    peer(m, "n3", "suspected", "down", 2.5)
    assert list(m.failures) == [NodeFailure("n2", 2.0), NodeFailure("n3", 2.5)]
    peer(m, "n2", "down", "healthy", 4.0)
    assert list(m.failures) == [NodeFailure("n2", 2.0, 4.0), NodeFailure("n3", 2.5)]
    peer(m, "n2", "healthy", "down", 5.0)
    peer(m, "n2", "down", "healthy", 6.0)  # closes the newest failure only
    assert list(m.failures) == [NodeFailure("n2", 2.0, 4.0), NodeFailure("n3", 2.5), NodeFailure("n2", 5.0, 6.0)]
    assert "node_failed" in ctx.log.events("warning")


def test_the_failover_manager_keeps_the_latest_migrations_and_counts_outcomes() -> None:
    m, _ = failover()
    for i, outcome in enumerate(["moved", "closed", "moved", "resumed"]):
        deliver(m, MigrationRecorded(f"s{i}", f"c{i}", "n1", "n2", "draining", outcome, float(i)))
    assert [r.session_id for r in m.migrations] == ["s1", "s2", "s3"]  # the limit
    assert m.outcomes == {"moved": 2, "closed": 1, "resumed": 1}


def test_a_drained_hub_reports_to_the_failover_manager(h: HubHarness) -> None:
    c = session(h, "a")
    drain_here(h)
    h.send(c, ClientMigrationAck(migration(h, c).session_id, True, ""))
    h.disconnect(c)
    [rec] = h.to_actor("failover", MigrationRecorded)
    assert isinstance(rec, MigrationRecorded)
    assert (rec.from_node, rec.to_node, rec.reason, rec.outcome, rec.client_id) == ("n1", migration(h, c).target_node,
                                                                                  "draining", "moved", "a")

"""The hub as one node of a cluster: write concerns, writes from other nodes, catalog merges from
peers (and what they end here), and resurrection of a service this node holds no file for."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings

from commy.core.catalog import Catalog
from commy.core.catalog_records import parse_key
from commy.core.clients import HubConfig
from commy.core.hlc import origin_of
from commy.core.permissions import Permission
from commy.errors import BAD_REQUEST, UNAUTHENTICATED, UNAVAILABLE
from commy.messages import (
    CLIENT_REQUESTS,
    Authenticate,
    ClientMigrationAck,
    ClockCatchingUp,
    ClockSynced,
    CloseClient,
    EnsureService,
    Error,
    GetVariables,
    Heartbeat,
    MapService,
    MemberLeft,
    MergeCatalog,
    Message,
    MigrationAck,
    MigrationRecorded,
    NamedValue,
    PermissionRevoked,
    RefreshToken,
    RemoteWrites,
    Resume,
    ResumeResponse,
    ServiceReady,
    ServiceVersions,
    SetVariables,
    Subscribe,
    SubscriptionAck,
    VariableChanged,
    VariablesData,
    VariablesUpdated,
    WritesMade,
    client_address,
)
from tests.helpers.hub import CHEAP_KDF, HubHarness, in_cluster
from tests.helpers.strategies import messages

REPLICATOR = "replicator"


def code(reply: object) -> str:
    assert isinstance(reply, Error), reply
    return reply.code


def setv(tenant: str, service: str, concern: str = "", **values: bytes) -> SetVariables:
    return SetVariables(tenant, service, tuple(NamedValue(k, v) for k, v in values.items()), concern)


def session(h: HubHarness, tenant: str, client: str, scopes: frozenset[str] = frozenset({"write"})) -> str:
    conn = h.connect()
    h.login(conn, tenant, h.setup_tenant(tenant, client, scopes))
    return conn


def replies(h: HubHarness, conn: str) -> list[Message]:
    """Everything the hub sent `conn` as an answer to a request, in order."""
    return [e.body for e in h.host.transmitted if e.receiver == client_address(conn) and e.request_id]


@pytest.fixture
def h() -> HubHarness:
    return HubHarness(cluster=in_cluster(size=3, replication_factor=2))


# ---------------------------------------------------------------- write concerns


def test_quorum_on_a_minority_is_refused_before_anything_is_written(h: HubHarness) -> None:
    c = session(h, "acme", "alice")
    h.ask(c, setv("acme", "s", "local", x=b"1"))
    before = len(h.to_actor(REPLICATOR))
    refused = h.ask(c, setv("acme", "s", "quorum", x=b"2", y=b"new"))
    assert isinstance(refused, Error) and refused.code == UNAVAILABLE and "1 of 3" in refused.detail
    entry = h.store.open("acme", "s").read("x")
    assert entry is not None and (entry.value, entry.version) == (b"1", 1)
    assert h.store.open("acme", "s").read("y") is None
    assert len(h.to_actor(REPLICATOR)) == before  # nothing to stream either


def test_a_refused_write_does_not_create_its_service(h: HubHarness) -> None:
    c = session(h, "acme", "alice")
    assert code(h.ask(c, setv("acme", "new", "quorum", x=b"1"))) == UNAVAILABLE
    assert not h.store.exists("acme", "new") and not h.catalog.has_service("acme", "new")


def test_quorum_is_accepted_with_a_majority_and_answered_by_the_replicator(h: HubHarness) -> None:
    c = session(h, "acme", "alice")
    h.peer_up("n2")  # 2 of 3
    rid = h.send(c, setv("acme", "s", "quorum", x=b"1", y=b"2"))
    assert all(e.request_id != rid for e in h.host.transmitted)  # the replicator answers, later
    made = h.to_actor(REPLICATOR, WritesMade)[-1]
    assert isinstance(made, WritesMade)
    handle = h.store.open("acme", "s")
    assert [(w.name, w.value, w.stamp, w.writer) for w in made.writes] == [
        ("x", b"1", handle.read("x").stamp, "alice"), ("y", b"2", handle.read("y").stamp, "alice")]  # type: ignore[union-attr]
    assert all(origin_of(w.stamp) == 1 and w.prev == 0 for w in made.writes)
    assert (made.tenant, made.service, made.concern, made.conn, made.request_id) == ("acme", "s", "quorum", c, rid)
    assert isinstance(made.reply, VariablesUpdated)
    assert [(v.name, v.version, v.stamp) for v in made.reply.versions] == [
        (w.name, 1, w.stamp) for w in made.writes]


def test_replicated_needs_replication_factor_minus_one_live_peers(h: HubHarness) -> None:
    c = session(h, "acme", "alice")
    assert code(h.ask(c, setv("acme", "s", "replicated", x=b"1"))) == UNAVAILABLE
    h.peer_up("n2")
    h.send(c, setv("acme", "s", "replicated", x=b"1"))
    made = h.to_actor(REPLICATOR, WritesMade)[-1]
    assert isinstance(made, WritesMade) and made.concern == "replicated" and made.conn == c
    h.peer_state("n2", "healthy", "suspected")  # suspected still counts as live
    h.send(c, setv("acme", "s", "replicated", x=b"2"))
    assert len(h.to_actor(REPLICATOR, WritesMade)) == 2
    h.peer_state("n2", "suspected", "down")
    assert code(h.ask(c, setv("acme", "s", "replicated", x=b"3"))) == UNAVAILABLE
    h.peer_state("n2", "down", "healthy")
    h.node.publish(MemberLeft("n2"))  # a graceful leave counts like down
    assert code(h.ask(c, setv("acme", "s", "replicated", x=b"3"))) == UNAVAILABLE


def test_writes_refused_as_unavailable_do_not_count_as_bad_requests() -> None:
    # Fixed: each refusal counted toward max_bad_requests, so a client writing through a partition
    # was dropped as a misbehaving one (the sim's cluster-chaos, seed 1).
    h = HubHarness(HubConfig(max_bad_requests=3), cluster=in_cluster(size=3))
    c = session(h, "acme", "alice")
    for _ in range(10):
        assert code(h.ask(c, setv("acme", "s", "quorum", x=b"1"))) == UNAVAILABLE
    assert c in h.hub.conns and h.events(c, CloseClient) == []
    for _ in range(4):
        h.send(c, setv("acme", "s", "eventual", x=b"1"))  # the client's own mistakes still do
    assert c not in h.hub.conns


def test_local_concern_answers_at_once_and_still_streams_the_writes(h: HubHarness) -> None:
    c = session(h, "acme", "alice")
    reply = h.ask(c, setv("acme", "s", "local", x=b"1"))
    assert isinstance(reply, VariablesUpdated)
    made = h.to_actor(REPLICATOR, WritesMade)[-1]
    assert isinstance(made, WritesMade)
    assert (made.concern, made.conn, made.request_id, made.reply) == ("local", "", 0, None)
    assert [(w.name, w.stamp, w.writer) for w in made.writes] == [("x", reply.versions[0].stamp, "alice")]


def test_an_empty_concern_means_the_clusters_default() -> None:
    h = HubHarness(cluster=in_cluster(size=3, concern="replicated"))
    c = session(h, "acme", "alice")
    assert code(h.ask(c, setv("acme", "s", "", x=b"1"))) == UNAVAILABLE
    assert isinstance(h.ask(c, setv("acme", "s", "local", x=b"1")), VariablesUpdated)
    assert code(h.ask(c, setv("acme", "s", "eventual", x=b"1"))) == BAD_REQUEST


def test_a_single_server_accepts_every_concern_and_streams_nothing() -> None:
    h = HubHarness()
    c = session(h, "acme", "alice")
    for concern in ("", "local", "replicated", "quorum"):
        assert isinstance(h.ask(c, setv("acme", "s", concern, x=b"1")), VariablesUpdated)
    assert h.recorded == {}


# ---------------------------------------------------------------- the clock catching up at start


def test_writes_are_refused_while_the_clock_catches_up_then_accepted(h: HubHarness) -> None:
    # Fixed: a node back from a lost disk with its clock behind stamped writes below its previous
    # incarnation's, which peers dropped as duplicates -- acknowledged, then lost.
    c = session(h, "acme", "alice")
    h.peer_up("n2")
    h.node.publish(ClockCatchingUp(h.host.now() - 0.25))  # the replicator: started 250 ms ago
    for concern in ("local", "replicated", "quorum", ""):
        refused = h.ask(c, setv("acme", "s", concern, x=b"1"))
        assert code(refused) == UNAVAILABLE
        assert "started 250 ms ago and is catching up with its peers: retry" in refused.detail  # type: ignore[attr-defined]
    assert not h.store.exists("acme", "s") and not h.catalog.has_service("acme", "s")  # nothing written
    assert h.to_actor(REPLICATOR, WritesMade) == [] and h.hub.conns[c].bad_requests == 0
    h.node.publish(ClockSynced(0.4, True))
    assert isinstance(h.ask(c, setv("acme", "s", "local", x=b"1")), VariablesUpdated)
    h.send(c, setv("acme", "s", "replicated", x=b"2"))  # the replicator answers this one
    assert [m.concern for m in h.to_actor(REPLICATOR, WritesMade)] == ["local", "replicated"]  # type: ignore[attr-defined]


def test_direct_writes_made_while_the_clock_catches_up_are_stamped_once_it_is_synced(h: HubHarness) -> None:
    c = session(h, "acme", "alice")
    h.ask(c, setv("acme", "s", x=b"1"))
    mapped = h.ask(c, MapService("acme", "s"))
    sub = session(h, "acme", "bob", frozenset({"read"}))
    h.ask(sub, Subscribe("acme", "s", ("x",)))
    streamed = len(h.to_actor(REPLICATOR, WritesMade))
    h.node.publish(ClockCatchingUp(h.host.now()))
    h.store.open("acme", "s").write_as(mapped.writer, "x", b"mine")  # type: ignore[attr-defined]
    h.host.advance(0.01)  # several local polls: nothing stamped, announced or streamed
    assert h.events(sub, VariableChanged) == [] and len(h.to_actor(REPLICATOR, WritesMade)) == streamed
    h.cluster.clock.observe(h.cluster.clock.last + (5 << 20))  # type: ignore[union-attr]  # a peer's digest
    h.node.publish(ClockSynced(0.3, True))
    h.host.advance(0.01)
    [change] = h.events(sub, VariableChanged)
    assert isinstance(change, VariableChanged) and change.value == b"mine"
    made = h.to_actor(REPLICATOR, WritesMade)[-1]
    assert isinstance(made, WritesMade) and [(w.value, w.stamp) for w in made.writes] == [(b"mine", change.stamp)]
    assert change.stamp > h.cluster.clock.last - (1 << 20)  # type: ignore[union-attr]  # above what was observed


def test_a_single_server_is_never_held_back() -> None:
    h = HubHarness()
    c = session(h, "acme", "alice")
    h.node.publish(ClockCatchingUp(h.host.now()))
    assert isinstance(h.ask(c, setv("acme", "s", "", x=b"1")), VariablesUpdated)


# ---------------------------------------------------------------- writes from other nodes


def remote_write(h: HubHarness, name: str, value: bytes, writer: str, origin: int = 2) -> VariableChanged:
    """What the replicator does with a peer's write that won: into the file, then to the hub."""
    stamp = (h.cluster.clock.tick() & ~0xFF) | origin  # type: ignore[union-attr]
    version = h.store.open("acme", "s", create=True).write(name, value, stamp=stamp)
    change = VariableChanged("acme", "s", name, value, version, writer, stamp)
    h.from_actor(REPLICATOR, RemoteWrites((change,)))
    return change


def test_remote_writes_reach_subscribers_and_name_their_writer(h: HubHarness) -> None:
    c = session(h, "acme", "alice")
    h.ask(c, setv("acme", "s", x=b"1"))
    sub = session(h, "acme", "bob", frozenset({"read"}))
    assert isinstance(h.ask(sub, Subscribe("acme", "s", ("x",))), SubscriptionAck)
    change = remote_write(h, "x", b"far", "carol")
    assert h.events(sub, VariableChanged) == [change]
    data = h.ask(sub, GetVariables("acme", "s", ("x",)))
    assert isinstance(data, VariablesData)
    assert [(v.value, v.changed_by, v.stamp) for v in data.variables] == [(b"far", "carol", change.stamp)]
    assert len(h.to_actor(REPLICATOR, WritesMade)) == 1  # only alice's own write is streamed


def test_remote_writes_into_a_mapped_file_are_not_announced_again_by_the_poll(h: HubHarness) -> None:
    c = session(h, "acme", "alice")
    h.ask(c, setv("acme", "s", x=b"1"))
    mapped = h.ask(c, MapService("acme", "s"))
    sub = session(h, "acme", "bob", frozenset({"read"}))
    h.ask(sub, Subscribe("acme", "s", ("x", "y")))
    streamed = len(h.to_actor(REPLICATOR, WritesMade))
    remote_write(h, "x", b"far", "carol")
    remote_write(h, "y", b"new", "carol")
    h.host.advance(0.01)  # several local polls
    assert [(e.name, e.changed_by) for e in h.events(sub, VariableChanged)  # type: ignore[attr-defined]
            ] == [("x", "carol"), ("y", "carol")]
    assert len(h.to_actor(REPLICATOR, WritesMade)) == streamed  # not streamed back as if made here
    # a local client's direct write still is: stamped, announced and streamed
    h.store.open("acme", "s").write_as(mapped.writer, "x", b"mine")  # type: ignore[attr-defined]
    h.host.advance(0.01)
    last = h.events(sub, VariableChanged)[-1]
    assert isinstance(last, VariableChanged) and (last.value, last.changed_by) == (b"mine", "alice")
    assert origin_of(last.stamp) == 1 and h.store.open("acme", "s").read("x").stamp == last.stamp  # type: ignore[union-attr]
    made = h.to_actor(REPLICATOR, WritesMade)[-1]
    assert isinstance(made, WritesMade) and made.concern == "local"
    assert [(w.name, w.value, w.stamp, w.writer) for w in made.writes] == [("x", b"mine", last.stamp, "alice")]


# ---------------------------------------------------------------- catalog merges


def peer_copy(h: HubHarness) -> Catalog:
    """Another node's catalog, in sync with this one so far."""
    return Catalog.restore(h.catalog.snapshot(), kdf=CHEAP_KDF)


def merge(h: HubHarness, peer: Catalog) -> None:
    h.from_actor("catalog-sync", MergeCatalog(peer.snapshot()))


def key_id(key: str) -> str:
    parsed = parse_key(key)
    assert parsed is not None
    return parsed[0]


def test_a_key_revoked_elsewhere_ends_its_sessions_here(h: HubHarness) -> None:
    key = h.setup_tenant("acme", "alice")
    c = h.connect()
    h.login(c, "acme", key)
    other = session(h, "acme", "bob")
    peer = peer_copy(h)
    peer.revoke_api_key(key_id(key), h.host.now())
    merge(h, peer)
    assert h.events(c, PermissionRevoked) == [PermissionRevoked("acme", "api key revoked")]
    assert code(h.ask(c, GetVariables("acme", "s", ()))) == UNAUTHENTICATED
    assert code(h.ask(c, Authenticate("acme", "api_key", key))) == UNAUTHENTICATED
    assert h.events(other, PermissionRevoked) == []


def test_a_logout_elsewhere_ends_the_tokens_sessions_here(h: HubHarness) -> None:
    c = session(h, "acme", "alice")
    token_id = h.hub.conns[c].sessions["acme"].token_id
    peer = peer_copy(h)
    peer.revoke_token(token_id, h.host.now() + 3600, h.host.now())
    merge(h, peer)
    assert h.events(c, PermissionRevoked) == [PermissionRevoked("acme", "logged out")]


def test_a_tenant_deleted_elsewhere_ends_its_sessions_and_removes_its_files(h: HubHarness) -> None:
    c = session(h, "acme", "alice")
    h.ask(c, setv("acme", "s", x=b"1"))
    h.ask(c, Subscribe("acme", "s", ("x",)))
    keep = session(h, "other", "bob")
    h.ask(keep, setv("other", "s", x=b"1"))
    peer = peer_copy(h)
    peer.delete_tenant("acme", h.host.now())
    merge(h, peer)
    assert h.events(c, PermissionRevoked) == [PermissionRevoked("acme", "tenant deleted")]
    assert h.store.tenants() == ["other"] and h.events(keep, PermissionRevoked) == []
    assert h.hub.subs.subscribers("acme", "s", "x") == []


def test_a_grant_revoked_elsewhere_ends_or_trims_the_sessions_here(h: HubHarness) -> None:
    gone = session(h, "acme", "alice")
    trimmed = session(h, "acme", "bob", frozenset({"read"}))
    h.ask(gone, setv("acme", "s", x=b"1"))
    h.ask(trimmed, Subscribe("acme", "s", ("x",)))
    peer = peer_copy(h)
    peer.revoke("alice", "acme", None, h.host.now())
    peer.revoke("bob", "acme", frozenset({Permission.SUBSCRIBE}), h.host.now())
    merge(h, peer)
    assert h.events(gone, PermissionRevoked) == [PermissionRevoked("acme", "permission revoked")]
    assert h.events(trimmed, PermissionRevoked) == []  # still reads ...
    assert h.hub.subs.subscribers("acme", "s", "x") == []  # ... but no longer subscribes
    assert isinstance(h.ask(trimmed, GetVariables("acme", "s", ("x",))), VariablesData)


def test_a_service_deleted_elsewhere_loses_its_file_mappings_and_subscribers_here(h: HubHarness) -> None:
    c = session(h, "acme", "alice")
    h.ask(c, setv("acme", "s", x=b"1"))
    h.ask(c, setv("acme", "t", x=b"1"))
    h.ask(c, MapService("acme", "s"))
    h.ask(c, Subscribe("acme", "s", ("x",)))
    peer = peer_copy(h)
    peer.delete_service("acme", "s", h.host.now())
    merge(h, peer)
    assert not h.store.exists("acme", "s") and h.store.exists("acme", "t")
    assert ("acme", "s") not in h.hub.conns[c].mapped and ("acme", "s") not in h.hub.slots
    assert h.hub.subs.subscribers("acme", "s", "x") == []
    assert [k for k in h.hub.last_writer if k[1] == "s"] == [] and ("acme", "s") not in h.hub.path_holders
    assert h.events(c, PermissionRevoked) == []  # the session itself goes on


def test_a_merge_that_changes_nothing_does_nothing(h: HubHarness) -> None:
    c = session(h, "acme", "alice")
    h.ask(c, setv("acme", "s", x=b"1"))
    epoch, sent = h.hub.epoch, len(h.host.transmitted)
    merge(h, peer_copy(h))
    assert h.hub.epoch == epoch and len(h.host.transmitted) == sent


def test_a_grant_made_elsewhere_is_usable_here(h: HubHarness) -> None:
    c = session(h, "acme", "alice", frozenset({"read"}))
    assert code(h.ask(c, setv("acme", "s", x=b"1"))) == "forbidden"
    peer = peer_copy(h)
    peer.grant("alice", "acme", frozenset({Permission.VARIABLE_WRITE, Permission.SERVICE_CREATE}), h.host.now())
    merge(h, peer)
    assert isinstance(h.ask(c, setv("acme", "s", x=b"1")), VariablesUpdated)


def test_a_path_holder_that_left_loses_the_path_when_read_is_revoked_elsewhere(h: HubHarness) -> None:
    # Fixed: a merge used to check only connected clients, so a local client that had mapped the
    # file and disconnected kept a working path after losing read access on another node.
    c = session(h, "acme", "alice")
    h.ask(c, setv("acme", "s", x=b"1"))
    h.ask(c, MapService("acme", "s"))
    h.disconnect(c)
    path = h.store.path("acme", "s")
    peer = peer_copy(h)
    peer.revoke("alice", "acme", None, h.host.now())
    merge(h, peer)
    assert h.store.path("acme", "s") != path and [r[2] for r in h.store.rotated] == [path]


def test_a_path_holder_that_left_loses_the_path_when_its_key_is_revoked_elsewhere(h: HubHarness) -> None:
    key = h.setup_tenant("acme", "alice")
    c = h.connect()
    h.login(c, "acme", key)
    h.ask(c, setv("acme", "s", x=b"1"))
    h.ask(c, MapService("acme", "s"))
    h.disconnect(c)
    path = h.store.path("acme", "s")
    peer = peer_copy(h)
    peer.revoke_api_key(key_id(key), h.host.now())
    merge(h, peer)
    assert h.store.path("acme", "s") != path  # as a revocation made here does


# ---------------------------------------------------------------- resurrection


def held_elsewhere(h: HubHarness, service: str = "s") -> None:
    """The catalog knows `service` (made on another node); this node holds no file for it."""
    h.catalog.create_service("acme", service, h.host.now())
    h.hub.catalog_changed()


def fetched(h: HubHarness, service: str = "s", **values: bytes) -> None:
    """The replicator brought the holders' state, then says so."""
    handle = h.store.open("acme", service, create=True)
    for name, value in values.items():
        handle.write(name, value, stamp=(h.cluster.clock.tick() & ~0xFF) | 2)  # type: ignore[union-attr]
    h.from_actor(REPLICATOR, ServiceReady("acme", service, True))


def test_a_service_held_elsewhere_is_fetched_once_for_every_waiting_request(h: HubHarness) -> None:
    a = session(h, "acme", "alice")
    b = session(h, "acme", "bob", frozenset({"read"}))
    held_elsewhere(h)
    h.send(a, GetVariables("acme", "s", ()))
    h.send(b, Subscribe("acme", "s", ("x",)))
    h.send(a, setv("acme", "s", y=b"2"))  # behind the parked request
    h.send(a, Heartbeat(1.0))
    assert replies(h, a)[1:] == [] and replies(h, b)[1:] == []  # only the logins so far
    assert h.to_actor(REPLICATOR, EnsureService) == [EnsureService("acme", "s")]
    fetched(h, x=b"held")
    got_a, got_b = replies(h, a)[1:], replies(h, b)[1:]
    assert [type(r).__name__ for r in got_a] == ["VariablesData", "VariablesUpdated", "HeartbeatAck"]
    assert [v.value for v in got_a[0].variables] == [b"held"]  # type: ignore[attr-defined]
    assert isinstance(got_b[0], SubscriptionAck) and [v.value for v in got_b[0].current] == [b"held"]
    assert h.to_actor(REPLICATOR, EnsureService) == [EnsureService("acme", "s")]  # no second fetch
    assert isinstance(h.ask(a, GetVariables("acme", "s", ())), VariablesData)  # served at once now


def test_no_holder_answered_the_service_starts_empty_here(h: HubHarness) -> None:
    c = session(h, "acme", "alice")
    held_elsewhere(h)
    rid = h.send(c, GetVariables("acme", "s", ("x",)))
    h.from_actor(REPLICATOR, ServiceReady("acme", "s", False))
    reply = [e.body for e in h.host.transmitted if e.request_id == rid]
    assert reply == [VariablesData("acme", "s", ())] and h.store.exists("acme", "s")


def test_a_client_that_left_while_waiting_is_skipped(h: HubHarness) -> None:
    a, b = session(h, "acme", "alice"), session(h, "acme", "bob")
    held_elsewhere(h)
    h.send(a, GetVariables("acme", "s", ()))
    h.send(b, GetVariables("acme", "s", ()))
    h.disconnect(a)
    fetched(h, x=b"1")
    assert isinstance(replies(h, b)[-1], VariablesData)


def test_resume_waits_for_each_missing_service(h: HubHarness) -> None:
    token = h.login(h.connect(), "acme", h.setup_tenant("acme", "alice")).token
    held_elsewhere(h, "s1")
    held_elsewhere(h, "s2")
    r = h.connect()
    rid = h.send(r, Resume("sess", token, (ServiceVersions("acme", "s1", ()), ServiceVersions("acme", "s2", ()))))
    assert h.to_actor(REPLICATOR, EnsureService) == [EnsureService("acme", "s1")]
    fetched(h, "s1", a=b"1")
    assert h.to_actor(REPLICATOR, EnsureService)[-1] == EnsureService("acme", "s2")
    assert replies(h, r) == []
    fetched(h, "s2", b=b"2")
    h.host.advance(5.0)  # whatever else a resume waits for (the session's record) has given up by now
    reply = [e.body for e in h.host.transmitted if e.request_id == rid]
    assert len(reply) == 1 and isinstance(reply[0], ResumeResponse)
    assert [(m.service, m.name, m.value) for m in reply[0].missed] == [("s1", "a", b"1"), ("s2", "b", b"2")]
    recorded = h.to_actor("failover", MigrationRecorded)
    assert [(m.client_id, m.to_node, m.outcome) for m in recorded] == [("alice", "n1", "resumed")]  # type: ignore[attr-defined]


def test_requests_without_a_session_are_refused_at_once_not_fetched_for(h: HubHarness) -> None:
    # Fixed: an anonymous connection used to make the node fetch (and then keep a file of) any
    # service the catalog names, only to be refused once it arrived.
    h.setup_tenant("acme", "alice")
    held_elsewhere(h)
    c = h.connect()
    assert code(h.ask(c, GetVariables("acme", "s", ()))) == UNAUTHENTICATED
    assert code(h.ask(c, Resume("x", "not-a-token", (ServiceVersions("acme", "s", ()),)))) == UNAUTHENTICATED
    assert h.to_actor(REPLICATOR, EnsureService) == [] and not h.store.exists("acme", "s")


NO_SESSION_NEEDED = {Authenticate, Heartbeat, RefreshToken, Resume, MigrationAck, ClientMigrationAck}
NEEDS_SESSION = sorted(CLIENT_REQUESTS - NO_SESSION_NEEDED, key=lambda t: t.TAG)


@settings(max_examples=50, deadline=None)
@given(messages(NEEDS_SESSION))
def test_in_a_cluster_too_every_request_without_a_session_is_unauthenticated(msg: Message) -> None:
    h = HubHarness(cluster=in_cluster())
    h.setup_tenant("acme", "alice", frozenset({"admin"}))
    held_elsewhere(h)  # what the request names is in the catalog but not in the store
    names = {f.name for f in dataclasses.fields(msg)}  # type: ignore[arg-type]
    changes = {k: v for k, v in (("tenant", "acme"), ("service", "s")) if k in names}
    assert code(h.ask(h.connect(), dataclasses.replace(msg, **changes))) == UNAUTHENTICATED  # type: ignore[type-var]
    assert h.to_actor(REPLICATOR, EnsureService) == []

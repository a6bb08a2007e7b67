"""Resume across hubs: a session opened on one node is resumed on another with its tenants,
subscriptions and every change it missed; what the catalog no longer allows is not restored.

Two nodes (hub + session sync each, on fake hosts) share one catalog -- standing for the
replicated catalog -- and have their own stores; envelopes between the nodes are pumped by hand.
The hub does not report session changes to its session sync by itself yet, so the tests call
`sessions_changed` where the hub's hooks will (after a login, a subscription, a logout).
"""

from __future__ import annotations

import random
from itertools import count

from commy.core.auth import TokenSigner
from commy.core.catalog import Catalog
from commy.core.clients import CLIENTS, ClientHub
from commy.core.hlc import HybridClock
from commy.core.hub_base import HubCluster
from commy.core.node import Node
from commy.core.permissions import parse_scopes
from commy.core.session_sync import SESSION_SYNC, SessionSync, sessions_changed
from commy.errors import BAD_REQUEST, FORBIDDEN, NOT_FOUND, UNAUTHENTICATED
from commy.messages import (
    CLIENT_NODE_PREFIX,
    Address,
    Authenticate,
    AuthenticationResponse,
    ClientConnected,
    Envelope,
    Error,
    Logout,
    Message,
    NamedValue,
    ResumeResponse,
    ServiceVersions,
    SetVariables,
    Subscribe,
    SubscriptionAck,
    VariableChanged,
    VariableVersion,
    client_address,
    new_envelope,
)
from commy.messages.client import Resume
from tests.helpers.fake_host import FakeHost
from tests.helpers.hub import CHEAP_KDF, HubHarness
from tests.helpers.memory_store import MemoryStore

T0 = 1_000_000.0


class Cluster:
    """Nodes n1..nN, each a client hub and a session sync (unless `session_sync` is False: the hubs
    still name one, as a misconfigured node would); `ask` a request, `pump` the peers."""

    def __init__(self, n: int = 2, *, session_sync: bool = True, name: str | None = SESSION_SYNC) -> None:
        rng = random.Random(1)
        self.entropy = rng.randbytes
        self.catalog = Catalog(kdf=CHEAP_KDF, entropy=self.entropy)
        self.ids = [f"n{i}" for i in range(1, n + 1)]
        self.hosts = {nid: FakeHost(now=T0) for nid in self.ids}
        self.nodes: dict[str, Node] = {}
        self.stores: dict[str, MemoryStore] = {}
        self.hubs: dict[str, ClientHub] = {}
        self._rid, self._conn = count(1), count(1)
        for index, nid in enumerate(self.ids, 1):
            node = self.nodes[nid] = Node(nid, self.hosts[nid], index, strict=True)
            store = self.stores[nid] = MemoryStore()
            cluster = HubCluster(clock=HybridClock(index, self.hosts[nid].now), replication_factor=1,
                                      cluster_size=n, session_sync=name)
            if session_sync:
                peers = [p for p in self.ids if p != nid]
                node.spawn(SESSION_SYNC, lambda ctx, i=index, p=peers: SessionSync(ctx, index=i, peers=p))
            node.spawn(CLIENTS, lambda ctx, s=store, c=cluster: ClientHub(
                ctx, catalog=self.catalog, store=s, signer=TokenSigner(b"k" * 32), entropy=self.entropy, cluster=c))
            self.hubs[nid] = node.actors[CLIENTS]  # type: ignore[assignment]

    def setup(self, tenant: str, client_id: str, scopes: frozenset[str], *services: str) -> str:
        now = self.hosts["n1"].now()
        if not self.catalog.has_tenant(tenant):
            self.catalog.create_tenant(tenant, now)
        for service in services:
            self.catalog.create_service(tenant, service, now)
            for store in self.stores.values():  # every node holds it (no replicator here)
                store.open(tenant, service, create=True)
        key = self.catalog.create_api_key(client_id, server_admin=False, now=now, entropy=self.entropy)[1]
        self.catalog.grant(client_id, tenant, parse_scopes(scopes), now)
        self.changed()
        return key

    def changed(self) -> None:
        """The catalog changed (as after a merge): every hub recomputes permissions."""
        for hub in self.hubs.values():
            hub.catalog_changed()

    def advance(self, dt: float) -> None:
        for host in self.hosts.values():
            host.advance(dt)
        self.pump()

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for host in self.hosts.values():
                peers = [e for e in host.transmitted if e.receiver.node in self.nodes]
                if peers:
                    host.transmitted = [e for e in host.transmitted if e.receiver.node not in self.nodes]
                    for env in peers:
                        self.nodes[env.receiver.node].deliver(env)
                    moved = True

    def connect(self, nid: str) -> str:
        conn = f"c{next(self._conn)}"
        self.nodes[nid].publish(ClientConnected(conn, False, "10.0.0.1:5000"))
        return conn

    def ask(self, nid: str, conn: str, msg: Message) -> Message:
        rid = next(self._rid)
        self.nodes[nid].deliver(new_envelope(rid, None, client_address(conn), Address(nid, CLIENTS),
                                             self.hosts[nid].now(), msg))
        self.pump()
        replies = [e.body for e in self._to(nid, conn) if e.request_id == rid]
        assert len(replies) == 1, f"{type(msg).__name__} got {replies}"
        return replies[0]

    def _to(self, nid: str, conn: str) -> list[Envelope]:
        return [e for e in self.hosts[nid].transmitted
                if e.receiver.node.startswith(CLIENT_NODE_PREFIX) and e.receiver == client_address(conn)]

    def events(self, nid: str, conn: str) -> list[VariableChanged]:
        return [e.body for e in self._to(nid, conn) if not e.request_id and isinstance(e.body, VariableChanged)]

    def login(self, nid: str, conn: str, tenant: str, key: str) -> AuthenticationResponse:
        reply = self.ask(nid, conn, Authenticate(tenant, "api_key", key))
        assert isinstance(reply, AuthenticationResponse), reply
        return reply

    def set(self, nid: str, conn: str, tenant: str, service: str, **values: bytes) -> None:
        self.ask(nid, conn, SetVariables(tenant, service, tuple(NamedValue(k, v) for k, v in values.items()), ""))

    def report(self, nid: str, conn: str, ended: tuple[str, ...] = ()) -> None:
        """Report `conn`'s sessions (and `ended`) as the hub's hooks do after a session change."""
        hub = self.hubs[nid]
        sessions_changed(hub, hub.conns[conn], ended)
        self.pump()


def code(reply: object) -> str:
    assert isinstance(reply, Error), reply
    return reply.code


def alice_on_n1(c: Cluster) -> tuple[str, AuthenticationResponse, str]:
    """alice logs in on n1 and follows svc/a and the whole of svc `other`; bob writes on n2."""
    key = c.setup("acme", "alice", frozenset({"write"}), "svc", "other")
    bob = c.setup("acme", "bob", frozenset({"write"}))
    conn = c.connect("n1")
    auth = c.login("n1", conn, "acme", key)
    assert isinstance(c.ask("n1", conn, Subscribe("acme", "svc", ("a",))), SubscriptionAck)
    assert isinstance(c.ask("n1", conn, Subscribe("acme", "other", ())), SubscriptionAck)
    c.advance(0.2)  # the hub's session records reach the peers (pushes after the first are batched)
    return conn, auth, bob


def test_a_session_resumes_on_another_node_with_tenants_subscriptions_and_missed_changes() -> None:
    c = Cluster()
    conn, auth, bob_key = alice_on_n1(c)
    c.set("n1", conn, "acme", "svc", a=b"1")
    (seen,) = c.events("n1", conn)
    c.stores["n2"].open("acme", "svc").write("a", b"1", stamp=seen.stamp)  # replicated before n1 fails
    c.advance(1.0)
    bob = c.connect("n2")
    c.login("n2", bob, "acme", bob_key)
    c.set("n2", bob, "acme", "other", x=b"1")  # alice is away: she misses these...
    c.set("n2", bob, "acme", "svc", b=b"1", a=b"2")  # ... but b, which she does not follow
    back = c.connect("n2")
    last_seen = (ServiceVersions("acme", "svc", (VariableVersion("a", seen.version, seen.stamp),)),)
    reply = c.ask("n2", back, Resume(auth.session_id, auth.token, last_seen))  # `other` comes from the record
    assert isinstance(reply, ResumeResponse) and reply.tenants == ("acme",) and reply.session_id == auth.session_id
    assert [(m.service, m.name, m.value) for m in reply.missed] == [("other", "x", b"1"), ("svc", "a", b"2")]
    assert [m.stamp for m in reply.missed] == sorted(m.stamp for m in reply.missed)
    assert c.hubs["n2"].conns[back].sessions["acme"].session_id == auth.session_id  # the same session
    c.set("n2", bob, "acme", "svc", a=b"3", b=b"2")
    c.set("n2", bob, "acme", "other", y=b"1")
    assert [(e.name, e.value) for e in c.events("n2", back)] == [("a", b"3"), ("y", b"1")]
    c.advance(0.2)  # pushes after the first are batched, at most one per 100 ms
    moved = c.nodes["n1"].actors[SESSION_SYNC].directory.get(auth.session_id, c.hosts["n1"].now())  # type: ignore[attr-defined]
    assert moved is not None and moved.node == "n2"  # n2 told n1 the session lives there now


def test_a_client_that_names_nothing_gets_what_its_record_names() -> None:
    c = Cluster()
    _, auth, bob_key = alice_on_n1(c)
    c.advance(1.0)
    back = c.connect("n2")
    reply = c.ask("n2", back, Resume(auth.session_id, auth.token, ()))
    assert isinstance(reply, ResumeResponse) and reply.tenants == ("acme",) and reply.missed == ()
    bob = c.connect("n2")
    c.login("n2", bob, "acme", bob_key)
    c.set("n2", bob, "acme", "svc", a=b"1", b=b"1")
    c.set("n2", bob, "acme", "other", x=b"1")
    assert [(e.service, e.name) for e in c.events("n2", back)] == [("svc", "a"), ("other", "x")]


def test_a_resume_with_nothing_new_misses_nothing() -> None:
    c = Cluster()
    conn, auth, _ = alice_on_n1(c)
    c.set("n1", conn, "acme", "svc", a=b"1")
    (seen,) = c.events("n1", conn)
    c.stores["n2"].open("acme", "svc").write("a", b"1", stamp=seen.stamp)  # another version on n2, same stamp
    c.stores["n2"].open("acme", "svc").write("a", b"1", stamp=seen.stamp)
    last_seen = (ServiceVersions("acme", "svc", (VariableVersion("a", seen.version, seen.stamp),)),)
    reply = c.ask("n2", c.connect("n2"), Resume(auth.session_id, auth.token, last_seen))
    assert isinstance(reply, ResumeResponse) and reply.missed == ()


def test_a_logged_out_or_ended_session_cannot_resume() -> None:
    c = Cluster()
    conn, auth, _ = alice_on_n1(c)
    c.ask("n1", conn, Logout("acme"))
    c.advance(0.2)
    assert code(c.ask("n2", c.connect("n2"), Resume(auth.session_id, auth.token, ()))) == UNAUTHENTICATED
    # a session ended for good is refused even with a token that still works
    key = c.setup("acme", "carol", frozenset({"read"}), "third")
    other = c.connect("n1")
    carol = c.login("n1", other, "acme", key)
    c.report("n1", other, ended=(carol.session_id,))  # as a hub reports a session ended for good
    c.advance(0.2)  # the end waited for the push interval
    reply = c.ask("n2", c.connect("n2"), Resume(carol.session_id, carol.token, ()))
    assert code(reply) == UNAUTHENTICATED and "ended" in reply.detail  # type: ignore[attr-defined]


def test_what_the_catalog_no_longer_allows_is_not_restored() -> None:
    c = Cluster()
    _, auth, _ = alice_on_n1(c)
    c.catalog.revoke("alice", "acme", None, T0 + 1)
    c.changed()
    asked = (ServiceVersions("acme", "svc", (VariableVersion("a", 0, 0),)),)
    assert code(c.ask("n2", c.connect("n2"), Resume(auth.session_id, auth.token, asked))) == FORBIDDEN
    # naming nothing itself, the client gets what its record names and it may still have: nothing
    reply = c.ask("n2", c.connect("n2"), Resume(auth.session_id, auth.token, ()))
    assert isinstance(reply, ResumeResponse) and reply.tenants == ()


def test_another_clients_session_id_is_refused() -> None:
    c = Cluster()
    _, auth, bob_key = alice_on_n1(c)
    bob = c.login("n2", c.connect("n2"), "acme", bob_key)
    reply = c.ask("n2", c.connect("n2"), Resume(auth.session_id, bob.token, ()))
    assert code(reply) == FORBIDDEN


def test_a_session_id_the_cluster_has_no_record_of_is_replaced_by_a_fresh_one() -> None:
    c = Cluster()
    key = c.setup("acme", "alice", frozenset({"write"}), "svc")
    auth = c.login("n1", c.connect("n1"), "acme", key)
    guessed = "f" * 32  # someone else's session, perhaps: its record must not be taken over
    reply = c.ask("n2", c.connect("n2"), Resume(guessed, auth.token, (ServiceVersions("acme", "svc", ()),)))
    assert isinstance(reply, ResumeResponse) and reply.tenants == ("acme",)
    assert reply.session_id not in (guessed, "")


def test_without_a_session_sync_the_resume_goes_on_after_a_while() -> None:
    c = Cluster(session_sync=False)
    key = c.setup("acme", "alice", frozenset({"write"}), "svc")
    auth = c.login("n1", c.connect("n1"), "acme", key)
    conn = c.connect("n2")
    rid = 99_999
    c.nodes["n2"].deliver(new_envelope(rid, None, client_address(conn), Address("n2", CLIENTS), T0,
                                       Resume(auth.session_id, auth.token, (ServiceVersions("acme", "svc", ()),))))
    assert [e for e in c._to("n2", conn) if e.request_id == rid] == []  # parked, waiting for the record
    c.advance(1.0)
    (reply,) = [e.body for e in c._to("n2", conn) if e.request_id == rid]
    assert isinstance(reply, ResumeResponse) and reply.tenants == ("acme",)


def test_a_hub_told_of_no_session_sync_resumes_at_once_from_what_the_client_says() -> None:
    c = Cluster(session_sync=False, name=None)
    key = c.setup("acme", "alice", frozenset({"write"}), "svc")
    auth = c.login("n1", c.connect("n1"), "acme", key)
    reply = c.ask("n2", c.connect("n2"), Resume(auth.session_id, auth.token, (ServiceVersions("acme", "svc", ()),)))
    assert isinstance(reply, ResumeResponse) and reply.tenants == ("acme",)
    assert "FindSession" not in c.nodes["n2"].stats.dead_letter_types  # (no failover manager here either)


# ---- one server (no cluster, no records): the client's word is all there is


def test_on_one_server_last_seen_restores_named_and_whole_service_subscriptions() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "alice")
    c = h.connect()
    auth = h.login(c, "acme", key)
    h.ask(c, SetVariables("acme", "s", (NamedValue("a", b"1"), NamedValue("b", b"1")), ""))
    h.ask(c, SetVariables("acme", "t", (NamedValue("z", b"1"),), ""))
    h.disconnect(c)
    back = h.connect()
    last_seen = (ServiceVersions("acme", "s", (VariableVersion("a", 1, 0),)),  # follows s/a, saw it
                 ServiceVersions("acme", "t", (VariableVersion("", 0, 0),)))  # follows all of t, saw nothing
    reply = h.ask(back, Resume(auth.session_id, auth.token, last_seen))
    assert isinstance(reply, ResumeResponse) and [(m.service, m.name) for m in reply.missed] == [("t", "z")]
    h.ask(back, SetVariables("acme", "s", (NamedValue("a", b"2"), NamedValue("b", b"2")), ""))
    h.ask(back, SetVariables("acme", "t", (NamedValue("new", b"1"),), ""))
    assert [(e.service, e.name) for e in h.events(back, VariableChanged)] == [("s", "a"), ("t", "new")]  # type: ignore[attr-defined]


def test_bad_resumes_are_refused_before_anything_happens() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "alice")
    auth = h.login(h.connect(), "acme", key)
    c = h.connect()
    for msg, expected in [
        (Resume("x" * 200, auth.token, ()), BAD_REQUEST),
        (Resume(auth.session_id, auth.token, (ServiceVersions("acme", "s", (VariableVersion("a\x00", 0, 0),)),)),
         BAD_REQUEST),
        (Resume(auth.session_id, auth.token, (ServiceVersions("acme", "nope", ()),)), NOT_FOUND),
    ]:
        assert code(h.ask(c, msg)) == expected
    assert c not in [k for k, v in h.hub.conns.items() if v.sessions]

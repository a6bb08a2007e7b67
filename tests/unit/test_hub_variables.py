"""The client hub's variables: get/set, subscriptions and change fan-out, local mapping, and the
checks every request passes (sessions per tenant, permissions, names)."""

from __future__ import annotations

import pytest
from hypothesis import given

from commy.core.clients import HubConfig
from commy.core.hlc import origin_of
from commy.errors import BAD_REQUEST, FORBIDDEN, NOT_FOUND, UNAUTHENTICATED
from commy.messages import (
    CLIENT_REQUESTS,
    Authenticate,
    ClientMigrationAck,
    Error,
    GetVariables,
    Heartbeat,
    MapService,
    Message,
    MigrationAck,
    NamedValue,
    RefreshToken,
    Resume,
    ServiceMapped,
    SetVariables,
    Subscribe,
    SubscriptionAck,
    UnmapService,
    Unsubscribe,
    VariableChanged,
    VariablesData,
    VariablesUpdated,
)
from tests.helpers.hub import HubHarness
from tests.helpers.strategies import messages


def code(reply: object) -> str:
    assert isinstance(reply, Error), reply
    return reply.code


def setv(tenant: str, service: str, **values: bytes) -> SetVariables:
    return SetVariables(tenant, service, tuple(NamedValue(k, v) for k, v in values.items()), "")


@pytest.fixture
def h() -> HubHarness:
    return HubHarness()


def session(h: HubHarness, tenant: str, client: str, scopes: frozenset[str] = frozenset({"write"}), *,
            local: bool = True) -> str:
    conn = h.connect(local=local)
    h.login(conn, tenant, h.setup_tenant(tenant, client, scopes))
    return conn


def test_set_then_get_with_versions_and_writer(h: HubHarness) -> None:
    c = session(h, "acme", "alice")
    first = h.ask(c, setv("acme", "s", x=b"1", y=b"2"))
    assert isinstance(first, VariablesUpdated)
    assert [(v.name, v.version) for v in first.versions] == [("x", 1), ("y", 1)]
    assert 0 < first.versions[0].stamp < first.versions[1].stamp  # each write gets its own, newer stamp
    assert origin_of(first.versions[0].stamp) == 1  # a single server stamps as node 1
    second = h.ask(c, setv("acme", "s", x=b"3"))
    assert isinstance(second, VariablesUpdated)
    data = h.ask(c, GetVariables("acme", "s", ("x", "missing")))
    assert isinstance(data, VariablesData)
    assert [(v.name, v.value, v.version, v.changed_by, v.stamp) for v in data.variables] == [
        ("x", b"3", 2, "alice", second.versions[0].stamp)]


def test_a_reader_cannot_write_or_create(h: HubHarness) -> None:
    w = session(h, "acme", "alice")
    h.ask(w, setv("acme", "s", x=b"1"))
    r = session(h, "acme", "bob", frozenset({"read"}))
    assert code(h.ask(r, setv("acme", "s", x=b"2"))) == FORBIDDEN
    assert code(h.ask(r, GetVariables("acme", "nope", ()))) == NOT_FOUND


def test_set_on_a_missing_service_needs_service_create(h: HubHarness) -> None:
    c = session(h, "acme", "alice", frozenset({"variable:write"}))
    assert code(h.ask(c, setv("acme", "new", x=b"1"))) == NOT_FOUND


def test_subscribers_get_each_change_in_order_with_who_made_it(h: HubHarness) -> None:
    w = session(h, "acme", "alice")
    h.ask(w, setv("acme", "s", x=b"0"))
    whole, one, other = (session(h, "acme", f"r{i}", frozenset({"read"})) for i in range(3))
    assert isinstance(h.ask(whole, Subscribe("acme", "s", ())), SubscriptionAck)
    ack = h.ask(one, Subscribe("acme", "s", ("x",)))
    assert isinstance(ack, SubscriptionAck) and [v.value for v in ack.current] == [b"0"]
    h.ask(other, Subscribe("acme", "s", ("y",)))
    for i in range(1, 4):
        h.ask(w, setv("acme", "s", x=str(i).encode()))
    h.ask(w, setv("acme", "s", z=b"new"))
    seen = [(e.name, e.value, e.version, e.changed_by) for e in h.events(whole, VariableChanged)]  # type: ignore
    assert seen == [("x", b"1", 2, "alice"), ("x", b"2", 3, "alice"), ("x", b"3", 4, "alice"),
                    ("z", b"new", 1, "alice")]
    assert [e.value for e in h.events(one, VariableChanged)] == [b"1", b"2", b"3"]  # type: ignore[attr-defined]
    assert h.events(other, VariableChanged) == []
    h.ask(one, Unsubscribe("acme", "s", ("x",)))
    h.ask(w, setv("acme", "s", x=b"4"))
    assert len(h.events(one, VariableChanged)) == 3


def test_no_cross_tenant_access_of_any_kind(h: HubHarness) -> None:
    a = session(h, "acme", "alice")
    h.ask(a, setv("acme", "s", secret=b"acme-only"))
    b = session(h, "beta", "mallory", frozenset({"admin"}))
    for msg in (GetVariables("acme", "s", ()), setv("acme", "s", secret=b"x"), Subscribe("acme", "s", ()),
                MapService("acme", "s"), Unsubscribe("acme", "s", ())):
        assert code(h.ask(b, msg)) == UNAUTHENTICATED, msg
    assert h.events(b, VariableChanged) == []


NO_SESSION_NEEDED = {Authenticate, Heartbeat, RefreshToken, Resume, MigrationAck, ClientMigrationAck}
NEEDS_SESSION = sorted(CLIENT_REQUESTS - NO_SESSION_NEEDED, key=lambda t: t.TAG)


@given(messages(NEEDS_SESSION))
def test_every_request_type_without_a_session_is_unauthenticated(msg: Message) -> None:
    h = HubHarness()
    h.setup_tenant("acme", "alice", frozenset({"admin"}))  # something to reach for
    assert code(h.ask(h.connect(), msg)) == UNAUTHENTICATED


@given(messages(NEEDS_SESSION))
def test_every_request_type_across_tenants_is_refused(msg: Message) -> None:
    h = HubHarness()
    c = session(h, "other", "mallory", frozenset({"admin"}))
    tenant = getattr(msg, "tenant", None)
    reply = h.ask(c, msg)
    if tenant != "other":  # requests naming another tenant (or none, for server operations)
        assert code(reply) in (UNAUTHENTICATED, FORBIDDEN)


@pytest.mark.parametrize("name", ["..", "a/b", "x\x00y", "", "v" * 10_000, "../../etc/passwd"])
def test_bad_service_names_are_refused(h: HubHarness, name: str) -> None:
    c = session(h, "acme", "alice", frozenset({"admin"}))
    assert code(h.ask(c, setv("acme", name, x=b"1"))) == BAD_REQUEST


@pytest.mark.parametrize("name", ["x\x00y", "", "v" * 10_000, "tab\there"])
def test_bad_variable_names_are_refused(h: HubHarness, name: str) -> None:
    # variables are not paths ('a/b' and '..' are fine names); control characters and length are not
    c = session(h, "acme", "alice", frozenset({"admin"}))
    assert code(h.ask(c, SetVariables("acme", "s", (NamedValue(name, b"1"),), ""))) == BAD_REQUEST


def test_too_many_names_in_one_request(h: HubHarness) -> None:
    h2 = HubHarness(HubConfig(max_names=3))
    c = session(h2, "acme", "alice")
    assert code(h2.ask(c, GetVariables("acme", "s", ("a", "b", "c", "d")))) == BAD_REQUEST


def test_local_mapping_broadcasts_direct_writes_with_the_writer(h: HubHarness) -> None:
    w = session(h, "acme", "alice")
    h.ask(w, setv("acme", "s", x=b"0"))
    watcher = session(h, "acme", "bob", frozenset({"read"}))
    h.ask(watcher, Subscribe("acme", "s", ()))
    mapped = h.ask(w, MapService("acme", "s"))
    assert isinstance(mapped, ServiceMapped) and mapped.writer >= 1
    h.store.files[("acme", "s")].write_as(mapped.writer, "x", b"direct")
    h.host.advance(0.002)
    changes = h.events(watcher, VariableChanged)
    assert [(c.name, c.value, c.changed_by) for c in changes][-1] == ("x", b"direct", "alice")  # type: ignore
    h.host.advance(0.01)
    assert len(h.events(watcher, VariableChanged)) == len(changes)  # announced once
    h.ask(w, UnmapService("acme", "s"))
    assert not h.hub.slots


def test_mapping_is_refused_to_remote_clients_and_non_readers(h: HubHarness) -> None:
    w = session(h, "acme", "alice")
    h.ask(w, setv("acme", "s", x=b"0"))
    remote = session(h, "acme", "rob", frozenset({"read"}), local=False)
    assert code(h.ask(remote, MapService("acme", "s"))) == FORBIDDEN
    writer_only = session(h, "acme", "wanda", frozenset({"variable:write"}))
    assert code(h.ask(writer_only, MapService("acme", "s"))) == FORBIDDEN


def test_a_direct_write_by_a_read_only_mapper_is_not_broadcast_and_rotates_the_file(h: HubHarness) -> None:
    w = session(h, "acme", "alice")
    h.ask(w, setv("acme", "s", x=b"0"))
    ro = session(h, "acme", "rhonda", frozenset({"read"}))
    slot = h.ask(ro, MapService("acme", "s")).writer  # type: ignore[attr-defined]
    h.ask(w, Subscribe("acme", "s", ()))
    h.store.files[("acme", "s")].write_as(slot, "x", b"evil")
    h.host.advance(0.002)
    assert b"evil" not in [e.value for e in h.events(w, VariableChanged)]  # type: ignore[attr-defined]
    assert h.store.rotated and ("acme", "s") not in h.hub.conns[ro].mapped


def test_repeated_names_do_not_amplify_a_reply() -> None:
    h = HubHarness(HubConfig(max_reply_bytes=10_000))
    c = session(h, "acme", "alice")
    h.ask(c, setv("acme", "s", big=b"x" * 4000))
    data = h.ask(c, GetVariables("acme", "s", ("big",) * 1000))
    assert isinstance(data, VariablesData) and len(data.variables) == 1
    h.ask(c, setv("acme", "s", big2=b"y" * 4000, big3=b"z" * 4000))
    assert code(h.ask(c, GetVariables("acme", "s", ()))) == "too_large"


def test_an_oversize_value_refuses_the_whole_write() -> None:
    h = HubHarness(HubConfig(max_value=100))
    w = session(h, "acme", "alice")
    h.ask(w, setv("acme", "s", a=b"0"))
    assert code(h.ask(w, setv("acme", "s", a=b"1", b=b"x" * 101))) == "too_large"
    data = h.ask(w, GetVariables("acme", "s", ()))
    assert [(v.name, v.value) for v in data.variables] == [("a", b"0")]  # type: ignore[attr-defined]


def test_unmap_and_unsubscribe_check_names(h: HubHarness) -> None:
    c = session(h, "acme", "alice")
    assert code(h.ask(c, UnmapService("acme", "../../x"))) == BAD_REQUEST
    assert code(h.ask(c, Unsubscribe("acme", "s", ("x\x00",)))) == BAD_REQUEST


def test_services_per_tenant_are_capped() -> None:
    h = HubHarness(HubConfig(max_services=3))
    c = session(h, "acme", "alice")
    for i in range(3):
        h.ask(c, setv("acme", f"s{i}", x=b"1"))
    assert code(h.ask(c, setv("acme", "s3", x=b"1"))) == "rate_limited"


def test_a_mapper_that_left_is_still_rotated_away_when_revoked(h: HubHarness) -> None:
    w = session(h, "acme", "alice")
    h.ask(w, setv("acme", "s", x=b"0"))
    m = session(h, "acme", "mallory", frozenset({"read"}))
    h.ask(m, MapService("acme", "s"))
    h.disconnect(m)
    from commy.messages import RevokePermission
    h.ask(h.admin(), RevokePermission("acme", "mallory", ()))
    assert h.store.rotated and h.store.rotated[-1][:2] == ("acme", "s")

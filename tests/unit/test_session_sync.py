"""The session sync actor: debounced pushes, the bounded expiring directory, tombstones, lookups."""

from __future__ import annotations

import pytest

from commy.core.session_sync import SESSION_SYNC, SessionDirectory, SessionSync, SessionSyncConfig
from commy.messages import (
    Address,
    FindSession,
    MemberInfo,
    MemberLeft,
    MemberUp,
    PeerStateChanged,
    SessionFound,
    SessionPush,
    SessionPushTick,
    SessionRecord,
    SessionResyncTick,
    SessionsChanged,
    SubscriptionRecord,
)
from tests.helpers.fake_context import FakeContext, deliver

NOW = 1_000.0


def rec(sid: str, *, node: str = "n1", stamp: int = 0, expires: float = NOW + 3600,
        tenants: tuple[str, ...] = ("acme",), subs: tuple[SubscriptionRecord, ...] = ()) -> SessionRecord:
    return SessionRecord(sid, "alice", node, tenants, subs, "k1-t1", expires, stamp)


def actor(peers: tuple[str, ...] = ("n2", "n3"), **config: float) -> tuple[SessionSync, FakeContext]:
    ctx = FakeContext(Address("n1", SESSION_SYNC), now=NOW)
    sync = SessionSync(ctx, SessionSyncConfig(**config), index=1, peers=peers)  # type: ignore[arg-type]
    ctx.bind(sync)
    sync.started()
    return sync, ctx


def local(sync: SessionSync, *records: SessionRecord, ended: tuple[str, ...] = ()) -> None:
    deliver(sync, SessionsChanged(records, ended), Address("n1", "clients"))


def pushes(ctx: FakeContext) -> list[tuple[str, SessionPush]]:
    return [(s.to.node, s.msg) for s in ctx.take_sent() if isinstance(s.msg, SessionPush)]


def test_a_change_is_pushed_at_once_then_at_most_once_per_interval_batched() -> None:
    sync, ctx = actor()
    local(sync, rec("s1"))
    first = pushes(ctx)
    assert [(to, [r.session_id for r in p.records]) for to, p in first] == [("n2", ["s1"]), ("n3", ["s1"])]
    assert first[0][1].records[0].node == "n1" and first[0][1].records[0].updated_at > 0  # stamped here
    local(sync, rec("s2"))
    local(sync, rec("s3"), ended=("s0",))
    assert pushes(ctx) == []  # held back by the debounce
    ctx.advance(0.1)
    batched = pushes(ctx)
    assert [(to, sorted(r.session_id for r in p.records), p.ended) for to, p in batched] == [
        ("n2", ["s2", "s3"], ("s0",)), ("n3", ["s2", "s3"], ("s0",))]
    ctx.advance(0.1)  # nothing new: the timer stops; the next change goes out at once again
    assert pushes(ctx) == [] and sync.push_timer is None
    local(sync, rec("s4"))
    assert len(pushes(ctx)) == 2


def test_the_directory_keeps_the_newest_record_and_forgets_expired_ones() -> None:
    d = SessionDirectory(limit=10)
    assert d.put(rec("s1", stamp=5, node="n2"), NOW)
    assert not d.put(rec("s1", stamp=4, node="n3"), NOW)  # older: ignored
    assert d.put(rec("s1", stamp=6, node="n3"), NOW) and d.get("s1", NOW).node == "n3"  # type: ignore[union-attr]
    assert not d.put(rec("old", expires=NOW - 1), NOW)
    d.put(rec("s2", expires=NOW + 10), NOW)
    assert d.get("s2", NOW + 11) is None  # expired: not handed out even before a prune
    assert d.prune(NOW + 11) == 1 and len(d) == 1


def test_the_directory_is_bounded_dropping_the_soonest_to_expire() -> None:
    d = SessionDirectory(limit=3)
    for i, expires in enumerate([50, 10, 40, 30]):
        d.put(rec(f"s{i}", expires=NOW + expires), NOW)
    assert sorted(d.records) == ["s0", "s2", "s3"]  # s1 expired soonest


def test_an_ended_session_is_a_tombstone_a_late_push_cannot_revive() -> None:
    sync, ctx = actor()
    deliver(sync, SessionPush((rec("s1", node="n2", stamp=9),), ()))
    local(sync, ended=("s1",))
    deliver(sync, SessionPush((rec("s1", node="n2", stamp=99),), ()))
    ctx.take_sent()
    deliver(sync, FindSession("r1", "s1"), Address("n1", "clients"))
    (answer,) = ctx.take_sent()
    assert answer.msg == SessionFound("r1", (), True) and answer.to == Address("n1", "clients")


def test_find_session_answers_with_the_record_or_nothing() -> None:
    sync, ctx = actor()
    record = rec("s1", node="n2", stamp=3, subs=(SubscriptionRecord("acme", "svc", ("a",)),))
    deliver(sync, SessionPush((record,), ()))
    deliver(sync, FindSession("r1", "s1"), Address("n1", "clients"), msg_id=7)
    deliver(sync, FindSession("r2", "nope"), Address("n1", "clients"), msg_id=8)
    answers = [(s.msg, s.request_id) for s in ctx.take_sent()]
    assert answers == [(SessionFound("r1", (record,), False), 7), (SessionFound("r2", (), False), 8)]


def test_a_session_that_moved_here_is_newer_than_its_old_nodes_record() -> None:
    sync, _ = actor()
    far_future = (int(NOW * 1000) + 60_000) << 20  # the old node's clock ran a minute ahead
    deliver(sync, SessionPush((rec("s1", node="n2", stamp=far_future),), ()))
    local(sync, rec("s1"))
    found = sync.directory.get("s1", NOW)
    assert found is not None and found.node == "n1" and found.updated_at > far_future


def test_peers_coming_up_get_everything_and_dead_peers_nothing() -> None:
    sync, ctx = actor(peers=())
    deliver(sync, SessionPush((rec("s1", node="n3", stamp=1),), ()))
    local(sync, rec("s2"))
    assert pushes(ctx) == []  # nobody live yet
    deliver(sync, MemberUp(MemberInfo("n2", 2, "h", 1, "ws://h:2", 1)), Address("n1", "membership"))
    (to, push), = pushes(ctx)
    assert to == "n2" and sorted(r.session_id for r in push.records) == ["s1", "s2"]
    deliver(sync, PeerStateChanged("n2", "healthy", "down", NOW), Address("n1", "heartbeat"))
    ctx.advance(0.2)
    local(sync, rec("s3"))
    assert pushes(ctx) == []
    deliver(sync, PeerStateChanged("n2", "down", "healthy", NOW), Address("n1", "heartbeat"))
    assert [to for to, _ in pushes(ctx)] == ["n2"]  # back: everything again
    deliver(sync, MemberUp(MemberInfo("n2", 2, "h", 1, "ws://h:2", 2)), Address("n1", "membership"))
    assert [to for to, _ in pushes(ctx)] == ["n2"]  # restarted (a new incarnation): everything again
    deliver(sync, MemberLeft("n2"), Address("n1", "membership"))
    assert sync.live == set()


def test_resync_prunes_and_pushes_only_this_nodes_own_records_in_batches() -> None:
    sync, ctx = actor(peers=("n2",), batch=2, resync_interval=5.0)
    ctx.timers.clear()
    for i in range(3):
        local(sync, rec(f"own{i}"))
        ctx.advance(0.2)
    deliver(sync, SessionPush((rec("theirs", node="n3", stamp=1), rec("short", node="n3", stamp=1,
                                                                       expires=NOW + 1)), ()))
    ctx.take_sent()
    ctx.current = NOW + 2
    deliver(sync, SessionResyncTick(), Address("n1", SESSION_SYNC))
    sent = pushes(ctx)
    assert [len(p.records) for _, p in sent] == [2, 1]
    assert sorted(r.session_id for _, p in sent for r in p.records) == ["own0", "own1", "own2"]
    assert "short" not in sync.directory.records and "theirs" in sync.directory.records


def test_push_tick_without_pending_timer_is_harmless() -> None:
    sync, ctx = actor()
    deliver(sync, SessionPushTick(), Address("n1", SESSION_SYNC))
    assert pushes(ctx) == [] and sync.push_timer is None


@pytest.mark.parametrize("field,value", [("debounce", 0.0), ("resync_interval", float("inf")),
                                         ("max_records", 0), ("batch", 0), ("tombstone_ttl", -1.0)])
def test_config_is_checked(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"session_sync.{field}"):
        SessionSyncConfig(**{field: value})  # type: ignore[arg-type]

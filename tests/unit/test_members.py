"""The membership actor (with a FakeContext), the peer directory, and the transport's add_peer."""

from __future__ import annotations

import asyncio

import pytest

from commy.core.members import MEMBERSHIP, Membership, MembershipConfig
from commy.errors import BAD_REQUEST, RemoteProtocolError
from commy.messages import (
    Address,
    Error,
    JoinRequest,
    Leave,
    LeaveAnnouncement,
    MemberInfo,
    MemberLeft,
    MemberList,
    MembershipTick,
    MemberUp,
    PeerStateChanged,
)
from commy.runtime.peer_directory import PeerDirectory
from tests.helpers.fake_context import FakeContext, deliver


def info(n: int, incarnation: int = 1, *, index: int | None = None, port: int | None = None) -> MemberInfo:
    return MemberInfo(f"n{n}", n if index is None else index, "10.0.0.1", port or 7000 + n, f"ws://n{n}",
                      incarnation)


def at(n: int) -> Address:
    return Address(f"n{n}", MEMBERSHIP)


def actor(me: int = 1, seeds: tuple[MemberInfo, ...] = (), incarnation: int = 1) -> tuple[Membership, FakeContext]:
    ctx = FakeContext(at(me), seed=1)
    m = ctx.bind(Membership(ctx, info(me, incarnation), list(seeds), MembershipConfig(join_retry=1.0)))
    m.started()
    return m, ctx  # type: ignore[return-value]


def sends(ctx: FakeContext) -> list[tuple[str, object]]:
    return [(s.to.node, s.msg) for s in ctx.take_sent()]


def ups(ctx: FakeContext) -> list[tuple[str, int]]:
    out = [(e.member.node_id, e.member.incarnation) for e in ctx.published if isinstance(e, MemberUp)]
    ctx.published = [e for e in ctx.published if not isinstance(e, MemberUp)]
    return out


def joined(m: Membership, ctx: FakeContext, *members: MemberInfo, left: tuple[str, ...] = ()) -> None:
    """A seed answered: `members` (the seed first) and left ids."""
    deliver(m, MemberList(members, left), at(int(members[0].node_id[1:])))


def test_seeds_are_announced_then_joined_until_a_member_answers() -> None:
    m, ctx = actor(2, seeds=(info(1, 0), info(2, 0), info(3, 0)))  # its own entry is skipped
    assert ctx.fire_next() == MembershipTick() and ups(ctx) == [("n1", 0), ("n3", 0)] and not ctx.sent
    ctx.fire_next()
    assert sends(ctx) == [("n1", JoinRequest(info(2))), ("n3", JoinRequest(info(2)))]
    ctx.advance(1.0)
    assert len(sends(ctx)) == 2  # nobody answered: again after join_retry
    joined(m, ctx, info(1), info(2), info(3, 4), info(5))
    assert ups(ctx) == [("n1", 1), ("n3", 4), ("n5", 1)]  # higher incarnations than configured, and n5
    ctx.advance(1.0)
    assert sends(ctx) == [("n3", JoinRequest(info(2))), ("n5", JoinRequest(info(2)))]  # not confirmed yet
    joined(m, ctx, info(3, 4), info(2))
    joined(m, ctx, info(5), info(2))
    ctx.advance(5.0)
    assert not ctx.sent and not ctx.timers  # everyone knows us: quiet


def test_a_join_request_is_announced_to_the_others_and_answered_with_everything() -> None:
    m, ctx = actor(1)
    ctx.advance(0.0)
    deliver(m, JoinRequest(info(2)), at(2), msg_id=7)
    deliver(m, JoinRequest(info(3)), at(3), msg_id=8)
    assert ups(ctx) == [("n2", 1), ("n3", 1)]
    out = ctx.take_sent()
    assert [(s.to.node, s.msg, s.request_id) for s in out] == [
        ("n2", MemberList((info(1), info(2)), ()), 7),
        ("n2", MemberList((info(3),), ()), None),
        ("n3", MemberList((info(1), info(2), info(3)), ()), 8)]
    deliver(m, JoinRequest(info(3)), at(3), msg_id=9)  # a retry: answered, nothing announced
    assert not ups(ctx) and [s.msg for s in ctx.take_sent()] == [m.member_list()]
    assert not ctx.timers  # both asked us themselves: nothing to confirm


def test_leave_is_announced_once_and_a_new_incarnation_rejoins() -> None:
    m, ctx = actor(1)
    for n in (2, 3):
        deliver(m, JoinRequest(info(n)), at(n))
    ctx.published.clear()
    deliver(m, LeaveAnnouncement("n3", 1), at(3))
    deliver(m, LeaveAnnouncement("n3", 1), at(3))  # a duplicate
    deliver(m, LeaveAnnouncement("n3", 0), at(3))  # an older incarnation's
    assert ctx.published == [MemberLeft("n3")] and m.left == {"n3": 1} and "n3" not in m.members
    assert m.member_list() == MemberList((info(1), info(2)), ("n3",))
    deliver(m, JoinRequest(info(3)), at(3))  # the old incarnation's late retry does not revive it
    assert not ups(ctx) and "n3" not in m.members
    ctx.take_sent()
    deliver(m, JoinRequest(info(3, 2)), at(3))
    assert ups(ctx) == [("n3", 2)] and m.left == {} and m.members["n3"].incarnation == 2
    assert ("n2", MemberList((info(3, 2),), ())) in sends(ctx)


def test_a_leave_from_someone_else_is_refused() -> None:
    m, _ = actor(1)
    deliver(m, JoinRequest(info(2)), at(2))
    with pytest.raises(RemoteProtocolError, match="n3 announced the leave of n2"):
        deliver(m, LeaveAnnouncement("n2", 1), at(3))
    with pytest.raises(RemoteProtocolError, match="n3 sent a join request for n2"):
        deliver(m, JoinRequest(info(2)), at(3))
    assert "n2" in m.members


def test_local_leave_tells_every_member_and_answers_joins_with_the_announcement() -> None:
    m, ctx = actor(1, seeds=(info(2),))
    ctx.advance(0.0)
    deliver(m, JoinRequest(info(3)), at(3))
    ctx.take_sent()
    deliver(m, Leave(), Address("n1", "runtime"))
    bye = LeaveAnnouncement("n1", 1)
    assert sends(ctx) == [("n2", bye), ("n3", bye)] and not ctx.timers
    deliver(m, JoinRequest(info(4)), at(4))
    assert sends(ctx) == [("n4", bye)] and "n4" not in m.members


@pytest.mark.parametrize(("claim", "why"), [
    (info(2, index=3), "member n2: claims index 3, known as 2"),
    (info(4, index=2), "member n4: claims index 2, which is n2's"),
    (info(4, index=1), "member n4: claims index 1, which is n1's"),  # ours
    (info(4, index=0), "member n4: index 0 not in 1..255"),
    (info(4, index=256), "member n4: index 256 not in 1..255"),
])
def test_a_conflicting_index_is_refused_with_a_typed_error(claim: MemberInfo, why: str) -> None:
    m, ctx = actor(1)
    deliver(m, JoinRequest(info(2)), at(2))
    ctx.take_sent()
    with pytest.raises(RemoteProtocolError, match=why) as raised:
        deliver(m, JoinRequest(claim), Address(claim.node_id, MEMBERSHIP))
    assert raised.value.code == BAD_REQUEST and not ctx.sent and m.refused == 1
    assert m.members == {"n2": info(2)} and ctx.log.events("warning") == ["member_refused"]


def test_a_member_list_keeps_the_good_entries_and_refuses_the_conflicts() -> None:
    m, ctx = actor(1)
    deliver(m, JoinRequest(info(2)), at(2))
    ups(ctx)
    with pytest.raises(RemoteProtocolError, match=r"claims index 2, which is n2's.*lists us \(n1\) with index 9"):
        deliver(m, MemberList((info(3), info(4, index=2), info(1, index=9)), ()), at(3))
    assert ups(ctx) == [("n3", 1)] and set(m.members) == {"n2", "n3"}


def test_an_error_answer_is_logged() -> None:
    m, ctx = actor(1)
    assert deliver(m, Error(BAD_REQUEST, "member n1: claims index 1, which is n7's"), at(2))
    assert ctx.log.events("error") == ["membership_refused"]


def test_seed_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="seed n3: claims index 1, which is n1's"):
        actor(1, seeds=(info(3, index=1),))
    with pytest.raises(ValueError, match="index 0 not in"):
        actor(1, seeds=(info(3, index=0),))
    with pytest.raises(ValueError, match=r"^membership\.join_retry"):
        MembershipConfig(join_retry=0)


def test_hearsay_of_a_leave_never_buries_what_the_member_told_us_itself() -> None:
    m, ctx = actor(1)
    deliver(m, MemberList((info(2), info(3)), ()), at(2))  # n2 first hand, n3 second hand
    ctx.published.clear()
    deliver(m, MemberList((info(4),), ("n2", "n3")), at(4))  # a stale list: both "left"
    assert ups(ctx) == [("n4", 1)] and ctx.published == [MemberLeft("n3")] and set(m.members) == {"n2", "n4"}
    deliver(m, JoinRequest(info(3)), at(3))  # n3 itself says it is here: the rumour was wrong
    assert ups(ctx) == [("n3", 1)] and "n3" in m.members and m.left == {}


def test_a_peer_back_from_down_is_asked_again() -> None:
    m, ctx = actor(1)
    deliver(m, JoinRequest(info(2)), at(2))
    ctx.advance(0.0)
    ctx.take_sent()
    deliver(m, PeerStateChanged("n2", "joining", "healthy", 1.0), Address("n1", "heartbeat"))
    assert not ctx.timers
    deliver(m, PeerStateChanged("n2", "down", "healthy", 2.0), Address("n1", "heartbeat"))
    ctx.advance(0.0)
    assert sends(ctx) == [("n2", JoinRequest(info(1)))]


# ---- the runtime side


class FakeTransport:
    def __init__(self) -> None:
        self.added: list[tuple[str, tuple[str, int]]] = []

    def add_peer(self, name: str, addr: tuple[str, int]) -> None:
        self.added.append((name, addr))


def test_the_peer_directory_gives_the_transport_each_members_address() -> None:
    transport = FakeTransport()
    ctx = FakeContext(Address("n1", "peer_directory"))
    directory = PeerDirectory(ctx, transport)
    for member in (info(2), info(1), info(3, 2, port=9999)):
        deliver(directory, MemberUp(member), Address("n1", MEMBERSHIP))
    assert transport.added == [("n2", ("10.0.0.1", 7002)), ("n3", ("10.0.0.1", 9999))]


def test_tcp_add_peer_is_idempotent_and_takes_a_new_address() -> None:
    from commy.core.node import Node
    from commy.runtime.asyncio_host import AsyncioHost
    from commy.runtime.tcp import TcpConfig, TcpTransport

    async def main() -> None:
        loop = asyncio.get_running_loop()
        node = Node("a", AsyncioHost(loop), seed=1)
        transport = TcpTransport(node, ("127.0.0.1", 0), config=TcpConfig(backoff_initial=30.0, backoff_cap=30.0),
                                 loop=loop, secret=b"s" * 32)
        await transport.start()
        try:
            transport.add_peer("b", ("127.0.0.1", 1))  # nobody listens there
            peer = transport.peers["b"]
            await asyncio.sleep(0.05)
            pending = peer.retry  # the failed dial backs off for a long time
            assert pending is not None and not peer.dialing
            transport.add_peer("b", ("127.0.0.1", 1))
            assert peer.retry is pending  # the same address: nothing changes
            transport.add_peer("b", ("127.0.0.1", 2))
            assert peer.addr == ("127.0.0.1", 2) and pending.cancelled() and peer.retry is not pending
        finally:
            await transport.close()

    asyncio.run(main())

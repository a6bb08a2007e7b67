"""The SDK resumes its sessions after a drop or a migration: `Resume` with what each subscription
last delivered, the missed changes delivered once and in stamp order, and the old path (log in
again, resubscribe) when the server refuses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from commy.client import AsyncClient, Subscription
from commy.messages import (
    Authenticate,
    ClientMigration,
    Error,
    Message,
    MigrationReason,
    Resume,
    ResumeResponse,
    ServiceVersions,
    Subscribe,
    VariableChanged,
    VariableVersion,
)
from tests.helpers.aio import until
from tests.helpers.fake_server import FakeConn, FakeServer, arun

KEY = "key-alice"


def change(name: str, value: bytes, version: int, stamp: int, service: str = "svc") -> VariableChanged:
    return VariableChanged("acme", service, name, value, version, "bob", stamp)


def resuming(srv: FakeServer, missed: Callable[[], list[VariableChanged]]) -> list[Resume]:
    """Make `srv` answer Resume like a server that had the session: it restores the subscriptions
    the client names and answers with `missed()`. Returns the Resumes it gets."""
    got: list[Resume] = []

    def answer(conn: FakeConn, msg: Resume) -> Message:
        got.append(msg)
        for sv in msg.last_seen:
            conn.sessions[sv.tenant] = "alice"
            names = {v.name for v in sv.versions}
            conn.subs[(sv.tenant, sv.service)] = None if "" in names else names
        return ResumeResponse(msg.session_id, tuple(sorted({sv.tenant for sv in msg.last_seen})), tuple(missed()))
    srv.handlers[Resume] = answer
    return got


async def values(sub: Subscription, n: int) -> list[tuple[str, bytes]]:
    out = []
    for _ in range(n):
        c = await sub.get(2)
        assert c is not None
        out.append((c.name, c.value))
    return out


async def nothing_more(*subs: Subscription) -> bool:
    for sub in subs:
        try:
            got = await sub.get(0.05)
        except TimeoutError:
            continue
        raise AssertionError(f"{sub} got {got} as well")
    return True


async def setup(srv: FakeServer, **kwargs: Any) -> tuple[AsyncClient, Subscription, Subscription]:
    client = await AsyncClient.connect(srv.url, backoff=(0.01, 0.05), **kwargs)
    await client.authenticate("acme", api_key=KEY)
    svc = client.service("acme", "svc", local=False)
    only_a = await svc.subscribe(["a"]).start()
    whole = await svc.subscribe().start()
    await srv.push(change("a", b"a1", 1, 100))
    await srv.push(change("b", b"b1", 1, 110))
    assert await values(only_a, 1) == [("a", b"a1")] and await values(whole, 2) == [("a", b"a1"), ("b", b"b1")]
    return client, only_a, whole


def test_a_drop_resumes_with_the_last_seen_stamps_and_delivers_each_missed_change_once() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client, only_a, whole = await setup(srv)
            session = client.session("acme")
            assert session is not None
            got = resuming(srv, lambda: [change("a", b"a1", 1, 100), change("b", b"b1", 1, 110),  # seen
                                         change("c", b"c1", 1, 115), change("a", b"a2", 2, 120)])
            await srv.drop_all()
            assert await until(lambda: bool(got) and client.connection.connected, 5)
            (resume,) = got
            assert (resume.session_id, resume.token) == (session.session_id, session.token)
            assert resume.last_seen == (ServiceVersions("acme", "svc", (
                VariableVersion("", 0, 0), VariableVersion("a", 1, 100), VariableVersion("b", 1, 110))),)
            assert await values(only_a, 1) == [("a", b"a2")]
            assert await values(whole, 2) == [("c", b"c1"), ("a", b"a2")]
            await srv.push(change("a", b"a2", 2, 120))  # the same change again: not delivered twice
            await srv.push(change("a", b"a0", 9, 90))  # older: never delivered after a newer one
            await srv.push(change("a", b"a3", 3, 130))
            assert await values(only_a, 1) == [("a", b"a3")] and await values(whole, 1) == [("a", b"a3")]
            assert await nothing_more(only_a, whole)
            assert [m.method for m in srv.requests(Authenticate)] == ["api_key"]  # no new login
            assert [m.names for m in srv.requests(Subscribe)] == [("a",), ()]  # no resubscribing
            assert client.session("acme") == session
            await client.close()
    arun(main())


def test_stamps_order_changes_across_servers_whose_versions_differ() -> None:
    async def main() -> None:
        async with FakeServer() as old, FakeServer() as new:
            client, only_a, whole = await setup(old)
            got = resuming(new, lambda: [change("a", b"a2", 1, 120)])  # version 1 there, but newer
            await old.push(ClientMigration("s1", "alice", "n2", new.url, MigrationReason.DRAINING))
            assert await until(lambda: bool(got) and client.connection.url == new.url, 5)
            assert got[0].last_seen[0].versions[1] == VariableVersion("a", 1, 100)
            assert await values(only_a, 1) == [("a", b"a2")] and await values(whole, 1) == [("a", b"a2")]
            await new.push(change("b", b"b2", 1, 125))  # b was at version 1 on the old server too
            assert await values(whole, 1) == [("b", b"b2")]
            assert await nothing_more(only_a, whole)
            await client.close()
    arun(main())


def test_a_refused_resume_falls_back_to_logging_in_again_and_resubscribing() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client, only_a, whole = await setup(srv)
            srv.handlers[Resume] = lambda conn, msg: Error("forbidden", "no")
            await srv.drop_all()
            assert await until(lambda: client.connection.connects == 2 and client.connection.connected, 5)
            assert [m.method for m in srv.requests(Authenticate)] == ["api_key", "token"]
            assert [m.names for m in srv.requests(Subscribe)] == [("a",), (), ("a",), ()]
            await srv.push(change("a", b"a2", 2, 140))
            assert await values(only_a, 1) == [("a", b"a2")] and await values(whole, 1) == [("a", b"a2")]
            await client.close()
    arun(main())


def test_a_resume_that_leaves_the_tenant_out_falls_back_too() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client, _, _ = await setup(srv)
            srv.handlers[Resume] = lambda conn, msg: ResumeResponse(msg.session_id, (), ())
            await srv.drop_all()
            assert await until(lambda: len(srv.requests(Subscribe)) == 4 and client.connection.connected, 5)
            assert len(srv.requests(Resume)) == 1 and srv.requests(Authenticate)[-1].method == "token"
            await client.close()
    arun(main())


class _Client:
    """What a Subscription needs of its client: the server it is on, and `_forget`."""

    def __init__(self) -> None:
        self._server = "A"

    def _forget(self, sub: Subscription) -> None:
        pass


@given(st.lists(st.tuples(st.sampled_from(["event", "resume", "move"]), st.lists(st.integers(0, 9), max_size=5)),
                max_size=40))
def test_a_subscription_never_delivers_a_change_twice_or_out_of_stamp_order(ops: list[tuple[str, list[int]]]) -> None:
    """Writes 0..9 of one variable (stamps increasing); each server numbers its versions its own way.
    Events, resumes (a hold, then the missed changes in stamp order) and server moves interleave."""
    client, delivered, offered = _Client(), [], [0]
    sub = Subscription(client, "acme", "svc", ("a",), sink=delivered.append)  # type: ignore[arg-type]
    sub._catch_up((), first=True)
    offsets = {"A": 0, "B": 1000}

    def write(i: int) -> VariableChanged:
        offered.append(100 + 10 * i)
        return change("a", b"%d" % i, i + 1 + offsets[client._server], 100 + 10 * i)
    for op, writes in ops:
        if op == "move":
            client._server = "B" if client._server == "A" else "A"
        elif op == "event":
            for i in writes:
                sub._offer(write(i))
        else:
            sub._hold()
            for i in writes[:2]:
                sub._offer(write(i))  # events that arrive while the resume is in flight
            sub._release(sorted((write(i) for i in writes[2:]), key=lambda c: c.stamp))
    stamps = [c.stamp for c in delivered]
    assert stamps == sorted(set(stamps))  # never twice, never backwards
    assert max(stamps, default=0) == max(offered)  # and the newest always gets through

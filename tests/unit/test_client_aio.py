"""AsyncClient against a fake server: sessions, typed values, subscriptions, events, reconnection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from commy.client import AsyncClient, PermissionRevokedError, UnauthenticatedError, VariableChanged
from commy.messages import (
    Authenticate,
    ClientMigration,
    ClientMigrationAck,
    CreateService,
    MigrationReason,
    PermissionRevoked,
    RefreshToken,
    Subscribe,
    Unsubscribe,
)
from tests.helpers.aio import until
from tests.helpers.fake_server import FakeServer, arun

KEY = "key-alice"


async def client_of(srv: FakeServer, **kwargs: Any) -> AsyncClient:
    client = await AsyncClient.connect(srv.url, **kwargs)
    await client.authenticate("acme", api_key=KEY)
    return client


def test_sessions_authenticate_refresh_logout() -> None:
    async def main() -> None:
        async with FakeServer() as srv, AsyncClient.connect(srv.url) as client:
            with pytest.raises(ValueError, match="exactly one"):
                await client.authenticate("acme", api_key=KEY, token="t")
            session = await client.authenticate("acme", api_key=KEY)
            assert (session.tenant, session.client_id) == ("acme", "alice")
            assert client.session("acme") == session and session.allows("variable_write")
            refreshed = await client.refresh("acme")
            assert refreshed.token != session.token and session.token in srv.revoked
            assert srv.requests(RefreshToken)[-1].token == session.token
            sub = await client.service("acme", "svc", local=False).subscribe().start()
            await client.logout("acme")
            assert await sub.get(2) is None and sub.ended and sub.error is None  # ends normally
            assert client.session("acme") is None
            with pytest.raises(UnauthenticatedError):
                await client.logout("acme")
            again = await client.authenticate("acme", token=refreshed.token)  # a token opens a session too
            assert again.client_id == "alice"
    arun(main())


def test_typed_values_round_trip_remotely() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client = await client_of(srv, text=True)
            svc = client.service("acme", "svc", local=False)
            await svc.set_int("i", -(2**63))
            await svc.set_float("f", 1.0841)
            await svc.set_str("s", "héllo")
            await svc.set_bytes("b", b"\x00\xff")
            await svc.set_object("o", {"a": [1, 2.5, "x", b"y"], "n": None})
            assert await svc.get_int("i") == -(2**63)
            assert await svc.get_float("f") == 1.0841
            assert await svc.get_str("s") == "héllo"
            assert await svc.get_bytes("b") == b"\x00\xff"
            assert await svc.get_object("o") == {"a": [1, 2.5, "x", b"y"], "n": None}
            assert await svc.get_int("missing") is None
            assert srv.data[("acme", "svc")]["i"].value == (-(2**63)).to_bytes(8, "little", signed=True)
            many = await svc.get_many(["i", "s", "missing"])
            assert set(many) == {"i", "s"} and many["s"].version == 1 and many["s"].changed_by == "alice"
            assert set(await svc.get_many()) == {"i", "f", "s", "b", "o"}
            assert await svc.set_many({"i": b"1" * 8, "z": b""}) == {"i": 2, "z": 1}
            assert (await svc.get_entry("i")).version == 2  # type: ignore[union-attr]
            await client.close()
    arun(main())


def test_subscriptions_filter_names_and_can_start_from_the_current_state() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client = await client_of(srv)
            svc = client.service("acme", "svc", local=False)
            await svc.set("a", b"a1")
            await svc.set("b", b"b1")
            only_a = await svc.subscribe(["a"]).start()
            everything = await svc.subscribe(initial=True).start()
            assert {(c.name, c.value) for c in [await everything.get(1), await everything.get(1)] if c} == {
                ("a", b"a1"), ("b", b"b1")}
            await svc.set("b", b"b2")
            await svc.set("a", b"a2")
            assert (await only_a.get(1)).value == b"a2"  # type: ignore[union-attr]
            assert [(c.name, c.value) for c in [await everything.get(1), await everything.get(1)] if c] == [
                ("b", b"b2"), ("a", b"a2")]
            with pytest.raises(TimeoutError):
                await only_a.get(0.05)
            await client.close()
            assert await only_a.get(1) is None
    arun(main())


def test_cancelling_a_whole_service_subscription_keeps_the_named_one_alive() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client = await client_of(srv)
            svc = client.service("acme", "svc", local=False)
            named = await svc.subscribe(["a"]).start()
            whole = await svc.subscribe().start()
            await whole.cancel()
            # the server ends a whole-service subscription whole: the client renews the named one
            assert [m.names for m in srv.requests(Unsubscribe)] == [()]
            assert [m.names for m in srv.requests(Subscribe)] == [("a",), (), ("a",)]
            await srv.change("acme", "svc", "a", b"x")
            await srv.change("acme", "svc", "b", b"y")
            assert (await named.get(1)).value == b"x"  # type: ignore[union-attr]
            async for _ in whole:
                raise AssertionError("a cancelled subscription yields nothing")
            await named.cancel()
            assert [m.names for m in srv.requests(Unsubscribe)] == [(), ()]
            await client.close()
    arun(main())


def test_callbacks_run_in_order_and_hear_the_end() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client = await client_of(srv)
            svc = client.service("acme", "svc", local=False)
            seen: list[bytes] = []
            ended: list[Any] = []

            async def slow(change: VariableChanged) -> None:
                await asyncio.sleep(0.001)
                seen.append(change.value)
            await svc.on_change(slow, on_end=ended.append)
            plain: list[str] = []
            await svc.on_change(lambda c: plain.append(c.name), names=["n"])
            for i in range(10):
                await svc.set("n", str(i).encode())
            assert await until(lambda: len(seen) == 10 and len(plain) == 10, 5)
            assert seen == [str(i).encode() for i in range(10)]
            await srv.push(PermissionRevoked("acme", "permission revoked"))
            assert await until(lambda: len(ended) == 1, 5)
            assert isinstance(ended[0], PermissionRevokedError) and ended[0].tenant == "acme"
            await client.close()
    arun(main())


def test_permission_revoked_ends_the_session_and_raises_from_iterators() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client = await client_of(srv)
            sub = client.service("acme", "svc", local=False).subscribe()
            await sub.start()
            await srv.change("acme", "svc", "x", b"1")
            await srv.push(PermissionRevoked("acme", "tenant deleted"))
            got = [c async for c in _until_error(sub)]
            assert [c.value for c in got] == [b"1"]
            assert isinstance(sub.error, PermissionRevokedError) and "tenant deleted" in str(sub.error)
            assert client.session("acme") is None
            await client.close()
    arun(main())


async def _until_error(sub: Any) -> Any:
    try:
        async for change in sub:
            yield change
    except PermissionRevokedError:
        return


def test_after_a_drop_the_client_resubscribes_and_delivers_what_it_missed() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client = await client_of(srv, backoff=(0.01, 0.05))
            svc = client.service("acme", "svc", local=False)
            await svc.set("a", b"a1")
            await svc.set("b", b"b1")
            sub = await svc.subscribe().start()
            named = await svc.subscribe(["b"]).start()
            await svc.set("a", b"a2")
            assert (await sub.get(1)).value == b"a2"  # type: ignore[union-attr]
            srv.hold = asyncio.Event()  # keep the new connection from restoring until the changes below
            await srv.drop_all()
            await srv.change("acme", "svc", "b", b"b2")  # nobody is connected to hear these
            await srv.change("acme", "svc", "c", b"c1")
            srv.hold.set()
            srv.hold = None
            got = [await sub.get(2), await sub.get(2)]
            assert sorted((c.name, c.value, c.version) for c in got if c) == [("b", b"b2", 2), ("c", b"c1", 1)]
            assert [(c.name, c.value) for c in [await named.get(2)] if c] == [("b", b"b2")]
            await svc.set("a", b"a3")  # and the subscription goes on, with nothing repeated
            assert (await sub.get(2)).value == b"a3"  # type: ignore[union-attr]
            with pytest.raises(TimeoutError):
                await named.get(0.05)
            assert client.connection.connects == 2
            assert [m.method for m in srv.requests(Authenticate)] == ["api_key", "token"]
            await client.close()
    arun(main())


def test_a_tenant_that_cannot_authenticate_again_ends_like_a_revocation() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client = await client_of(srv, backoff=(0.01, 0.05))
            sub = await client.service("acme", "svc", local=False).subscribe().start()
            srv.keys.clear()
            srv.revoked.update(srv.tokens)
            await srv.drop_all()
            with pytest.raises(PermissionRevokedError, match="could not authenticate again"):
                await sub.get(5)
            assert client.session("acme") is None
            await client.close()
    arun(main())


def test_client_migration_acks_and_moves_to_the_target() -> None:
    async def main() -> None:
        async with FakeServer() as old, FakeServer() as new:
            client = await client_of(old, backoff=(0.01, 0.05))
            svc = client.service("acme", "svc", local=False)
            sub = await svc.subscribe().start()
            await old.push(ClientMigration("s1", "alice", "n2", new.url, MigrationReason.DRAINING))
            assert await until(lambda: client.connection.url == new.url and client.connection.connected, 5)
            assert [(m.session_id, m.accepted) for m in old.requests(ClientMigrationAck)] == [("s1", True)]
            assert await svc.set("x", b"1") == 1 and ("acme", "svc") in new.data
            assert (await sub.get(2)).value == b"1"  # type: ignore[union-attr]
            await client.close()
    arun(main())


def test_a_move_to_another_scheme_is_acknowledged_but_not_followed() -> None:
    async def main() -> None:
        async with FakeServer() as old:
            client = await client_of(old, backoff=(0.01, 0.05))
            url = client.connection.url
            await old.push(ClientMigration("s1", "alice", "n2", "wss://elsewhere:1", MigrationReason.DRAINING))
            assert await until(lambda: bool(old.requests(ClientMigrationAck)), 5)
            # ws:// to wss:// or back: a server could downgrade a client to clear text; it reconnects
            # through its own list instead (here: the same server).
            assert await until(lambda: client.connection.connected and client.connection.url == url, 5)
            await client.close()
    arun(main())


def test_admin_operations() -> None:
    async def main() -> None:
        async with FakeServer(keys={"root": "admin"}) as srv, AsyncClient.connect(srv.url) as client:
            await client.authenticate("", api_key="root")
            await client.create_tenant("t2")
            assert "t2" in await client.list_tenants()
            await client.create_service("t2", "svc")
            assert srv.requests(CreateService) == [CreateService("t2", "svc")]
            await client.grant("t2", "bob", ["read"])
            await client.revoke("t2", "bob")
            key_id, key = await client.create_api_key("bob", tenant="t2", scopes=["write"])
            assert srv.keys[key] == "bob" and key_id
            await client.revoke_api_key(key_id)
            with pytest.raises(UnauthenticatedError):  # no session on acme
                await client.check_permission("acme", "svc", "read")
            await client.authenticate("acme", api_key="root")
            assert await client.check_permission("acme", "svc", "read") is True
    arun(main())

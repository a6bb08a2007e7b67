"""The SDK's wire against a fake server: correlation, errors, timeouts, events, heartbeats, drops."""

from __future__ import annotations

import asyncio
import socket

import pytest

from commy.client import (
    AsyncClient,
    CommyClientError,
    ConnectionLostError,
    NotFoundError,
    RequestTimeoutError,
    UnauthenticatedError,
)
from commy.messages import Authenticate, Error, GetVariables, Heartbeat, SetVariables
from tests.helpers.aio import until
from tests.helpers.fake_server import FakeServer, arun

KEY = "key-alice"


async def client_of(srv: FakeServer, **kwargs: object) -> AsyncClient:
    client = await AsyncClient.connect(srv.url, **kwargs)  # type: ignore[arg-type]
    await client.authenticate("acme", api_key=KEY)
    return client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_pipelined_requests_each_get_their_own_reply(text: bool) -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client = await client_of(srv, text=text)
            svc = client.service("acme", "svc", local=False)
            await asyncio.gather(*(svc.set(f"v{i}", str(i).encode()) for i in range(200)))
            got = await asyncio.gather(*(svc.get(f"v{i}") for i in range(200)))
            assert got == [str(i).encode() for i in range(200)]
            versions = await asyncio.gather(*(svc.set("same", b"x") for _ in range(50)))
            assert sorted(versions) == list(range(1, 51))
            assert all(c.text is text for c in srv.conns)
            await client.close()
    arun(main())


def test_error_replies_raise_typed_exceptions_with_codes() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client = await AsyncClient.connect(srv.url)
            with pytest.raises(UnauthenticatedError) as info:
                await client.service("acme", "svc", local=False).get("x")
            assert info.value.code == "unauthenticated" and "not authenticated" in info.value.detail
            assert isinstance(info.value, CommyClientError)
            with pytest.raises(UnauthenticatedError):
                await client.authenticate("acme", api_key="wrong")
            srv.handlers[GetVariables] = lambda conn, msg: Error("not_found", "no such service")
            await client.authenticate("acme", api_key=KEY)
            with pytest.raises(NotFoundError):
                await client.service("acme", "svc", local=False).get("x")
            srv.handlers[GetVariables] = lambda conn, msg: Error("weird_code", "something new")
            with pytest.raises(CommyClientError) as other:
                await client.service("acme", "svc", local=False).get("x")
            assert type(other.value) is CommyClientError and other.value.code == "weird_code"
            await client.close()
    arun(main())


def test_a_request_without_a_reply_times_out_and_the_connection_goes_on() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client = await client_of(srv, timeout=0.2)
            svc = client.service("acme", "svc", local=False)
            srv.ignore.add(GetVariables)
            with pytest.raises(RequestTimeoutError, match="GetVariables"):
                await svc.get("x")
            srv.ignore.clear()
            assert await svc.set("x", b"1") == 1
            assert await svc.get("x") == b"1"
            await client.close()
    arun(main())


def test_events_arrive_in_order_between_replies() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client = await client_of(srv)
            sub = await client.service("acme", "svc", local=False).subscribe().start()
            for i in range(20):
                await srv.change("acme", "svc", "n", str(i).encode())
            got = [await sub.get(2) for _ in range(20)]
            assert [c.value for c in got if c] == [str(i).encode() for i in range(20)]
            assert [c.version for c in got if c] == list(range(1, 21))
            await client.close()
    arun(main())


def test_heartbeats_flow_and_a_silent_server_is_dropped_then_redialed() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client = await client_of(srv, heartbeat=0.05, timeout=0.3)
            assert await until(lambda: len(srv.requests(Heartbeat)) >= 3, 5)
            assert client.connection.rtt is not None
            srv.ignore.add(Heartbeat)
            assert await until(lambda: client.connection.connects >= 2, 5)
            srv.ignore.clear()
            assert await until(lambda: client.connection.connected, 5)
            assert await client.service("acme", "svc", local=False).set("x", b"1") == 1
            await client.close()
    arun(main())


def test_connecting_tries_each_url_in_order_and_fails_clearly_when_none_answers() -> None:
    async def main() -> None:
        dead = f"ws://127.0.0.1:{free_port()}"
        with pytest.raises(ConnectionLostError, match="could not connect"):
            await AsyncClient.connect(dead, timeout=2)
        async with FakeServer() as srv:
            client = await AsyncClient.connect([dead, srv.url], timeout=2)
            assert client.connection.url == srv.url
            await client.close()
    arun(main())


def test_a_set_in_flight_at_a_drop_fails_but_a_get_is_sent_again() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client = await client_of(srv, backoff=(0.01, 0.05))
            svc = client.service("acme", "svc", local=False)
            await svc.set("x", b"before")
            hold = srv.hold = asyncio.Event()
            setting = asyncio.ensure_future(svc.set("x", b"lost?"))
            getting = asyncio.ensure_future(svc.get("x"))
            # the server is stuck on the set; the get is on the wire behind it
            assert await until(lambda: len(srv.requests(SetVariables)) == 2, 5)
            assert await until(lambda: len(client.connection._pending) == 2, 5)
            srv.hold = None
            await srv.drop_all()
            with pytest.raises(ConnectionLostError):
                await setting
            assert await asyncio.wait_for(getting, 5) == b"before"  # the set was never applied
            hold.set()
            assert [m.method for m in srv.requests(Authenticate)] == ["api_key", "token"]
            assert len(srv.requests(SetVariables)) == 2
            await client.close()
    arun(main())


def test_without_reconnect_a_drop_is_final() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client = await client_of(srv, reconnect=False)
            sub = await client.service("acme", "svc", local=False).subscribe().start()
            await srv.drop_all()
            with pytest.raises(ConnectionLostError):
                await sub.get(5)
            with pytest.raises(ConnectionLostError):
                await client.service("acme", "svc", local=False).get("x")
            assert client.connection.closed
            await client.close()
    arun(main())


def test_requests_made_while_reconnecting_wait_for_the_connection() -> None:
    async def main() -> None:
        port = free_port()
        async with FakeServer(port=port) as first:
            client = await client_of(first, backoff=(0.02, 0.1), timeout=5)
        assert await until(lambda: not client.connection.connected, 5)
        pending = asyncio.ensure_future(client.service("acme", "svc", local=False).set("x", b"1"))
        assert await until(lambda: client.connection._backoff.attempts >= 3, 5)  # refused dials, backing off
        assert not pending.done()
        async with FakeServer(port=port) as second:
            assert await asyncio.wait_for(pending, 5) == 1
            # the new server did not know the token: the client fell back to the API key
            assert [m.method for m in second.requests(Authenticate)] == ["token", "api_key"]
            await client.close()
    arun(main())


def test_a_restore_that_times_out_is_retried_not_taken_for_a_revocation() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client = await client_of(srv, backoff=(0.01, 0.05), timeout=0.3)
            sub = await client.service("acme", "svc", local=False).subscribe().start()
            srv.ignore.add(Authenticate)
            await srv.drop_all()
            assert await until(lambda: len(srv.requests(Authenticate)) >= 3, 5)  # redialed after each timeout
            srv.ignore.clear()
            assert await until(lambda: client.connection.connected, 5)
            assert client.session("acme") is not None and not sub.ended
            await srv.change("acme", "svc", "x", b"1")
            assert (await sub.get(2)).value == b"1"  # type: ignore[union-attr]
            await client.close()
    arun(main())

"""The WebSocket gateway on real sockets, with a small test actor standing in for the client hub.

Every test runs a node with the gateway on 127.0.0.1 (port 0) and the `_Clients` actor registered
as `clients`; real websockets clients (or raw sockets, where a misbehaving client is the point)
connect to it. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from commy.client_codec import client_codec
from commy.codec import DEFAULT_CODEC
from commy.core.actor import Actor, handles
from commy.core.node import Node
from commy.messages import (
    Address,
    ClientConnected,
    ClientDisconnected,
    CloseClient,
    Envelope,
    Error,
    GetVariables,
    Heartbeat,
    HeartbeatAck,
    HeartbeatPing,
    Logout,
    LogoutResponse,
    Message,
    ServerStatus,
    VariableChanged,
    VariablesData,
    client_address,
)
from commy.runtime.asyncio_host import AsyncioHost
from commy.runtime.gateway import Gateway, GatewayConfig
from commy.runtime.loop import run, uvloop_available
from commy.runtime.serve import write_dev_certificate
from commy.runtime.server import server_ssl_context
from tests.helpers.aio import until

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
CODEC = client_codec()
TEST_TIMEOUT = 15.0
SOURCE = Address("gw-test", "pusher")


class _Clients(Actor):
    """Stands in for the hub: records connection events and requests, answers a few requests."""

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.events: list[ClientConnected | ClientDisconnected] = []
        self.requests: list[tuple[int, Message]] = []

    @handles(ClientConnected, ClientDisconnected)
    def _event(self, msg: ClientConnected | ClientDisconnected, env: Envelope) -> None:
        self.events.append(msg)

    @handles(Heartbeat)
    def _heartbeat(self, msg: Heartbeat, env: Envelope) -> None:
        self.requests.append((env.msg_id, msg))
        self.ctx.reply(env, HeartbeatAck(msg.sent_at, 0.0))

    @handles(GetVariables)
    def _get(self, msg: GetVariables, env: Envelope) -> None:
        self.ctx.reply(env, VariablesData(msg.tenant, msg.service, ()))

    @handles(Logout)
    def _logout(self, msg: Logout, env: Envelope) -> None:
        """`Logout("close:CODE")` answers with CloseClient(CODE, ...); anything else is answered."""
        if msg.tenant.startswith("close:"):
            code = msg.tenant[len("close:"):]
            self.ctx.reply(env, CloseClient(code, f"closed with {code!r}" if code else ""))
        else:
            self.ctx.reply(env, LogoutResponse(msg.tenant))

    def connected(self) -> list[ClientConnected]:
        return [e for e in self.events if isinstance(e, ClientConnected)]

    def gone(self, conn_id: str) -> list[str]:
        return [e.reason for e in self.events if isinstance(e, ClientDisconnected) and e.conn_id == conn_id]


class _Env:
    def __init__(self, node: Node, gateway: Gateway, logs: list[tuple[str, str, dict[str, object]]]) -> None:
        self.node = node
        self.gateway = gateway
        self.logs = logs  # (level, event, fields)

    @property
    def clients(self) -> _Clients:
        actor = self.node.actors["clients"]
        assert isinstance(actor, _Clients)
        return actor

    def push(self, conn_id: str, msg: Message) -> None:
        self.node.send(SOURCE, client_address(conn_id), msg, None)

    async def next_conn_id(self, seen: int) -> str:
        assert await until(lambda: len(self.clients.connected()) > seen, 3.0)
        return self.clients.connected()[seen].conn_id


@asynccontextmanager
async def serving(config: GatewayConfig | None = None, tls: ssl.SSLContext | None = None) -> AsyncIterator[_Env]:
    loop = asyncio.get_running_loop()
    host = AsyncioHost(loop)
    logs: list[tuple[str, str, dict[str, object]]] = []
    node = Node("gw-test", host, 1, log_sink=lambda node, actor, level, event, fields: logs.append(
        (level, event, fields)))
    node.spawn("clients", _Clients)
    gateway = Gateway(node, (LOOPBACK, 0), config, ssl=tls)
    host.attach_clients(gateway)
    await gateway.start()
    try:
        yield _Env(node, gateway, logs)
        assert node.stats.handler_errors == 0
    finally:
        await gateway.close()
        node.stop()


def go(main: Callable[[], Awaitable[None]], loop: str = "uvloop") -> None:
    async def bounded() -> None:
        await asyncio.wait_for(main(), TEST_TIMEOUT)

    run(bounded(), prefer_uvloop=loop == "uvloop")


LOOPS = ["uvloop", "asyncio"] if uvloop_available() else ["asyncio"]


def dial(env: _Env, **kwargs: Any) -> Any:
    return connect(env.gateway.url, compression=None, open_timeout=5, **kwargs)


async def call(ws: ClientConnection, request_id: int, msg: Message) -> tuple[int, Message]:
    await ws.send(CODEC.encode_binary(request_id, msg))
    return CODEC.decode_binary(await asyncio.wait_for(ws.recv(decode=False), 3.0))


async def reply_to(ws: ClientConnection, frame: bytes | str) -> tuple[int, Message, bool]:
    """Send one raw frame; the reply decoded, and whether it came as text."""
    await ws.send(frame)
    data = await asyncio.wait_for(ws.recv(), 3.0)
    if isinstance(data, str):
        rid, msg = CODEC.decode_text(data)
        return rid, msg, True
    rid, msg = CODEC.decode_binary(data)
    return rid, msg, False


async def closed_code(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 3.0)
    return ws.close_code


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("loop", LOOPS)
def test_binary_and_text_requests_are_answered_in_their_own_form_quoting_the_request_id(loop: str) -> None:
    async def main() -> None:
        async with serving() as env, dial(env) as ws:
            assert await reply_to(ws, CODEC.encode_binary(7, Heartbeat(1.5))) == (7, HeartbeatAck(1.5, 0.0), False)
            text = json.dumps({"type": "Heartbeat", "id": 9, "sent_at": 2.5})
            assert await reply_to(ws, text) == (9, HeartbeatAck(2.5, 0.0), True)
            await asyncio.wait_for(await ws.ping(b"p"), 3.0)  # control frames still work
            assert [rid for rid, _ in env.clients.requests] == [7, 9]
            # A request split into fragments is put together first.
            data = CODEC.encode_binary(11, Heartbeat(3.5))
            await ws.send([data[:3], data[3:7], data[7:]])
            assert CODEC.decode_binary(await asyncio.wait_for(ws.recv(decode=False), 3.0)) == (
                11, HeartbeatAck(3.5, 0.0))
            # Pipelined requests are answered in order.
            for rid in range(100, 150):
                await ws.send(CODEC.encode_binary(rid, Heartbeat(float(rid))))
            got = [CODEC.decode_binary(await asyncio.wait_for(ws.recv(decode=False), 3.0)) for _ in range(50)]
            assert got == [(rid, HeartbeatAck(float(rid), 0.0)) for rid in range(100, 150)]

    go(main, loop)


def test_connections_are_announced_and_their_end_is_published_once() -> None:
    async def main() -> None:
        async with serving() as env:
            async with dial(env) as ws:
                await call(ws, 1, Heartbeat(0.0))
                (hello,) = env.clients.connected()
                assert len(hello.conn_id) == 16 and int(hello.conn_id, 16) >= 0
                assert hello.local is True
                assert hello.peer == f"{LOOPBACK}:{ws.local_address[1]}"
                assert env.gateway.connection_ids() == [hello.conn_id]
            assert await until(lambda: bool(env.clients.gone(hello.conn_id)), 3.0)
            await asyncio.sleep(0.05)
            assert env.clients.gone(hello.conn_id) == ["closed"]
            assert env.gateway.connection_ids() == []
            env.push(hello.conn_id, HeartbeatAck(0.0, 0.0))  # to a connection that is gone
            assert env.gateway.stats.unroutable == 1

    go(main)


# --------------------------------------------------------------------------- bad frames


BAD_BINARY = [
    (b"\xc1", "bad_frame", 0),  # not msgpack
    (CODEC.encode_binary(5, Heartbeat(1.0))[:-3], "bad_frame", 0),  # truncated
    (msgpack.packb("x"), "bad_frame", 0),  # not the [request_id, message] array
    (msgpack.packb([6, [Heartbeat.TAG, Heartbeat.VERSION, "x"]]), "bad_request", 6),  # wrong type
    (msgpack.packb([7, [Heartbeat.TAG, Heartbeat.VERSION]]), "bad_request", 7),  # wrong field count
    (msgpack.packb([8, DEFAULT_CODEC.to_wire(HeartbeatPing(1, 0.0, ServerStatus.HEALTHY))]),
     "unknown_message", 8),  # a peer message
    (msgpack.packb([9, [ClientConnected.TAG, 1, "x", True, "p"]]), "unknown_message", 9),  # a local one
    (msgpack.packb([10, [9999, 1]]), "unknown_message", 10),  # no such tag
]
BAD_TEXT = [
    ("{", "bad_frame", 0),
    ("[1]", "bad_frame", 0),
    (json.dumps({"type": "HeartbeatPing", "id": 4}), "unknown_message", 4),
    (json.dumps({"type": "Heartbeat", "id": 3, "sent_at": "x"}), "bad_request", 3),
    (json.dumps({"type": "Heartbeat", "id": 2, "sent_at": 1.0, "extra": 1}), "bad_request", 2),
]


def test_frames_that_do_not_decode_get_a_typed_error_and_the_connection_keeps_serving() -> None:
    async def main() -> None:
        async with serving() as env, dial(env) as ws:
            for frame, code, rid in BAD_BINARY:
                got_rid, msg, text = await reply_to(ws, frame)
                assert isinstance(msg, Error) and (got_rid, msg.code, text) == (rid, code, False), frame
            for text_frame, code, rid in BAD_TEXT:
                got_rid, msg, text = await reply_to(ws, text_frame)
                assert isinstance(msg, Error) and (got_rid, msg.code, text) == (rid, code, True), text_frame
            await ws.send(b"\xff\xfe", text=True)  # a text frame that is not UTF-8
            rid, msg = CODEC.decode_text(await asyncio.wait_for(ws.recv(), 3.0))
            assert isinstance(msg, Error) and msg.code == "bad_frame" and "UTF-8" in msg.detail
            assert await call(ws, 42, Heartbeat(4.0)) == (42, HeartbeatAck(4.0, 0.0))
            assert env.gateway.stats.bad_frames == len(BAD_BINARY) + len(BAD_TEXT) + 1
            assert env.clients.requests == [(42, Heartbeat(4.0))]  # nothing bad reached the hub

    go(main)


def test_too_many_bad_frames_close_the_connection() -> None:
    async def main() -> None:
        async with serving(GatewayConfig(max_bad_frames=3)) as env, dial(env) as ws:
            conn_id = await env.next_conn_id(0)
            for _ in range(4):
                await ws.send(b"\xc1")
            errors = [CODEC.decode_binary(await asyncio.wait_for(ws.recv(decode=False), 3.0)) for _ in range(4)]
            assert all(isinstance(m, Error) and m.code == "bad_frame" for _, m in errors)
            assert await closed_code(ws) == 1008
            assert await until(lambda: bool(env.clients.gone(conn_id)), 3.0)
            assert env.clients.gone(conn_id) == ["too_many_bad_frames"]

    go(main)


def test_an_oversize_frame_closes_that_connection_only() -> None:
    async def main() -> None:
        async with serving(GatewayConfig(max_frame=1024)) as env, dial(env) as big, dial(env) as other:
            big_id = await env.next_conn_id(0)
            await env.next_conn_id(1)
            assert await call(big, 1, GetVariables("t", "s", ("x" * 500,))) == (1, VariablesData("t", "s", ()))
            await big.send(CODEC.encode_binary(2, GetVariables("t", "s", ("x" * 2000,))))
            assert await closed_code(big) == 1009
            assert await until(lambda: bool(env.clients.gone(big_id)), 3.0)
            assert env.clients.gone(big_id) == ["too_large"]
            assert await call(other, 3, Heartbeat(1.0)) == (3, HeartbeatAck(1.0, 0.0))
            assert len(env.gateway.conns) == 1

    go(main)


# --------------------------------------------------------------------------- closing


def test_close_client_sends_the_error_first_then_closes() -> None:
    async def main() -> None:
        async with serving() as env:
            async with dial(env) as ws:
                conn_id = await env.next_conn_id(0)
                await ws.send(CODEC.encode_binary(5, Logout("close:forbidden")))
                rid, msg = CODEC.decode_binary(await asyncio.wait_for(ws.recv(decode=False), 3.0))
                assert (rid, msg) == (5, Error("forbidden", "closed with 'forbidden'"))
                assert await closed_code(ws) == 1008
                assert env.clients.gone(conn_id) == ["closed_by_server"]
            async with dial(env) as ws:  # no code: no Error, a normal close
                await ws.send(CODEC.encode_binary(6, Logout("close:")))
                assert await closed_code(ws) == 1000
            assert await call_fresh(env) == (1, HeartbeatAck(1.0, 0.0))

    go(main)


async def call_fresh(env: _Env) -> tuple[int, Message]:
    async with dial(env) as ws:
        return await call(ws, 1, Heartbeat(1.0))


def test_closing_the_gateway_delivers_what_is_queued_then_closes_everyone() -> None:
    async def main() -> None:
        async with serving() as env, dial(env) as a, dial(env) as b:
            ids = [await env.next_conn_id(0), await env.next_conn_id(1)]
            change = VariableChanged("t", "s", "v", b"1", 1, "w")
            for conn_id in ids:
                env.push(conn_id, change)
            await env.gateway.close()
            for ws in (a, b):
                assert CODEC.decode_binary(await asyncio.wait_for(ws.recv(decode=False), 3.0)) == (0, change)
                assert await closed_code(ws) == 1001
            assert [env.clients.gone(i) for i in ids] == [["server_closing"], ["server_closing"]]
            with pytest.raises(OSError):
                async with dial(env):
                    pass

    go(main)


# --------------------------------------------------------------------------- output


def test_an_event_is_encoded_once_per_form_and_follows_each_connections_latest_form() -> None:
    async def main() -> None:
        async with serving() as env, dial(env) as b1, dial(env) as b2, dial(env) as t1:
            ids = [await env.next_conn_id(i) for i in range(3)]
            text = json.dumps({"type": "Heartbeat", "id": 1, "sent_at": 0.0})
            assert (await reply_to(t1, text))[2] is True
            before = env.gateway.stats.encoded
            change = VariableChanged("t", "s", "v", b"\x00\x01", 3, "writer")
            for conn_id in ids:
                env.push(conn_id, change)
            assert env.gateway.stats.encoded == before + 2
            for ws in (b1, b2):
                data = await asyncio.wait_for(ws.recv(), 3.0)
                assert isinstance(data, bytes) and CODEC.decode_binary(data) == (0, change)
            data = await asyncio.wait_for(t1.recv(), 3.0)
            assert isinstance(data, str) and CODEC.decode_text(data) == (0, change)
            # Before any request a connection gets events in binary.
            async with dial(env) as fresh:
                env.push(await env.next_conn_id(3), change)
                assert CODEC.decode_binary(await asyncio.wait_for(fresh.recv(decode=False), 3.0)) == (0, change)

    go(main)


def _raw_client(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((LOOPBACK, port))
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    sock.settimeout(3.0)
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)  # byte by byte: nothing after the response is taken off the socket
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("limit", ["bytes", "time"])
def test_a_client_that_never_reads_is_dropped_as_stalled_and_the_others_keep_being_served(limit: str,
                                                                                          loop: str) -> None:
    config = (GatewayConfig(max_queue_bytes=256 << 10, stall_timeout=30.0) if limit == "bytes"
              else GatewayConfig(stall_timeout=0.3))

    async def main() -> None:
        async with serving(config) as env, dial(env) as reader:
            assert env.gateway.listen_address is not None
            sock = await asyncio.to_thread(_raw_client, env.gateway.listen_address[1])
            try:
                await env.next_conn_id(0)  # the reader
                stuck = await env.next_conn_id(1)
                change = VariableChanged("t", "s", "v", bytes(16 << 10), 1, "w")
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10.0
                rid = 0
                while not env.clients.gone(stuck):
                    assert loop.time() < deadline, "the stuck client was never dropped"
                    if limit == "bytes" or not env.gateway.blocked:
                        for _ in range(64):
                            env.push(stuck, change)
                    rid += 1
                    started = loop.time()
                    assert await call(reader, rid, Heartbeat(0.0)) == (rid, HeartbeatAck(0.0, 0.0))
                    assert loop.time() - started < 1.0  # never slowed down by the stuck one
                assert env.clients.gone(stuck) == ["stalled"]
                assert env.gateway.stats.stalled == 1
                (why,) = [f["why"] for level, event, f in env.logs if event == "client_stalled"]
                assert ("bytes queued" if limit == "bytes" else "nothing written") in str(why)
                assert await call(reader, rid + 1, Heartbeat(0.0)) == (rid + 1, HeartbeatAck(0.0, 0.0))
            finally:
                sock.close()

    go(main, loop)


# --------------------------------------------------------------------------- admission, HTTP, TLS


def test_connections_beyond_the_cap_are_refused() -> None:
    async def main() -> None:
        async with serving(GatewayConfig(max_connections=1)) as env:
            async with dial(env) as first:
                await env.next_conn_id(0)
                with pytest.raises(InvalidStatus) as refused:
                    async with dial(env):
                        pass
                assert refused.value.response.status_code == 503
                assert await call(first, 1, Heartbeat(0.0)) == (1, HeartbeatAck(0.0, 0.0))
            assert await until(lambda: not env.gateway.conns, 3.0)
            assert await call_fresh(env) == (1, HeartbeatAck(1.0, 0.0))
            assert env.gateway.stats.refused == 1

    go(main)


async def _http_get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3.0)
    writer.close()
    return head


def test_plain_http_gets_426_or_404_unless_a_route_answers() -> None:
    async def main() -> None:
        async with serving() as env:
            assert env.gateway.listen_address is not None
            port = env.gateway.listen_address[1]
            env.gateway.add_http_route("/health", lambda ws, request: ws.respond(200, "ok\n"))
            assert (await _http_get(port, "/")).startswith(b"HTTP/1.1 426")
            assert (await _http_get(port, "/nothing")).startswith(b"HTTP/1.1 404")
            assert (await _http_get(port, "/health")).startswith(b"HTTP/1.1 200")
            assert env.clients.events == []
            assert await call_fresh(env) == (1, HeartbeatAck(1.0, 0.0))

    go(main)


def test_tls_with_a_development_certificate(tmp_path: Path) -> None:
    cert, key = write_dev_certificate(tmp_path, "127.0.0.1")
    assert key.stat().st_mode & 0o777 == 0o600

    async def main() -> None:
        async with serving(tls=server_ssl_context(cert, key)) as env:
            assert env.gateway.url.startswith("wss://127.0.0.1:")
            trusting = ssl.create_default_context(cafile=str(cert))
            async with dial(env, ssl=trusting) as ws:
                assert await call(ws, 3, Heartbeat(2.0)) == (3, HeartbeatAck(2.0, 0.0))
            with pytest.raises(ssl.SSLCertVerificationError):
                async with dial(env, ssl=ssl.create_default_context()):
                    pass

    go(main)


def test_permessage_deflate_when_configured() -> None:
    async def main() -> None:
        async with serving(GatewayConfig(compression="deflate")) as env:
            async with connect(env.gateway.url, open_timeout=5) as ws:  # websockets offers deflate by default
                assert ws.protocol.extensions  # negotiated
                assert await call(ws, 1, Heartbeat(1.0)) == (1, HeartbeatAck(1.0, 0.0))
                text = json.dumps({"type": "Heartbeat", "id": 2, "sent_at": 2.0})
                assert await reply_to(ws, text) == (2, HeartbeatAck(2.0, 0.0), True)
                change = VariableChanged("t", "s", "v", bytes(5000), 1, "w")
                env.push(await env.next_conn_id(0), change)
                data = await asyncio.wait_for(ws.recv(), 3.0)
                assert isinstance(data, str) and CODEC.decode_text(data) == (0, change)
            async with dial(env) as plain:  # a client without it still gets plain frames
                assert not plain.protocol.extensions
                assert await call(plain, 3, Heartbeat(3.0)) == (3, HeartbeatAck(3.0, 0.0))

    go(main)


def test_a_client_that_never_answers_pings_is_dropped() -> None:
    config = GatewayConfig(ping_interval=0.1, ping_timeout=0.2, close_timeout=0.2)

    async def main() -> None:
        async with serving(config) as env:
            assert env.gateway.listen_address is not None
            sock = await asyncio.to_thread(_raw_client, env.gateway.listen_address[1])
            try:
                conn_id = await env.next_conn_id(0)
                assert await until(lambda: bool(env.clients.gone(conn_id)), 5.0)
                assert env.clients.gone(conn_id) == ["ping_timeout"]
            finally:
                sock.close()

    go(main)


def test_a_decoder_bug_is_answered_as_a_bad_frame_and_the_connection_lives(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with serving() as env, dial(env) as ws:
            decode = env.gateway._decode_binary

            def broken(data: bytes) -> tuple[int, Message]:
                if data == b"\x01":
                    raise OverflowError("a bug in the codec")
                return decode(data)

            monkeypatch.setattr(env.gateway, "_decode_binary", broken)
            rid, msg, _ = await reply_to(ws, b"\x01")
            assert rid == 0
            assert isinstance(msg, Error) and msg.code == "bad_frame"
            assert await call(ws, 2, Heartbeat(0.0)) == (2, HeartbeatAck(0.0, 0.0))
            assert [event for level, event, _ in env.logs if level == "error"] == ["decode_failed"]

    go(main)

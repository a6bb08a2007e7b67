"""The WebSocket gateway: client connections in and out of a node, on the websockets library.

Each accepted connection gets a random 16-hex-digit id and appears to the node as the address
`client_address(conn_id)`; the gateway publishes `ClientConnected(conn_id, local, peer)` and, once
it is gone, `ClientDisconnected(conn_id, reason)` exactly once. Every frame a client sends is
decoded by the client codec (binary frames as msgpack, text frames as JSON) and delivered to the
hub actor (`clients`) as an envelope whose msg_id is the client's request id, so the hub's
`ctx.reply` quotes it. A frame that does not decode is answered with `Error(code, detail)`, quoting
its request id when that much was readable, and the connection carries on -- until it has sent more
than `max_bad_frames`, which closes it (`too_many_bad_frames`). An oversize frame makes websockets
close the connection with 1009 (`too_large`).

The node sends to a client by sending to its address; the host routes such envelopes here
(`transmit`). A reply goes out in the form (binary or text) of the request it answers, an event
(request id 0) in the form of the connection's latest request. `CloseClient(code, detail)` sends
`Error(code, detail)` first (unless code is empty) and then closes the connection. The encoding of
the last event body is cached per form, so one change fanned out to many connections is encoded
(and framed) once. Frames are queued per connection and written in batches, never by a coroutine
per message (see `gateway_conn`). A connection whose queue passes `max_queue` messages or
`max_queue_bytes`, or whose socket accepted nothing for `stall_timeout` while data was waiting, is
aborted at once as `stalled`: a client that does not read costs the others nothing.

Plain HTTP requests (not upgrades) go to the routes of `add_http_route`, else 426 / 404, and
`stats` counts messages, payload bytes and `Error`s by code for the metrics: see `gateway_http`.
"""

from __future__ import annotations

import asyncio
import os
import ssl as ssl_module
from dataclasses import dataclass
from typing import Any, cast

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import CloseCode
from websockets.protocol import OPEN

from commy.client_codec import FrameError, server_codec
from commy.core.node import Node
from commy.errors import BAD_FRAME, RemoteProtocolError
from commy.messages import (
    CLIENT_NODE_PREFIX,
    Address,
    ClientConnected,
    ClientDisconnected,
    CloseClient,
    Envelope,
    Error,
    Message,
    client_address,
    new_envelope,
)
from commy.messages.client import UNANSWERED
from commy.runtime.gateway_conn import HEADS, ClientConnection, frame
from commy.runtime.gateway_http import GatewayStats, HttpRoute, is_loopback, request_handler

LOG_ACTOR = "gateway"

CLOSED, STALLED, TOO_LARGE, BAD_FRAMES = "closed", "stalled", "too_large", "too_many_bad_frames"
SERVER_CLOSING, CLOSED_BY_SERVER, PING_TIMEOUT = "server_closing", "closed_by_server", "ping_timeout"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    max_frame: int = 1 << 20  # bytes in one client message
    compression: str | None = None  # "deflate" offers permessage-deflate
    max_bad_frames: int = 16  # undecodable frames tolerated per connection
    stall_timeout: float = 30.0  # queued output and no progress for this long drops the client
    max_queue: int = 10_000  # outgoing messages queued per connection
    max_queue_bytes: int = 16 << 20  # outgoing bytes queued per connection
    max_connections: int = 10_000
    write_limit: int = 64 << 10  # transport buffer above which a connection counts as blocked
    open_timeout: float = 10.0  # TCP accepted to WebSocket open
    close_timeout: float = 2.0  # waiting for the client's close frame
    ping_interval: float | None = 20.0  # websockets keepalive pings (None: off)
    ping_timeout: float | None = 20.0

    def __post_init__(self) -> None:
        for name in ("max_frame", "max_bad_frames", "max_queue", "max_queue_bytes", "max_connections",
                     "write_limit"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"gateway.{name} must be an integer >= 1, got {value!r}")
        for name in ("stall_timeout", "open_timeout", "close_timeout"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ValueError(f"gateway.{name} must be a finite number > 0, got {getattr(self, name)!r}")
        if self.compression not in (None, "deflate"):
            raise ValueError(f"gateway.compression must be None or 'deflate', got {self.compression!r}")


def _close_text(text: str) -> str:
    """A close reason within the 123 bytes a close frame allows."""
    data = text.encode("utf-8")[:120]
    return data.decode("utf-8", "ignore")


class Gateway:
    """Serves client connections for `node`; attach it to the node's host to route replies here."""

    def __init__(self, node: Node, listen: tuple[str, int], config: GatewayConfig | None = None, *,
                 ssl: ssl_module.SSLContext | None = None, hub: str = "clients",
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.node = node
        self.listen = listen
        self.config = config or GatewayConfig()
        self.ssl = ssl
        self.hub = Address(node.node_id, hub)
        self.loop = loop or asyncio.get_running_loop()
        self.stats = GatewayStats()
        self.conns: dict[str, ClientConnection] = {}  # by node key "client:<conn_id>"
        self.blocked: set[ClientConnection] = set()  # transports paused right now
        self._dirty: list[ClientConnection] = []  # connections with frames to flush this iteration
        self.listen_address: tuple[str, int] | None = None
        self.http_routes: dict[str, HttpRoute] = {}
        self._server: Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._closing = False
        codec = server_codec()
        self._encode_binary, self._encode_text = codec.encode_binary, codec.encode_text
        self._decode_binary, self._decode_text = codec.decode_binary, codec.decode_text
        self._deliver, self._clock = node.deliver, self.loop.time  # bound once: called for every frame
        self._cache_body: Message | None = None
        self._cache: list[tuple[bytes, bytes] | None] = [None, None]  # per form: (payload, frame)
        self._max_queue, self._max_queue_bytes = self.config.max_queue, self.config.max_queue_bytes

    # ---- lifecycle

    async def start(self) -> tuple[str, int]:
        """Listen; returns the bound (host, port)."""
        c = self.config
        host, port = self.listen
        self._server = await serve(
            self._handle, host, port, ssl=self.ssl, compression=c.compression, max_size=c.max_frame,
            process_request=request_handler(self.http_routes, self._admit), open_timeout=c.open_timeout,
            close_timeout=c.close_timeout, ping_interval=c.ping_interval, ping_timeout=c.ping_timeout,
            write_limit=c.write_limit, create_connection=ClientConnection, server_header="commy",
        )
        sockname = self._server.sockets[0].getsockname()
        self.listen_address = (sockname[0], sockname[1])
        self._schedule_sweep()
        self._log("debug", "listening", url=self.url)
        return self.listen_address

    @property
    def url(self) -> str:
        assert self.listen_address is not None, "the gateway is not started"
        host, port = self.listen_address
        shown = f"[{host}]" if ":" in host else host
        return f"{'wss' if self.ssl is not None else 'ws'}://{shown}:{port}"

    async def close(self) -> None:
        """Stop accepting, close every client (`server_closing`) after its queued frames, bounded."""
        if self._closing:
            return
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is None:
            return
        self._server.close(close_connections=False)
        for conn in list(self.conns.values()):
            self._close(conn, SERVER_CLOSING, CloseCode.GOING_AWAY, "server closing")
        bound = self.config.close_timeout * 2 + 1.0
        try:
            await asyncio.wait_for(self._server.wait_closed(), bound)
        except TimeoutError:
            for ws in list(self._server.all_connections):
                ws.transport.abort()

    def add_http_route(self, path: str, route: HttpRoute) -> None:
        """Answer plain HTTP requests for `path` (exact match) with `route`."""
        self.http_routes[path] = route

    def connection_ids(self) -> list[str]:
        return [conn.conn_id for conn in self.conns.values()]

    # ---- connections

    def _admit(self) -> bool:
        """Room for one more client (a refusal is counted)."""
        if self._closing or len(self.conns) >= self.config.max_connections:
            self.stats.refused += 1
            return False
        return True

    async def _handle(self, ws: ServerConnection) -> None:
        conn = cast(ClientConnection, ws)
        if not self._admit():
            conn.early = None
            await conn.close(CloseCode.TRY_AGAIN_LATER, "too many connections")
            return
        conn_id = os.urandom(8).hex()
        while CLIENT_NODE_PREFIX + conn_id in self.conns:
            conn_id = os.urandom(8).hex()
        key = CLIENT_NODE_PREFIX + conn_id
        peer = conn.remote_address
        host = str(peer[0]) if peer else ""
        self.conns[key] = conn
        self.stats.accepted += 1
        self.node.publish(ClientConnected(conn_id, is_loopback(host), f"{host}:{peer[1]}" if peer else ""))
        conn.attach(self, conn_id, key, client_address(conn_id))
        try:
            lost = conn.connection_lost_waiter
            await asyncio.wait((conn.close_wanted, lost), return_when=asyncio.FIRST_COMPLETED)
            if not lost.done():
                code, text = conn.close_wanted.result()
                await self._close_now(conn, code, text)
        finally:
            if not conn.reason:
                conn.reason = self._lost_reason(conn)
            self._gone(conn)

    async def _close_now(self, conn: ClientConnection, code: int, text: str) -> None:
        """Write what is queued, then the close handshake; abort whatever takes too long."""
        timeout = self.config.close_timeout
        try:
            async with asyncio.timeout(timeout * 2):
                while conn.out and conn.protocol.state is OPEN:
                    conn.flush()
                    if conn.out:
                        await conn.drain()
                await conn.close(code, text)
        except TimeoutError:
            conn.transport.abort()

    def _lost_reason(self, conn: ClientConnection) -> str:
        sent = conn.protocol.close_sent
        if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
            return TOO_LARGE
        if sent is not None and sent.code == CloseCode.INTERNAL_ERROR and "keepalive" in sent.reason:
            return PING_TIMEOUT
        return CLOSED

    def _gone(self, conn: ClientConnection) -> None:
        """Forget the connection and tell the node, once."""
        if self.conns.get(conn.node_key) is conn:
            del self.conns[conn.node_key]
            self.blocked.discard(conn)
            self._log("debug", "client_gone", conn=conn.conn_id, reason=conn.reason)
            self.node.publish(ClientDisconnected(conn.conn_id, conn.reason))

    def _close(self, conn: ClientConnection, reason: str, code: int, text: str) -> None:
        """Close after the frames already queued; the node hears of it now."""
        if conn.closing:
            return
        conn.closing = True
        conn.reason = reason
        if not conn.close_wanted.done():
            conn.close_wanted.set_result((code, _close_text(text)))
        self._gone(conn)

    def _stall(self, conn: ClientConnection, why: str) -> None:
        if conn.closing:
            return
        conn.closing = True
        conn.reason = STALLED
        conn.out.clear()
        conn.out_bytes = 0
        self.stats.stalled += 1
        self._log("warning", "client_stalled", conn=conn.conn_id, why=why)
        conn.transport.abort()
        self._gone(conn)

    def _schedule_sweep(self) -> None:
        self._sweeper = self.loop.call_later(min(1.0, self.config.stall_timeout / 4), self._sweep)

    def _sweep(self) -> None:
        if self.blocked:
            limit = self.loop.time() - self.config.stall_timeout
            for conn in [c for c in self.blocked if c.blocked_since is not None and c.blocked_since < limit]:
                self.blocked.discard(conn)
                self._stall(conn, f"nothing written for {self.config.stall_timeout:g} s")
        if not self._closing:
            self._schedule_sweep()

    # ---- in (called by ClientConnection for each complete message)

    def on_frame(self, conn: ClientConnection, data: bytes, text: bool) -> None:
        if conn.closing:
            return
        stats = self.stats
        stats.messages_in += 1
        stats.bytes_in += len(data)
        conn.text = text  # events go out in the form the client spoke last
        try:
            if text:
                try:
                    request_id, msg = self._decode_text(data.decode("utf-8"))
                except UnicodeDecodeError:
                    raise FrameError("a text frame must be valid UTF-8") from None
                if request_id and type(msg) not in UNANSWERED:  # an ack gets no reply to match
                    ids = conn.text_ids
                    if len(ids) >= self.config.max_queue:
                        ids.clear()  # a client that never waits for replies: they fall back to binary
                    ids.add(request_id)
            else:
                request_id, msg = self._decode_binary(data)
        except RemoteProtocolError as exc:
            self._bad_frame(conn, exc, text)
            return
        except Exception as exc:  # a decoder bug: still an answer for the client, and the connection lives
            self._log("error", "decode_failed", conn=conn.conn_id, error=repr(exc)[:200])
            self._bad_frame(conn, RemoteProtocolError("the frame could not be decoded", BAD_FRAME), text)
            return
        self._deliver(new_envelope(request_id, None, conn.address, self.hub, self._clock(), msg))

    def _bad_frame(self, conn: ClientConnection, exc: RemoteProtocolError, text: bool) -> None:
        self.stats.bad_frames += 1
        self.stats.errors[exc.code or BAD_FRAME] += 1
        conn.bad_frames += 1
        request_id = getattr(exc, "request_id", 0)
        self._queue(conn, self._encode(request_id, Error(exc.code or BAD_FRAME, exc.detail), text), text)
        if conn.bad_frames > self.config.max_bad_frames:
            self._close(conn, BAD_FRAMES, CloseCode.POLICY_VIOLATION, "too many bad frames")

    # ---- out (the host routes every envelope for a client address here)

    def transmit(self, env: Envelope) -> None:
        conn = self.conns.get(env.receiver.node)
        if conn is None or conn.closing:
            self.stats.unroutable += 1
            return
        body = env.body
        if type(body) is Error:
            self.stats.errors[body.code] += 1
        request_id = env.request_id
        if request_id:
            text = False
            ids = conn.text_ids
            if ids and request_id in ids:
                ids.discard(request_id)
                text = True
            if type(body) is CloseClient:
                self._close_client(conn, request_id, body, text)
            elif text:
                self._queue(conn, self._encode(request_id, body, True), True)
            else:  # the usual reply, encoded right here
                self.stats.encoded += 1
                self._queue(conn, self._encode_binary(request_id, body), False)
            return
        text = conn.text
        if type(body) is CloseClient:
            self._close_client(conn, 0, body, text)
            return
        if body is not self._cache_body:
            self._cache_body = body
            self._cache = [None, None]
        item = self._cache[text]
        if item is None:
            payload = self._encode(0, body, text)
            item = self._cache[text] = (payload, frame(payload, text))
        self._queue(conn, item[0], text, item[1])

    def _queue(self, conn: ClientConnection, payload: bytes, text: bool, framed: bytes | None = None) -> None:
        """Queue one message for `conn`: as a finished frame (`framed`, or built here) unless an
        extension was negotiated, in which case websockets frames the payload when it is flushed."""
        out = conn.out
        stats = self.stats
        stats.messages_out += 1
        if conn.raw:
            if framed is None:
                n = len(payload)
                framed = HEADS[text][n] + payload if n < 126 else frame(payload, text)
            out.append(framed)
            conn.out_bytes += len(framed)
        else:
            out.append((text, payload))
            conn.out_bytes += len(payload)
        stats.bytes_out += len(payload)  # payloads either way, like bytes_in (see gateway_http)
        if not conn.scheduled and not conn.receiving:  # a receiving connection flushes when done
            conn.scheduled = True
            self._dirty.append(conn)
            if len(self._dirty) == 1:
                self.loop.call_soon(self._flush_dirty)
        if conn.out_bytes > self._max_queue_bytes or len(out) > self._max_queue:
            self._stall(conn, f"{len(out)} messages, {conn.out_bytes} bytes queued")

    def _flush_dirty(self) -> None:
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    def _close_client(self, conn: ClientConnection, request_id: int, msg: CloseClient, text: bool) -> None:
        if msg.code:
            self.stats.errors[msg.code] += 1
            self._queue(conn, self._encode(request_id, Error(msg.code, msg.detail), text), text)
        code = CloseCode.POLICY_VIOLATION if msg.code else CloseCode.NORMAL_CLOSURE
        self._close(conn, CLOSED_BY_SERVER, code, msg.code or "closed by the server")

    def _encode(self, request_id: int, body: Message, text: bool) -> bytes:
        self.stats.encoded += 1
        if text:
            return self._encode_text(request_id, body).encode("utf-8")
        return self._encode_binary(request_id, body)

    # ---- logging

    def _log(self, level: str, event: str, **fields: Any) -> None:
        self.node.log_sink(self.node.node_id, LOG_ACTOR, level, event, fields)

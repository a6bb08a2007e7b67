"""The wire under the SDK: one WebSocket at a time, request ids, events, heartbeats, reconnection.

`request(msg)` gives the message a fresh request id, registers a future under it, sends the frame
(binary msgpack, or JSON text with `text=True`) and waits for the reply carrying that id; an
`Error` reply raises `CommyClientError` (the subclass for its code). A timer per request bounds
the wait (`RequestTimeoutError`). Frames with request id 0 are events, handed in arrival order to
`on_event` from the reader task, so events and replies keep the server's order.

Liveness: every `heartbeat` seconds a `Heartbeat` goes out; a connection whose ack does not come
within `timeout` is aborted, which counts as a drop (servers drop clients silent for 60 s).

Drops: every request in flight fails with `ConnectionLostError` at once -- the server may or may
not have applied it -- except requests marked idempotent (reads), which are sent again once the
connection is back, within their deadline. With `reconnect=True` a task redials the URLs in order,
rounds spaced by capped, jittered exponential backoff (`commy.runtime.backoff`), and after each
successful dial awaits `on_restore` (the client resumes its sessions -- or logs in again and
resubscribes -- and remaps there, with `request(..., restoring=True)`); only then do other
requests flow again -- requests made meanwhile wait for it (up to their timeout) instead of
failing. Without reconnection, a drop is final: `on_lost` is called and every later request fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import ssl as ssl_lib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidURI

from commy.client.types import CommyClientError, ConnectionLostError, RequestTimeoutError
from commy.client_codec import FrameError, client_codec
from commy.messages import Error, Heartbeat, HeartbeatAck, Message
from commy.runtime.backoff import Backoff

log = logging.getLogger("commy.client")

MAX_FRAME = (16 << 20) + 4096
"""Largest frame accepted from a server: a 16 MiB value plus its envelope."""

_SUPPORTS_PROXY = "proxy" in inspect.signature(ws_connect.__init__).parameters


class Connection:
    """One logical connection to a commy server (or to the first of several that answers)."""

    def __init__(self, urls: Sequence[str], *, ssl: ssl_lib.SSLContext | None = None, text: bool = False,
                 reconnect: bool = True, heartbeat: float = 15.0, timeout: float = 10.0,
                 backoff: tuple[float, float] = (0.05, 5.0), max_frame: int = MAX_FRAME,
                 on_event: Callable[[Message], None] | None = None,
                 on_restore: Callable[[], Awaitable[None]] | None = None,
                 on_lost: Callable[[ConnectionLostError], None] | None = None) -> None:
        if not urls:
            raise ValueError("give at least one server URL (ws://host:port or wss://host:port)")
        if timeout <= 0 or heartbeat < 0:
            raise ValueError("timeout must be > 0 and heartbeat >= 0 (0 turns heartbeats off)")
        self.urls = list(urls)
        self.ssl = ssl
        self.text = text
        self.reconnect = reconnect
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.max_frame = max_frame
        self.on_event = on_event
        self.on_restore = on_restore
        self.on_lost = on_lost
        self.url: str | None = None
        self.connects = 0  # successful dials so far (1 after `open`)
        self.rtt: float | None = None  # the last heartbeat's round trip, seconds
        self.server_error: tuple[str, str] | None = None  # the last Error the server pushed (id 0)
        self._backoff = Backoff(random.Random(), *backoff)
        codec = client_codec()
        self._encode: Callable[[int, Message], bytes | str] = codec.encode_text if text else codec.encode_binary
        self._decode_binary, self._decode_text = codec.decode_binary, codec.decode_text
        self._ws: ClientConnection | None = None
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._next_id = 1
        self._stable = asyncio.Event()  # set unless a reconnection is under way
        self._reconnecting = False
        self._closing = False
        self._failed: str | None = None  # set when the connection is gone for good
        self._preferred: str | None = None  # a migration target, tried first
        self._tasks: set[asyncio.Task[Any]] = set()
        self._hb_task: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None

    # ---- state

    @property
    def connected(self) -> bool:
        """Connected and not in the middle of restoring after a reconnect."""
        return self._ws is not None and self._stable.is_set()

    @property
    def closed(self) -> bool:
        return self._closing or self._failed is not None

    # ---- opening and closing

    async def open(self) -> None:
        """Dial the URLs in order until one answers; raise `ConnectionLostError` if none does."""
        failures = []
        for url in self.urls:
            try:
                ws = await self._dial(url)
            except InvalidURI as exc:
                raise ValueError(str(exc)) from None
            except Exception as exc:  # OSError, handshake errors, timeouts: try the next URL
                failures.append(f"{url}: {exc or type(exc).__name__}")
                continue
            self._install(ws, url)
            self._stable.set()
            return
        raise ConnectionLostError(detail="could not connect: " + "; ".join(failures))

    async def _dial(self, url: str) -> ClientConnection:
        kwargs: dict[str, Any] = {"compression": None, "max_size": self.max_frame, "ping_interval": None,
                                  "open_timeout": self.timeout, "close_timeout": min(self.timeout, 2.0)}
        if self.ssl is not None:
            kwargs["ssl"] = self.ssl
        if _SUPPORTS_PROXY:
            kwargs["proxy"] = None  # commy servers are dialed directly
        return await ws_connect(url, **kwargs)

    def _install(self, ws: ClientConnection, url: str) -> None:
        self._ws, self.url = ws, url
        self.connects += 1
        self._reader = self._spawn(self._read(ws))
        if self.heartbeat > 0:
            self._hb_task = self._spawn(self._heartbeats(ws))

    async def close(self) -> None:
        """Close for good: requests in flight fail with ConnectionLostError, reconnection stops."""
        if self._closing:
            return
        self._closing = True
        me = asyncio.current_task()
        for task in list(self._tasks):
            if task is not me and task is not self._reader:
                task.cancel()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
            self._dropped(ws, "the client closed the connection")
        self._stable.set()
        pending = [t for t in self._tasks if t is not me]
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.timeout)
            for task in late:
                task.cancel()

    # ---- requests

    async def request(self, msg: Message, *, idempotent: bool = False, timeout: float | None = None,
                      restoring: bool = False) -> Message:
        """Send `msg` and return its reply; raise the reply's error, `RequestTimeoutError` or
        `ConnectionLostError`. `idempotent` requests are resent after a reconnect (within the
        deadline). `restoring` is for `on_restore` only: it uses the new connection before others may."""
        loop = asyncio.get_running_loop()
        wait = self.timeout if timeout is None else timeout
        deadline = loop.time() + wait
        while True:
            ws = self._ws
            if ws is None or not (restoring or self._stable.is_set()):
                ws = await self._wait_usable(deadline, restoring)
            rid = self._next_id
            self._next_id = rid + 1
            fut: asyncio.Future[Message] = loop.create_future()
            self._pending[rid] = fut
            timer = loop.call_at(deadline, _expire, fut, msg, wait)
            try:
                try:
                    await ws.send(self._encode(rid, msg))
                except ConnectionClosed:
                    raise ConnectionLostError(detail=f"connection to {self.url} lost sending "
                                                     f"{type(msg).__name__}") from None
                reply = await fut
            except ConnectionLostError:
                if (idempotent and self.reconnect and not restoring and not self._closing
                        and loop.time() < deadline):
                    continue
                raise
            finally:
                timer.cancel()
                self._pending.pop(rid, None)
            if type(reply) is Error:
                raise CommyClientError.from_error(reply.code, reply.detail)
            return reply

    async def send_oneway(self, msg: Message) -> bool:
        """Send a message that gets no reply (acks); False if there was no connection to send it on."""
        ws = self._ws
        if ws is None:
            return False
        rid, self._next_id = self._next_id, self._next_id + 1
        try:
            await ws.send(self._encode(rid, msg))
        except ConnectionClosed:
            return False
        return True

    async def _wait_usable(self, deadline: float, restoring: bool) -> ClientConnection:
        loop = asyncio.get_running_loop()
        while True:
            if self._closing:
                raise ConnectionLostError(detail="the client is closed")
            if self._failed is not None:
                raise ConnectionLostError(detail=self._failed)
            ws = self._ws
            if ws is not None and (restoring or self._stable.is_set()):
                return ws
            if restoring:
                raise ConnectionLostError(detail="connection lost while restoring the session")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ConnectionLostError(detail=f"not connected (reconnecting to {', '.join(self._candidates())})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stable.wait(), remaining)

    # ---- reading

    async def _read(self, ws: ClientConnection) -> None:
        decode_binary, decode_text = self._decode_binary, self._decode_text
        reason = "closed by the server"
        try:
            async for frame in ws:
                try:
                    rid, msg = decode_binary(frame) if isinstance(frame, bytes) else decode_text(frame)
                except FrameError as exc:
                    self._bad_frame(exc)
                    continue
                if rid:
                    fut = self._pending.pop(rid, None)
                    if fut is not None:
                        if not fut.done():
                            fut.set_result(msg)
                    elif type(msg) is Error:
                        log.debug("server error for request %d (no longer awaited): %s", rid, msg)
                else:
                    self._event(msg)
        except ConnectionClosed as exc:
            reason = f"connection lost ({exc})"
        except Exception as exc:  # a bug here must not leave requests hanging
            log.exception("commy client reader failed")
            reason = f"reader failed: {exc!r}"
        finally:
            if self.server_error is not None:
                reason += f"; the server said {self.server_error[0]}: {self.server_error[1]}"
            self._dropped(ws, reason)

    def _bad_frame(self, exc: FrameError) -> None:
        fut = self._pending.pop(exc.request_id, None) if exc.request_id else None
        if fut is not None and not fut.done():
            fut.set_exception(CommyClientError(exc.code, f"undecodable reply from the server: {exc.detail}"))
        else:
            log.warning("undecodable frame from %s: %s", self.url, exc.detail)

    def _event(self, msg: Message) -> None:
        if type(msg) is Error:
            self.server_error = (msg.code, msg.detail)
            log.warning("server %s: %s: %s", self.url, msg.code, msg.detail)
        if self.on_event is not None:
            try:
                self.on_event(msg)
            except Exception:
                log.exception("commy client event handler failed on %s", type(msg).__name__)

    # ---- losing and regaining the connection

    def _dropped(self, ws: ClientConnection, reason: str) -> None:
        if ws is not self._ws:
            return
        self._ws = None
        hb = self._hb_task
        if hb is not None and hb is not asyncio.current_task():
            hb.cancel()
        detail = "the client is closed" if self._closing else f"{self.url}: {reason}"
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLostError(detail=detail))
        if self._closing or self._reconnecting:
            return  # closing, or the reconnect loop sees it and dials again
        if self.reconnect:
            log.info("commy client: %s; reconnecting", detail)
            self._stable.clear()
            self._spawn(self._reconnect_loop())
        else:
            self._failed = detail
            self._stable.set()
            if self.on_lost is not None:
                self.on_lost(ConnectionLostError(detail=detail))

    def _discard(self, ws: ClientConnection) -> None:
        """Give up on `ws` from our side (its reader then finds it is no longer current)."""
        if ws is self._ws:
            self._ws = None
            pending, self._pending = self._pending, {}
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionLostError(detail=f"{self.url}: abandoned"))
        ws.transport.abort()

    def _candidates(self) -> list[str]:
        first = [self._preferred] if self._preferred else []
        return list(dict.fromkeys(first + self.urls))

    async def _reconnect_loop(self) -> None:
        self._reconnecting = True
        try:
            while not self._closing:
                await asyncio.sleep(self._backoff.next())
                for url in self._candidates():
                    if self._closing:
                        return
                    try:
                        ws = await self._dial(url)
                    except Exception as exc:
                        log.info("commy client: reconnecting to %s failed: %s", url, exc or type(exc).__name__)
                        continue
                    self._install(ws, url)
                    try:
                        if self.on_restore is not None:
                            await self.on_restore()
                    except (ConnectionLostError, RequestTimeoutError) as exc:
                        log.info("commy client: restoring the session on %s failed: %s", url, exc)
                        self._discard(ws)
                        continue
                    except Exception:
                        log.exception("commy client: restoring the session after reconnecting failed")
                    if self._ws is ws:
                        self._backoff.reset()
                        log.info("commy client: reconnected to %s", url)
                        return
        finally:
            self._reconnecting = False
            self._stable.set()

    async def migrate(self, target_url: str, ack: Message) -> None:
        """The server asked us to move: acknowledge, then reconnect with `target_url` tried first --
        if it uses the scheme of the URL we are on: a server must not talk us from wss:// down to
        ws://, where the token would cross the network in clear."""
        if target_url.partition("://")[0] == (self.url or "").partition("://")[0]:
            self._preferred = target_url
        else:
            log.warning("commy client: ignoring a move to %s (not the scheme of %s)", target_url, self.url)
        ws = self._ws
        if ws is None:
            return
        await self.send_oneway(ack)
        with contextlib.suppress(Exception):
            await ws.close()

    async def abort(self) -> None:
        """Drop the connection as if the network failed (tests and diagnostics)."""
        ws = self._ws
        if ws is not None:
            ws.transport.abort()

    # ---- heartbeats and tasks

    async def _heartbeats(self, ws: ClientConnection) -> None:
        while self._ws is ws:
            await asyncio.sleep(self.heartbeat)
            if self._ws is not ws:
                return
            started = time.monotonic()
            try:
                reply = await self.request(Heartbeat(time.time()), restoring=True)
            except RequestTimeoutError:
                log.warning("commy client: no heartbeat ack from %s in %g s; dropping the connection",
                            self.url, self.timeout)
                ws.transport.abort()
                return
            except ConnectionLostError:
                return
            except CommyClientError as exc:
                log.warning("commy client: heartbeat refused: %s", exc)
                continue
            if type(reply) is HeartbeatAck:
                self.rtt = time.monotonic() - started

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _expire(fut: asyncio.Future[Message], msg: Message, wait: float) -> None:
    if not fut.done():
        fut.set_exception(RequestTimeoutError(detail=f"no reply to {type(msg).__name__} within {wait:g} s"))

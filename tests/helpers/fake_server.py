"""A small in-process commy server speaking the client protocol, for the SDK's unit tests.

It is not the real hub: one dict per service, permissive rules, and knobs a test turns to provoke
what it wants to see -- `ignore` (request types left unanswered), `hold` (an event every reply
waits for), `drop_all()` (abort every connection), `push()` (send an event), `change()` (a change
made "elsewhere", broadcast to subscribers), `map_path` (the file MapService hands out; refused
with `forbidden` when None). Every request is recorded in `received` as (connection number,
message). It answers in the form of the frame it got: binary for binary, text for text.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from commy.client_codec import FrameError, server_codec
from commy.messages import (
    AdminDone,
    ApiKeyCreated,
    Authenticate,
    AuthenticationResponse,
    CheckPermission,
    CreateApiKey,
    CreateService,
    CreateTenant,
    DeleteService,
    DeleteTenant,
    Error,
    GetVariables,
    GrantPermission,
    Heartbeat,
    HeartbeatAck,
    ListServices,
    ListTenants,
    Logout,
    LogoutResponse,
    MapService,
    Message,
    PermissionResponse,
    RefreshToken,
    RevokeApiKey,
    RevokePermission,
    ServiceList,
    ServiceMapped,
    ServiceUnmapped,
    SetVariables,
    Subscribe,
    SubscriptionAck,
    TenantList,
    TokenRefreshResponse,
    UnmapService,
    Unsubscribe,
    UnsubscribeAck,
    VariableChanged,
    VariablesData,
    VariablesUpdated,
    VariableValue,
    VariableVersion,
)

PERMS = ("subscribe", "variable_read", "variable_write")
NO_REPLY = {"MigrationAck", "ClientMigrationAck"}


@dataclass
class FakeConn:
    number: int
    ws: ServerConnection
    text: bool = False
    sessions: dict[str, str] = field(default_factory=dict)  # tenant -> client id
    subs: dict[tuple[str, str], set[str] | None] = field(default_factory=dict)


class FakeServer:
    def __init__(self, keys: dict[str, str] | None = None, perms: tuple[str, ...] = PERMS, port: int = 0) -> None:
        self.port = port
        self.keys = dict(keys or {"key-alice": "alice"})  # api key -> client id
        self.perms = perms
        self.tokens: dict[str, str] = {}
        self.revoked: set[str] = set()
        self.data: dict[tuple[str, str], dict[str, VariableValue]] = {}
        self.tenants: set[str] = {"acme"}
        self.conns: list[FakeConn] = []
        self.received: list[tuple[int, Message]] = []
        self.ignore: set[type[Message]] = set()
        self.hold: asyncio.Event | None = None
        self.map_path: str | None = None
        self.map_writer = 1
        self.handlers: dict[type[Message], Callable[[FakeConn, Any], Message | None]] = {}
        self._codec = server_codec()
        self._numbers = itertools.count(1)
        self._server: Server | None = None
        self.url = ""

    async def __aenter__(self) -> FakeServer:
        self._server = await serve(self._serve, "127.0.0.1", self.port, compression=None)
        port = self._server.sockets[0].getsockname()[1] if self._server.sockets else 0
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # ---- knobs

    def requests(self, kind: type[Message]) -> list[Any]:
        return [m for _, m in self.received if type(m) is kind]

    async def drop_all(self) -> None:
        """Abort every open connection, as a network failure would."""
        for conn in list(self.conns):
            conn.ws.transport.abort()

    async def push(self, event: Message, conn: FakeConn | None = None) -> None:
        for c in [conn] if conn is not None else list(self.conns):
            await self._send(c, 0, event)

    async def change(self, tenant: str, service: str, name: str, value: bytes, by: str = "elsewhere") -> int:
        return await self._write(tenant, service, name, value, by)

    # ---- serving

    async def _serve(self, ws: ServerConnection) -> None:
        conn = FakeConn(next(self._numbers), ws)
        self.conns.append(conn)
        try:
            async for frame in ws:
                conn.text = isinstance(frame, str)
                try:
                    rid, msg = self._codec.decode_text(frame) if conn.text else self._codec.decode_binary(frame)  # type: ignore[arg-type]
                except FrameError as exc:
                    await self._send(conn, exc.request_id, Error(exc.code, exc.detail))
                    continue
                self.received.append((conn.number, msg))
                if type(msg) in self.ignore or type(msg).__name__ in NO_REPLY:
                    continue
                if self.hold is not None:
                    await self.hold.wait()
                try:
                    reply = await self._answer(conn, msg)
                except _Refused as exc:
                    reply = Error(exc.code, exc.detail)
                if reply is not None:
                    await self._send(conn, rid, reply)
        except ConnectionClosed:
            pass
        finally:
            self.conns.remove(conn)

    async def _send(self, conn: FakeConn, rid: int, msg: Message) -> None:
        frame = self._codec.encode_text(rid, msg) if conn.text else self._codec.encode_binary(rid, msg)
        try:
            await conn.ws.send(frame)
        except ConnectionClosed:
            pass

    def _session(self, conn: FakeConn, tenant: str) -> str:
        client = conn.sessions.get(tenant)
        if client is None:
            raise _Refused("unauthenticated", f"not authenticated on tenant {tenant!r}")
        return client

    async def _write(self, tenant: str, service: str, name: str, value: bytes, by: str) -> int:
        values = self.data.setdefault((tenant, service), {})
        old = values.get(name)
        version = (old.version if old else 0) + 1
        values[name] = VariableValue(name, value, version, by)
        change = VariableChanged(tenant, service, name, value, version, by)
        for c in list(self.conns):
            names = c.subs.get((tenant, service), set())
            if names is None or name in names:
                await self._send(c, 0, change)
        return version

    async def _answer(self, conn: FakeConn, msg: Any) -> Message | None:
        custom = self.handlers.get(type(msg))
        if custom is not None:
            return custom(conn, msg)
        kind = type(msg)
        if kind is Authenticate:
            client = self.keys.get(msg.credential) if msg.method == "api_key" else (
                self.tokens.get(msg.credential) if msg.credential not in self.revoked else None)
            if client is None or (msg.tenant and msg.tenant not in self.tenants):
                raise _Refused("unauthenticated", "authentication failed: unknown tenant or bad credentials")
            token = f"tok-{client}-{len(self.tokens) + 1}"
            self.tokens[token] = client
            conn.sessions[msg.tenant] = client
            return AuthenticationResponse(msg.tenant, f"s{conn.number}", client, token, time.time() + 3600,
                                          self.perms)
        if kind is Heartbeat:
            return HeartbeatAck(msg.sent_at, time.time())
        if kind is Logout:
            self._session(conn, msg.tenant)
            del conn.sessions[msg.tenant]
            conn.subs = {k: v for k, v in conn.subs.items() if k[0] != msg.tenant}
            return LogoutResponse(msg.tenant)
        if kind is RefreshToken:
            client = self.tokens.get(msg.token)
            if client is None or msg.token in self.revoked:
                raise _Refused("unauthenticated", "token revoked")
            self.revoked.add(msg.token)
            token = f"tok-{client}-{len(self.tokens) + 1}"
            self.tokens[token] = client
            return TokenRefreshResponse(token, time.time() + 3600)
        if kind is CheckPermission:
            self._session(conn, msg.tenant)
            return PermissionResponse(msg.tenant, msg.service, msg.permission, msg.permission in ("read", "write"))
        if kind is GetVariables:
            self._session(conn, msg.tenant)
            values = self.data.get((msg.tenant, msg.service), {})
            names = msg.names or tuple(values)
            return VariablesData(msg.tenant, msg.service, tuple(values[n] for n in names if n in values))
        if kind is SetVariables:
            client = self._session(conn, msg.tenant)
            versions = [VariableVersion(nv.name, await self._write(msg.tenant, msg.service, nv.name, nv.value,
                                                                   client)) for nv in msg.variables]
            return VariablesUpdated(msg.tenant, msg.service, tuple(versions))
        if kind is Subscribe:
            self._session(conn, msg.tenant)
            key = (msg.tenant, msg.service)
            current = conn.subs.get(key, set())
            if not msg.names:
                conn.subs[key] = None
            elif current is not None:
                conn.subs[key] = current | set(msg.names)
            values = self.data.get(key, {})
            names = msg.names or tuple(values)
            return SubscriptionAck(msg.tenant, msg.service, msg.names,
                                   tuple(values[n] for n in names if n in values))
        if kind is Unsubscribe:
            key = (msg.tenant, msg.service)
            current = conn.subs.get(key, set())
            if not msg.names or current is None:
                conn.subs.pop(key, None)
            else:
                conn.subs[key] = current - set(msg.names)
            return UnsubscribeAck(msg.tenant, msg.service, msg.names)
        if kind is MapService:
            self._session(conn, msg.tenant)
            if self.map_path is None:
                raise _Refused("forbidden", "local mapping is only for clients on the server's own machine")
            return ServiceMapped(msg.tenant, msg.service, self.map_path, self.map_writer)
        if kind is UnmapService:
            return ServiceUnmapped(msg.tenant, msg.service)
        return self._admin(conn, msg)

    def _admin(self, conn: FakeConn, msg: Any) -> Message:
        if not conn.sessions:
            raise _Refused("unauthenticated", "not authenticated: send Authenticate first")
        kind = type(msg)
        if kind is CreateTenant:
            self.tenants.add(msg.tenant)
            return AdminDone("create_tenant", msg.tenant)
        if kind is DeleteTenant:
            if msg.tenant not in self.tenants:
                raise _Refused("not_found", f"tenant {msg.tenant!r} not found")
            self.tenants.discard(msg.tenant)
            return AdminDone("delete_tenant", msg.tenant)
        if kind in (CreateService, DeleteService, GrantPermission, RevokePermission, RevokeApiKey):
            return AdminDone(kind.__name__, repr(msg))
        if kind is CreateApiKey:
            key = f"ck_{msg.client_id}_{len(self.keys)}"
            self.keys[key] = msg.client_id
            return ApiKeyCreated(f"k{len(self.keys)}", key, msg.client_id)
        if kind is ListTenants:
            return TenantList(tuple(sorted(self.tenants)))
        if kind is ListServices:
            return ServiceList(msg.tenant, tuple(sorted(s for t, s in self.data if t == msg.tenant)))
        raise _Refused("bad_request", f"the fake server does not do {kind.__name__}")


class _Refused(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


def arun(coro: Any, timeout: float = 20.0) -> Any:
    """Run a test coroutine on a fresh loop, bounded by `timeout` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


class ThreadedFakeServer:
    """A `FakeServer` on its own loop thread, for blocking clients: `with ThreadedFakeServer() as srv`.
    `srv.call(coro_fn)` runs `coro_fn(fake)` on the server's loop and returns its result."""

    def __init__(self, **kwargs: Any) -> None:
        import threading

        self.fake = FakeServer(**kwargs)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-commy-server", daemon=True)

    def __enter__(self) -> ThreadedFakeServer:
        self.thread.start()
        self.call(lambda f: f.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(lambda f: f.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()

    @property
    def url(self) -> str:
        return self.fake.url

    def call(self, fn: Callable[[FakeServer], Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(self.fake), self.loop).result(timeout)

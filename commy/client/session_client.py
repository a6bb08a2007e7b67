"""`SessionClient`: a client's connection and its sessions, one per tenant, with their tokens.

The base of `AsyncClient` (`commy.client.aio`). It holds the `Connection`, the open sessions by
tenant (`""` is the server-wide admin session), the credential each was opened with, the mapped
services' `LocalState`s and the subscriptions by (tenant, service). `authenticate` opens a session
with exactly one kind of credential; its token is refreshed in the background when 80% of its
life is over (the expiry is on the server's clock, which a heartbeat reads). `logout`, and a
revocation, end a tenant: its mappings close and its subscriptions end. `close` ends everything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from commy.client.connection import Connection
from commy.client.local import LocalState, Service
from commy.client.types import (
    CommyClientError,
    NotLocalError,
    PermissionRevokedError,
    Session,
    Subscription,
    UnauthenticatedError,
)
from commy.messages import (
    Authenticate,
    AuthenticationResponse,
    Heartbeat,
    HeartbeatAck,
    Logout,
    LogoutResponse,
    Message,
    RefreshToken,
    TokenRefreshResponse,
)

log = logging.getLogger("commy.client")
R = TypeVar("R", bound=Message)


class SessionClient:
    """A client's connection, sessions and tokens, and what it maps and follows; `AsyncClient`
    builds on it."""

    def __init__(self, conn: Connection, refresh_tokens: bool) -> None:
        self._conn = conn
        self.refresh_tokens = refresh_tokens
        self._sessions: dict[str, Session] = {}
        self._credentials: dict[str, tuple[str, str]] = {}
        self._refreshers: dict[str, asyncio.Task[None]] = {}
        self._local: dict[tuple[str, str], LocalState] = {}
        self._services: dict[tuple[str, str, bool | None], Service] = {}
        self._subs: dict[tuple[str, str], list[Subscription]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def connection(self) -> Connection:
        return self._conn

    @property
    def sessions(self) -> dict[str, Session]:
        """The open sessions by tenant (a copy)."""
        return dict(self._sessions)

    def session(self, tenant: str) -> Session | None:
        return self._sessions.get(tenant)

    @property
    def _server(self) -> str:
        """The server the connection is on now: versions are only comparable within one server."""
        return self._conn.url or ""

    async def close(self) -> None:
        """Close the connection and end every subscription and mapping (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for handle in self._refreshers.values():
            handle.cancel()
        self._refreshers.clear()
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub._end(None)
        for state in self._local.values():
            state.close(NotLocalError(detail="the client is closed"))
        await self._conn.close()
        others = [t for t in self._tasks if t is not asyncio.current_task()]
        if others:  # callback pumps deliver what was queued and call on_end; then the rest is cut short
            _, late = await asyncio.wait(others, timeout=1.0)
            for task in late:
                task.cancel()

    # ---- plumbing

    async def _call(self, msg: Message, reply_type: type[R], idempotent: bool = False) -> R:
        reply = await self._conn.request(msg, idempotent=idempotent)
        if not isinstance(reply, reply_type):
            raise CommyClientError("bad_reply", f"{type(msg).__name__} answered with {type(reply).__name__}")
        return reply

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _local_state(self, tenant: str, service: str) -> LocalState:
        state = self._local.get((tenant, service))
        if state is None:
            state = self._local[(tenant, service)] = LocalState(tenant, service)
        return state

    # ---- sessions

    async def authenticate(self, tenant: str, *, api_key: str | None = None, token: str | None = None,
                           delegated: str | None = None) -> Session:
        """Open (or reopen) the session on `tenant` with exactly one kind of credential."""
        given = [(m, c) for m, c in (("api_key", api_key), ("token", token), ("delegated", delegated))
                 if c is not None]
        if len(given) != 1:
            raise ValueError("authenticate needs exactly one of api_key=, token= or delegated=")
        method, credential = given[0]
        session = await self._authenticate(tenant, method, credential)
        self._credentials[tenant] = (method, credential)
        for (t, _), state in self._local.items():
            if t == tenant:
                state.reset()
        return session

    async def _authenticate(self, tenant: str, method: str, credential: str, restoring: bool = False) -> Session:
        reply = await self._conn.request(Authenticate(tenant, method, credential), restoring=restoring)
        if not isinstance(reply, AuthenticationResponse):
            raise CommyClientError("bad_reply", f"Authenticate answered with {type(reply).__name__}")
        session = Session(reply.tenant, reply.session_id, reply.client_id, reply.token, reply.expires_at,
                          tuple(reply.permissions))
        self._sessions[tenant] = session
        self._schedule_refresh(session)
        return session

    def _schedule_refresh(self, session: Session) -> None:
        tenant = session.tenant
        old = self._refreshers.pop(tenant, None)
        if old is not None and old is not asyncio.current_task():
            old.cancel()
        if self.refresh_tokens and not self._closed:
            task = self._refreshers[tenant] = asyncio.ensure_future(self._refresh_later(session))

            def done(t: asyncio.Task[None]) -> None:
                if self._refreshers.get(tenant) is t:
                    del self._refreshers[tenant]
            task.add_done_callback(done)

    async def _refresh_later(self, session: Session) -> None:
        """Refresh the token when 80% of its life is over. `expires_at` is on the server's clock,
        which a heartbeat reads."""
        while True:
            try:
                ack = await self._call(Heartbeat(time.time()), HeartbeatAck)
                await asyncio.sleep(max(1.0, (session.expires_at - ack.server_time) * 0.8))
                await self.refresh(session.tenant)
                return
            except PermissionRevokedError:
                return
            except CommyClientError as exc:
                log.warning("commy client: refreshing the token on %r: %s", session.tenant, exc)
                await asyncio.sleep(min(60.0, max(1.0, self._conn.timeout)))

    async def refresh(self, tenant: str) -> Session:
        """Trade the session's token for a new one (the old one is revoked)."""
        session = self._require_session(tenant)
        reply = await self._call(RefreshToken(session.token), TokenRefreshResponse)
        current = self._sessions.get(tenant)
        if current is None:
            raise PermissionRevokedError(detail=f"the session on {tenant!r} ended", tenant=tenant)
        new = Session(current.tenant, current.session_id, current.client_id, reply.token, reply.expires_at,
                      current.permissions)
        self._sessions[tenant] = new
        if self._credentials.get(tenant, ("", ""))[0] == "token":
            self._credentials[tenant] = ("token", reply.token)
        self._schedule_refresh(new)
        return new

    async def logout(self, tenant: str) -> None:
        """Close the session on `tenant` (its token is revoked); its subscriptions end."""
        self._require_session(tenant)
        await self._call(Logout(tenant), LogoutResponse)
        self._end_tenant(tenant, None)

    def _require_session(self, tenant: str) -> Session:
        session = self._sessions.get(tenant)
        if session is None:
            raise UnauthenticatedError(detail=f"no session on tenant {tenant!r}: authenticate first")
        return session

    def _end_tenant(self, tenant: str, error: CommyClientError | None) -> None:
        self._sessions.pop(tenant, None)
        self._credentials.pop(tenant, None)
        handle = self._refreshers.pop(tenant, None)
        if handle is not None:
            handle.cancel()
        reason = error or NotLocalError(detail=f"logged out of tenant {tenant!r}")
        for (t, _), state in self._local.items():
            if t == tenant:
                state.close(reason)
                if error is None:
                    state.retry = True
        for (t, _), subs in list(self._subs.items()):
            if t == tenant:
                for sub in list(subs):
                    sub._end(error)

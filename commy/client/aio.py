"""`AsyncClient`: sessions, services, subscriptions and administration over one `Connection`.

A client holds one session per tenant it authenticated on (`""` is the server-wide admin
session), each with its token; tokens are refreshed before they expire. `client.service(tenant,
name)` returns a `Service` handle (`commy.client.local`): reads and writes go to the mapped file
when the service is mapped and over the WebSocket otherwise. Subscriptions (`Subscription`,
in `commy.client.types`) receive the `VariableChanged` events routed here by (tenant, service).

Reconnection (`Connection.on_restore`, after a drop or a `ClientMigration`, on the same server or
the next of the URLs given): each session is resumed first -- `Resume(session id, its token, what
its subscriptions last delivered of each variable: version and stamp)` -- and the server, any node
of the cluster, reopens it under the same id with its subscriptions and answers with every
followed variable that changed since, in stamp order; each is delivered if newer than what the
subscription already delivered, then the events held meanwhile, so an iterator simply goes on and
never sees a change twice or out of stamp order. If the server refuses (an older server, a token
revoked meanwhile, a tenant no longer readable), the tenant is authenticated again with its token
(or, if that is refused, with the credential first given) and every subscription renewed and
compared with the state the server sends back (`SubscriptionAck.current`). Mapped services are
asked for again and follow a new path or writer slot. A tenant that cannot be re-authenticated
ends like a revocation: its subscriptions raise `PermissionRevokedError`.

Events: `PermissionRevoked` ends the tenant's session, closes its mappings and ends its
subscriptions with `PermissionRevokedError`; `FileMigration` remaps and acknowledges;
`ClientMigration` acknowledges and reconnects with the target URL first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_lib
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from commy.client.connection import Connection
from commy.client.local import LocalState, Service
from commy.client.resume import resume
from commy.client.types import (
    CommyClientError,
    ConnectionLostError,
    NotLocalError,
    PermissionRevokedError,
    RequestTimeoutError,
    Session,
    Subscription,
    UnauthenticatedError,
)
from commy.messages import (
    AdminDone,
    ApiKeyCreated,
    Authenticate,
    AuthenticationResponse,
    CheckPermission,
    ClientMigration,
    ClientMigrationAck,
    CreateApiKey,
    CreateService,
    CreateTenant,
    DeleteService,
    DeleteTenant,
    DrainNode,
    FileMigration,
    GrantPermission,
    Heartbeat,
    HeartbeatAck,
    ListServices,
    ListTenants,
    Logout,
    LogoutResponse,
    Message,
    MigrationAck,
    PermissionResponse,
    PermissionRevoked,
    RefreshToken,
    RevokeApiKey,
    RevokePermission,
    ServiceList,
    ServiceUnmapped,
    SetAuthHook,
    Subscribe,
    SubscriptionAck,
    TenantList,
    TokenRefreshResponse,
    UnmapService,
    Unsubscribe,
    UnsubscribeAck,
    VariableChanged,
)
from commy.messages.client import SERVER

log = logging.getLogger("commy.client")
R = TypeVar("R", bound=Message)


class _Connecting:
    """What `AsyncClient.connect` returns: await it, or use it as `async with`."""

    def __init__(self, coro: Callable[[], Awaitable[AsyncClient]]) -> None:
        self._coro = coro
        self._client: AsyncClient | None = None

    def __await__(self) -> Generator[Any, None, AsyncClient]:
        return self._coro().__await__()

    async def __aenter__(self) -> AsyncClient:
        self._client = await self._coro()
        return self._client

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._client is not None:
            await self._client.close()


class AsyncClient:
    """A commy client on an asyncio loop. Create it with `await AsyncClient.connect(url)`."""

    def __init__(self, urls: Sequence[str], *, ssl: ssl_lib.SSLContext | None = None, text: bool = False,
                 reconnect: bool = True, heartbeat: float = 15.0, timeout: float = 10.0,
                 backoff: tuple[float, float] = (0.05, 5.0), refresh_tokens: bool = True) -> None:
        self._conn = Connection(urls, ssl=ssl, text=text, reconnect=reconnect, heartbeat=heartbeat,
                                timeout=timeout, backoff=backoff, on_event=self._on_event,
                                on_restore=self._restore, on_lost=self._on_lost)
        self.refresh_tokens = refresh_tokens
        self._sessions: dict[str, Session] = {}
        self._credentials: dict[str, tuple[str, str]] = {}
        self._refreshers: dict[str, asyncio.Task[None]] = {}
        self._local: dict[tuple[str, str], LocalState] = {}
        self._services: dict[tuple[str, str, bool | None], Service] = {}
        self._subs: dict[tuple[str, str], list[Subscription]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    @classmethod
    def connect(cls, url: str | Sequence[str], *, ssl: ssl_lib.SSLContext | None = None, text: bool = False,
                reconnect: bool = True, heartbeat: float = 15.0, timeout: float = 10.0,
                backoff: tuple[float, float] = (0.05, 5.0), refresh_tokens: bool = True) -> _Connecting:
        """Connect to `url` (or the first of several URLs that answers). `text=True` speaks JSON
        text frames; `heartbeat` seconds between heartbeats (0: none); `timeout` per request."""
        urls = [url] if isinstance(url, str) else list(url)

        async def make() -> AsyncClient:
            client = cls(urls, ssl=ssl, text=text, reconnect=reconnect, heartbeat=heartbeat, timeout=timeout,
                         backoff=backoff, refresh_tokens=refresh_tokens)
            await client._conn.open()
            return client
        return _Connecting(make)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

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

    # ---- services

    def service(self, tenant: str, service: str, *, local: bool | None = None) -> Service:
        """A handle on `tenant/service`. `local=None`: map the file when the server allows it and
        work remotely otherwise; True: require the mapping (`NotLocalError` or the server's refusal
        is raised); False: always remote."""
        key = (tenant, service, local)
        handle = self._services.get(key)
        if handle is None:
            handle = self._services[key] = Service(self, tenant, service, local)
        return handle

    async def _unmap(self, tenant: str, service: str) -> None:
        state = self._local.get((tenant, service))
        if state is None or state.mapping is None:
            return
        state.close(NotLocalError(detail=f"{tenant}/{service} was unmapped"))
        with contextlib.suppress(CommyClientError):
            await self._call(UnmapService(tenant, service), ServiceUnmapped)

    # ---- subscriptions (called by Subscription)

    async def _subscribe(self, sub: Subscription) -> None:
        key = (sub.tenant, sub.service)
        sub._hold()
        self._subs.setdefault(key, []).append(sub)
        try:
            ack = await self._call(Subscribe(sub.tenant, sub.service, sub.names), SubscriptionAck, True)
        except BaseException:
            self._forget(sub)
            raise
        sub._catch_up(ack.current, first=True)

    def _forget(self, sub: Subscription) -> None:
        key = (sub.tenant, sub.service)
        subs = self._subs.get(key)
        if subs is not None and sub in subs:
            subs.remove(sub)
            if not subs:
                del self._subs[key]

    async def _unsubscribe(self, sub: Subscription) -> None:
        key = (sub.tenant, sub.service)
        before = _union(self._subs.get(key, []))
        self._forget(sub)
        rest = self._subs.get(key, [])
        after = _union(rest) if rest else frozenset()
        if after == before or sub.tenant not in self._sessions or not self._conn.connected:
            return
        t, s = key
        try:
            if after is not None and not after:
                await self._call(Unsubscribe(t, s, ()), UnsubscribeAck)
            elif before is None:  # the server ends a whole-service subscription whole: renew the rest
                await self._call(Unsubscribe(t, s, ()), UnsubscribeAck)
                assert after is not None
                for other in rest:
                    other._hold()
                ack = await self._call(Subscribe(t, s, tuple(sorted(after))), SubscriptionAck)
                for other in rest:
                    other._catch_up(ack.current)
            else:
                assert after is not None
                await self._call(Unsubscribe(t, s, tuple(sorted(before - after))), UnsubscribeAck)
        except CommyClientError as exc:
            log.debug("commy client: unsubscribing %s/%s: %s", t, s, exc)

    # ---- events and reconnection

    def _on_event(self, msg: Message) -> None:
        kind = type(msg)
        if kind is VariableChanged:
            subs = self._subs.get((msg.tenant, msg.service))  # type: ignore[attr-defined]
            if subs:
                for sub in subs:
                    sub._offer(msg)  # type: ignore[arg-type]
        elif kind is PermissionRevoked:
            assert isinstance(msg, PermissionRevoked)
            log.warning("commy client: access to tenant %r revoked: %s", msg.tenant, msg.reason)
            self._end_tenant(msg.tenant, PermissionRevokedError(detail=msg.reason, tenant=msg.tenant))
        elif kind is FileMigration:
            assert isinstance(msg, FileMigration)
            state = self._local.get((msg.tenant, msg.service))
            if state is not None:
                state.migrate(msg.path)
            self._spawn(self._conn.send_oneway(MigrationAck(msg.tenant, msg.service, msg.path)))
        elif kind is ClientMigration:
            assert isinstance(msg, ClientMigration)
            log.info("commy client: server asks us to move to %s (%s)", msg.target_url, msg.reason.value)
            self._spawn(self._conn.migrate(msg.target_url, ClientMigrationAck(msg.session_id, True, "")))

    def _on_lost(self, exc: ConnectionLostError) -> None:
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub._end(exc)
        for state in self._local.values():
            state.close(exc)

    async def _restore(self) -> None:
        """After a reconnect: resume each session (else log in again and resubscribe), then remap."""
        request = self._conn.request
        for tenant, session in list(self._sessions.items()):
            if self._sessions.get(tenant) is not session:
                continue  # ended (or replaced) while an earlier tenant was being restored
            subs = [x for (t, _), group in list(self._subs.items()) if t == tenant for x in group if x.active]
            for sub in subs:
                sub._hold()
            if await resume(self, tenant, session, subs):
                continue
            try:
                await self._reauthenticate(tenant, session)
            except (ConnectionLostError, RequestTimeoutError):
                raise
            except CommyClientError as exc:
                self._end_tenant(tenant, PermissionRevokedError(
                    detail=f"could not authenticate again after reconnecting: {exc}", tenant=tenant))
                continue
            await self._resubscribe(subs)
        await self._resubscribe([x for (t, _), group in list(self._subs.items()) if t not in self._sessions
                                 for x in group if x.active])
        for (t, _), state in list(self._local.items()):
            current = self._sessions.get(t)
            if current is not None:
                await state.restore(lambda m: request(m, restoring=True), current.client_id,
                                    current.allows("variable_write"))

    async def _resubscribe(self, subs: list[Subscription]) -> None:
        for sub in subs:
            if sub.ended:
                continue
            sub._hold()
            try:
                ack = await self._conn.request(Subscribe(sub.tenant, sub.service, sub.names), restoring=True)
            except (ConnectionLostError, RequestTimeoutError):
                raise
            except CommyClientError as exc:
                sub._end(exc)
                continue
            if isinstance(ack, SubscriptionAck):
                sub._catch_up(ack.current)

    async def _reauthenticate(self, tenant: str, session: Session) -> None:
        try:
            await self._authenticate(tenant, "token", session.token, restoring=True)
            return
        except (ConnectionLostError, RequestTimeoutError):
            raise
        except CommyClientError as exc:
            method, credential = self._credentials.get(tenant, ("token", session.token))
            if method == "token":
                raise
            log.info("commy client: token refused on %r (%s); using the original credential", tenant, exc)
        await self._authenticate(tenant, method, credential, restoring=True)

    # ---- administration

    async def create_tenant(self, tenant: str) -> None:
        await self._call(CreateTenant(tenant), AdminDone)

    async def set_auth_hook(self, tenant: str, hook: str) -> None:
        """Delegate the tenant's `delegated` logins to the server's auth hook `hook` ("" stops it)."""
        await self._call(SetAuthHook(tenant, hook), AdminDone)

    async def drain(self, node_id: str) -> str:
        """Ask the cluster to move every client off node `node_id` and retire it (a server admin's
        call, served by any node); returns what the server says it started."""
        done = await self._call(DrainNode(node_id), AdminDone)
        return done.detail

    async def delete_tenant(self, tenant: str) -> None:
        await self._call(DeleteTenant(tenant), AdminDone)

    async def create_service(self, tenant: str, service: str) -> None:
        await self._tenant_call(tenant, CreateService(tenant, service), AdminDone)

    async def delete_service(self, tenant: str, service: str) -> None:
        await self._tenant_call(tenant, DeleteService(tenant, service), AdminDone)

    async def _tenant_call(self, tenant: str, msg: Message, reply_type: type[R], idempotent: bool = False) -> R:
        """A request that needs a session on `tenant`: a server admin without one gets it opened
        with the credential of its server session, once, and the request is sent again."""
        try:
            return await self._call(msg, reply_type, idempotent)
        except UnauthenticatedError:
            server = self._credentials.get(SERVER)
            if tenant in self._sessions or server is None:
                raise
        await self.authenticate(tenant, **{server[0]: server[1]})
        return await self._call(msg, reply_type, idempotent)

    async def grant(self, tenant: str, client_id: str, scopes: Iterable[str]) -> None:
        """Grant scopes (`read`, `write`, `admin`, `service:read`, ...) on `tenant` to `client_id`."""
        await self._call(GrantPermission(tenant, client_id, tuple(scopes)), AdminDone)

    async def revoke(self, tenant: str, client_id: str, scopes: Iterable[str] = ()) -> None:
        """Revoke scopes (none: everything) on `tenant` from `client_id`."""
        await self._call(RevokePermission(tenant, client_id, tuple(scopes)), AdminDone)

    async def create_api_key(self, client_id: str, *, server_admin: bool = False, tenant: str = "",
                             scopes: Iterable[str] = ()) -> tuple[str, str]:
        """A new API key for `client_id`: returns (key_id, key); the key is shown only this once."""
        reply = await self._call(CreateApiKey(client_id, server_admin, tenant, tuple(scopes)), ApiKeyCreated)
        return reply.key_id, reply.key

    async def revoke_api_key(self, key_id: str) -> None:
        await self._call(RevokeApiKey(key_id), AdminDone)

    async def list_tenants(self) -> list[str]:
        return list((await self._call(ListTenants(), TenantList, True)).tenants)

    async def list_services(self, tenant: str) -> list[str]:
        return list((await self._tenant_call(tenant, ListServices(tenant), ServiceList, True)).services)

    async def check_permission(self, tenant: str, service: str, permission: str) -> bool:
        reply = await self._call(CheckPermission(tenant, service, permission), PermissionResponse, True)
        return reply.allowed


def _union(subs: Iterable[Subscription]) -> frozenset[str] | None:
    """The names a set of subscriptions needs from the server; None for the whole service."""
    names: set[str] = set()
    for sub in subs:
        if not sub.names:
            return None
        names.update(sub.names)
    return frozenset(names)

"""`AsyncClient`: sessions, services, subscriptions and administration over one `Connection`.

A client holds one session per tenant it authenticated on (`""` is the server-wide admin
session), each with its token; tokens are refreshed before they expire (`SessionClient`, in
`commy.client.session_client`). `client.service(tenant, name)` returns a `Service` handle
(`commy.client.local`): reads and writes go to the mapped file when the service is mapped and over
the WebSocket otherwise. Subscriptions, the server's events (revocation, file and client
migration) and reconnection -- resuming each session, else logging in again and resubscribing --
are `EventClient`'s (`commy.client.event_client`). The administration calls are here: each is one
request answered by `AdminDone` or its own reply.
"""

from __future__ import annotations

import contextlib
import ssl as ssl_lib
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from commy.client.connection import Connection
from commy.client.event_client import EventClient
from commy.client.local import Service
from commy.client.types import CommyClientError, NotLocalError, UnauthenticatedError
from commy.messages import (
    AdminDone,
    ApiKeyCreated,
    CheckPermission,
    CreateApiKey,
    CreateService,
    CreateTenant,
    DeleteService,
    DeleteTenant,
    DrainNode,
    GrantPermission,
    ListServices,
    ListTenants,
    Message,
    PermissionResponse,
    RevokeApiKey,
    RevokePermission,
    ServiceList,
    ServiceUnmapped,
    SetAuthHook,
    TenantList,
    UnmapService,
)
from commy.messages.client import SERVER

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


class AsyncClient(EventClient):
    """A commy client on an asyncio loop. Create it with `await AsyncClient.connect(url)`."""

    def __init__(self, urls: Sequence[str], *, ssl: ssl_lib.SSLContext | None = None, text: bool = False,
                 reconnect: bool = True, heartbeat: float = 15.0, timeout: float = 10.0,
                 backoff: tuple[float, float] = (0.05, 5.0), refresh_tokens: bool = True) -> None:
        conn = Connection(urls, ssl=ssl, text=text, reconnect=reconnect, heartbeat=heartbeat,
                          timeout=timeout, backoff=backoff, on_event=self._on_event,
                          on_restore=self._restore, on_lost=self._on_lost)
        super().__init__(conn, refresh_tokens)

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

"""`Client`: the blocking twin of `AsyncClient`, driving an event loop in a background thread.

`Client.connect(url)` starts a daemon thread running a fresh event loop and builds an
`AsyncClient` on it; every blocking method submits the matching coroutine to that loop and waits
for its result, so the behaviour (correlation, heartbeats, reconnection, errors) is exactly the
async client's. Mapped services skip the loop altogether: `get`, `set`, `read_local` and
`write_local` on a mapped service are a direct call on the mmap from the caller's thread.

Subscriptions come as blocking iterators (`for change in svc.subscribe(): ...`, fed through a
thread-safe queue) or as callbacks (`svc.on_change(fn)`), which run one at a time, in order, on
one dispatcher thread per client -- never on the loop thread, so a callback may itself call the
client's blocking methods. `close()` ends everything and joins both threads. Calling a blocking
method from the loop thread would deadlock, and raises instead.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import ssl as ssl_lib
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from commy.client.aio import AsyncClient
from commy.client.local import LOCAL_CONCERNS, LocalMapping, Service
from commy.client.types import (
    CommyClientError,
    ConnectionLostError,
    Item,
    Session,
    Subscription,
    SubscriptionEnd,
    SyncTyped,
)
from commy.messages import VariableChanged, VariableValue
from commy.runtime.loop import new_event_loop

log = logging.getLogger("commy.client")
T = TypeVar("T")
SyncCallback = Callable[[VariableChanged], None]
SyncEndCallback = Callable[[CommyClientError | None], None]


class SyncSubscription:
    """A blocking iterator of `VariableChanged` (or the handle of a callback subscription)."""

    def __init__(self, client: Client, items: queue.SimpleQueue[Item] | None) -> None:
        self._client = client
        self._items = items
        self.sub: Subscription | None = None

    def __iter__(self) -> Iterator[VariableChanged]:
        return self

    def __next__(self) -> VariableChanged:
        change = self.get()
        if change is None:
            raise StopIteration
        return change

    def get(self, timeout: float | None = None) -> VariableChanged | None:
        """The next change; None once the subscription ended normally; TimeoutError after `timeout`;
        the ending error (`PermissionRevokedError`, `ConnectionLostError`) if it ended with one."""
        if self._items is None:
            raise TypeError("a callback subscription is not iterable")
        try:
            item = self._items.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no change within {timeout} s") from None
        if type(item) is SubscriptionEnd:
            self._items.put(item)
            if item.error is not None:
                raise item.error
            return None
        return item  # type: ignore[return-value]

    @property
    def ended(self) -> bool:
        return self.sub is None or self.sub.ended

    def cancel(self) -> None:
        if self.sub is not None and not self.sub.ended and not self._client.closed:
            self._client._run(self.sub.cancel())

    def __enter__(self) -> SyncSubscription:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.cancel()


class SyncService(SyncTyped):
    """The blocking twin of `commy.client.aio.Service`."""

    def __init__(self, client: Client, service: Service) -> None:
        self._client = client
        self._svc = service
        self.tenant, self.name, self.local = service.tenant, service.name, service.local

    def __repr__(self) -> str:
        return f"<SyncService {self.tenant}/{self.name} {'local' if self.is_local else 'remote'}>"

    @property
    def is_local(self) -> bool:
        return self._svc.mapping is not None

    @property
    def mapping(self) -> LocalMapping | None:
        """The mapped service file while mapped (its `path`, direct reads and writes), else None."""
        return self._svc.mapping

    def map(self) -> bool:
        return self._client._run(self._svc.map())

    def unmap(self) -> None:
        self._client._run(self._svc.unmap())

    def read_local(self, name: str) -> bytes | None:
        return self._svc.read_local(name)

    def write_local(self, name: str, value: bytes) -> int:
        return self._svc.write_local(name, value)

    def get(self, name: str) -> bytes | None:
        mapping = self._svc.mapping
        if mapping is not None:
            return mapping.read(name)
        return self._client._run(self._svc.get(name))

    def get_entry(self, name: str) -> VariableValue | None:
        return self._client._run(self._svc.get_entry(name))

    def get_many(self, names: Iterable[str] = ()) -> dict[str, VariableValue]:
        return self._client._run(self._svc.get_many(tuple(names)))

    def set(self, name: str, value: bytes, *, concern: str = "") -> int:
        mapping = self._svc.mapping
        if mapping is not None and mapping.writable and concern in LOCAL_CONCERNS:
            return mapping.write(name, value)
        return self._client._run(self._svc.set(name, value, concern=concern))

    def set_many(self, values: Mapping[str, bytes], *, concern: str = "") -> dict[str, int]:
        return self._client._run(self._svc.set_many(dict(values), concern=concern))

    def check(self, permission: str) -> bool:
        return self._client._run(self._svc.check(permission))

    def subscribe(self, names: Iterable[str] = (), *, initial: bool = False) -> SyncSubscription:
        """Subscribe now; iterate the result (blocking) for changes. Use it as a context manager,
        or `cancel()` it, to unsubscribe."""
        items: queue.SimpleQueue[Item] = queue.SimpleQueue()
        handle = SyncSubscription(self._client, items)
        handle.sub = self._client._run(self._start(tuple(names), initial, items.put))
        return handle

    def on_change(self, callback: SyncCallback, names: Iterable[str] = (), *, initial: bool = False,
                  on_end: SyncEndCallback | None = None) -> SyncSubscription:
        """Call `callback(change)` on the client's dispatcher thread for each change, in order;
        `on_end(error_or_None)` when the subscription ends."""
        dispatch = self._client._dispatcher()

        def sink(item: Item) -> None:
            dispatch.put((callback, on_end, item))
        handle = SyncSubscription(self._client, None)
        handle.sub = self._client._run(self._start(tuple(names), initial, sink))
        return handle

    async def _start(self, names: tuple[str, ...], initial: bool, sink: Callable[[Item], None]) -> Subscription:
        sub = Subscription(self._svc.client, self.tenant, self.name, names, initial, sink)
        return await sub.start()


Job = tuple[SyncCallback, SyncEndCallback | None, Item] | None


class Client:
    """A blocking commy client. Create it with `Client.connect(url)`; close it with `close()`."""

    def __init__(self, aclient: AsyncClient, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self._aclient = aclient
        self._loop = loop
        self._thread = thread
        self._services: dict[tuple[str, str, bool | None], SyncService] = {}
        self._jobs: queue.SimpleQueue[Job] | None = None
        self._dispatch_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.closed = False

    @classmethod
    def connect(cls, url: str | Sequence[str], *, ssl: ssl_lib.SSLContext | None = None, text: bool = False,
                reconnect: bool = True, heartbeat: float = 15.0, timeout: float = 10.0,
                backoff: tuple[float, float] = (0.05, 5.0), refresh_tokens: bool = True) -> Client:
        """Connect (see `AsyncClient.connect` for the options) and return a blocking client."""
        loop = new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="commy-client-loop", daemon=True)
        thread.start()

        async def make() -> AsyncClient:
            return await AsyncClient.connect(url, ssl=ssl, text=text, reconnect=reconnect, heartbeat=heartbeat,
                                             timeout=timeout, backoff=backoff, refresh_tokens=refresh_tokens)
        try:
            aclient = asyncio.run_coroutine_threadsafe(make(), loop).result()
        except BaseException:
            _stop_loop(loop, thread)
            raise
        return cls(aclient, loop, thread)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def aio(self) -> AsyncClient:
        """The async client underneath (use it only from its own loop)."""
        return self._aclient

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking commy call from the client's own event loop thread would deadlock")
        if self.closed:
            coro.close()
            raise ConnectionLostError(detail="the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Close the connection, end subscriptions and mappings, and join the client's threads."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        try:
            if threading.current_thread() is not self._thread:
                asyncio.run_coroutine_threadsafe(self._aclient.close(), self._loop).result()
        finally:
            _stop_loop(self._loop, self._thread)
            if self._jobs is not None:
                self._jobs.put(None)
                if self._dispatch_thread is not None and threading.current_thread() is not self._dispatch_thread:
                    self._dispatch_thread.join()

    # ---- callbacks

    def _dispatcher(self) -> queue.SimpleQueue[Job]:
        with self._lock:
            if self._jobs is None:
                self._jobs = queue.SimpleQueue()
                self._dispatch_thread = threading.Thread(target=_dispatch, args=(self._jobs,),
                                                         name="commy-client-callbacks", daemon=True)
                self._dispatch_thread.start()
            return self._jobs

    # ---- sessions and services

    @property
    def sessions(self) -> dict[str, Session]:
        return self._aclient.sessions

    def session(self, tenant: str) -> Session | None:
        return self._aclient.session(tenant)

    def authenticate(self, tenant: str, *, api_key: str | None = None, token: str | None = None,
                     delegated: str | None = None) -> Session:
        return self._run(self._aclient.authenticate(tenant, api_key=api_key, token=token, delegated=delegated))

    def refresh(self, tenant: str) -> Session:
        return self._run(self._aclient.refresh(tenant))

    def logout(self, tenant: str) -> None:
        self._run(self._aclient.logout(tenant))

    def service(self, tenant: str, service: str, *, local: bool | None = None) -> SyncService:
        key = (tenant, service, local)
        handle = self._services.get(key)
        if handle is None:
            handle = self._services[key] = SyncService(self, self._aclient.service(tenant, service, local=local))
        return handle

    # ---- administration

    def create_tenant(self, tenant: str) -> None:
        self._run(self._aclient.create_tenant(tenant))

    def delete_tenant(self, tenant: str) -> None:
        self._run(self._aclient.delete_tenant(tenant))

    def set_auth_hook(self, tenant: str, hook: str) -> None:
        self._run(self._aclient.set_auth_hook(tenant, hook))

    def drain(self, node_id: str) -> str:
        return self._run(self._aclient.drain(node_id))

    def create_service(self, tenant: str, service: str) -> None:
        self._run(self._aclient.create_service(tenant, service))

    def delete_service(self, tenant: str, service: str) -> None:
        self._run(self._aclient.delete_service(tenant, service))

    def grant(self, tenant: str, client_id: str, scopes: Iterable[str]) -> None:
        self._run(self._aclient.grant(tenant, client_id, tuple(scopes)))

    def revoke(self, tenant: str, client_id: str, scopes: Iterable[str] = ()) -> None:
        self._run(self._aclient.revoke(tenant, client_id, tuple(scopes)))

    def create_api_key(self, client_id: str, *, server_admin: bool = False, tenant: str = "",
                       scopes: Iterable[str] = ()) -> tuple[str, str]:
        return self._run(self._aclient.create_api_key(client_id, server_admin=server_admin, tenant=tenant,
                                                      scopes=tuple(scopes)))

    def revoke_api_key(self, key_id: str) -> None:
        self._run(self._aclient.revoke_api_key(key_id))

    def list_tenants(self) -> list[str]:
        return self._run(self._aclient.list_tenants())

    def list_services(self, tenant: str) -> list[str]:
        return self._run(self._aclient.list_services(tenant))

    def check_permission(self, tenant: str, service: str, permission: str) -> bool:
        return self._run(self._aclient.check_permission(tenant, service, permission))


def _dispatch(jobs: queue.SimpleQueue[Job]) -> None:
    while True:
        job = jobs.get()
        if job is None:
            return
        callback, on_end, item = job
        try:
            if type(item) is SubscriptionEnd:
                if on_end is not None:
                    on_end(item.error)
            else:
                callback(item)  # type: ignore[arg-type]
        except Exception:
            log.exception("commy client: subscription callback failed")


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Cancel what is left on the loop, stop it, join its thread and close it."""
    async def drain() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await loop.shutdown_asyncgens()

    if loop.is_running() and thread is not threading.current_thread():
        try:
            asyncio.run_coroutine_threadsafe(drain(), loop).result(timeout=5)
        except Exception:
            log.debug("commy client: draining the loop failed", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
    if not loop.is_running():
        loop.close()

"""`Service` handles, and local mapping: a client on the server's machine uses the file directly.

A `Service` (from `client.service(tenant, name, local=...)`) sends each read and write either to
the mapped file or over the WebSocket: `local=None` maps when the server allows it and stays
remote otherwise, `True` requires the mapping (its refusal is raised), `False` never maps. Writes
with a cluster write concern (`replicated`, `quorum`) always go through the server, and so do the
writes of a session without `variable_write`.

`LocalState` is one client's mapping status for one (tenant, service), shared by every `Service`
handle on it. On first use it asks the server (`MapService`); the reply names the file and a
writer slot, and `LocalMapping` opens the file with `ServiceFile.open(path, writer=slot)`. From
then on reads are a function call on the mmap (a seqlock read, no event loop, no socket) and
writes an OS-locked store into it; the server notices mapped writes within milliseconds and
broadcasts them like any other change (it polls the file, so several writes to one variable
between two polls reach subscribers as the last of them).

A refusal is remembered: `forbidden` (not on the server's machine, or no read permission) keeps
the service remote until the next reconnect or re-authentication; `not_found` until a remote
write may have created the service; `unauthenticated` is retried on next use. A file that cannot
be opened (another machine with the same name, a container boundary) is a refusal too.

`FileMigration` (the server rotated the file after a revocation) opens the new path, swaps it in
under readers' feet and closes the old one; a reader in another thread that raced the close
retries once on the new file. After `PermissionRevoked` or a logout the mapping is closed and any
further local access raises instead of reading a file the client may no longer see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from commy.client.types import (
    AsyncTyped,
    ChangeCallback,
    CommyClientError,
    ConnectionLostError,
    EndCallback,
    NotLocalError,
    PermissionRevokedError,
    RequestTimeoutError,
    Subscription,
)
from commy.messages import (
    GetVariables,
    MapService,
    Message,
    NamedValue,
    ServiceMapped,
    SetVariables,
    UnmapService,
    VariablesData,
    VariablesUpdated,
    VariableValue,
)

if TYPE_CHECKING:
    from commy.client.aio import AsyncClient

log = logging.getLogger("commy.client")

Request = Callable[[Message], Awaitable[Message]]
LOCAL_CONCERNS = ("local", "")


def open_service_file(path: str, writer: int) -> Any:
    """Open a mapped service file (tests substitute this to run without the store)."""
    from commy.store.service_file import ServiceFile

    return ServiceFile.open(path, writer=writer)


class LocalMapping:
    """An open, mapped service file; `file` is swapped as a whole when the file moves."""

    __slots__ = ("client_id", "closed_by", "file", "path", "service", "tenant", "writable", "writer")

    def __init__(self, tenant: str, service: str, path: str, writer: int, client_id: str, writable: bool) -> None:
        self.tenant, self.service, self.path, self.writer = tenant, service, path, writer
        self.client_id = client_id
        self.writable = writable
        self.closed_by: CommyClientError | None = None
        self.file: Any = open_service_file(path, writer)

    def read(self, name: str) -> bytes | None:
        f = self.file
        try:
            value: bytes | None = f.read_value(name)
            return value
        except Exception:
            again = self._again(f)
            if again is None:
                raise
            return again.read_value(name)

    def write(self, name: str, value: bytes) -> int:
        f = self.file
        try:
            version: int = f.write(name, value)
            return version
        except Exception:
            again = self._again(f)
            if again is None:
                raise
            return again.write(name, value)

    def _again(self, failed: Any) -> Any:
        """After `failed` raised: the newer file to retry on, None if it is still current (a real
        error), or the reason the mapping was closed, raised."""
        current = self.file
        if current is None:
            raise self.closed_by or NotLocalError(detail=f"{self.tenant}/{self.service} is no longer mapped")
        return None if current is failed else current

    def entry(self, name: str) -> VariableValue | None:
        got = self.entries((name,))
        return got.get(name)

    def entries(self, names: Iterable[str] = ()) -> dict[str, VariableValue]:
        names = tuple(names)
        f = self.file
        try:
            got = [f.read(n) for n in names] if names else f.entries()
        except Exception:
            f = self._again(f)
            if f is None:
                raise
            got = [f.read(n) for n in names] if names else f.entries()
        return {e.name: self._value(e) for e in got if e is not None}

    def _value(self, e: Any) -> VariableValue:
        return VariableValue(e.name, e.value, e.version, self.client_id if e.writer == self.writer else "")

    def swap(self, path: str, writer: int) -> None:
        """Open `path` and make it the file; then close the old one."""
        new = open_service_file(path, writer)
        old, self.file = self.file, new
        self.path, self.writer = path, writer
        if old is not None:
            with contextlib.suppress(Exception):
                old.close()

    def close(self, reason: CommyClientError) -> None:
        old, self.file = self.file, None
        self.closed_by = reason
        if old is not None:
            with contextlib.suppress(Exception):
                old.close()


class LocalState:
    """Whether (tenant, service) is mapped for this client, and why not if it is not."""

    def __init__(self, tenant: str, service: str) -> None:
        self.tenant, self.service = tenant, service
        self.mapping: LocalMapping | None = None
        self.refusal: CommyClientError | None = None
        self.retry = True  # ask the server on next use
        self.lock = asyncio.Lock()

    async def ensure(self, request: Request, client_id: str, writable: bool) -> LocalMapping | None:
        """The mapping, asking the server first if that is due; None when the service stays remote."""
        if self.mapping is not None or not self.retry:
            return self.mapping
        async with self.lock:
            if self.mapping is None and self.retry:
                await self._map(request, client_id, writable)
        return self.mapping

    async def _map(self, request: Request, client_id: str, writable: bool) -> None:
        try:
            reply = await request(MapService(self.tenant, self.service))
        except (ConnectionLostError, RequestTimeoutError):
            raise  # transient: decide on the next use
        except CommyClientError as exc:
            self.refuse(exc)
            return
        if not isinstance(reply, ServiceMapped):
            self.refuse(CommyClientError("bad_reply", f"MapService answered with {type(reply).__name__}"))
            return
        try:
            self.mapping = LocalMapping(self.tenant, self.service, reply.path, reply.writer, client_id, writable)
        except Exception as exc:  # the file is not reachable from here
            self.refuse(NotLocalError(detail=f"cannot map {reply.path}: {exc}"))
            with contextlib.suppress(CommyClientError):
                await request(UnmapService(self.tenant, self.service))
            return
        self.refusal, self.retry = None, False
        log.debug("mapped %s/%s at %s (writer %d)", self.tenant, self.service, reply.path, reply.writer)

    def refuse(self, exc: CommyClientError) -> None:
        self.refusal = exc
        self.retry = exc.code in ("unauthenticated", "expired")

    def created(self) -> None:
        """A remote write went through: a service that was not found may exist now."""
        if self.mapping is None and self.refusal is not None and self.refusal.code == "not_found":
            self.retry = True

    def reset(self) -> None:
        """A new session or connection: a refused mapping may be allowed now."""
        if self.mapping is None:
            self.retry = True

    async def restore(self, request: Request, client_id: str, writable: bool) -> None:
        """After a reconnect: ask again, and follow a new path or writer slot."""
        mapping = self.mapping
        if mapping is None:
            self.reset()
            return
        try:
            reply = await request(MapService(self.tenant, self.service))
            if not isinstance(reply, ServiceMapped):
                raise CommyClientError("bad_reply", f"MapService answered with {type(reply).__name__}")
            if (reply.path, reply.writer) != (mapping.path, mapping.writer):
                mapping.swap(reply.path, reply.writer)
            mapping.client_id, mapping.writable = client_id, writable
        except (ConnectionLostError, RequestTimeoutError):
            raise
        except Exception as exc:
            refusal = exc if isinstance(exc, CommyClientError) else NotLocalError(detail=str(exc))
            self.close(refusal)
            self.refuse(refusal)

    def migrate(self, path: str) -> None:
        """FileMigration: remap the rotated file."""
        mapping = self.mapping
        if mapping is None:
            return
        try:
            mapping.swap(path, mapping.writer)
        except Exception as exc:
            log.warning("cannot remap %s/%s to %s: %s", self.tenant, self.service, path, exc)
            self.close(NotLocalError(detail=f"cannot remap {path}: {exc}"))

    def close(self, reason: CommyClientError) -> None:
        mapping, self.mapping = self.mapping, None
        if mapping is not None:
            mapping.close(reason)
        self.refusal, self.retry = reason, False


class Service(AsyncTyped):
    """One service of one tenant, as seen by one client; see the module docstring."""

    def __init__(self, client: AsyncClient, tenant: str, name: str, local: bool | None) -> None:
        self.client, self.tenant, self.name, self.local = client, tenant, name, local
        self._state = client._local_state(tenant, name) if local is not False else None

    def __repr__(self) -> str:
        return f"<Service {self.tenant}/{self.name} {'local' if self.is_local else 'remote'}>"

    # ---- local mapping

    @property
    def mapping(self) -> LocalMapping | None:
        state = self._state
        return None if state is None else state.mapping

    @property
    def is_local(self) -> bool:
        """Whether reads and writes currently go to the mapped file."""
        return self.mapping is not None

    async def map(self) -> bool:
        """Map the service now if that is allowed (and not done yet); return whether it is mapped."""
        return await self._mapped() is not None

    async def _mapped(self) -> LocalMapping | None:
        state = self._state
        if state is None:
            return None
        mapping = state.mapping
        if mapping is None:
            session = self.client._sessions.get(self.tenant)
            mapping = await state.ensure(self.client._conn.request, session.client_id if session else "",
                                         session is not None and session.allows("variable_write"))
            if mapping is None and self.local:
                raise state.refusal or NotLocalError(detail=f"{self.tenant}/{self.name} could not be mapped")
        return mapping

    def read_local(self, name: str) -> bytes | None:
        """Read straight from the mapped file (no event loop); `NotLocalError` if not mapped."""
        try:
            return self._state.mapping.file.read_value(name)  # type: ignore[union-attr]
        except Exception:
            return self._mapping_or_raise().read(name)  # not mapped, or the file is being swapped

    def write_local(self, name: str, value: bytes) -> int:
        """Write straight into the mapped file; returns the new version."""
        return self._mapping_or_raise().write(name, value)

    def _mapping_or_raise(self) -> LocalMapping:
        state = self._state
        mapping = None if state is None else state.mapping
        if mapping is None:
            raise self._not_local()
        return mapping

    def _not_local(self) -> CommyClientError:
        state = self._state
        if state is not None and isinstance(state.refusal, PermissionRevokedError):
            return state.refusal
        if state is not None and state.refusal is not None:
            return NotLocalError(detail=f"{self.tenant}/{self.name} is not mapped ({state.refusal})")
        return NotLocalError(detail=f"{self.tenant}/{self.name} is not mapped (call `await service.map()` first)")

    async def unmap(self) -> None:
        """Stop using the mapped file (other handles on this service go remote too)."""
        await self.client._unmap(self.tenant, self.name)

    # ---- reads and writes

    async def get(self, name: str) -> bytes | None:
        """The value of `name`, or None if there is no such variable."""
        state = self._state
        if state is not None:
            mapping = state.mapping
            if mapping is not None:
                return mapping.read(name)
            if (state.retry or self.local) and (mapping := await self._mapped()) is not None:
                return mapping.read(name)
        reply = await self.client._call(GetVariables(self.tenant, self.name, (name,)), VariablesData, True)
        for v in reply.variables:
            if v.name == name:
                return v.value
        return None

    async def get_entry(self, name: str) -> VariableValue | None:
        """The variable with its version and last writer, or None."""
        return (await self.get_many((name,))).get(name)

    async def get_many(self, names: Iterable[str] = ()) -> dict[str, VariableValue]:
        """Several variables (no names: all of them); missing names are left out."""
        names = tuple(names)
        if self._state is not None and (mapping := await self._mapped()) is not None:
            return mapping.entries(names)
        reply = await self.client._call(GetVariables(self.tenant, self.name, names), VariablesData, True)
        return {v.name: v for v in reply.variables}

    async def set(self, name: str, value: bytes, *, concern: str = "") -> int:
        """Write `value`; return the variable's new version. Mapped writes with the `local`
        concern go into the file; others (`replicated`, `quorum`) go through the server."""
        state = self._state
        if state is not None and concern in LOCAL_CONCERNS:
            mapping = state.mapping
            if mapping is None and (state.retry or self.local):
                mapping = await self._mapped()
            if mapping is not None and mapping.writable:
                return mapping.write(name, value)
        versions = await self.set_many({name: value}, concern=concern)
        return versions[name]

    async def set_many(self, values: Mapping[str, bytes], *, concern: str = "") -> dict[str, int]:
        """Write several variables at once; return their new versions."""
        state = self._state
        if state is not None and concern in LOCAL_CONCERNS:
            mapping = state.mapping or (await self._mapped() if state.retry or self.local else None)
            if mapping is not None and mapping.writable:
                return {n: mapping.write(n, v) for n, v in values.items()}
        msg = SetVariables(self.tenant, self.name, tuple(NamedValue(n, bytes(v)) for n, v in values.items()),
                           concern)
        reply = await self.client._call(msg, VariablesUpdated)
        if state is not None:
            state.created()
        return {v.name: v.version for v in reply.versions}

    async def check(self, permission: str) -> bool:
        """Whether this client holds `permission` (a scope name) on the service."""
        return await self.client.check_permission(self.tenant, self.name, permission)

    # ---- subscriptions

    def subscribe(self, names: Iterable[str] = (), *, initial: bool = False) -> Subscription:
        """An async iterator of `VariableChanged` (no names: the whole service). It subscribes on
        first use (or `await sub.start()`); `initial=True` first yields the current values."""
        return Subscription(self.client, self.tenant, self.name, tuple(names), initial)

    async def on_change(self, callback: ChangeCallback, names: Iterable[str] = (), *, initial: bool = False,
                        on_end: EndCallback | None = None) -> Subscription:
        """Call `callback(change)` (a function or a coroutine function) for each change, in order;
        `on_end(error_or_None)` when the subscription ends. Returns the started subscription."""
        sub = Subscription(self.client, self.tenant, self.name, tuple(names), initial)
        await sub.start()
        sub.pump(callback, on_end)
        return sub

"""`Subscription`: the changes to a service's variables, in order, each delivered once.

A `Subscription` is fed by the client's event routing (`_offer`), by catch-ups after
(re)subscribing (`_catch_up`: every variable that moved past the last one delivered) and by what a
`Resume` says was missed (`_release`); while a (re)subscription or a resume is in flight, events
are held and replayed after it. A per-variable check drops duplicates and anything older than
what was already delivered: by stamp (cluster-wide order), the per-server version breaking ties.
It is an async iterator (ending, or raising the error that ended it: `PermissionRevokedError`,
`ConnectionLostError`), or feeds a callback (`pump`), or a thread-safe `sink` (the sync client).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

from commy.client.errors import CommyClientError
from commy.messages import VariableChanged, VariableValue

if TYPE_CHECKING:
    from commy.client.aio import AsyncClient

log = logging.getLogger("commy.client")


ChangeCallback = Callable[[VariableChanged], "Awaitable[None] | None"]
EndCallback = Callable[["CommyClientError | None"], "Awaitable[None] | None"]


class SubscriptionEnd:
    """Delivered last to a sink: the subscription ended, normally (`error` None) or not."""

    __slots__ = ("error",)

    def __init__(self, error: CommyClientError | None) -> None:
        self.error = error


Item = VariableChanged | SubscriptionEnd


class Subscription:
    """Changes to a service's variables (all of them, or `names`); see the module docstring."""

    def __init__(self, client: AsyncClient, tenant: str, service: str, names: tuple[str, ...],
                 initial: bool = False, sink: Callable[[Item], None] | None = None) -> None:
        self.client, self.tenant, self.service, self.names = client, tenant, service, names
        self.initial = initial
        self.active = False  # the server acknowledged it at least once
        self.ended = False
        self.error: CommyClientError | None = None
        self._filter = frozenset(names) if names else None
        self._last: dict[str, tuple[int, int, str]] = {}  # name -> (version, stamp, server) delivered
        self._held: list[VariableChanged] | None = None
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._sink: Callable[[Item], None] = sink or self._queue.put_nowait
        self._started = False

    def __repr__(self) -> str:
        what = ",".join(self.names) or "*"
        return f"<Subscription {self.tenant}/{self.service} [{what}]{' ended' if self.ended else ''}>"

    async def start(self) -> Subscription:
        """Subscribe now (iteration does it on first use)."""
        if not self._started:
            self._started = True
            await self.client._subscribe(self)
        return self

    async def cancel(self) -> None:
        """Unsubscribe; an iterator on it ends."""
        if self.ended:
            return
        if self._started:
            await self.client._unsubscribe(self)
        self._end(None)

    async def __aenter__(self) -> Subscription:
        return await self.start()

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.cancel()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> VariableChanged:
        if not self._started:
            await self.start()
        item = await self._queue.get()
        if type(item) is SubscriptionEnd:
            self._queue.put_nowait(item)  # later calls end the same way
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item  # type: ignore[return-value]

    async def get(self, timeout: float | None = None) -> VariableChanged | None:
        """The next change; None once the subscription ended normally; TimeoutError after `timeout`."""
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except StopAsyncIteration:
            return None

    def pump(self, callback: ChangeCallback, on_end: EndCallback | None = None) -> None:
        """Feed each change to `callback` from a task, in order (used by `Service.on_change`)."""
        async def run() -> None:
            error: CommyClientError | None = None
            try:
                async for change in self:
                    try:
                        result = callback(change)
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        log.exception("commy client: subscription callback failed")
            except CommyClientError as exc:
                error = exc
            if on_end is not None:
                try:
                    result = on_end(error)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("commy client: subscription end callback failed")
        self.client._spawn(run())

    # ---- fed by the client

    def covers(self, name: str) -> bool:
        return self._filter is None or name in self._filter

    def seen(self) -> dict[str, tuple[int, int]]:
        """The (version, stamp) of the last change delivered, per variable (what a `Resume` reports)."""
        return {name: (version, stamp) for name, (version, stamp, _) in self._last.items()}

    def _hold(self) -> None:
        self._held = []

    def _offer(self, change: VariableChanged) -> None:
        if self.ended or (self._filter is not None and change.name not in self._filter):
            return
        held = self._held
        if held is not None:
            held.append(change)
        else:
            self._deliver(change)

    def _deliver(self, change: VariableChanged) -> None:
        """Hand `change` on if it is newer than what was delivered of its variable: stamps order
        changes cluster-wide; versions count per server, so they only break a tie between two
        stamps from the same server (a merged value keeps the newer stamp) or order unstamped ones."""
        name, server = change.name, self.client._server
        last = self._last.get(name)
        if last is not None:
            version, stamp, where = last
            if change.stamp and stamp:
                if change.stamp < stamp or (change.stamp == stamp and (where != server or change.version <= version)):
                    return
            elif change.version <= version and (where == server or not change.stamp):
                return
        self._last[name] = (change.version, change.stamp, server)
        self._sink(change)

    def _catch_up(self, current: tuple[VariableValue, ...], first: bool = False) -> None:
        """After a (re)subscription: `current` is the server's state; then what was held."""
        changes = [VariableChanged(self.tenant, self.service, v.name, v.value, v.version, v.changed_by, v.stamp)
                   for v in current if self.covers(v.name)]
        if first and not self.initial and not self.ended:
            server = self.client._server
            for c in changes:  # the state it starts from is not a change
                self._last[c.name] = (c.version, c.stamp, server)
            changes = []
        self._release(changes)

    def _release(self, changes: list[VariableChanged]) -> None:
        """Deliver `changes` (a catch-up, or what a `Resume` says was missed: in stamp order), then
        the events held meanwhile; each only if newer than what was delivered."""
        held, self._held = self._held or [], None
        if self.ended:
            return
        for change in changes:
            if self.covers(change.name):
                self._deliver(change)
        self.active = True
        for change in held:
            self._deliver(change)

    def _end(self, error: CommyClientError | None) -> None:
        if self.ended:
            return
        self.ended, self.error, self._held = True, error, None
        self.client._forget(self)
        self._sink(SubscriptionEnd(error))

"""What the SDK hands back and raises: sessions, subscriptions, errors by code, typed values.

Errors: every request answered with `Error(code, detail)` raises `CommyClientError` (or the
subclass registered for its code: `ForbiddenError` for `forbidden`, ...), so callers may catch a
class or switch on `.code`. Failures of the SDK's own making have codes of their own:
`connection_lost` (the request was in flight when the connection dropped; it may or may not
have been applied), `timeout` (no reply in time), `revoked` (the session ended: PermissionRevoked),
`not_local` (a local-only operation on a service that is not mapped).

A `Subscription` is fed by the client's event routing (`_offer`), by catch-ups after
(re)subscribing (`_catch_up`: every variable that moved past the last one delivered) and by what a
`Resume` says was missed (`_release`); while a (re)subscription or a resume is in flight, events
are held and replayed after it. A per-variable check drops duplicates and anything older than
what was already delivered: by stamp (cluster-wide order), the per-server version breaking ties.
It is an async iterator (ending, or raising the error that ended it: `PermissionRevokedError`,
`ConnectionLostError`), or feeds a callback (`pump`), or a thread-safe `sink` (the sync client).

Typed values are plain bytes on the wire and in the service file, encoded as documented here so
any client in any language can read them: int = 8-byte signed little-endian two's complement,
float = 8-byte IEEE 754 binary64 little-endian, str = UTF-8, object = MessagePack (bin type on,
strings as str). A stored value of the wrong shape raises `ValueTypeError` (also a ValueError).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

import msgpack

from commy.errors import CommyError
from commy.messages import VariableChanged, VariableValue

if TYPE_CHECKING:
    from commy.client.aio import AsyncClient

log = logging.getLogger("commy.client")

# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True, slots=True)
class Session:
    """An authenticated session on one tenant (`""` is the server-wide admin session).

    `expires_at` is on the server's clock (the client refreshes the token before then);
    `permissions` are the permission names the server granted (`variable_read`, ...)."""

    tenant: str
    session_id: str
    client_id: str
    token: str
    expires_at: float
    permissions: tuple[str, ...]

    def allows(self, permission: str) -> bool:
        """Whether the session's permissions (as the server reported them) include `permission`."""
        perms = self.permissions
        return permission in perms or "tenant_admin" in perms or (
            permission.startswith(("variable_", "service_", "subscribe")) and "service_admin" in perms)


# --------------------------------------------------------------------------- errors

CONNECTION_LOST = "connection_lost"
REVOKED = "revoked"
NOT_LOCAL = "not_local"


class CommyClientError(CommyError):
    """A request failed: `code` is a stable string (see `commy.errors`) and `detail` says why.

    `CommyClientError.from_error(code, detail)` builds the subclass registered for `code`; each
    subclass fills in its own code when none is given (`ForbiddenError(detail="...")`).
    """

    BY_CODE: ClassVar[dict[str, type[CommyClientError]]] = {}
    CODE: ClassVar[str] = "error"

    def __init__(self, code: str | None = None, detail: str = "") -> None:
        code = type(self).CODE if code is None else code
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code: str = code
        self.detail: str = detail

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        CommyClientError.BY_CODE.setdefault(cls.CODE, cls)

    @classmethod
    def from_error(cls, code: str, detail: str) -> CommyClientError:
        """The exception for a server's `Error(code, detail)`: the subclass for `code` if there is one."""
        return cls.BY_CODE.get(code, CommyClientError)(code, detail)


class ConnectionLostError(CommyClientError):
    """The connection dropped with the request in flight (or no connection could be made)."""

    CODE = CONNECTION_LOST


class RequestTimeoutError(CommyClientError):
    """No reply came within the request's timeout."""

    CODE = "timeout"


class PermissionRevokedError(CommyClientError):
    """The session on `tenant` ended (access revoked, tenant deleted, token expired)."""

    CODE = REVOKED

    def __init__(self, code: str | None = None, detail: str = "", tenant: str = "") -> None:
        super().__init__(code, detail)
        self.tenant = tenant


class NotLocalError(CommyClientError):
    """A local-only operation on a service this client has not mapped (or may not map)."""

    CODE = NOT_LOCAL


class UnauthenticatedError(CommyClientError):
    """Not authenticated on the tenant (or bad credentials)."""

    CODE = "unauthenticated"


class ForbiddenError(CommyClientError):
    """The session lacks the permission (or, for MapService, the client is not on the server's machine)."""

    CODE = "forbidden"


class NotFoundError(CommyClientError):
    """No such tenant, service or key."""

    CODE = "not_found"


class BadRequestError(CommyClientError):
    """The server refused the request as malformed."""

    CODE = "bad_request"


class TooLargeError(CommyClientError):
    """A value or frame over the server's limit."""

    CODE = "too_large"


class RateLimitedError(CommyClientError):
    """Too many attempts (failed logins, writers); retry later."""

    CODE = "rate_limited"


class ExpiredError(CommyClientError):
    """The token expired."""

    CODE = "expired"


class ValueTypeError(CommyError, ValueError):
    """A stored value does not have the shape the typed getter expects."""


# --------------------------------------------------------------------------- typed values

_F64 = struct.Struct("<d")


def encode_int(value: int) -> bytes:
    """8-byte signed little-endian; refuses values outside -2**63 .. 2**63-1."""
    if not isinstance(value, int):
        raise TypeError(f"set_int needs an int, not {type(value).__name__}")
    try:
        return int(value).to_bytes(8, "little", signed=True)
    except OverflowError:
        raise ValueError(f"{value} does not fit in a signed 64-bit integer") from None


def decode_int(raw: bytes) -> int:
    if len(raw) != 8:
        raise ValueTypeError(f"an int value is 8 bytes, this one has {len(raw)}")
    return int.from_bytes(raw, "little", signed=True)


def encode_float(value: float) -> bytes:
    """8-byte IEEE 754 binary64, little-endian."""
    return _F64.pack(value)


def decode_float(raw: bytes) -> float:
    if len(raw) != 8:
        raise ValueTypeError(f"a float value is 8 bytes, this one has {len(raw)}")
    result: float = _F64.unpack(raw)[0]
    return result


def encode_str(value: str) -> bytes:
    return value.encode("utf-8")


def decode_str(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueTypeError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None


def encode_object(value: Any) -> bytes:
    """MessagePack with the bin type on (bytes stay bytes, str stays str)."""
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"cannot encode as MessagePack: {exc}") from None
    return packed


def decode_object(raw: bytes) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many types
        raise ValueTypeError(f"not a MessagePack value: {type(exc).__name__}") from None


# --------------------------------------------------------------------------- typed access mixins


class AsyncTyped:
    """`get_int` / `set_int` and friends over an async `get` / `set` of bytes."""

    if TYPE_CHECKING:  # provided by the class that mixes this in
        async def get(self, name: str) -> bytes | None: ...
        async def set(self, name: str, value: bytes, *, concern: str = "") -> int: ...

    async def get_int(self, name: str) -> int | None:
        raw = await self.get(name)
        return None if raw is None else decode_int(raw)

    async def set_int(self, name: str, value: int, *, concern: str = "") -> int:
        return await self.set(name, encode_int(value), concern=concern)

    async def get_float(self, name: str) -> float | None:
        raw = await self.get(name)
        return None if raw is None else decode_float(raw)

    async def set_float(self, name: str, value: float, *, concern: str = "") -> int:
        return await self.set(name, encode_float(value), concern=concern)

    async def get_str(self, name: str) -> str | None:
        raw = await self.get(name)
        return None if raw is None else decode_str(raw)

    async def set_str(self, name: str, value: str, *, concern: str = "") -> int:
        return await self.set(name, encode_str(value), concern=concern)

    async def get_bytes(self, name: str) -> bytes | None:
        return await self.get(name)

    async def set_bytes(self, name: str, value: bytes, *, concern: str = "") -> int:
        return await self.set(name, bytes(value), concern=concern)

    async def get_object(self, name: str, default: Any = None) -> Any:
        raw = await self.get(name)
        return default if raw is None else decode_object(raw)

    async def set_object(self, name: str, value: Any, *, concern: str = "") -> int:
        return await self.set(name, encode_object(value), concern=concern)


class SyncTyped:
    """The blocking twin of `AsyncTyped`."""

    if TYPE_CHECKING:  # provided by the class that mixes this in
        def get(self, name: str) -> bytes | None: ...
        def set(self, name: str, value: bytes, *, concern: str = "") -> int: ...

    def get_int(self, name: str) -> int | None:
        raw = self.get(name)
        return None if raw is None else decode_int(raw)

    def set_int(self, name: str, value: int, *, concern: str = "") -> int:
        return self.set(name, encode_int(value), concern=concern)

    def get_float(self, name: str) -> float | None:
        raw = self.get(name)
        return None if raw is None else decode_float(raw)

    def set_float(self, name: str, value: float, *, concern: str = "") -> int:
        return self.set(name, encode_float(value), concern=concern)

    def get_str(self, name: str) -> str | None:
        raw = self.get(name)
        return None if raw is None else decode_str(raw)

    def set_str(self, name: str, value: str, *, concern: str = "") -> int:
        return self.set(name, encode_str(value), concern=concern)

    def get_bytes(self, name: str) -> bytes | None:
        return self.get(name)

    def set_bytes(self, name: str, value: bytes, *, concern: str = "") -> int:
        return self.set(name, bytes(value), concern=concern)

    def get_object(self, name: str, default: Any = None) -> Any:
        raw = self.get(name)
        return default if raw is None else decode_object(raw)

    def set_object(self, name: str, value: Any, *, concern: str = "") -> int:
        return self.set(name, encode_object(value), concern=concern)


# --------------------------------------------------------------------------- subscriptions

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

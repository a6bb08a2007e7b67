"""Hostile clients against the real embedded server (DESIGN §3, §5, §6; issue 3, "Bad input and attacks").

Every test starts `start_server` in-process on 127.0.0.1 (port 0) with a tmp data folder and a cheap
scrypt cost, on an asyncio loop in a background thread, and talks to it with real (blocking)
`websockets` clients speaking the documented wire forms. Each attack asserts the error code it must
get, and afterwards that a well-behaved client is still served (a set/get round trip). Every wait
is bounded.

Covered: 1,000 random frames from hypothesis (``--slow``: 5,000) -- each gets its typed reply or
`Error`, or the server closes the connection, and no file outside the data folder is touched;
unauthenticated requests of every type; cross-tenant reads, writes, subscriptions, mapping and
administration; forged, expired, refreshed, logged-out and key-revoked tokens; brute-force logins
(per key and per source address); hostile names; oversize frames and values; garbage and truncated
msgpack and JSON; too many bad frames or refused requests; a client that never reads (stall).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import socket
import threading
import time
import typing
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from commy.client_codec import FrameError, client_codec, server_codec
from commy.core.catalog_records import KdfParams
from commy.core.hub_base import HubConfig
from commy.errors import (
    BAD_FRAME,
    BAD_REQUEST,
    EXPIRED,
    FORBIDDEN,
    NOT_FOUND,
    RATE_LIMITED,
    TIMEOUT,
    TOO_LARGE,
    UNAUTHENTICATED,
    UNKNOWN_MESSAGE,
)
from commy.messages import REGISTRY, ClientMigration, ClientMigrationAck, Error, Message
from commy.messages.client import (
    CLIENT_REQUESTS,
    SERVER,
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
    FileMigration,
    GetVariables,
    GrantPermission,
    Heartbeat,
    HeartbeatAck,
    ListServices,
    ListTenants,
    Logout,
    LogoutResponse,
    MapService,
    MigrationAck,
    NamedValue,
    PermissionResponse,
    PermissionRevoked,
    RefreshToken,
    Resume,
    ResumeResponse,
    RevokeApiKey,
    RevokePermission,
    ServiceList,
    ServiceMapped,
    ServiceUnmapped,
    ServiceVersions,
    SetAuthHook,
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
)
from commy.runtime.gateway import GatewayConfig
from commy.runtime.server import RunningServer, start_server
from commy.store.service_file import DEFAULT_MAX_VALUE
from tests.helpers import sweep_size
from tests.helpers.strategies import fields_of, for_type, messages, msgpack_values

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
CHEAP_KDF = KdfParams(n=2, r=1, p=1)  # logins stay fast; the KDF's cost is not what these tests test
DEADLINE = 10.0  # any single bounded wait
REPLY = 5.0  # one reply
CODEC = client_codec()  # what a client decodes (replies and events) and encodes (anything)
ORACLE = server_codec()  # the server's own decoder: says what a frame must be answered with
MAX_BAD_FRAMES = GatewayConfig().max_bad_frames
POLICY_VIOLATION, MESSAGE_TOO_BIG = 1008, 1009

EVENTS = (VariableChanged, PermissionRevoked, FileMigration, ClientMigration)
ACKS = frozenset({MigrationAck, ClientMigrationAck})  # acknowledgements: the protocol sends no reply
REPLY_TO: dict[type[Message], type[Message]] = {
    Authenticate: AuthenticationResponse, Logout: LogoutResponse, RefreshToken: TokenRefreshResponse,
    CheckPermission: PermissionResponse, Heartbeat: HeartbeatAck, Resume: ResumeResponse,
    GetVariables: VariablesData, SetVariables: VariablesUpdated, Subscribe: SubscriptionAck,
    Unsubscribe: UnsubscribeAck, MapService: ServiceMapped, UnmapService: ServiceUnmapped,
    CreateTenant: AdminDone, DeleteTenant: AdminDone, CreateService: AdminDone, DeleteService: AdminDone,
    GrantPermission: AdminDone, RevokePermission: AdminDone, CreateApiKey: ApiKeyCreated, RevokeApiKey: AdminDone,
    ListTenants: TenantList, ListServices: ServiceList, SetAuthHook: AdminDone,
}
assert set(REPLY_TO) | ACKS == CLIENT_REQUESTS, "a new client request: say what it is answered with"
# Every code a refusal may carry; `internal` (a handler crashed) never may.
CODES = frozenset({BAD_REQUEST, BAD_FRAME, TOO_LARGE, UNKNOWN_MESSAGE, UNAUTHENTICATED, FORBIDDEN, NOT_FOUND,
                   RATE_LIMITED, EXPIRED, TIMEOUT})

# Names that try to leave the data folder, or to be something else than a name.
TEN_KB = "x" * 10_000
PATH_TRICKS = ["..", ".", "../../x", "../../../../x", "../../../../../../../x", "a/../../b", "/etc/passwd",
               "/tmp/commy-hostile", "a/b", "..\\..\\x", "C:\\x", "a\x00b", "\x00", "~", "$HOME"]
BAD_PATH_NAMES = [*PATH_TRICKS, TEN_KB, "", " a", "-a", "a b", "CON", "nul.txt", "x" * 65, "é"]
BAD_VARIABLES = ["", "a\x00b", "\x00", TEN_KB, "a\x1bb", "\x7f", "é" * 33]


# --------------------------------------------------------------------------- the server, in a thread


class Served:
    """`start_server` on its own asyncio loop in a background thread; logs collected."""

    def __init__(self, data: Path, **options: Any) -> None:
        self.logs: list[tuple[str, str, dict[str, object]]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="commy-server", daemon=True)
        self.thread.start()
        try:
            self.server: RunningServer = self.call(start_server(data, (LOOPBACK, 0), kdf=CHEAP_KDF,
                                                                log_sink=self._log, **options))
        except BaseException:
            self._stop_loop()
            raise
        assert self.server.bootstrap_key is not None
        self.admin_key: str = self.server.bootstrap_key

    def _log(self, node: str, actor: str, level: str, event: str, fields: dict[str, object]) -> None:
        self.logs.append((level, event, fields))

    def call(self, coro: Any, timeout: float = DEADLINE) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def url(self) -> str:
        return self.server.url

    def events(self, name: str) -> list[dict[str, object]]:
        return [fields for _, event, fields in list(self.logs) if event == name]

    def assert_healthy(self) -> None:
        """No handler crashed, no decoder bug, nothing logged as an error."""
        errors = [(event, fields) for level, event, fields in list(self.logs) if level == "error"]
        assert self.server.node.stats.handler_errors == 0, errors
        assert not errors, errors

    def close(self) -> None:
        try:
            self.call(self.server.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        async def cancel_the_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=2.0)

        with suppress(Exception):
            self.call(cancel_the_rest(), timeout=5.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), "the server's loop did not stop"
        self.loop.close()


@contextmanager
def serving(data: Path, **options: Any) -> Iterator[Served]:
    served = Served(data, **options)
    try:
        yield served
        served.assert_healthy()
    finally:
        served.close()


# --------------------------------------------------------------------------- a bare client


def decode(data: bytes | str) -> tuple[int, Message]:
    return CODEC.decode_text(data) if isinstance(data, str) else CODEC.decode_binary(data)


class Wire:
    """One WebSocket connection speaking the client protocol (binary by default, JSON with text=True)."""

    def __init__(self, url: str, *, text: bool = False, **options: Any) -> None:
        self._stack = ExitStack()  # a context manager, as websockets wants its connections
        options.setdefault("ping_interval", None)  # (keepalive pings would draw from the global random)
        self.ws: ClientConnection = self._stack.enter_context(connect(
            url, compression=None, max_size=None, open_timeout=DEADLINE, close_timeout=2, **options))
        self.text = text
        self._ids = itertools.count(1)
        self.events: list[Message] = []
        self.strays: dict[int, Message] = {}  # replies that arrived while waiting for another one

    def send(self, msg: Message, rid: int | None = None, text: bool | None = None) -> int:
        rid = next(self._ids) if rid is None else rid
        text = self.text if text is None else text
        self.ws.send(CODEC.encode_text(rid, msg) if text else CODEC.encode_binary(rid, msg))
        return rid

    def raw(self, payload: bytes | str, text: bool) -> None:
        self.ws.send(payload, text=text)

    def recv(self, timeout: float = REPLY) -> tuple[int, Message]:
        return decode(self.ws.recv(timeout))

    def reply(self, rid: int, timeout: float = REPLY) -> Message:
        """The reply to request `rid` (events and other replies are kept aside)."""
        if rid in self.strays:
            return self.strays.pop(rid)
        deadline = time.monotonic() + timeout
        while True:
            got, msg = self.recv(max(0.0, deadline - time.monotonic()))
            if got == 0 and isinstance(msg, EVENTS):
                self.events.append(msg)
            elif got == rid:
                return msg
            else:
                self.strays[got] = msg

    def ask(self, msg: Message, text: bool | None = None) -> Message:
        return self.reply(self.send(msg, text=text))

    def refused(self, msg: Message, code: str, text: bool | None = None) -> Error:
        reply = self.ask(msg, text)
        assert isinstance(reply, Error) and reply.code == code, f"{msg!r:.300}\n  -> {reply!r:.300} (wanted {code})"
        assert reply.detail, reply
        return reply

    def next_event(self, timeout: float = REPLY) -> Message:
        if self.events:
            return self.events.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            got, msg = self.recv(max(0.0, deadline - time.monotonic()))
            if got == 0 and isinstance(msg, EVENTS):
                return msg
            self.strays[got] = msg

    def closed_by_server(self, timeout: float = DEADLINE) -> int | None:
        """Read until the server ends the connection; the close code it sent (None: no close frame)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                assert remaining > 0, "the server did not close the connection"
                got, msg = self.recv(remaining)
                if got == 0 and isinstance(msg, EVENTS):
                    self.events.append(msg)
                else:
                    self.strays[got] = msg
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None

    def close(self) -> None:
        self._stack.close()


def ok(reply: Message, tp: type[Message]) -> Any:
    assert isinstance(reply, tp), f"wanted {tp.__name__}, got {reply!r:.300}"
    return reply


def login(url: str, tenant: str, key: str, **options: Any) -> Wire:
    wire = Wire(url, **options)
    ok(wire.ask(Authenticate(tenant, "api_key", key)), AuthenticationResponse)
    return wire


def admin_of(served: Served, *tenants: str) -> Wire:
    """The bootstrap admin, with a session on the server and on each of `tenants` (created here)."""
    admin = login(served.url, SERVER, served.admin_key)
    for tenant in tenants:
        ok(admin.ask(CreateTenant(tenant)), AdminDone)
        ok(admin.ask(Authenticate(tenant, "api_key", served.admin_key)), AuthenticationResponse)
    return admin


def new_key(admin: Wire, client_id: str, tenant: str, *scopes: str) -> ApiKeyCreated:
    return ok(admin.ask(CreateApiKey(client_id, False, tenant, scopes)), ApiKeyCreated)


def write(wire: Wire, tenant: str, service: str, name: str, value: bytes) -> int:
    updated = ok(wire.ask(SetVariables(tenant, service, (NamedValue(name, value),), "")), VariablesUpdated)
    return int(updated.versions[0].version)


def read(wire: Wire, tenant: str, service: str, *names: str) -> dict[str, bytes]:
    data = ok(wire.ask(GetVariables(tenant, service, names)), VariablesData)
    return {v.name: v.value for v in data.variables}


@dataclass
class Good:
    """A well-behaved client (write access on its own tenant) that must keep being served."""

    url: str
    tenant: str
    key: str
    wire: Wire = field(init=False)
    rounds: int = 0

    def __post_init__(self) -> None:
        self.wire = login(self.url, self.tenant, self.key)

    def check(self, fresh: bool = False) -> None:
        """A set/get round trip on its open connection (and, with `fresh`, on a new one too)."""
        wires = [self.wire, login(self.url, self.tenant, self.key)] if fresh else [self.wire]
        for wire in wires:
            self.rounds += 1
            value = f"round {self.rounds}".encode()
            write(wire, self.tenant, "own", "ping", value)
            assert read(wire, self.tenant, "own", "ping") == {"ping": value}
        if fresh:
            wires[1].close()


def good_client(served: Served, admin: Wire, tenant: str = "quiet7") -> Good:
    ok(admin.ask(CreateTenant(tenant)), AdminDone)
    key = new_key(admin, "goodie", tenant, "write")
    good = Good(served.url, tenant, key.key)
    good.check()
    return good


# --------------------------------------------------------------------------- files outside the data folder


def files_outside(root: Path, data: Path) -> dict[str, tuple[int, int, int]]:
    """(mtime, size, mode) of everything under `root` except the data folder's subtree."""
    seen: dict[str, tuple[int, int, int]] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d != data]
        for name in [*dirs, *files]:
            st_ = os.lstat(here / name)
            seen[str((here / name).relative_to(root))] = (st_.st_mtime_ns, st_.st_size, st_.st_mode)
    return seen


def decoys(root: Path) -> None:
    """Files where a name that escaped the data folder would land (data is root/srv/data)."""
    for rel in ["x", "b", "srv/x", "srv/b", "etc/passwd", "srv/store/x", "tmp/commy-hostile"]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"decoy\n")


def system_files() -> dict[str, tuple[int, int]]:
    out = {}
    for path in ["/etc/passwd", "/tmp/commy-hostile"]:
        with suppress(OSError):
            st_ = os.stat(path)
            out[path] = (st_.st_mtime_ns, st_.st_size)
    return out


# --------------------------------------------------------------------------- 1. random frames


def _is_tuple_of(tp: Any) -> Any:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else None


IDS = st.one_of(st.integers(0, 2**63 - 1), st.integers(-(2**63), 2**64 - 1),
                st.sampled_from([0, 1, 2**63 - 1, 2**63, -1]))
ANY_TEXT = st.text(max_size=20)
HOSTILE_NAME = st.sampled_from(BAD_PATH_NAMES)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    # the fuzzing client's own tenant, services and variables often, so that requests get deep
    "tenant": st.one_of(*[st.just("fz")] * 4, HOSTILE_NAME, st.sampled_from([SERVER, "nosuch"]), ANY_TEXT),
    "service": st.one_of(*[st.sampled_from(["s1", "s2", "s3", "index.json"])] * 4, HOSTILE_NAME, ANY_TEXT),
    "name": st.one_of(*[st.sampled_from(["v", "w", "../../x", "/etc/passwd"])] * 4, HOSTILE_NAME,
                      st.sampled_from(BAD_VARIABLES), ANY_TEXT),
    "client_id": st.one_of(HOSTILE_NAME, st.sampled_from(["fuzzed", "admin"]), ANY_TEXT),
    "scope": st.one_of(st.sampled_from(["read", "write", "admin", "service:read", "subscribe", "root"]), ANY_TEXT),
    "method": st.one_of(st.sampled_from(["api_key", "token", "delegated"]), ANY_TEXT),
    "concern": st.one_of(*[st.sampled_from(["", "local", "replicated", "quorum"])] * 4, ANY_TEXT),
    "credential": st.one_of(ANY_TEXT, st.sampled_from(["ck_" + "0" * 16 + "_" + "A" * 43, "v1..", TEN_KB])),
    "token": st.one_of(ANY_TEXT, st.sampled_from(["v1.x.y", "v1..", "v2.a.b", TEN_KB])),
    "path": st.one_of(HOSTILE_NAME, ANY_TEXT),
    "hook": st.one_of(st.sampled_from(["", "hook", "../../x"]), ANY_TEXT),
    "permission": st.one_of(st.sampled_from(["read", "write", "admin", "tenant_admin", "root"]), ANY_TEXT),
    "key_id": st.one_of(st.sampled_from(["0" * 16, "../../x"]), ANY_TEXT),
    "value": st.binary(max_size=64),
}


def _field(name: str, tp: Any) -> st.SearchStrategy[Any]:
    single = {"names": "name", "scopes": "scope"}.get(name, name)
    item = _is_tuple_of(tp)
    if item is not None:
        inner = FIELD_VALUES[single] if item is str and single in FIELD_VALUES else _values_of(item)
        return st.lists(inner, max_size=4).map(tuple)
    if tp in (str, bytes) and single in FIELD_VALUES:
        return FIELD_VALUES[single]
    return _values_of(tp)


def _values_of(tp: Any) -> st.SearchStrategy[Any]:
    if isinstance(tp, type) and is_dataclass(tp):
        return hostile_records(tp)
    return for_type(tp)


def hostile_records(cls: type, **fixed: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Well-formed instances whose names, scopes and tokens come from hostile pools."""
    return st.builds(cls, **{name: fixed[name] if name in fixed else _field(name, tp) for name, tp in fields_of(cls)})


REQUEST_CLASSES = sorted(CLIENT_REQUESTS, key=lambda c: c.TAG)
# Requests on the data path, in the fuzzing client's own tenant: these reach the store.
DATA_PATH = [GetVariables, SetVariables, Subscribe, Unsubscribe, MapService, UnmapService, CreateService,
             DeleteService, ListServices, CheckPermission]
TAGS = sorted(REGISTRY)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=8)
FIELD_NAMES = sorted({name for cls in REQUEST_CLASSES for name, _ in fields_of(cls)})

Frame = tuple[bytes | str, bool]  # (payload, sent as a text frame)


def _encoded(rid: int, msg: Message, text: bool) -> Frame:
    return (CODEC.encode_text(rid, msg), True) if text else (CODEC.encode_binary(rid, msg), False)


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def frames() -> st.SearchStrategy[Frame]:
    ids = st.integers(0, 2**63 - 1)
    good_requests = st.builds(_encoded, ids, messages(REQUEST_CLASSES), st.booleans())
    hostile_requests = st.builds(_encoded, ids, st.one_of([hostile_records(c) for c in REQUEST_CLASSES]),
                                 st.booleans())
    deep_requests = st.builds(_encoded, ids, st.one_of([hostile_records(c, tenant=st.just("fz")) for c in DATA_PATH]),
                              st.booleans())
    structured = st.builds(
        lambda rid, tag, version, fields: (msgpack.packb([rid, [tag, version, *fields]], use_bin_type=True), False),
        IDS, st.sampled_from(TAGS) | st.integers(-1, 70_000),
        st.sampled_from([1, 1, 1, 0, 2]) | st.integers(-(2**63), 2**64 - 1),
        st.lists(msgpack_values(), max_size=5))
    truncated = st.builds(lambda f, cut: (f[0][:max(0, len(f[0]) - cut)], f[1]),
                          good_requests | hostile_requests, st.integers(1, 40))
    json_shaped = st.builds(
        lambda kind, rid, extra: (json.dumps({"type": kind, "id": rid, **extra}), True),
        st.sampled_from([c.__name__ for c in REGISTRY.values()]) | st.text(max_size=8),
        IDS | JSON_VALUES, st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), JSON_VALUES,
                                           max_size=4))
    return st.one_of(
        st.binary(max_size=64).map(lambda b: (b, False)),  # random bytes
        msgpack_values().map(lambda v: (msgpack.packb(v, use_bin_type=True), False)),  # random msgpack
        structured,  # [id, [tag, version, random fields]]
        good_requests,  # client messages, any field values
        hostile_requests, hostile_requests,  # client messages, hostile names
        deep_requests, deep_requests,  # the same on the data path of a tenant the client is in
        truncated,
        st.text(max_size=64).map(lambda s: (s, True)),  # random text
        JSON_VALUES.map(lambda v: (json.dumps(v), True)),  # random JSON
        json_shaped,
        st.binary(min_size=1, max_size=16).filter(_not_utf8).map(lambda b: (b, True)),  # text, not UTF-8
    )


def expected(frame: Frame) -> tuple[str, int, Any]:
    """What the server must do with a frame, per its own decoder: ("error", id, code) for a frame
    that does not decode, ("silent", id, type) for an acknowledgement, ("reply", id, type) else."""
    payload, text = frame
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    try:
        if text:
            try:
                rid, msg = ORACLE.decode_text(data.decode("utf-8"))
            except UnicodeDecodeError:
                return "error", 0, BAD_FRAME
        else:
            rid, msg = ORACLE.decode_binary(data)
    except FrameError as exc:
        return "error", exc.request_id, exc.code
    return ("silent" if type(msg) in ACKS else "reply"), rid, type(msg)


class Fuzzer:
    """Sends one frame at a time on a connection authenticated as the server admin and as the admin of
    tenant `fz`; checks each answer; reconnects when the server closes the connection."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.wire: Wire | None = None
        self.bad = 0  # frames the server could not decode, on this connection
        self.stale = True  # the sessions must be (re)opened
        self.stats: Counter[str] = Counter()
        self._probe = itertools.count(2**62)

    def connection(self) -> Wire:
        if self.wire is None:
            self.wire, self.bad, self.stale = Wire(self.served.url), 0, True
            self.stats["connections"] += 1
        if self.stale:
            wire = self.wire
            ok(wire.ask(Authenticate(SERVER, "api_key", self.served.admin_key)), AuthenticationResponse)
            created = wire.ask(CreateTenant("fz"))
            assert isinstance(created, AdminDone) or (isinstance(created, Error) and created.code == BAD_REQUEST)
            ok(wire.ask(Authenticate("fz", "api_key", self.served.admin_key)), AuthenticationResponse)
            wire.events.clear()
            self.stale = False
        return self.wire

    def send(self, frame: Frame) -> None:
        wire = self.connection()
        kind, rid, what = expected(frame)
        self.stats[kind] += 1
        try:
            wire.raw(*frame)
            if kind == "error":
                self.bad += 1
                reply = wire.reply(rid)
                assert isinstance(reply, Error) and reply.code == what, f"{frame!r:.300}\n  -> {reply!r:.300}"
                if self.bad > MAX_BAD_FRAMES:
                    assert wire.closed_by_server() == POLICY_VIOLATION
                    self.stats["closed after too many bad frames"] += 1
                    self.wire = None
            elif kind == "silent":  # no reply: the next request's reply comes next
                probe = wire.send(Heartbeat(1.5), rid=next(self._probe))
                ok(wire.reply(probe), HeartbeatAck)
                assert not wire.strays, f"{frame!r:.300} was answered: {wire.strays!r:.300}"
            else:
                reply = wire.reply(rid)
                if isinstance(reply, Error):
                    assert reply.code in CODES and reply.detail, f"{frame!r:.300}\n  -> {reply!r:.300}"
                    self.stats[f"error {reply.code}"] += 1
                else:
                    assert type(reply) is REPLY_TO[what], f"{frame!r:.300}\n  -> {reply!r:.300}"
                    self.stats[f"reply {type(reply).__name__}"] += 1
                    self.stale |= isinstance(reply, LogoutResponse)
            self.stale |= any(isinstance(e, PermissionRevoked) for e in wire.events)
            wire.events.clear()
            assert not wire.strays, f"replies to nothing: {wire.strays!r:.300}"
        except ConnectionClosed as exc:
            # The server may close a connection, never silently: a typed Error comes first (1008), or
            # the WebSocket layer says why (1009). Either way the frame was not ignored.
            code = exc.rcvd.code if exc.rcvd is not None else None
            assert code in (POLICY_VIOLATION, MESSAGE_TOO_BIG), f"{frame!r:.300}: closed with {code}"
            assert code != POLICY_VIOLATION or any(isinstance(m, Error) for m in wire.strays.values()), \
                f"{frame!r:.300}: closed (1008) without an Error"
            self.stats[f"closed {code}"] += 1
            self.wire = None

    def close(self) -> None:
        if self.wire is not None:
            self.wire.close()


def test_random_frames_get_a_typed_answer_and_touch_no_file_outside_the_data_folder(tmp_path: Path) -> None:
    decoys(tmp_path)
    data = tmp_path / "srv" / "data"
    # Refused requests and failed logins are this client's whole life here: the limits that would
    # cut it off (tested on their own below) are lifted, so the frames reach deep into the server.
    hub = HubConfig(max_failures=1_000_000, max_bad_requests=1_000_000, tokens_per_minute=1_000_000)
    # No keepalive pings: they draw from the global random, which hypothesis watches while it generates.
    with serving(data, hub=hub, gateway=GatewayConfig(ping_interval=None)) as served:
        before, before_system = files_outside(tmp_path, data), system_files()
        admin = admin_of(served)
        good = good_client(served, admin)
        fuzzer = Fuzzer(served)
        sent = Counter[str]()

        @settings(max_examples=sweep_size(1000, 5000), deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.filter_too_much, HealthCheck.large_base_example])
        @given(frames())
        def one_frame(frame: Frame) -> None:
            fuzzer.send(frame)
            sent["frames"] += 1
            if sent["frames"] % 100 == 0:
                good.check()

        try:
            one_frame()
        finally:
            fuzzer.close()
        good.check(fresh=True)
        ok(admin.ask(Heartbeat(2.0)), HeartbeatAck)
        stats = fuzzer.stats
        assert sent["frames"] >= sweep_size(1000, 5000) * 0.9, sent
        assert stats["error"] > 100 and stats["reply"] > 100 and stats["closed after too many bad frames"] > 3, stats
        assert served.server.gateway.stats.bad_frames >= stats["error"]
        assert files_outside(tmp_path, data) == before, "a file outside the data folder was touched"
        assert system_files() == before_system
    print(f"\nhostile frames: {sent['frames']} sent; {dict(sorted(stats.items()))}")


# --------------------------------------------------------------------------- 2. unauthenticated


def test_unauthenticated_requests_of_every_type_are_refused(tmp_path: Path) -> None:
    with serving(tmp_path / "data") as served:
        admin = admin_of(served, "acme")
        write(admin, "acme", "svc", "x", b"kept")
        alice = new_key(admin, "alice", "acme", "write")
        good = good_client(served, admin)
        forged = "v1.lNkhMzRj.9kysilg2oz84ytjcaLkyAOd9GfDuO1ybya_8U43gu2s"
        cases: list[tuple[Message, str | type[Message] | None]] = [
            (Authenticate("acme", "api_key", "ck_" + alice.key_id + "_" + "A" * 43), UNAUTHENTICATED),
            (Logout("acme"), UNAUTHENTICATED),
            (RefreshToken(forged), UNAUTHENTICATED),
            (CheckPermission("acme", "svc", "read"), UNAUTHENTICATED),
            (Heartbeat(1.0), HeartbeatAck),  # liveness needs no session
            (Resume("s1", forged, (ServiceVersions("acme", "svc", ()),)), UNAUTHENTICATED),
            (GetVariables("acme", "svc", ()), UNAUTHENTICATED),
            (SetVariables("acme", "svc", (NamedValue("x", b"stolen"),), ""), UNAUTHENTICATED),
            (Subscribe("acme", "svc", ()), UNAUTHENTICATED),
            (Unsubscribe("acme", "svc", ()), UNAUTHENTICATED),
            (MapService("acme", "svc"), UNAUTHENTICATED),
            (UnmapService("acme", "svc"), UNAUTHENTICATED),
            (MigrationAck("acme", "svc", "/tmp/x"), None),  # acknowledgements get no reply
            (ClientMigrationAck("s1", True, ""), None),
            (CreateTenant("evil"), UNAUTHENTICATED),
            (DeleteTenant("acme"), UNAUTHENTICATED),
            (CreateService("acme", "evil"), UNAUTHENTICATED),
            (DeleteService("acme", "svc"), UNAUTHENTICATED),
            (GrantPermission("acme", "mallory", ("admin",)), UNAUTHENTICATED),
            (RevokePermission("acme", "alice", ()), UNAUTHENTICATED),
            (CreateApiKey("mallory", True, "", ()), UNAUTHENTICATED),
            (CreateApiKey("mallory", False, "acme", ("admin",)), UNAUTHENTICATED),
            (RevokeApiKey(alice.key_id), UNAUTHENTICATED),
            (ListTenants(), UNAUTHENTICATED),
            (ListServices("acme"), UNAUTHENTICATED),
            (SetAuthHook("acme", "hook"), UNAUTHENTICATED),
        ]
        assert {type(m) for m, _ in cases} == CLIENT_REQUESTS
        for text in (False, True):
            anon = Wire(served.url, text=text)
            for msg, want in cases:
                if want is None:
                    anon.send(msg)
                    ok(anon.ask(Heartbeat(3.0)), HeartbeatAck)
                    assert not anon.strays, f"{msg!r} was answered: {anon.strays}"
                elif isinstance(want, str):
                    anon.refused(msg, want)
                else:
                    ok(anon.ask(msg), want)
            assert not anon.events and not anon.strays
            anon.close()
        # nothing happened: the data, the tenant and alice's access are intact
        assert read(admin, "acme", "svc") == {"x": b"kept"}
        assert ok(admin.ask(ListTenants()), TenantList).tenants == ("acme", "quiet7")
        ok(login(served.url, "acme", alice.key).ask(GetVariables("acme", "svc", ())), VariablesData)
        good.check(fresh=True)


# --------------------------------------------------------------------------- 3. cross-tenant


@dataclass
class TwoTenants:
    admin: Wire
    alice: Wire  # admin of tenant ta only
    bob: Wire  # write on tenant tb only
    keys: dict[str, ApiKeyCreated]
    alice_token: str


def two_tenants(served: Served) -> TwoTenants:
    admin = admin_of(served, "ta", "tb")
    write(admin, "ta", "svc", "x", b"a1")
    write(admin, "tb", "svc", "x", b"b1")
    keys = {"alice": new_key(admin, "alice", "ta", "admin"), "bob": new_key(admin, "bob", "tb", "write"),
            "carol": new_key(admin, "carol", "ta", "read")}
    alice = Wire(served.url)
    auth = ok(alice.ask(Authenticate("ta", "api_key", keys["alice"].key)), AuthenticationResponse)
    bob = login(served.url, "tb", keys["bob"].key)
    return TwoTenants(admin, alice, bob, keys, auth.token)


def test_cross_tenant_requests_of_every_type_are_refused(tmp_path: Path) -> None:
    with serving(tmp_path / "data") as served:
        w = two_tenants(served)
        good = good_client(served, w.admin)
        bob_key_id = w.keys["bob"].key_id
        # alice administers ta; none of it carries over to tb or to the server
        on_tb: list[tuple[Message, str]] = [
            (GetVariables("tb", "svc", ()), UNAUTHENTICATED),
            (SetVariables("tb", "svc", (NamedValue("x", b"evil"),), ""), UNAUTHENTICATED),
            (Subscribe("tb", "svc", ()), UNAUTHENTICATED),
            (Unsubscribe("tb", "svc", ()), UNAUTHENTICATED),
            (MapService("tb", "svc"), UNAUTHENTICATED),
            (UnmapService("tb", "svc"), UNAUTHENTICATED),
            (CheckPermission("tb", "svc", "read"), UNAUTHENTICATED),
            (Logout("tb"), UNAUTHENTICATED),
            (ListServices("tb"), UNAUTHENTICATED),
            (CreateService("tb", "evil"), UNAUTHENTICATED),
            (DeleteService("tb", "svc"), UNAUTHENTICATED),
            (GrantPermission("tb", "alice", ("admin",)), UNAUTHENTICATED),
            (RevokePermission("tb", "bob", ()), UNAUTHENTICATED),
            (CreateApiKey("alice", False, "tb", ("admin",)), UNAUTHENTICATED),
            (CreateTenant("tc"), FORBIDDEN),
            (DeleteTenant("tb"), FORBIDDEN),
            (ListTenants(), FORBIDDEN),
            (RevokeApiKey(bob_key_id), FORBIDDEN),
            (CreateApiKey("mallory", True, "", ()), FORBIDDEN),
            (CreateApiKey("mallory", True, "ta", ("admin",)), FORBIDDEN),
            (CreateApiKey("mallory", False, "", ()), FORBIDDEN),
            (SetAuthHook("tb", "hook"), FORBIDDEN),
            (SetAuthHook("ta", "hook"), FORBIDDEN),  # who picks the hook picks the users: server admins only
            (Authenticate("tb", "api_key", w.keys["alice"].key), FORBIDDEN),
            (Authenticate("tb", "token", w.alice_token), FORBIDDEN),
            (Authenticate(SERVER, "api_key", w.keys["alice"].key), FORBIDDEN),
            (Authenticate(SERVER, "token", w.alice_token), FORBIDDEN),
            (Resume("s1", w.alice_token, (ServiceVersions("tb", "svc", ()),)), FORBIDDEN),
        ]
        exempt = {Heartbeat, RefreshToken, MigrationAck, ClientMigrationAck}  # no tenant, or no reply
        assert {type(m) for m, _ in on_tb} | exempt == CLIENT_REQUESTS
        for text in (False, True):
            for msg, code in on_tb:
                w.alice.refused(msg, code, text=text)
        # and bob, on tb, gets nothing of ta
        for msg, code in [(GetVariables("ta", "svc", ()), UNAUTHENTICATED),
                          (Subscribe("ta", "svc", ()), UNAUTHENTICATED),
                          (SetVariables("ta", "svc", (NamedValue("x", b"evil"),), ""), UNAUTHENTICATED),
                          (Authenticate("ta", "api_key", w.keys["bob"].key), FORBIDDEN),
                          (GrantPermission("ta", "bob", ("admin",)), UNAUTHENTICATED)]:
            w.bob.refused(msg, code)
        # a tenant whose name is another's prefix or differs in case is another tenant
        for other in ("t", "TB", "tb ", "tb."):
            w.alice.refused(GetVariables(other, "svc", ()), UNAUTHENTICATED)
        # nothing moved
        assert read(w.admin, "tb", "svc") == {"x": b"b1"} and read(w.admin, "ta", "svc") == {"x": b"a1"}
        assert ok(w.admin.ask(ListTenants()), TenantList).tenants == ("quiet7", "ta", "tb")
        assert read(w.bob, "tb", "svc") == {"x": b"b1"}
        good.check(fresh=True)


def test_a_tenant_admin_cannot_mint_keys_that_reach_other_tenants_or_the_server(tmp_path: Path) -> None:
    """A tenant admin creates API keys on its tenant; a key minted that way for an existing client id
    (a client of another tenant, or the server admin `admin`) must not open sessions outside the
    tenant. Either the server refuses to mint it (`forbidden`), or the key it mints reaches no further."""
    with serving(tmp_path / "data") as served:
        w = two_tenants(served)
        escalations = []
        for client_id, elsewhere in [("bob", "tb"), ("admin", SERVER), ("admin", "tb")]:
            minted = w.alice.ask(CreateApiKey(client_id, False, "ta", ("read",)))
            if isinstance(minted, Error):
                assert minted.code == FORBIDDEN, minted
                continue
            key = ok(minted, ApiKeyCreated).key
            thief = Wire(served.url)
            stolen = thief.ask(Authenticate(elsewhere, "api_key", key))
            if not (isinstance(stolen, Error) and stolen.code in (FORBIDDEN, UNAUTHENTICATED)):
                escalations.append(f"a key minted by alice (admin of ta only) for {client_id!r} opens a session "
                                   f"on {elsewhere or 'the server'!r}: {type(stolen).__name__}")
                if elsewhere == SERVER and isinstance(stolen, AuthenticationResponse):
                    # ... with every server-wide right: listing and deleting any tenant
                    assert ok(thief.ask(ListTenants()), TenantList).tenants == ("ta", "tb")
            thief.close()
        assert not escalations, "\n".join(escalations)
        assert read(w.admin, "tb", "svc") == {"x": b"b1"}


def test_a_subscriber_on_one_tenant_never_hears_of_another(tmp_path: Path) -> None:
    with serving(tmp_path / "data") as served:
        w = two_tenants(served)
        carol = login(served.url, "ta", w.keys["carol"].key)
        ok(carol.ask(Subscribe("ta", "svc", ())), SubscriptionAck)  # the whole service, new variables too
        carol.refused(Subscribe("tb", "svc", ()), UNAUTHENTICATED)
        # bob writes tb/svc (same service and variable names), then alice writes ta/svc
        for i in range(20):
            write(w.bob, "tb", "svc", "x", b"tb %d" % i)
            write(w.bob, "tb", "svc", f"new{i}", b"tb")
        write(w.alice, "ta", "svc", "x", b"ta only")
        change = ok(carol.next_event(), VariableChanged)
        assert (change.tenant, change.service, change.name, change.value) == ("ta", "svc", "x", b"ta only"), change
        with pytest.raises(TimeoutError):
            carol.next_event(timeout=0.2)
        assert not carol.events and not carol.strays
        # and bob's tb subscription hears nothing of ta
        ok(w.bob.ask(Subscribe("tb", "svc", ())), SubscriptionAck)
        write(w.alice, "ta", "svc", "x", b"ta again")
        write(w.admin, "tb", "svc", "marker", b"tb")
        change = ok(w.bob.next_event(), VariableChanged)
        assert (change.tenant, change.name) == ("tb", "marker"), change


# --------------------------------------------------------------------------- 4. tokens


def _tamper(token: str) -> list[str]:
    """Forgeries of a real token: a flipped signature, a re-signed-nothing payload, no signature..."""
    version, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    raw = msgpack.unpackb(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    longer = [raw[0], raw[1], raw[2], raw[3] + 10**6]
    forged_payload = base64.urlsafe_b64encode(msgpack.packb(longer)).rstrip(b"=").decode()
    return [
        f"{version}.{payload}.{flipped}",
        f"{version}.{forged_payload}.{signature}",  # a later expiry, the old signature
        f"{version}.{payload}.",
        f"{version}.{payload}",
        f"v2.{payload}.{signature}",
        f"{version}.{payload}.{signature}=",
        f"{version}.{payload}.{signature}".upper(),
        token + "x" * 1100,
        "",
        "v1..",
        "é" * 10,
        TEN_KB,
    ]


def test_forged_tokens_and_tokens_from_another_server_are_refused(tmp_path: Path) -> None:
    with serving(tmp_path / "one") as one, serving(tmp_path / "two") as two:
        admin = admin_of(one, "acme")
        key = new_key(admin, "alice", "acme", "write")
        good = good_client(one, admin)
        token = ok(Wire(one.url).ask(Authenticate("acme", "api_key", key.key)), AuthenticationResponse).token
        other = ok(Wire(two.url).ask(Authenticate(SERVER, "api_key", two.admin_key)), AuthenticationResponse).token
        mallory = Wire(one.url)
        for bad in [*_tamper(token), other]:  # `other` is a real token, signed with another server's key
            mallory.refused(Authenticate("acme", "token", bad), UNAUTHENTICATED)
            mallory.refused(Authenticate(SERVER, "token", bad), UNAUTHENTICATED)
            mallory.refused(RefreshToken(bad), UNAUTHENTICATED)
            mallory.refused(Resume("s1", bad, (ServiceVersions("acme", "svc", ()),)), UNAUTHENTICATED)
            mallory.refused(GetVariables("acme", "svc", ()), UNAUTHENTICATED)
        # the real one still works
        ok(mallory.ask(Authenticate("acme", "token", token)), AuthenticationResponse)
        good.check(fresh=True)


def test_expired_tokens_are_refused_and_their_sessions_end(tmp_path: Path) -> None:
    hub = HubConfig(token_ttl=0.5, sweep_interval=0.05)
    with serving(tmp_path / "data", hub=hub) as served:
        holder = Wire(served.url)
        auth = ok(holder.ask(Authenticate(SERVER, "api_key", served.admin_key)), AuthenticationResponse)
        other = Wire(served.url)
        deadline = time.monotonic() + DEADLINE
        while True:  # valid until it expires, then `expired`
            assert time.monotonic() < deadline, "the token never expired"
            reply = other.ask(Authenticate(SERVER, "token", auth.token))
            if isinstance(reply, Error):
                assert reply.code == EXPIRED, reply
                break
            ok(reply, AuthenticationResponse)
            time.sleep(0.05)
        late = Wire(served.url)
        late.refused(Authenticate(SERVER, "token", auth.token), EXPIRED)
        late.refused(RefreshToken(auth.token), EXPIRED)
        late.refused(Resume(auth.session_id, auth.token, ()), EXPIRED)
        # the session it opened is over: told so, then refused
        revoked = ok(holder.next_event(), PermissionRevoked)
        assert revoked.tenant == SERVER and "expired" in revoked.reason, revoked
        holder.refused(ListTenants(), UNAUTHENTICATED)
        # a fresh login is served (and tokens keep a 0.5 s life here: this one is used at once)
        ok(late.ask(Authenticate(SERVER, "api_key", served.admin_key)), AuthenticationResponse)
        ok(late.ask(ListTenants()), TenantList)


def test_logged_out_refreshed_and_key_revoked_tokens_are_refused(tmp_path: Path) -> None:
    with serving(tmp_path / "data") as served:
        admin = admin_of(served, "acme")
        write(admin, "acme", "svc", "x", b"1")
        key = new_key(admin, "alice", "acme", "write")
        good = good_client(served, admin)

        # logout revokes the token everywhere
        alice = Wire(served.url)
        token = ok(alice.ask(Authenticate("acme", "api_key", key.key)), AuthenticationResponse).token
        ok(alice.ask(Logout("acme")), LogoutResponse)
        alice.refused(GetVariables("acme", "svc", ()), UNAUTHENTICATED)
        alice.refused(Logout("acme"), UNAUTHENTICATED)
        for wire in (alice, Wire(served.url)):
            wire.refused(Authenticate("acme", "token", token), UNAUTHENTICATED)
            wire.refused(RefreshToken(token), UNAUTHENTICATED)
            wire.refused(Resume("s1", token, (ServiceVersions("acme", "svc", ()),)), UNAUTHENTICATED)

        # a refreshed token replaces the old one
        token = ok(alice.ask(Authenticate("acme", "api_key", key.key)), AuthenticationResponse).token
        fresh = ok(alice.ask(RefreshToken(token)), TokenRefreshResponse).token
        other = Wire(served.url)
        other.refused(Authenticate("acme", "token", token), UNAUTHENTICATED)
        other.refused(RefreshToken(token), UNAUTHENTICATED)
        ok(other.ask(Authenticate("acme", "token", fresh)), AuthenticationResponse)

        # revoking the key ends its sessions and refuses the key and its tokens
        ok(admin.ask(RevokeApiKey(key.key_id)), AdminDone)
        assert ok(other.next_event(), PermissionRevoked).tenant == "acme"
        other.refused(GetVariables("acme", "svc", ()), UNAUTHENTICATED)
        late = Wire(served.url)
        late.refused(Authenticate("acme", "token", fresh), UNAUTHENTICATED)
        late.refused(Authenticate("acme", "api_key", key.key), UNAUTHENTICATED)
        late.refused(RefreshToken(fresh), UNAUTHENTICATED)
        good.check(fresh=True)


# --------------------------------------------------------------------------- 5. brute force


def test_brute_force_on_one_key_locks_that_key_after_five_tries(tmp_path: Path) -> None:
    with serving(tmp_path / "data") as served:
        admin = admin_of(served, "acme")
        victim = new_key(admin, "victim", "acme", "write")
        bystander = new_key(admin, "bystander", "acme", "write")
        good = good_client(served, admin)
        guess = victim.key[:20] + bystander.key[20:]  # the victim's key id with a wrong (well-formed) secret
        assert guess != victim.key and len(guess) == len(victim.key)
        attacker = Wire(served.url)
        for _ in range(5):
            attacker.refused(Authenticate("acme", "api_key", guess), UNAUTHENTICATED)
        attacker.refused(Authenticate("acme", "api_key", guess), RATE_LIMITED)
        # locked for everyone, the right secret included, from any connection
        attacker.refused(Authenticate("acme", "api_key", victim.key), RATE_LIMITED)
        Wire(served.url).refused(Authenticate("acme", "api_key", victim.key), RATE_LIMITED)
        # other keys are not
        ok(Wire(served.url).ask(Authenticate("acme", "api_key", bystander.key)), AuthenticationResponse)
        good.check(fresh=True)


def test_brute_force_from_one_address_locks_that_address(tmp_path: Path) -> None:
    """A source address gets ten times a key's tries (here 2 x 10): after that every login from it is
    refused, whatever the key -- on loopback that is every local client. Sessions already open stay."""
    with serving(tmp_path / "data", hub=HubConfig(max_failures=2)) as served:
        admin = admin_of(served, "acme")
        good = good_client(served, admin)
        spare = new_key(admin, "spare", "acme", "read")
        attacker = Wire(served.url)
        for i in range(20):
            attacker.refused(Authenticate("acme", "api_key", f"guess-{i}"), UNAUTHENTICATED)
        attacker.refused(Authenticate("acme", "api_key", "guess-20"), RATE_LIMITED)
        Wire(served.url).refused(Authenticate("acme", "api_key", spare.key), RATE_LIMITED)
        good.check()  # an open session is still served


# --------------------------------------------------------------------------- 6. names, sizes


def test_hostile_names_are_bad_requests_and_touch_nothing_outside(tmp_path: Path) -> None:
    decoys(tmp_path)
    data = tmp_path / "srv" / "data"
    with serving(data) as served:
        before, before_system = files_outside(tmp_path, data), system_files()
        admin = admin_of(served, "acme")
        write(admin, "acme", "svc", "x", b"1")
        good = good_client(served, admin)
        token = ok(admin.ask(Authenticate("acme", "api_key", served.admin_key)), AuthenticationResponse).token
        # (a fresh connection per name: more than 100 refused requests would close one)
        for i, name in enumerate(BAD_PATH_NAMES):
            wire = login(served.url, SERVER, served.admin_key)
            ok(wire.ask(Authenticate("acme", "api_key", served.admin_key)), AuthenticationResponse)
            for msg in [
                CreateTenant(name), DeleteTenant(name), SetAuthHook(name, "hook"),
                CreateApiKey("someone", False, name, ("read",)),
                CreateService("acme", name), DeleteService("acme", name),
                SetVariables("acme", name, (NamedValue("v", b"1"),), ""),
                GetVariables("acme", name, ()), Subscribe("acme", name, ()), Unsubscribe("acme", name, ()),
                MapService("acme", name),
                Resume("s1", token, (ServiceVersions("acme", name, ()),)),
                Resume("s1", token, (ServiceVersions(name, "svc", ()),)),
            ]:
                wire.refused(msg, BAD_REQUEST, text=i % 2 == 1)
            if name:  # (the tenant "" is the server itself)
                # a tenant by that name does not exist: nobody logs in to it or acts in it
                wire.refused(Authenticate(name, "api_key", served.admin_key), UNAUTHENTICATED)
                wire.refused(ListServices(name), UNAUTHENTICATED)
            wire.close()
        for name in BAD_VARIABLES:
            for msg in [SetVariables("acme", "svc", (NamedValue(name, b"1"),), ""),
                        GetVariables("acme", "svc", (name,)), Subscribe("acme", "svc", (name,))]:
                admin.refused(msg, BAD_REQUEST)
        for client_id in ["", "a b", "a\x00b", TEN_KB, "é"]:
            for msg in [CreateApiKey(client_id, False, "acme", ("read",)),
                        GrantPermission("acme", client_id, ("read",)), RevokePermission("acme", client_id, ())]:
                admin.refused(msg, BAD_REQUEST)
        # Variable names live inside the service file's table, never in a path: these are fine there.
        for name in PATH_TRICKS[:8]:
            write(admin, "acme", "svc", name, name.encode())
        assert read(admin, "acme", "svc", *PATH_TRICKS[:8]) == {n: n.encode() for n in PATH_TRICKS[:8]}
        assert ok(admin.ask(ListTenants()), TenantList).tenants == ("acme", "quiet7")
        assert ok(admin.ask(ListServices("acme")), ServiceList).services == ("svc",)
        good.check(fresh=True)
        assert files_outside(tmp_path, data) == before
        assert system_files() == before_system


def test_unmap_and_unsubscribe_refuse_bad_names_too(tmp_path: Path) -> None:
    """Every request naming a service or a variable refuses a name that cannot be one (`bad_request`),
    as the other requests do; none acknowledges an operation on `../../x` as done."""
    with serving(tmp_path / "data") as served:
        admin = admin_of(served, "acme")
        write(admin, "acme", "svc", "x", b"1")
        for name in ["../../x", "/etc/passwd", "a\x00b", TEN_KB]:
            admin.refused(UnmapService("acme", name), BAD_REQUEST)
        for name in ["a\x00b", TEN_KB, ""]:
            admin.refused(Unsubscribe("acme", "svc", (name,)), BAD_REQUEST)


def test_oversize_frames_close_the_connection_and_others_keep_working(tmp_path: Path) -> None:
    limit = 64 << 10
    with serving(tmp_path / "data", gateway=GatewayConfig(max_frame=limit)) as served:
        admin = admin_of(served, "acme")
        good = good_client(served, admin)
        # exactly at the limit is served
        probe = CODEC.encode_binary(1, SetVariables("acme", "svc", (NamedValue("v", b""),), ""))
        value = b"v" * (limit - len(probe) - 4)
        frame = CODEC.encode_binary(1, SetVariables("acme", "svc", (NamedValue("v", value),), ""))
        value += b"v" * (limit - len(frame))
        frame = CODEC.encode_binary(1, SetVariables("acme", "svc", (NamedValue("v", value),), ""))
        assert len(frame) == limit
        admin.raw(frame, False)
        ok(admin.reply(1), VariablesUpdated)

        attacks: list[Any] = [
            lambda w: w.raw(b"\x00" * (limit + 1), False),  # binary, one byte over
            lambda w: w.raw("x" * (limit + 1), True),  # text, one byte over
            lambda w: w.ws.send([b"a" * (limit // 2 + 1), b"b" * (limit // 2 + 1)]),  # fragments over in total
            lambda w: w.raw(frame + b"\x00", False),  # a valid request, plus one byte
            # a frame header claiming 2**40 bytes, and nothing after it
            lambda w: w.ws.socket.sendall(bytes([0x82, 0xFF]) + (1 << 40).to_bytes(8, "big") + b"mask"),
        ]
        for attack in attacks:
            attacker = login(served.url, "acme", served.admin_key)
            attack(attacker)
            assert attacker.closed_by_server() == MESSAGE_TOO_BIG
            good.check()
        good.check(fresh=True)


def test_oversize_values_are_too_large(tmp_path: Path) -> None:
    # The store's value limit is not a server option (FileStore's max_value, 16 MiB, is fixed by
    # start_server): the frame limit is raised above it so that a value can reach the store.
    with serving(tmp_path / "data", gateway=GatewayConfig(max_frame=DEFAULT_MAX_VALUE + (64 << 10))) as served:
        admin = admin_of(served, "acme")
        good = good_client(served, admin)
        write(admin, "acme", "svc", "x", b"before")
        big = bytes(DEFAULT_MAX_VALUE + 1)
        admin.refused(SetVariables("acme", "svc", (NamedValue("x", big),), ""), TOO_LARGE)
        assert read(admin, "acme", "svc", "x") == {"x": b"before"}
        good.check(fresh=True)


def test_a_write_refused_as_too_large_changes_nothing(tmp_path: Path) -> None:
    """SetVariables answered with an Error must not have applied part of itself: here its first
    variable is small and its second too large, and the reply is `too_large`."""
    with serving(tmp_path / "data", gateway=GatewayConfig(max_frame=DEFAULT_MAX_VALUE + (64 << 10))) as served:
        admin = admin_of(served, "acme")
        write(admin, "acme", "svc", "small", b"before")
        watcher = login(served.url, "acme", served.admin_key)
        ok(watcher.ask(Subscribe("acme", "svc", ())), SubscriptionAck)
        big = bytes(DEFAULT_MAX_VALUE + 1)
        admin.refused(SetVariables("acme", "svc", (NamedValue("small", b"after"), NamedValue("big", big)), ""),
                      TOO_LARGE)
        write(admin, "acme", "svc", "marker", b"m")
        change = ok(watcher.next_event(), VariableChanged)
        assert change.name == "marker", f"a subscriber heard of a write that was refused: {change!r:.200}"
        assert read(admin, "acme", "svc", "small") == {"small": b"before"}


# --------------------------------------------------------------------------- 7. garbage


def test_garbage_and_truncated_frames_get_typed_errors_with_the_request_id(tmp_path: Path) -> None:
    def pack(obj: Any) -> bytes:
        return msgpack.packb(obj, use_bin_type=True)

    valid = pack([7, [Heartbeat.TAG, 1, 1.0]])
    set_frame = CODEC.encode_binary(9, SetVariables("acme", "svc", (NamedValue("x", b"1"),), ""))
    binary: list[tuple[bytes, str, int]] = [
        (b"", BAD_FRAME, 0),
        (b"\xc1", BAD_FRAME, 0),  # never used in msgpack
        (b"\x92\x07", BAD_FRAME, 0),  # an array of two with one element
        (valid[:-1], BAD_FRAME, 0),
        (set_frame[: len(set_frame) // 2], BAD_FRAME, 0),
        (valid + b"\x00", BAD_FRAME, 0),  # trailing bytes
        (b"\x91" * 100_000, BAD_FRAME, 0),  # nested too deeply
        (pack({"id": 1}), BAD_FRAME, 0),
        (pack([1, 2, 3]), BAD_FRAME, 0),
        (pack([-1, [Heartbeat.TAG, 1, 1.0]]), BAD_FRAME, 0),
        (pack([2**63, [Heartbeat.TAG, 1, 1.0]]), BAD_FRAME, 0),
        (pack([1.5, [Heartbeat.TAG, 1, 1.0]]), BAD_FRAME, 0),
        (pack([True, [Heartbeat.TAG, 1, 1.0]]), BAD_FRAME, 0),
        (pack([11, [Heartbeat.TAG, 1]]), BAD_REQUEST, 11),  # a field missing
        (pack([12, [Heartbeat.TAG, 1, 1.0, 2.0]]), BAD_REQUEST, 12),  # one too many
        (pack([13, [Heartbeat.TAG, 1, "soon"]]), BAD_REQUEST, 13),  # a field of the wrong type
        (pack([14, [Heartbeat.TAG, 2, 1.0]]), BAD_REQUEST, 14),  # an unknown schema version
        (pack([15, [9999, 1]]), UNKNOWN_MESSAGE, 15),
        (pack([16, [Error.TAG, 1, "x", "y"]]), UNKNOWN_MESSAGE, 16),  # a server's message
        (pack([17, [HeartbeatAck.TAG, 1, 1.0, 1.0]]), UNKNOWN_MESSAGE, 17),
        (pack([18, [10, 1, 1, 1.0, "healthy"]]), UNKNOWN_MESSAGE, 18),  # a peer message
        (pack([19, [1000, 1]]), UNKNOWN_MESSAGE, 19),  # a local one
        (pack([20, "Heartbeat"]), BAD_REQUEST, 20),
        (pack([21, []]), BAD_REQUEST, 21),
        (pack([22, [Authenticate.TAG, 1, "acme", "api_key", b"bytes, not str"]]), BAD_REQUEST, 22),
        (pack([23, [SetVariables.TAG, 1, "acme", "svc", [["x"]], ""]]), BAD_REQUEST, 23),
    ]
    text: list[tuple[bytes | str, str, int]] = [
        ("", BAD_FRAME, 0),
        ("{", BAD_FRAME, 0),
        ('{"type": "Heartbeat", "id": 5, "sent_at": 1.0', BAD_FRAME, 0),
        ("[1, 2]", BAD_FRAME, 0),
        ("null", BAD_FRAME, 0),
        ("[" * 100_000, BAD_FRAME, 0),
        (b"\xff\xfe{}", BAD_FRAME, 0),  # not UTF-8
        ('{"type": "Heartbeat", "id": "5", "sent_at": 1.0}', BAD_FRAME, 0),
        ('{"type": "Heartbeat", "id": -5, "sent_at": 1.0}', BAD_FRAME, 0),
        ('{"type": "Heartbeat", "id": 5}', BAD_REQUEST, 5),
        ('{"type": "Heartbeat", "id": 6, "sent_at": "soon"}', BAD_REQUEST, 6),
        ('{"type": "Heartbeat", "id": 7, "sent_at": 1.0, "extra": 1}', BAD_REQUEST, 7),
        ('{"type": "Nope", "id": 8}', UNKNOWN_MESSAGE, 8),
        ('{"type": "Error", "id": 9, "code": "x", "detail": "y"}', UNKNOWN_MESSAGE, 9),
        ('{"type": "HeartbeatPing", "id": 10}', UNKNOWN_MESSAGE, 10),
        ('{"id": 11, "sent_at": 1.0}', UNKNOWN_MESSAGE, 11),
        ('{"type": "SetVariables", "id": 12, "tenant": "acme", "service": "svc", '
         '"variables": [{"name": "x", "value": "!!not base64"}], "concern": ""}', BAD_REQUEST, 12),
        ('{"type": "SetVariables", "id": 13, "tenant": "acme", "service": "svc", '
         '"variables": [{"name": "x"}], "concern": ""}', BAD_REQUEST, 13),
        ('{"type": "SetVariables", "id": 14, "tenant": "acme", "service": "svc", '
         '"variables": "x", "concern": ""}', BAD_REQUEST, 14),
    ]
    with serving(tmp_path / "data") as served:
        admin = admin_of(served, "acme")
        good = good_client(served, admin)
        cases: list[tuple[bytes | str, bool, str, int]] = [(p, False, c, i) for p, c, i in binary]
        cases += [(p, True, c, i) for p, c, i in text]
        for start in range(0, len(cases), MAX_BAD_FRAMES):  # a fresh connection before it is cut off
            wire = login(served.url, "acme", served.admin_key)
            for payload, is_text, code, rid in cases[start:start + MAX_BAD_FRAMES]:
                assert expected((payload, is_text))[:2] == ("error", rid), payload
                wire.raw(payload, is_text)
                got, reply = decode(wire.ws.recv(REPLY))
                assert isinstance(reply, Error) and (reply.code, got) == (code, rid), f"{payload!r:.80} -> {reply!r}"
            # the connection still serves (its bad frames are under the limit)
            ok(wire.ask(Heartbeat(4.0)), HeartbeatAck)
            wire.close()
        good.check(fresh=True)


def test_too_many_bad_frames_or_refused_requests_close_the_connection(tmp_path: Path) -> None:
    with serving(tmp_path / "data") as served:
        admin = admin_of(served, "acme")
        good = good_client(served, admin)
        # bad frames: each is answered; the one past the limit is answered, then the connection closes
        wire = login(served.url, "acme", served.admin_key)
        for i in range(MAX_BAD_FRAMES + 1):
            wire.raw(b"\xc1garbage %d" % i, False)
        for _ in range(MAX_BAD_FRAMES + 1):
            assert ok(wire.reply(0), Error).code == BAD_FRAME
        assert wire.closed_by_server() == POLICY_VIOLATION
        good.check()
        # a mix of text and binary garbage counts the same
        wire = Wire(served.url)
        for i in range(MAX_BAD_FRAMES + 1):
            wire.raw("{" if i % 2 else b"\xc1", bool(i % 2))
        assert wire.closed_by_server() == POLICY_VIOLATION
        assert len([m for m in wire.strays.values() if isinstance(m, Error)]) >= 1
        good.check()
        # refused requests: past max_bad_requests (100), an Error (request id 0) and the close
        limit = HubConfig().max_bad_requests
        anon = Wire(served.url)
        ids = [anon.send(GetVariables("acme", "svc", ())) for _ in range(limit + 1)]
        for rid in ids:
            assert ok(anon.reply(rid), Error).code == UNAUTHENTICATED
        drop = ok(anon.reply(0), Error)
        assert drop.code == BAD_REQUEST, drop
        assert anon.closed_by_server() == POLICY_VIOLATION
        good.check(fresh=True)


def test_replies_keep_the_form_of_their_request(tmp_path: Path) -> None:
    """A reply goes out in the form (binary or text) of the request it answers -- also after the
    client used the same request id in a text frame that gets no reply (an acknowledgement)."""
    with serving(tmp_path / "data") as served:
        wire = login(served.url, SERVER, served.admin_key)
        wire.send(MigrationAck("acme", "svc", "/x"), rid=9, text=True)  # no reply, by design
        wire.send(Heartbeat(1.0), rid=9, text=False)
        data = wire.ws.recv(REPLY)
        assert isinstance(data, bytes), f"a binary request was answered with a text frame: {data!r:.200}"
        ok(decode(data)[1], HeartbeatAck)


# --------------------------------------------------------------------------- 8. stall


@pytest.mark.parametrize("limit", ["queue_bytes", "stall_timeout"])
def test_a_client_that_never_reads_is_dropped_while_others_keep_receiving(tmp_path: Path, limit: str) -> None:
    """Dropped when its queue passes `max_queue_bytes`, or when its socket took nothing for
    `stall_timeout` while data waited; a subscriber that reads gets every change meanwhile."""
    config = (GatewayConfig(max_queue_bytes=256 << 10) if limit == "queue_bytes"
              else GatewayConfig(stall_timeout=0.5))
    with serving(tmp_path / "data", gateway=config) as served:
        admin = admin_of(served, "acme")
        write(admin, "acme", "svc", "big", b"")
        good = good_client(served, admin)
        reader = login(served.url, "acme", served.admin_key)
        ok(reader.ask(Subscribe("acme", "svc", ())), SubscriptionAck)
        # the staller: a tiny receive buffer, and a client that buffers one message at most
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(served.server.gateway.listen_address or ("", 0))
        staller = login(served.url, "acme", served.admin_key, sock=sock, max_queue=1)
        ok(staller.ask(Subscribe("acme", "svc", ())), SubscriptionAck)
        big = os.urandom(64 << 10)
        deadline = time.monotonic() + DEADLINE
        last = 0
        while served.server.gateway.stats.stalled == 0:  # the staller reads nothing from here on
            assert time.monotonic() < deadline, "the staller was never dropped"
            version = write(admin, "acme", "svc", "big", big)
            change = ok(reader.next_event(), VariableChanged)
            assert (change.name, change.version, change.value) == ("big", version, big)
            assert version == last + 1 or last == 0
            last = version
            if limit == "stall_timeout":
                time.sleep(0.01)  # (slowly: far from the 16 MiB queue limit)
        [stalled] = served.events("client_stalled")
        assert ("queued" if limit == "queue_bytes" else "nothing written") in str(stalled["why"]), stalled
        # the reader goes on receiving every change
        for i in range(5):
            version = write(admin, "acme", "svc", "tick", b"%d" % i)
            change = ok(reader.next_event(), VariableChanged)
            assert (change.name, change.value, change.version) == ("tick", b"%d" % i, version)
        # the staller gets what was on its way, then the end of the connection
        with pytest.raises(ConnectionClosed):
            while time.monotonic() < deadline + DEADLINE:
                staller.ws.recv(REPLY)
        good.check(fresh=True)
        assert served.server.gateway.stats.stalled == 1


# --------------------------------------------------------------------------- found on the way


def test_deleting_a_tenant_without_services_answers_done(tmp_path: Path) -> None:
    """A server admin deletes a tenant that has no service yet: the tenant goes, and the reply must
    say so (not `not_found`), with the catalog saved at once like every other admin change."""
    with serving(tmp_path / "data") as served:
        admin = admin_of(served)
        ok(admin.ask(CreateTenant("empty")), AdminDone)
        catalog_store = served.server.node.actors["catalog-store"]
        saved = getattr(catalog_store, "saved")  # noqa: B009  (a runtime actor's counter)
        done = admin.ask(DeleteTenant("empty"))
        assert ok(admin.ask(ListTenants()), TenantList).tenants == ()  # it is gone ...
        ok(done, AdminDone)  # ... and the reply must say so
        assert getattr(catalog_store, "saved") > saved, "the deletion was not saved"  # noqa: B009


def test_grant_and_revoke_refuse_bad_tenant_names_briefly(tmp_path: Path) -> None:
    """GrantPermission and RevokePermission check a tenant name like every other admin request does
    (`bad_request`), and no refusal quotes a 10 kB name back in full."""
    with serving(tmp_path / "data") as served:
        admin = admin_of(served, "acme")
        problems = []
        for name in ["../../x", "a\x00b", TEN_KB]:
            for msg in [GrantPermission(name, "bob", ("read",)), RevokePermission(name, "bob", ())]:
                reply = ok(admin.ask(msg), Error)
                if reply.code != BAD_REQUEST or len(reply.detail) > 200:
                    problems.append(f"{type(msg).__name__}({name[:12]!r}...): {reply.code}, "
                                    f"a {len(reply.detail)}-character detail")
        assert not problems, "\n".join(problems)

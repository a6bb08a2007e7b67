"""Hostile-client test rig: a real embedded server in a background thread, and a bare client.

`serving(data, **options)` runs `start_server` in-process on 127.0.0.1 (port 0) with a cheap
scrypt cost on an asyncio loop of its own thread, and fails the test if a handler crashed or the
server logged an error. `Wire` is a blocking `websockets` client speaking the documented wire forms
(binary and text); `login`, `admin_of`, `good_client` and friends set up the usual actors;
`files_outside` and `decoys` watch the file system outside the data folder. Used by the
`tests/integration/test_hostile_*.py` suites (issue 3, "Bad input and attacks").
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from commy.client_codec import FrameError, client_codec, server_codec
from commy.core.catalog_records import KdfParams
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
from commy.messages import ClientMigration, Error, Message
from commy.messages.client import (
    SERVER,
    UNANSWERED,
    AdminDone,
    ApiKeyCreated,
    Authenticate,
    AuthenticationResponse,
    CreateApiKey,
    CreateTenant,
    FileMigration,
    GetVariables,
    NamedValue,
    PermissionRevoked,
    SetVariables,
    VariableChanged,
    VariablesData,
    VariablesUpdated,
)
from commy.runtime.gateway import GatewayConfig
from commy.runtime.server import RunningServer, start_server

LOOPBACK = "127.0.0.1"
CHEAP_KDF = KdfParams(n=2, r=1, p=1)  # logins stay fast; the KDF's cost is not what these tests test
DEADLINE = 10.0  # any single bounded wait
REPLY = 5.0  # one reply
CODEC = client_codec()  # what a client decodes (replies and events) and encodes (anything)
ORACLE = server_codec()  # the server's own decoder: says what a frame must be answered with
MAX_BAD_FRAMES = GatewayConfig().max_bad_frames
POLICY_VIOLATION, MESSAGE_TOO_BIG = 1008, 1009

EVENTS = (VariableChanged, PermissionRevoked, FileMigration, ClientMigration)
ACKS = UNANSWERED  # acknowledgements: the protocol sends no reply
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


# --------------------------------------------------------------------------- what a frame must get


Frame = tuple[bytes | str, bool]  # (payload, sent as a text frame)


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

"""Hostile clients, 1: random frames (issue 3, "Bad input and attacks").

1,000 hypothesis frames (``--slow``: 5,000) -- random bytes and msgpack, well-shaped frames with
random tags and fields, client requests with hostile names, truncations, random text and JSON --
sent to a real server: each gets the typed reply or `Error` the server's own decoder predicts, or a
close after too many bad frames, and no file outside the data folder is touched.
"""

from __future__ import annotations

import itertools
import json
import typing
from collections import Counter
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from commy.core.hub_base import HubConfig
from commy.errors import (
    BAD_REQUEST,
)
from commy.messages import REGISTRY, Error, Message
from commy.messages.client import (
    CLIENT_REQUESTS,
    REPLY_TO,
    SERVER,
    AdminDone,
    Authenticate,
    AuthenticationResponse,
    CheckPermission,
    CreateService,
    CreateTenant,
    DeleteService,
    GetVariables,
    Heartbeat,
    HeartbeatAck,
    ListServices,
    LogoutResponse,
    MapService,
    PermissionRevoked,
    SetVariables,
    Subscribe,
    UnmapService,
    Unsubscribe,
)
from commy.runtime.gateway import GatewayConfig
from tests.helpers import sweep_size
from tests.helpers.hostile import (
    BAD_PATH_NAMES,
    BAD_VARIABLES,
    CODEC,
    CODES,
    MAX_BAD_FRAMES,
    MESSAGE_TOO_BIG,
    POLICY_VIOLATION,
    TEN_KB,
    Frame,
    Served,
    Wire,
    admin_of,
    decoys,
    expected,
    files_outside,
    good_client,
    ok,
    serving,
    system_files,
)
from tests.helpers.strategies import fields_of, for_type, messages, msgpack_values

pytestmark = pytest.mark.integration


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

"""Hostile clients, 3: names, sizes, garbage and stalls (issue 3, "Bad input and attacks").

Against a real server over real WebSockets, each asserting its error code and that a well-behaved
client is still served: hostile names, oversize frames and values, garbage and truncated msgpack
and JSON, too many bad frames or refused requests, reply forms, and a client that never reads.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
from websockets.exceptions import ConnectionClosed

from commy.core.hub_base import HubConfig
from commy.errors import (
    BAD_FRAME,
    BAD_REQUEST,
    TOO_LARGE,
    UNAUTHENTICATED,
    UNKNOWN_MESSAGE,
)
from commy.messages import Error
from commy.messages.client import (
    SERVER,
    AdminDone,
    Authenticate,
    AuthenticationResponse,
    CreateApiKey,
    CreateService,
    CreateTenant,
    DeleteService,
    DeleteTenant,
    GetVariables,
    GrantPermission,
    Heartbeat,
    HeartbeatAck,
    ListServices,
    ListTenants,
    MapService,
    MigrationAck,
    NamedValue,
    Resume,
    RevokePermission,
    ServiceList,
    ServiceVersions,
    SetAuthHook,
    SetVariables,
    Subscribe,
    SubscriptionAck,
    TenantList,
    UnmapService,
    Unsubscribe,
    VariableChanged,
    VariablesUpdated,
)
from commy.runtime.gateway import GatewayConfig
from commy.store.service_file import DEFAULT_MAX_VALUE
from tests.helpers.hostile import (
    BAD_PATH_NAMES,
    BAD_VARIABLES,
    CODEC,
    DEADLINE,
    MAX_BAD_FRAMES,
    MESSAGE_TOO_BIG,
    PATH_TRICKS,
    POLICY_VIOLATION,
    REPLY,
    TEN_KB,
    Wire,
    admin_of,
    decode,
    decoys,
    expected,
    files_outside,
    good_client,
    login,
    ok,
    read,
    serving,
    system_files,
    write,
)

pytestmark = pytest.mark.integration


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
            with contextlib.suppress(ConnectionClosed):  # the server may close before the last byte is sent
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

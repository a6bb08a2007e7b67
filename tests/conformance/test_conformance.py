"""One conformance suite, run over every transport: the simulated network and real TCP.

Each test drives the `Harness` protocol only (tests/conformance/harness.py), so the simulator and
the TCP runtime are held to the same promises: every message arrives once and intact, a link keeps
order, a broken link reports LinkDown on both ends and comes back with LinkUp, and a peer that
breaks the protocol (oversize frame, garbage with or without a handshake, a spoofed sender) gets a
typed `Error` frame and is cut off while the node keeps serving its real peers. A connection
without the cluster secret (no handshake, no proof, a wrong proof) gets `Error(unauthenticated)`
and nothing it sends -- a membership join, a replication write -- reaches any actor. Timeouts are
seconds of the harness's clock: virtual in the simulator, real (and bounded) over TCP.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest

from commy.codec import DEFAULT_CODEC
from commy.errors import BAD_REQUEST, TOO_LARGE, UNAUTHENTICATED, UNKNOWN_MESSAGE, RemoteProtocolError
from commy.framing import FrameDecoder, encode_frame
from commy.link import LINK_ACTOR, PROTOCOL_VERSION
from commy.messages import (
    Address,
    Envelope,
    Error,
    HeartbeatPing,
    HeartbeatTick,
    JoinRequest,
    LinkDown,
    LinkUp,
    MemberInfo,
    Message,
    MetadataExchange,
    MetadataExchangeAck,
    Replicate,
    ServerStatus,
    WriteRecord,
)
from tests.conformance.harness import PROBE, Harness

NODES = ["n1", "n2", "n3"]
WAIT = 10.0  # seconds; generous for TCP on a busy machine, nothing for the simulator


def _make(kind: str) -> Harness:
    if kind == "sim":
        module = importlib.import_module("tests.conformance.harness_sim")
        return module.SimHarness()  # type: ignore[no-any-return]
    from tests.conformance.harness_tcp import TcpHarness

    return TcpHarness()


@pytest.fixture(params=["sim", "tcp"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = _make(request.param)
    try:
        yield h
    finally:
        h.stop()


def ping(seq: int) -> HeartbeatPing:
    return HeartbeatPing(seq, float(seq), ServerStatus.HEALTHY)


def seqs(h: Harness, node: str, sender: str) -> list[int]:
    return [e.body.seq for e in h.probe(node).received
            if e.sender.node == sender and isinstance(e.body, HeartbeatPing)]


def link_events(h: Harness, node: str, kind: type, peer: str) -> int:
    return sum(1 for m in h.probe(node).link_events if type(m) is kind and m.peer == peer)  # type: ignore[attr-defined]


def rogue_errors(h: Harness) -> list[Envelope]:
    """The Error envelopes the rogue connection received (for the link pseudo-actor)."""
    out: list[Envelope] = []
    frames = FrameDecoder(1 << 30).feed(h.rogue_received())
    if frames and _is_ack(frames[0]):
        frames = frames[1:]  # the node's MetadataExchangeAck, when the rogue opened a handshake
    for frame in frames:
        env = DEFAULT_CODEC.decode(frame)
        if type(env.body) is Error and env.receiver.name == LINK_ACTOR:
            out.append(env)
    return out


def _is_ack(frame: bytes) -> bool:
    try:
        return type(DEFAULT_CODEC.decode_message(frame)) is MetadataExchangeAck
    except RemoteProtocolError:
        return False


def rogue_got(h: Harness, code: str) -> bool:
    try:
        return any(e.body.code == code for e in rogue_errors(h))  # type: ignore[attr-defined]
    except Exception:  # a partial frame: not there yet
        return False


def assert_cut_off(h: Harness, code: str) -> None:
    assert h.run_until(lambda: rogue_got(h, code), WAIT), f"no Error({code}) for the rogue: {h.rogue_received()!r}"
    closed = getattr(h, "rogue_closed", None)  # only transports with real connections can tell
    if closed is not None:
        assert h.run_until(closed, WAIT), "the rogue connection was not closed"


def assert_still_serving(h: Harness, dst: str = "n1", base: int = 10_000) -> None:
    """Real peers still reach `dst` and `dst` still reaches them."""
    for src in NODES:
        if src != dst:
            h.send(src, dst, ping(base))
            h.send(dst, src, ping(base + 1))
    assert h.run_until(
        lambda: all(base in seqs(h, dst, s) and base + 1 in seqs(h, s, dst) for s in NODES if s != dst), WAIT
    )


# ---------------------------------------------------------------------------------------- delivery


def test_every_message_arrives_once_and_intact(harness: Harness) -> None:
    harness.start(NODES)
    per_pair = 25
    sent = 0
    for src in NODES:
        for dst in NODES:
            if src != dst:
                for i in range(per_pair):
                    harness.send(src, dst, HeartbeatPing(i, 0.5 + i, ServerStatus.DEGRADED))
                    sent += 1
    total = lambda: sum(len(harness.probe(n).received) for n in NODES)  # noqa: E731
    assert harness.run_until(lambda: total() >= sent, WAIT), f"{total()} of {sent} arrived"
    harness.run_until(lambda: False, 0.2)  # let any duplicate show up
    assert total() == sent
    for dst in NODES:
        for env in harness.probe(dst).received:
            assert env.receiver == Address(dst, PROBE)
            assert env.sender.name == PROBE and env.sender.node in NODES and env.sender.node != dst
            assert env.body == HeartbeatPing(env.body.seq, 0.5 + env.body.seq, ServerStatus.DEGRADED)  # type: ignore[attr-defined]
        for src in NODES:
            if src != dst:
                assert sorted(seqs(harness, dst, src)) == list(range(per_pair))


def test_a_link_keeps_order(harness: Harness) -> None:
    harness.start(["n1", "n2"])
    n = 1000
    for i in range(n):
        harness.send("n1", "n2", ping(i))
    assert harness.run_until(lambda: len(seqs(harness, "n2", "n1")) >= n, WAIT)
    assert seqs(harness, "n2", "n1") == list(range(n))


def test_a_broken_link_reports_down_then_reconnects(harness: Harness) -> None:
    harness.start(NODES)
    # Both transports announce every link once at start; count from after that.
    assert harness.run_until(
        lambda: all(link_events(harness, n, LinkUp, p) >= 1 for n in NODES for p in NODES if p != n), WAIT
    )
    downs = {n: link_events(harness, n, LinkDown, p) for n, p in (("n1", "n2"), ("n2", "n1"))}
    ups = {n: link_events(harness, n, LinkUp, p) for n, p in (("n1", "n2"), ("n2", "n1"))}
    harness.break_link("n1", "n2")
    assert harness.run_until(
        lambda: link_events(harness, "n1", LinkDown, "n2") > downs["n1"]
        and link_events(harness, "n2", LinkDown, "n1") > downs["n2"], WAIT
    ), "LinkDown not seen on both ends"
    assert harness.run_until(
        lambda: link_events(harness, "n1", LinkUp, "n2") > ups["n1"]
        and link_events(harness, "n2", LinkUp, "n1") > ups["n2"], WAIT
    ), "LinkUp not seen on both ends after the reconnect"
    # Whether a message sent while the link is down waits or is lost is the transport's business;
    # after LinkUp on both ends, messages flow both ways again.
    harness.send("n1", "n2", ping(1))
    harness.send("n2", "n1", ping(2))
    assert harness.run_until(lambda: 1 in seqs(harness, "n2", "n1") and 2 in seqs(harness, "n1", "n2"), WAIT)
    # The third node never noticed anything.
    assert link_events(harness, "n3", LinkDown, "n1") == 0 and link_events(harness, "n3", LinkDown, "n2") == 0


# ------------------------------------------------------------------------- peers that misbehave


def test_an_oversize_frame_cuts_off_only_that_link(harness: Harness) -> None:
    harness.start(NODES, max_frame=4096)
    harness.inject_raw("n1", (4097).to_bytes(4, "big") + b"\x00" * 16, hello_as="n9")
    assert_cut_off(harness, TOO_LARGE)
    assert_still_serving(harness)


def test_garbage_after_a_valid_handshake_is_a_bad_request(harness: Harness) -> None:
    harness.start(NODES)
    harness.inject_raw("n1", encode_frame(b"\xc1 this is not msgpack"), hello_as="n9")
    assert_cut_off(harness, BAD_REQUEST)
    assert_still_serving(harness)


def test_garbage_without_a_handshake_is_a_bad_request(harness: Harness) -> None:
    harness.start(NODES)
    harness.inject_raw("n1", encode_frame(b"\x93\x01\x02"))  # a valid frame whose payload is not msgpack
    assert_cut_off(harness, BAD_REQUEST)
    assert_still_serving(harness)


def test_a_spoofed_sender_is_refused(harness: Harness) -> None:
    harness.start(NODES)
    spoofed = Envelope(1, None, Address("n3", PROBE), Address("n1", PROBE), 0.0, ping(666))
    harness.inject_raw("n1", encode_frame(DEFAULT_CODEC.encode(spoofed)), hello_as="n2")
    assert_cut_off(harness, BAD_REQUEST)
    assert 666 not in seqs(harness, "n1", "n3") + seqs(harness, "n1", "n2")
    assert_still_serving(harness)


def test_a_local_only_message_from_a_peer_is_refused(harness: Harness) -> None:
    harness.start(NODES)
    tick = Envelope(1, None, Address("n2", "heartbeat"), Address("n1", "heartbeat"), 0.0, HeartbeatTick())
    harness.inject_raw("n1", encode_frame(DEFAULT_CODEC.encode(tick)), hello_as="n2")
    assert_cut_off(harness, UNKNOWN_MESSAGE)
    assert_still_serving(harness)


# ------------------------------------------------------------------- strangers without the secret

REPLICATE = Replicate("acme", "prices", (WriteRecord("eur", b"forged", (1 << 40) | 2, 0, "rogue"),), ())
JOIN = JoinRequest(MemberInfo("n2", 2, "127.0.0.1", 9, "ws://127.0.0.1:9", 7))


def _as_from(body: Message, sender: str) -> bytes:
    """`body` to n1's probe (which records whatever reaches it) as if from `sender`."""
    return encode_frame(DEFAULT_CODEC.encode(Envelope(1, None, Address(sender, PROBE), Address("n1", PROBE), 0.0,
                                                      body)))


def _seen(h: Harness, kind: type) -> bool:
    return any(type(e.body) is kind for n in NODES for e in h.probe(n).received)


@pytest.mark.parametrize("body", [REPLICATE, JOIN], ids=["replicate", "join"])
@pytest.mark.parametrize("how", ["no-handshake", "no-proof", "wrong-secret"])
def test_a_node_without_the_cluster_secret_cannot_join_or_inject_a_replication_message(
    harness: Harness, how: str, body: Message,
) -> None:
    harness.start(NODES)
    data = _as_from(body, "n2")
    if how == "no-handshake":  # the envelope straight away
        harness.inject_raw("n1", data)
    elif how == "no-proof":  # a well-formed MetadataExchange, then the envelope without waiting to prove
        exchange = MetadataExchange("n2", PROTOCOL_VERSION, ServerStatus.HEALTHY, b"\x01" * 32)
        harness.inject_raw("n1", encode_frame(DEFAULT_CODEC.encode_message(exchange)) + data)
    else:  # the whole handshake, proving with a secret that is not the cluster's
        harness.inject_raw("n1", data, hello_as="n2", secret=b"a guess at the cluster secret!!!")
    assert_cut_off(harness, UNAUTHENTICATED)
    harness.run_until(lambda: False, 0.2)  # anything that slipped through would have arrived by now
    assert not _seen(harness, type(body)), "a message from a connection without the secret was delivered"
    assert_still_serving(harness)


def test_the_same_message_from_a_holder_of_the_secret_is_delivered(harness: Harness) -> None:
    # The control for the test above: the probe does see what an authenticated link carries.
    harness.start(NODES)
    harness.inject_raw("n1", _as_from(REPLICATE, "n9"), hello_as="n9")
    assert harness.run_until(lambda: _seen(harness, Replicate), WAIT)
    assert rogue_errors(harness) == []

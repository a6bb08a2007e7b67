"""PeerLink: hello handshake, anti-spoofing, typed errors both ways, never raising on peer garbage."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commy.codec import DEFAULT_CODEC
from commy.errors import BAD_REQUEST, TOO_LARGE, LocalProtocolError
from commy.framing import FrameDecoder, encode_frame
from commy.link import HELLO_MAX_FRAME, LINK_ACTOR, PROTOCOL_VERSION, LinkFailure, LinkState, PeerLink
from commy.messages import Address, Envelope, Error, HeartbeatPing, LinkHello, ServerStatus
from tests.helpers import sweep_size

PING = HeartbeatPing(1, 0.5, ServerStatus.HEALTHY)


def env(sender: str = "a", receiver: str = "b", msg_id: int = 1) -> Envelope:
    return Envelope(msg_id, None, Address(sender, "x"), Address(receiver, "y"), 1.0, PING)


def hello(node: str = "a", version: int = PROTOCOL_VERSION) -> bytes:
    return encode_frame(DEFAULT_CODEC.encode_message(LinkHello(node, version)))


def frames_out(link: PeerLink) -> list[Envelope]:
    """The envelopes a link queued, after the answering hello an acceptor sends first."""
    frames = FrameDecoder().feed(link.data_to_send())
    if frames and frames[0] == hello(link.local_node)[4:]:
        frames = frames[1:]
    return [DEFAULT_CODEC.decode(f) for f in frames]


def open_pair() -> tuple[PeerLink, PeerLink]:
    """Dialer a -> acceptor b, after both hellos."""
    dialer, acceptor = PeerLink("a", "b", send_hello=True), PeerLink("b", None)
    assert acceptor.state is LinkState.AWAITING_HELLO and dialer.state is LinkState.AWAITING_HELLO
    assert acceptor.receive_data(dialer.data_to_send()) == []
    assert acceptor.state is LinkState.OPEN and acceptor.peer == "a"
    assert dialer.receive_data(acceptor.data_to_send()) == []  # b's answering hello
    assert dialer.state is LinkState.OPEN
    return dialer, acceptor


def test_a_dialer_may_not_send_before_the_answer() -> None:
    with pytest.raises(LocalProtocolError):
        PeerLink("a", "b", send_hello=True).send(env())


def test_a_dialer_refuses_an_answer_from_another_node() -> None:
    dialer = PeerLink("a", "b", send_hello=True)
    dialer.data_to_send()
    dialer.receive_data(hello("c"))
    assert dialer.failure is not None and "dialed 'b' but 'c' answered" in dialer.failure.detail


def test_before_the_hello_a_frame_may_not_be_large() -> None:
    acceptor = PeerLink("b", None)
    acceptor.receive_data((HELLO_MAX_FRAME + 1).to_bytes(4, "big"))
    assert acceptor.failure is not None and acceptor.failure.code == TOO_LARGE


def test_after_the_hello_large_frames_are_fine_even_in_the_same_read() -> None:
    dialer, acceptor = PeerLink("a", "b", send_hello=True), PeerLink("b", None)
    big = Envelope(1, None, Address("a", "x"), Address("b", "y"), 1.0, Error("x", "y" * 5000))
    stream = dialer.data_to_send() + encode_frame(DEFAULT_CODEC.encode(big))
    assert acceptor.receive_data(stream) == [big]


def assert_closed_with_error(link: PeerLink, code: str, receiver: str) -> None:
    assert link.closed and link.failure is not None and link.failure.code == code and not link.failure.by_peer
    (out,) = frames_out(link)
    assert out.receiver == Address(receiver, LINK_ACTOR) and out.sender == Address(link.local_node, LINK_ACTOR)
    assert out.body == Error(code, link.failure.detail)


def test_hello_then_envelopes_both_ways() -> None:
    dialer, acceptor = open_pair()
    dialer.send(env("a", "b", 1))
    dialer.send(env("a", "b", 2))
    assert acceptor.receive_data(dialer.data_to_send()) == [env("a", "b", 1), env("a", "b", 2)]
    acceptor.send(env("b", "a", 3))
    assert dialer.receive_data(acceptor.data_to_send()) == [env("b", "a", 3)]
    assert dialer.data_to_send() == b"" and not dialer.closed and not acceptor.closed


def test_one_byte_at_a_time_including_the_hello() -> None:
    dialer = PeerLink("a", "b", send_hello=True)
    dialer.receive_data(hello("b"))  # b's answer, so the dialer may send
    dialer.send(env(msg_id=1))
    assert dialer.encode(env(msg_id=2)) == encode_frame(DEFAULT_CODEC.encode(env(msg_id=2)))
    stream = dialer.data_to_send() + dialer.encode(env(msg_id=2))
    acceptor = PeerLink("b", None)
    got = [e for byte in stream for e in acceptor.receive_data(bytes([byte]))]
    assert got == [env(msg_id=1), env(msg_id=2)] and acceptor.peer == "a"


@pytest.mark.parametrize(("first", "text"), [
    (encode_frame(DEFAULT_CODEC.encode(env())), "LinkHello schema version None"),  # an envelope: [1, None, ...]
    (encode_frame(DEFAULT_CODEC.encode_message(PING)), "expected LinkHello first, got HeartbeatPing"),
    (hello(version=PROTOCOL_VERSION + 1), "protocol version 2 not supported"),
    (hello("b"), "bad node id in hello: 'b'"),  # our own id
    (hello(""), "bad node id"),
    (hello("client:0123456789abcdef"), "bad node id"),  # would speak as one of our WebSocket clients
    (encode_frame(b"\xc1"), "not valid msgpack"),
])
def test_bad_hello_closes_with_an_error(first: bytes, text: str) -> None:
    acceptor = PeerLink("b", None)
    assert acceptor.receive_data(first + hello("a")) == []
    assert acceptor.failure is not None and text in acceptor.failure.detail
    assert_closed_with_error(acceptor, acceptor.failure.code, "?")
    assert acceptor.peer is None and acceptor.receive_data(hello("a")) == []


def test_dialer_learns_why_its_hello_was_refused() -> None:
    dialer, acceptor = PeerLink("a", "b", send_hello=False), PeerLink("b", None)
    acceptor.receive_data(hello("a", version=9))
    assert dialer.receive_data(acceptor.data_to_send()) == []
    assert dialer.closed and dialer.failure == LinkFailure("bad_request", "protocol version 9 not supported", True)


@pytest.mark.parametrize(("spoofed", "text"), [(env(sender="c"), "sender 'c'"), (env(receiver="c"), "receiver 'c'")])
def test_spoofed_addresses_close_the_link(spoofed: Envelope, text: str) -> None:
    dialer, acceptor = open_pair()
    data = dialer.encode(env(msg_id=1)) + dialer.encode(spoofed) + dialer.encode(env(msg_id=2))
    assert acceptor.receive_data(data) == [env(msg_id=1)]  # what came before is still delivered
    assert acceptor.failure is not None and text in acceptor.failure.detail
    assert_closed_with_error(acceptor, BAD_REQUEST, "a")


def test_oversize_frame_on_an_open_link() -> None:
    acceptor = PeerLink("b", None, max_frame=200)
    acceptor.receive_data(hello("a"))
    acceptor.receive_data((201).to_bytes(4, "big"))
    assert_closed_with_error(acceptor, TOO_LARGE, "a")


@pytest.mark.parametrize(("max_frame", "sent"), [(64, [Error(TOO_LARGE, "")]), (16, [])])
def test_error_frame_shrinks_to_fit_a_tiny_max_frame(max_frame: int, sent: list[Error]) -> None:
    acceptor = PeerLink("b", None, max_frame=max_frame)
    acceptor.receive_data(hello("a"))
    acceptor.receive_data((max_frame + 1).to_bytes(4, "big"))
    assert acceptor.closed and acceptor.failure is not None and acceptor.failure.code == TOO_LARGE
    assert [e.body for e in frames_out(acceptor)] == sent


def test_peer_error_is_a_failure_by_peer() -> None:
    dialer, acceptor = open_pair()
    acceptor.close("draining", "node b is leaving")
    assert acceptor.failure == LinkFailure("draining", "node b is leaving", False)
    dialer.send(env(msg_id=5))
    assert dialer.receive_data(acceptor.data_to_send() + acceptor.encode(env("b", "a"))) == []
    assert dialer.closed and dialer.failure == LinkFailure("draining", "node b is leaving", True)
    assert dialer.data_to_send().endswith(DEFAULT_CODEC.encode(env(msg_id=5)))  # queued before: not lost


def test_close_is_idempotent_and_silent_before_the_hello() -> None:
    early = PeerLink("b", None)
    early.close()
    assert early.closed and early.data_to_send() == b""
    assert early.failure == LinkFailure("closed", "closed by this node", False)
    dialer, _ = open_pair()
    dialer.close()
    dialer.close("other", "ignored")
    assert [e.body for e in frames_out(dialer)] == [Error("closed", "closed by this node")]


def test_send_on_a_closed_or_unopened_link_is_our_bug() -> None:
    for link in (PeerLink("b", None), open_pair()[0]):
        link.close()
        with pytest.raises(LocalProtocolError, match="send on a link in state CLOSED"):
            link.send(env())
    with pytest.raises(LocalProtocolError, match="AWAITING_HELLO"):
        PeerLink("b", None).send(env())


@pytest.mark.slow
@settings(max_examples=sweep_size(1000, 20_000))
@given(st.binary(max_size=120), st.booleans(), st.randoms(use_true_random=False))
def test_random_bytes_only_close_the_link(data: bytes, after_hello: bool, rnd: random.Random) -> None:
    link = PeerLink("b", None, max_frame=rnd.choice([16, 64, 1 << 20]))
    if after_hello:
        link.receive_data(hello("a"))
    pos = 0
    while pos < len(data):
        step = rnd.randint(1, 12)
        for got in link.receive_data(data[pos:pos + step]):
            assert got.sender.node == "a" and got.receiver.node == "b"
        pos += step
    if link.closed:
        assert link.failure is not None and link.failure.code
        link.data_to_send()
    else:
        assert link.failure is None


def test_a_dialer_hears_why_its_hello_was_refused() -> None:
    dialer, acceptor = PeerLink("a", "b", send_hello=True), PeerLink("b", None)
    acceptor.receive_data(hello("a", version=PROTOCOL_VERSION + 1))
    dialer.data_to_send()
    dialer.receive_data(acceptor.data_to_send())
    assert dialer.failure == LinkFailure(BAD_REQUEST, f"protocol version {PROTOCOL_VERSION + 1} not supported",
                                         by_peer=True)
    assert dialer.data_to_send() == b""  # nothing sent back: the peer's reason is final

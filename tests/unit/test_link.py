"""PeerLink: the cluster-secret handshake (both proofs, fresh challenges, every split point),
anti-spoofing, typed errors both ways, never raising on peer garbage."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commy.codec import DEFAULT_CODEC
from commy.errors import BAD_REQUEST, TOO_LARGE, UNAUTHENTICATED, LocalProtocolError, RemoteProtocolError
from commy.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame
from commy.link import (
    ACCEPTOR,
    DIALER,
    HELLO_MAX_FRAME,
    LINK_ACTOR,
    PROTOCOL_VERSION,
    LinkFailure,
    LinkState,
    PeerLink,
    handshake_proof,
    link_key,
)
from commy.messages import (
    Address,
    Envelope,
    Error,
    HeartbeatPing,
    JoinProof,
    Message,
    MetadataExchange,
    MetadataExchangeAck,
    ServerStatus,
)
from tests.helpers import sweep_size

SECRET = b"the cluster secret, 32 bytes ok!"
WRONG = b"not the cluster secret at all!!!"
PING = HeartbeatPing(1, 0.5, ServerStatus.HEALTHY)
_seeds = iter(range(1, 1 << 30))


def env(sender: str = "a", receiver: str = "b", msg_id: int = 1) -> Envelope:
    return Envelope(msg_id, None, Address(sender, "x"), Address(receiver, "y"), 1.0, PING)


def dialer(node: str = "a", peer: str = "b", secret: bytes = SECRET, max_frame: int = DEFAULT_MAX_FRAME) -> PeerLink:
    return PeerLink(node, peer, secret=secret, entropy=random.Random(next(_seeds)).randbytes, max_frame=max_frame)


def acceptor(node: str = "b", secret: bytes = SECRET, max_frame: int = DEFAULT_MAX_FRAME) -> PeerLink:
    return PeerLink(node, None, secret=secret, entropy=random.Random(next(_seeds)).randbytes, max_frame=max_frame)


def frame(msg: Message) -> bytes:
    return encode_frame(DEFAULT_CODEC.encode_message(msg))


def exchange(node: str = "a", version: int = PROTOCOL_VERSION, challenge: bytes = b"c" * 32) -> bytes:
    return frame(MetadataExchange(node, version, ServerStatus.HEALTHY, challenge))


def decoded(data: bytes) -> list[Message | Envelope]:
    """Each frame as a handshake message or, failing that, an envelope."""
    out: list[Message | Envelope] = []
    for f in FrameDecoder().feed(data):
        try:
            out.append(DEFAULT_CODEC.decode_message(f))
        except RemoteProtocolError:
            out.append(DEFAULT_CODEC.decode(f))
    return out


def frames_out(link: PeerLink) -> list[Envelope]:
    """The envelopes a link queued (its handshake frames left out)."""
    return [e for e in decoded(link.data_to_send()) if isinstance(e, Envelope)]


def open_pair(max_frame: int = DEFAULT_MAX_FRAME) -> tuple[PeerLink, PeerLink]:
    """Dialer a -> acceptor b, after the three handshake frames."""
    d, a = dialer(max_frame=max_frame), acceptor(max_frame=max_frame)
    assert d.state is LinkState.AWAITING_ACK and a.state is LinkState.AWAITING_EXCHANGE
    assert a.receive_data(d.data_to_send()) == []
    assert a.state is LinkState.AWAITING_PROOF and a.peer == "a"
    assert d.receive_data(a.data_to_send()) == []
    assert d.state is LinkState.OPEN and d.peer_status is ServerStatus.HEALTHY
    assert a.receive_data(d.data_to_send()) == []
    assert a.state is LinkState.OPEN and a.data_to_send() == b""
    return d, a


def assert_closed_with_error(link: PeerLink, code: str, receiver: str) -> None:
    assert link.closed and link.failure is not None and link.failure.code == code and not link.failure.by_peer
    (out,) = frames_out(link)
    assert out.receiver == Address(receiver, LINK_ACTOR) and out.sender == Address(link.local_node, LINK_ACTOR)
    assert out.body == Error(code, link.failure.detail)


# ------------------------------------------------------------------------------------ handshake


def test_the_handshake_is_three_frames_and_never_carries_the_secret() -> None:
    d, a = dialer(), acceptor()
    first = d.data_to_send()
    a.receive_data(first)
    second = a.data_to_send()
    d.receive_data(second)
    third = d.data_to_send()
    a.receive_data(third)
    (ex,), (ack,), (proof,) = decoded(first), decoded(second), decoded(third)
    assert isinstance(ex, MetadataExchange) and isinstance(ack, MetadataExchangeAck) and isinstance(proof, JoinProof)
    key = link_key(SECRET)
    assert ack.response == handshake_proof(key, ACCEPTOR, "a", "b", ex.challenge, ack.challenge)
    assert proof.response == handshake_proof(key, DIALER, "a", "b", ex.challenge, ack.challenge)
    assert ex.challenge != ack.challenge and len(ex.challenge) == len(ack.challenge) == 32
    wire = first + second + third
    assert SECRET not in wire and key not in wire
    assert a.state is d.state is LinkState.OPEN


def test_proof_inputs_are_framed_so_fields_cannot_slide() -> None:
    key, c = link_key(SECRET), b"x" * 32
    assert handshake_proof(key, DIALER, "ab", "c", c, c) != handshake_proof(key, DIALER, "a", "bc", c, c)
    assert handshake_proof(key, DIALER, "a", "b", c, c) != handshake_proof(key, ACCEPTOR, "a", "b", c, c)


def test_a_dialer_may_not_send_before_the_handshake() -> None:
    with pytest.raises(LocalProtocolError, match="AWAITING_ACK"):
        dialer().send(env())
    with pytest.raises(LocalProtocolError, match="AWAITING_EXCHANGE"):
        acceptor().send(env())


def test_a_dialer_refuses_an_answer_from_another_node() -> None:
    d, c = dialer(), acceptor("c")
    c.receive_data(d.data_to_send())
    d.receive_data(c.data_to_send())
    assert d.failure is not None and "dialed 'b' but 'c' answered" in d.failure.detail and d.data_to_send()


def test_every_split_point_of_the_handshake_and_the_first_envelopes() -> None:
    # One byte at a time through all three legs ...
    d, a = dialer(), acceptor()
    for byte in d.data_to_send():
        assert a.receive_data(bytes([byte])) == []
    for byte in a.data_to_send():
        assert d.receive_data(bytes([byte])) == []
    assert d.state is LinkState.OPEN
    d.send(env(msg_id=1))
    d.send(env(msg_id=2))
    stream = d.data_to_send()  # the JoinProof, then envelopes sent at once after it
    got = [e for byte in stream for e in a.receive_data(bytes([byte]))]
    assert got == [env(msg_id=1), env(msg_id=2)] and a.peer == "a" and a.state is LinkState.OPEN
    # ... and the last leg cut at every point.
    for cut in range(len(stream) + 1):
        d2, a2 = dialer(), acceptor()
        a2.receive_data(d2.data_to_send())
        d2.receive_data(a2.data_to_send())
        d2.send(env(msg_id=1))
        d2.send(env(msg_id=2))
        tail = d2.data_to_send()
        assert a2.receive_data(tail[:cut]) + a2.receive_data(tail[cut:]) == [env(msg_id=1), env(msg_id=2)], cut


def test_after_the_handshake_large_frames_are_fine_even_in_the_same_read() -> None:
    d, a = dialer(), acceptor()
    a.receive_data(d.data_to_send())
    d.receive_data(a.data_to_send())
    big = Envelope(1, None, Address("a", "x"), Address("b", "y"), 1.0, Error("x", "y" * 5000))
    d.send(big)
    assert a.receive_data(d.data_to_send()) == [big]


@pytest.mark.parametrize("leg", ["exchange", "proof", "ack"])
def test_every_handshake_frame_may_not_be_large(leg: str) -> None:
    d, a = dialer(), acceptor()
    target = d if leg == "ack" else a
    if leg == "proof":
        a.receive_data(d.data_to_send())
    target.receive_data((HELLO_MAX_FRAME + 1).to_bytes(4, "big"))
    assert target.failure is not None and target.failure.code == TOO_LARGE


def test_a_dialer_with_the_wrong_secret_never_opens_either_end() -> None:
    d, a = dialer(secret=WRONG), acceptor()
    a.receive_data(d.data_to_send())
    d.receive_data(a.data_to_send())  # a's proof does not check out under d's key: d sends no proof
    assert d.closed and d.failure == LinkFailure(UNAUTHENTICATED, "'b' did not prove it holds the cluster secret",
                                                 False)
    a.receive_data(d.data_to_send())  # d's Error
    assert a.closed and a.failure is not None and a.failure.code == UNAUTHENTICATED and a.failure.by_peer


def test_a_forged_join_proof_is_refused_with_unauthenticated() -> None:
    a = acceptor()
    a.receive_data(exchange("a"))
    (ack,) = decoded(a.data_to_send())
    assert isinstance(ack, MetadataExchangeAck)
    forged = handshake_proof(link_key(WRONG), DIALER, "a", "b", b"c" * 32, ack.challenge)
    assert a.receive_data(frame(JoinProof(forged)) + encode_frame(DEFAULT_CODEC.encode(env()))) == []
    assert_closed_with_error(a, UNAUTHENTICATED, "a")
    assert a.receive_data(encode_frame(DEFAULT_CODEC.encode(env()))) == []


def test_an_impostor_acceptor_is_caught_by_the_dialer() -> None:
    d, impostor = dialer(), acceptor(secret=WRONG)
    impostor.receive_data(d.data_to_send())
    assert d.receive_data(impostor.data_to_send()) == []
    assert_closed_with_error(d, UNAUTHENTICATED, "b")  # its Error, and no JoinProof went out


@pytest.mark.parametrize("same_read", [True, False])
def test_an_envelope_before_the_proof_is_refused(same_read: bool) -> None:
    a = acceptor()
    data = encode_frame(DEFAULT_CODEC.encode(env()))
    if same_read:
        assert a.receive_data(exchange("a") + data) == []
    else:
        a.receive_data(exchange("a"))
        assert decoded(a.data_to_send())[0].__class__ is MetadataExchangeAck
        assert a.receive_data(data) == []
    assert a.failure is not None and "HeartbeatPing envelope before the link is authenticated" in a.failure.detail
    assert_closed_with_error(a, UNAUTHENTICATED, "a")


def test_a_replayed_join_proof_fails_against_a_fresh_challenge() -> None:
    d, a = dialer(), acceptor()
    first = d.data_to_send()
    a.receive_data(first)
    d.receive_data(a.data_to_send())
    proof = d.data_to_send()
    a.receive_data(proof)
    assert a.state is LinkState.OPEN
    replay = acceptor()  # the same dialer bytes, recorded, against a new handshake
    replay.receive_data(first)
    replay.data_to_send()
    replay.receive_data(proof)
    assert_closed_with_error(replay, UNAUTHENTICATED, "a")


@pytest.mark.parametrize(("first", "code", "text"), [
    (encode_frame(DEFAULT_CODEC.encode(env())), UNAUTHENTICATED, "envelope before the link is authenticated"),
    (frame(PING), UNAUTHENTICATED, "expected MetadataExchange first, got HeartbeatPing"),
    (frame(JoinProof(b"x" * 32)), UNAUTHENTICATED, "expected MetadataExchange first, got JoinProof"),
    (exchange(version=PROTOCOL_VERSION + 1), BAD_REQUEST, "protocol version 2 not supported"),
    (exchange(challenge=b"short"), BAD_REQUEST, "challenge of 5 bytes"),
    (exchange("b"), BAD_REQUEST, "bad node id in MetadataExchange: 'b'"),  # our own id
    (exchange(""), BAD_REQUEST, "bad node id"),
    (exchange("client:0123456789abcdef"), BAD_REQUEST, "bad node id"),  # would speak as one of our clients
    (encode_frame(b"\xc1"), BAD_REQUEST, "not valid msgpack"),
])
def test_a_bad_first_frame_closes_with_an_error(first: bytes, code: str, text: str) -> None:
    a = acceptor()
    assert a.receive_data(first + exchange("a")) == []
    assert a.failure is not None and text in a.failure.detail
    assert_closed_with_error(a, code, "?")
    assert a.peer is None and a.receive_data(exchange("a")) == []


@pytest.mark.parametrize(("reply", "text"), [
    (frame(PING), "expected MetadataExchangeAck, got HeartbeatPing"),
    (encode_frame(DEFAULT_CODEC.encode(env("b", "a"))), "envelope before the link is authenticated"),
])
def test_a_dialer_refuses_anything_but_the_ack(reply: bytes, text: str) -> None:
    d = dialer()
    d.data_to_send()
    assert d.receive_data(reply) == []
    assert d.failure is not None and text in d.failure.detail
    assert_closed_with_error(d, UNAUTHENTICATED, "b")


def test_a_dialer_hears_why_its_handshake_was_refused() -> None:
    a = acceptor()
    a.receive_data(exchange("a", version=PROTOCOL_VERSION + 1))
    d = dialer()
    d.data_to_send()
    assert d.receive_data(a.data_to_send()) == []
    assert d.failure == LinkFailure(BAD_REQUEST, f"protocol version {PROTOCOL_VERSION + 1} not supported",
                                    by_peer=True)
    assert d.data_to_send() == b""  # nothing sent back: the peer's reason is final


def test_an_acceptor_hears_why_the_dialer_gave_up() -> None:
    a = acceptor()
    a.receive_data(exchange("a"))
    a.data_to_send()
    bye = Envelope(0, None, Address("a", LINK_ACTOR), Address("b", LINK_ACTOR), 0.0, Error("closed", "bye"))
    assert a.receive_data(encode_frame(DEFAULT_CODEC.encode(bye))) == []
    assert a.failure == LinkFailure("closed", "bye", by_peer=True) and a.data_to_send() == b""


def test_a_trusted_link_is_open_at_once_and_needs_no_secret() -> None:
    tx, rx = PeerLink.trusted("a", "b"), PeerLink.trusted("b", "a")
    assert tx.state is rx.state is LinkState.OPEN and tx.data_to_send() == b""
    assert rx.receive_data(tx.encode(env())) == [env()]


def test_a_link_needs_a_secret_and_full_challenges() -> None:
    with pytest.raises(LocalProtocolError, match="cluster secret"):
        PeerLink("a", "b", secret=b"", entropy=random.Random(1).randbytes)
    with pytest.raises(LocalProtocolError, match="entropy gave 3 bytes"):
        PeerLink("a", "b", secret=SECRET, entropy=lambda n: b"abc")


# ------------------------------------------------------------------------------- open links


def test_envelopes_both_ways() -> None:
    d, a = open_pair()
    d.send(env("a", "b", 1))
    d.send(env("a", "b", 2))
    assert a.receive_data(d.data_to_send()) == [env("a", "b", 1), env("a", "b", 2)]
    a.send(env("b", "a", 3))
    assert d.receive_data(a.data_to_send()) == [env("b", "a", 3)]
    assert d.data_to_send() == b"" and not d.closed and not a.closed
    assert d.encode(env(msg_id=2)) == encode_frame(DEFAULT_CODEC.encode(env(msg_id=2)))


@pytest.mark.parametrize(("spoofed", "text"), [(env(sender="c"), "sender 'c'"), (env(receiver="c"), "receiver 'c'")])
def test_spoofed_addresses_close_the_link(spoofed: Envelope, text: str) -> None:
    d, a = open_pair()
    data = d.encode(env(msg_id=1)) + d.encode(spoofed) + d.encode(env(msg_id=2))
    assert a.receive_data(data) == [env(msg_id=1)]  # what came before is still delivered
    assert a.failure is not None and text in a.failure.detail
    assert_closed_with_error(a, BAD_REQUEST, "a")


def test_oversize_frame_on_an_open_link() -> None:
    _, a = open_pair(max_frame=2000)
    a.receive_data((2001).to_bytes(4, "big"))
    assert_closed_with_error(a, TOO_LARGE, "a")


@pytest.mark.parametrize(("max_frame", "sent"), [(64, [Error(TOO_LARGE, "")]), (16, [])])
def test_error_frame_shrinks_to_fit_a_tiny_max_frame(max_frame: int, sent: list[Error]) -> None:
    _, a = open_pair(max_frame=max_frame)  # handshake frames have their own limit
    a.receive_data((max_frame + 1).to_bytes(4, "big"))
    assert a.closed and a.failure is not None and a.failure.code == TOO_LARGE
    assert [e.body for e in frames_out(a)] == sent


def test_peer_error_is_a_failure_by_peer() -> None:
    d, a = open_pair()
    a.close("draining", "node b is leaving")
    assert a.failure == LinkFailure("draining", "node b is leaving", False)
    d.send(env(msg_id=5))
    assert d.receive_data(a.data_to_send() + a.encode(env("b", "a"))) == []
    assert d.closed and d.failure == LinkFailure("draining", "node b is leaving", True)
    assert d.data_to_send().endswith(DEFAULT_CODEC.encode(env(msg_id=5)))  # queued before: not lost


def test_close_is_idempotent_and_silent_before_the_handshake_is_done() -> None:
    early = acceptor()
    early.receive_data(exchange("a"))
    early.data_to_send()
    early.close()
    assert early.closed and early.data_to_send() == b""
    assert early.failure == LinkFailure("closed", "closed by this node", False)
    d, _ = open_pair()
    d.close()
    d.close("other", "ignored")
    assert [e.body for e in frames_out(d)] == [Error("closed", "closed by this node")]


def test_send_on_a_closed_link_is_our_bug() -> None:
    for link in (acceptor(), open_pair()[0]):
        link.close()
        with pytest.raises(LocalProtocolError, match="send on a link in state CLOSED"):
            link.send(env())


@pytest.mark.slow
@settings(max_examples=sweep_size(1000, 20_000))
@given(st.binary(max_size=120), st.sampled_from(["fresh", "exchanged", "open"]), st.randoms(use_true_random=False))
def test_random_bytes_only_close_the_link(data: bytes, stage: str, rnd: random.Random) -> None:
    max_frame = rnd.choice([16, 64, 1 << 20])
    if stage == "open":
        _, link = open_pair(max_frame=max_frame)
    else:
        link = acceptor(max_frame=max_frame)
        if stage == "exchanged":
            link.receive_data(exchange("a"))
            link.data_to_send()
    pos = 0
    while pos < len(data):
        step = rnd.randint(1, 12)
        for got in link.receive_data(data[pos:pos + step]):
            assert stage == "open" and got.sender.node == "a" and got.receiver.node == "b"
        pos += step
    if link.closed:
        assert link.failure is not None and link.failure.code
        link.data_to_send()
    else:
        assert link.failure is None

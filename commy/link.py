"""The peer link protocol: one connection between two nodes, as a sans-IO state machine.

Like websockets' `protocol.py`, a `PeerLink` never touches a socket. The transport feeds it the
bytes it read (`receive_data`) and writes whatever `data_to_send` returns; the simulator does the
same with bytes it carried through its virtual network, so both run exactly this code.

The handshake proves that both ends hold the cluster secret, without the secret on the wire. The
dialer opens with `MetadataExchange` (its id and a fresh 32-byte challenge); the acceptor answers
`MetadataExchangeAck` (its id, its own fresh challenge, and `proof(b"acceptor")`); the dialer
checks that proof -- so an impostor acceptor is caught too -- answers `JoinProof(proof(b"dialer"))`
and is OPEN; the acceptor checks that proof and is OPEN. A proof is HMAC-SHA256 under
`key = HMAC-SHA256(secret, b"commy link v1")` over the role, then the dialer id, the acceptor id,
the dialer's challenge and the acceptor's challenge, each prefixed with its 4-byte length (see
`handshake_proof`). Both challenges are fresh for every connection, so a proof recorded from one
handshake is worthless in the next; the ids are inside, so a proof for one pair of nodes does not
open another. Handshake frames are bare messages of at most `HELLO_MAX_FRAME` bytes: a stranger
cannot make us buffer more. Anything else before OPEN -- an envelope, a wrong proof, another
message -- gets a typed `Error` (`unauthenticated`; `bad_request` for malformed frames) and
closes the link. The handshake authenticates the two ends, not each later frame: against an
attacker on the path (who could relay a handshake), run the peer port over TLS or a private
network.

Every later frame is an encoded `Envelope` whose sender must be the peer and whose receiver must
be this node: a link cannot relay forged addresses. When the peer breaks the protocol -- garbage
bytes, an oversize frame, a spoofed address -- the link queues a typed `Error` frame (addressed to
the peer's `link` pseudo-actor) and moves to CLOSED; the transport flushes and closes. An `Error`
arriving for our `link` pseudo-actor means the peer closed us for a reason.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from commy.codec import DEFAULT_CODEC, Codec
from commy.errors import BAD_REQUEST, TOO_LARGE, UNAUTHENTICATED, LocalProtocolError, RemoteProtocolError
from commy.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame, pack_header
from commy.messages import (
    CLIENT_NODE_PREFIX,
    Address,
    Envelope,
    Error,
    JoinProof,
    Message,
    MetadataExchange,
    MetadataExchangeAck,
    ServerStatus,
)

PROTOCOL_VERSION = 1
LINK_ACTOR = "link"
HELLO_MAX_FRAME = 1024  # every handshake frame, whatever max_frame is
CHALLENGE_SIZE = 32
KEY_LABEL = b"commy link v1"
ACCEPTOR, DIALER = b"acceptor", b"dialer"


def link_key(secret: bytes) -> bytes:
    """The key proofs are made with: derived, so the secret itself keys nothing else."""
    return hmac.new(secret, KEY_LABEL, hashlib.sha256).digest()


def handshake_proof(key: bytes, role: bytes, dialer: str, acceptor: str, dialer_challenge: bytes,
                    acceptor_challenge: bytes) -> bytes:
    """HMAC-SHA256(key, role + each field with its 4-byte length): no two inputs frame alike."""
    parts = [role]
    for field in (dialer.encode("utf-8", "surrogatepass"), acceptor.encode("utf-8", "surrogatepass"),
                  dialer_challenge, acceptor_challenge):
        parts += (len(field).to_bytes(4, "big"), field)
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


class LinkState(enum.Enum):
    AWAITING_EXCHANGE = "awaiting_exchange"  # accepted: waiting for the dialer's MetadataExchange
    AWAITING_ACK = "awaiting_ack"  # dialed: waiting for the acceptor's MetadataExchangeAck
    AWAITING_PROOF = "awaiting_proof"  # accepted, answered: waiting for the dialer's JoinProof
    OPEN = "open"
    CLOSED = "closed"


_OPEN, _CLOSED = LinkState.OPEN, LinkState.CLOSED  # module constants: read once per message

_TRANSITIONS = {
    LinkState.AWAITING_EXCHANGE: {LinkState.AWAITING_PROOF, LinkState.CLOSED},
    LinkState.AWAITING_PROOF: {LinkState.OPEN, LinkState.CLOSED},
    LinkState.AWAITING_ACK: {LinkState.OPEN, LinkState.CLOSED},
    LinkState.OPEN: {LinkState.CLOSED},
    LinkState.CLOSED: set(),
}


@dataclass(frozen=True, slots=True)
class LinkFailure:
    """The link is closed: `by_peer` tells whether the peer sent us the error or we sent it."""

    code: str
    detail: str
    by_peer: bool


class PeerLink:
    """State of one connection.

    `peer` given: we dialed it (our `MetadataExchange` is queued at once). `peer=None`: we accepted
    the connection; `peer` becomes the id the dialer claims once its `MetadataExchange` is well
    formed, and is proven only when the link is OPEN. `PeerLink.trusted` makes a link that is open
    from the start, for a fabric that only connects its own nodes (the simulator's network).
    """

    def __init__(
        self,
        local_node: str,
        peer: str | None,
        *,
        secret: bytes,
        entropy: Callable[[int], bytes],
        codec: Codec = DEFAULT_CODEC,
        max_frame: int = DEFAULT_MAX_FRAME,
        status: ServerStatus = ServerStatus.HEALTHY,
    ) -> None:
        if not secret:
            raise LocalProtocolError("a peer link needs the cluster secret")
        self._setup(local_node, peer, codec, max_frame)
        self.dialer = peer is not None
        self.state = LinkState.AWAITING_ACK if self.dialer else LinkState.AWAITING_EXCHANGE
        self.status = status
        self._key = link_key(secret)
        self._entropy = entropy
        self._ours = b""  # our challenge
        self._theirs = b""  # the peer's challenge
        self._handshake_buf = bytearray()
        if self.dialer:
            self._ours = self._challenge()
            self._queue_message(MetadataExchange(local_node, PROTOCOL_VERSION, status, self._ours))

    @classmethod
    def trusted(cls, local_node: str, peer: str, *, codec: Codec = DEFAULT_CODEC,
                max_frame: int = DEFAULT_MAX_FRAME) -> PeerLink:
        """A link OPEN from the start, without a handshake: only for a trusted fabric."""
        link = cls.__new__(cls)
        link._setup(local_node, peer, codec, max_frame)
        link.dialer = False
        link.state = LinkState.OPEN
        return link

    def _setup(self, local_node: str, peer: str | None, codec: Codec, max_frame: int) -> None:
        self.local_node = local_node
        self.peer = peer
        self.peer_status: ServerStatus | None = None  # as the peer said in the handshake
        self.codec = codec
        self.max_frame = max_frame
        self.failure: LinkFailure | None = None
        self._decoder = FrameDecoder(max_frame)
        self._out: list[bytes] = []

    def _challenge(self) -> bytes:
        challenge = self._entropy(CHALLENGE_SIZE)
        if len(challenge) != CHALLENGE_SIZE:
            raise LocalProtocolError(f"entropy gave {len(challenge)} bytes, not {CHALLENGE_SIZE}")
        return challenge

    def _queue_message(self, msg: Message) -> None:
        self._out.append(encode_frame(self.codec.encode_message(msg), HELLO_MAX_FRAME))

    def _move(self, new: LinkState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise LocalProtocolError(f"link {self.local_node}->{self.peer}: {self.state.name} -> {new.name}")
        self.state = new

    @property
    def closed(self) -> bool:
        return self.state is LinkState.CLOSED

    # ---- outbound

    def send(self, env: Envelope) -> None:
        if self.state is not _OPEN:
            raise LocalProtocolError(f"send on a link in state {self.state.name}")
        self._out.append(self.encode(env))

    def encode(self, env: Envelope) -> bytes:
        """The framed bytes for `env`, without queueing them (the simulator carries them itself)."""
        payload = self.codec.encode(env)
        if len(payload) > self.max_frame:  # max_frame < 2**32 (FrameDecoder checked it)
            return encode_frame(payload, self.max_frame)  # raises the LocalProtocolError
        return pack_header(len(payload)) + payload  # encode_frame, inlined: once per message

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def close(self, code: str = "closed", detail: str = "closed by this node") -> None:
        """Close from our side, telling the peer why (if the link got that far)."""
        if self.state is LinkState.CLOSED:
            return
        if self.state is LinkState.OPEN and self.peer is not None:
            self._queue_error(code, detail)
        self.failure = LinkFailure(code, detail, by_peer=False)
        self._move(LinkState.CLOSED)

    def _queue_error(self, code: str, detail: str) -> None:
        peer = self.peer or "?"
        # Under a tiny max_frame the Error may not fit: send the code alone, or nothing (never raise).
        for text in (detail, ""):
            env = Envelope(0, None, Address(self.local_node, LINK_ACTOR), Address(peer, LINK_ACTOR), 0.0,
                           Error(code, text))
            payload = self.codec.encode(env)
            if len(payload) <= self.max_frame:
                self._out.append(encode_frame(payload, self.max_frame))
                return

    # ---- inbound

    def receive_data(self, data: bytes) -> list[Envelope]:
        """Feed bytes read from the connection; returns the envelopes for the node's actors.

        Check `closed` afterwards: on a protocol violation the link has queued an Error frame
        for the peer (flush `data_to_send`, then close the connection) and set `failure`. During
        the handshake, flush `data_to_send` after each call too: it holds our next handshake frame.
        """
        if self.state is _OPEN:
            frame = self._decoder.single(data)
            if frame is not None:
                # The usual case, once per message: one whole frame on an open link. The same
                # checks as `_receive`, with fewer lookups and no loop.
                try:
                    env = self.codec.decode(frame)
                    receiver = env.receiver
                    if receiver.name == LINK_ACTOR and type(env.body) is Error:
                        self._peer_closed(env.body)
                        return []
                    if env.sender.node != self.peer:
                        raise RemoteProtocolError(f"sender {env.sender.node!r} on the link from {self.peer!r}")
                    if receiver.node != self.local_node:
                        raise RemoteProtocolError(f"receiver {receiver.node!r} on a link to {self.local_node!r}")
                except RemoteProtocolError as exc:
                    self._violation(exc)
                    return []
                return [env]
        elif self.state is _CLOSED:
            return []
        return self._receive(data)

    def _receive(self, data: bytes) -> list[Envelope]:
        out: list[Envelope] = []
        try:
            if self.state is not _OPEN:
                data = self._handshake(data)
                if self.state is not _OPEN:
                    return out
            for frame in self._decoder.feed(data):
                env = self.codec.decode(frame)
                if env.receiver.name == LINK_ACTOR and type(env.body) is Error:
                    self._peer_closed(env.body)
                    break
                if env.sender.node != self.peer:
                    raise RemoteProtocolError(f"sender {env.sender.node!r} on the link from {self.peer!r}")
                if env.receiver.node != self.local_node:
                    raise RemoteProtocolError(f"receiver {env.receiver.node!r} on a link to {self.local_node!r}")
                out.append(env)
        except RemoteProtocolError as exc:
            self._violation(exc)
        return out

    def _peer_closed(self, error: Error) -> None:
        """The peer closed the link and told our `link` pseudo-actor why."""
        self.failure = LinkFailure(error.code, error.detail, by_peer=True)
        self._move(LinkState.CLOSED)

    def _violation(self, exc: RemoteProtocolError) -> None:
        # A bad handshake gets its Error too (addressed to "?" when the dialer's id is unknown).
        self._queue_error(exc.code, exc.detail)
        self.failure = LinkFailure(exc.code, exc.detail, by_peer=False)
        self._move(LinkState.CLOSED)

    # ---- the handshake

    def _handshake(self, data: bytes) -> bytes:
        """Take handshake frames off `data`; returns the bytes after them once the link is OPEN.

        Its own small framing (not the envelope decoder) so that every frame before OPEN -- not
        only the first -- is held to HELLO_MAX_FRAME, and the envelope decoder starts clean.
        """
        buf = self._handshake_buf
        buf += data
        while self.state is not _OPEN and self.state is not _CLOSED:
            if len(buf) < 4:
                return b""
            size = int.from_bytes(buf[:4], "big")
            if size > HELLO_MAX_FRAME:
                buf.clear()
                raise RemoteProtocolError(f"handshake frame of {size} bytes exceeds {HELLO_MAX_FRAME}", code=TOO_LARGE)
            if len(buf) < 4 + size:
                return b""
            frame = bytes(buf[4:4 + size])
            del buf[:4 + size]
            msg = self._handshake_message(frame)
            if msg is None:
                return b""  # the peer closed the link
            if self.state is LinkState.AWAITING_EXCHANGE:
                self._on_exchange(msg)
            elif self.state is LinkState.AWAITING_ACK:
                self._on_ack(msg)
            else:
                self._on_proof(msg)
        rest = bytes(buf)
        buf.clear()
        return rest

    def _handshake_message(self, frame: bytes) -> Message | None:
        """The handshake message in `frame`; None if it was the peer's Error (we are closed)."""
        try:
            return self.codec.decode_message(frame)
        except RemoteProtocolError as not_a_message:
            try:
                env = self.codec.decode(frame)
            except RemoteProtocolError:
                raise not_a_message from None
            if env.receiver.name == LINK_ACTOR and type(env.body) is Error:
                self._peer_closed(env.body)  # it refused our handshake, and says why
                return None
            raise RemoteProtocolError(f"{type(env.body).__name__} envelope before the link is authenticated",
                                      code=UNAUTHENTICATED) from None

    def _on_exchange(self, msg: Message) -> None:
        if type(msg) is not MetadataExchange:
            raise RemoteProtocolError(f"expected MetadataExchange first, got {type(msg).__name__}",
                                      code=UNAUTHENTICATED)
        _check_version(msg.protocol_version)
        _check_challenge(msg.challenge)
        if not msg.node_id or msg.node_id == self.local_node or msg.node_id.startswith(CLIENT_NODE_PREFIX):
            # a `client:` id would let a peer speak as one of this node's WebSocket clients
            raise RemoteProtocolError(f"bad node id in MetadataExchange: {msg.node_id[:64]!r}", code=BAD_REQUEST)
        self.peer, self.peer_status, self._theirs = msg.node_id, msg.status, msg.challenge
        self._ours = self._challenge()
        proof = handshake_proof(self._key, ACCEPTOR, msg.node_id, self.local_node, self._theirs, self._ours)
        self._queue_message(MetadataExchangeAck(self.local_node, PROTOCOL_VERSION, self.status, self._ours, proof))
        self._move(LinkState.AWAITING_PROOF)

    def _on_ack(self, msg: Message) -> None:
        if type(msg) is not MetadataExchangeAck:
            raise RemoteProtocolError(f"expected MetadataExchangeAck, got {type(msg).__name__}",
                                      code=UNAUTHENTICATED)
        _check_version(msg.protocol_version)
        _check_challenge(msg.challenge)
        peer = self.peer
        assert peer is not None  # a dialer knows whom it dialed
        if msg.node_id != peer:
            raise RemoteProtocolError(f"dialed {peer!r} but {msg.node_id[:64]!r} answered", code=BAD_REQUEST)
        self._theirs = msg.challenge
        expected = handshake_proof(self._key, ACCEPTOR, self.local_node, peer, self._ours, self._theirs)
        if not hmac.compare_digest(expected, msg.response):
            raise RemoteProtocolError(f"{peer!r} did not prove it holds the cluster secret", code=UNAUTHENTICATED)
        self.peer_status = msg.status
        self._queue_message(JoinProof(handshake_proof(self._key, DIALER, self.local_node, peer, self._ours,
                                                      self._theirs)))
        self._move(LinkState.OPEN)

    def _on_proof(self, msg: Message) -> None:
        if type(msg) is not JoinProof:
            raise RemoteProtocolError(f"expected JoinProof, got {type(msg).__name__}", code=UNAUTHENTICATED)
        peer = self.peer
        assert peer is not None  # set by its MetadataExchange
        expected = handshake_proof(self._key, DIALER, peer, self.local_node, self._theirs, self._ours)
        if not hmac.compare_digest(expected, msg.response):
            raise RemoteProtocolError(f"{peer!r} did not prove it holds the cluster secret", code=UNAUTHENTICATED)
        self._move(LinkState.OPEN)


def _check_version(version: int) -> None:
    if version != PROTOCOL_VERSION:
        raise RemoteProtocolError(f"protocol version {version} not supported", code=BAD_REQUEST)


def _check_challenge(challenge: bytes) -> None:
    if len(challenge) != CHALLENGE_SIZE:
        raise RemoteProtocolError(f"challenge of {len(challenge)} bytes, expected {CHALLENGE_SIZE}",
                                  code=BAD_REQUEST)

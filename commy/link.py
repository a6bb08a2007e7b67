"""The peer link protocol: one connection between two nodes, as a sans-IO state machine.

Like websockets' `protocol.py`, a `PeerLink` never touches a socket. The transport feeds it the
bytes it read (`receive_data`) and writes whatever `data_to_send` returns; the simulator does the
same with bytes it carried through its virtual network, so both run exactly this code.

The handshake is two hellos: the dialing side opens with a `LinkHello` naming itself; the accepting
side learns the peer from it and answers with its own, and the dialer checks that the node it
meant to dial answered. A link is OPEN (may carry envelopes) only once it has the peer's hello, so
a listener that accepts and closes never looks like a working link. Until then the first frame
may be at most `HELLO_MAX_FRAME` bytes. (Hellos are not authenticated yet: the cluster secret's
challenge-response replaces them with the cluster issue.)

Every later frame is an encoded `Envelope` whose sender must be the peer and whose receiver must
be this node: a link cannot relay forged addresses (though, until hellos are authenticated, a
rogue may claim to be a node it is not). When the peer breaks the protocol --
garbage bytes, an oversize frame, a spoofed address -- the link queues a typed `Error` frame
(addressed to the peer's `link` pseudo-actor) and moves to CLOSED; the transport flushes and
closes. An `Error` arriving for our `link` pseudo-actor means the peer closed us for a reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from commy.codec import DEFAULT_CODEC, Codec
from commy.errors import BAD_REQUEST, LocalProtocolError, RemoteProtocolError
from commy.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame, pack_header
from commy.messages import CLIENT_NODE_PREFIX, Address, Envelope, Error, LinkHello

PROTOCOL_VERSION = 1
LINK_ACTOR = "link"
HELLO_MAX_FRAME = 1024


class LinkState(enum.Enum):
    AWAITING_HELLO = "awaiting_hello"
    OPEN = "open"
    CLOSED = "closed"


_OPEN, _CLOSED = LinkState.OPEN, LinkState.CLOSED  # module constants: read once per message

_TRANSITIONS = {
    LinkState.AWAITING_HELLO: {LinkState.OPEN, LinkState.CLOSED},
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

    `peer=None`: we accepted it and wait for the dialer's hello. `send_hello=True`: we dialed
    `peer` and wait for its answer. Otherwise (the simulator) the link is open from the start.
    """

    def __init__(
        self,
        local_node: str,
        peer: str | None,
        *,
        codec: Codec = DEFAULT_CODEC,
        max_frame: int = DEFAULT_MAX_FRAME,
        send_hello: bool = False,
    ) -> None:
        self.local_node = local_node
        self.peer = peer
        self.codec = codec
        self.max_frame = max_frame
        self.dialer = send_hello
        handshake = peer is None or send_hello
        self.state = LinkState.AWAITING_HELLO if handshake else LinkState.OPEN
        self.failure: LinkFailure | None = None
        self._decoder = FrameDecoder(max_frame, HELLO_MAX_FRAME if handshake else None)
        self._out: list[bytes] = []
        if send_hello:
            self._queue_hello()

    def _queue_hello(self) -> None:
        hello = self.codec.encode_message(LinkHello(self.local_node, PROTOCOL_VERSION))
        self._out.append(encode_frame(hello, self.max_frame))

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
        for the peer (flush `data_to_send`, then close the connection) and set `failure`.
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
            for frame in self._decoder.feed(data):
                if self.state is LinkState.AWAITING_HELLO:
                    if self.dialer and self._refused(frame):
                        break
                    self._accept_hello(frame)
                    continue
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
        # A bad hello gets its Error too (addressed to "?" when the dialer's id is unknown).
        self._queue_error(exc.code, exc.detail)
        self.failure = LinkFailure(exc.code, exc.detail, by_peer=False)
        self._move(LinkState.CLOSED)

    def _refused(self, frame: bytes) -> bool:
        """Did the node we dialed answer with an Error (it refused our hello) instead of a hello?"""
        try:
            env = self.codec.decode(frame)
        except RemoteProtocolError:
            return False  # not an envelope: `_accept_hello` says what is wrong with it
        if env.receiver.name == LINK_ACTOR and type(env.body) is Error:
            self._peer_closed(env.body)
            return True
        return False

    def _accept_hello(self, frame: bytes) -> None:
        msg = self.codec.decode_message(frame)
        if type(msg) is not LinkHello:
            raise RemoteProtocolError(f"expected LinkHello first, got {type(msg).__name__}", code=BAD_REQUEST)
        if msg.protocol_version != PROTOCOL_VERSION:
            raise RemoteProtocolError(f"protocol version {msg.protocol_version} not supported")
        if not msg.node_id or msg.node_id == self.local_node or msg.node_id.startswith(CLIENT_NODE_PREFIX):
            # a `client:` id would let a peer speak as one of this node's WebSocket clients
            raise RemoteProtocolError(f"bad node id in hello: {msg.node_id[:64]!r}")
        if self.dialer:
            if msg.node_id != self.peer:
                raise RemoteProtocolError(f"dialed {self.peer!r} but {msg.node_id!r} answered")
        else:
            self.peer = msg.node_id
            self._queue_hello()
        self._move(LinkState.OPEN)

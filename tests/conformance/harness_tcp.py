"""`TcpHarness`: the conformance `Harness` over real `TcpTransport` nodes on loopback.

All nodes live in one event loop owned by the harness (uvloop when installed). The loop only runs
inside harness calls: `start` runs it until every pair of nodes holds exactly one connection (so a
test never races the duplicate-connection resolution), `run_until` runs it until a condition holds
or a real, bounded timeout passes, and `stop` closes everything. Every node holds `SECRET`.
`inject_raw` opens a real TCP connection from a rogue client -- which, given `hello_as`, runs the
dialer's side of the handshake over the socket, waiting for the node's challenge before it proves
(rightly or wrongly) and writes the bytes; `rogue_received` returns what came back.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from commy.codec import DEFAULT_CODEC
from commy.errors import RemoteProtocolError
from commy.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame
from commy.link import CHALLENGE_SIZE, DIALER, PROTOCOL_VERSION, handshake_proof, link_key
from commy.messages import Address, JoinProof, Message, MetadataExchange, MetadataExchangeAck, ServerStatus
from commy.runtime.loop import new_event_loop
from commy.runtime.standalone import RunningNode, start_node
from commy.runtime.tcp import TcpConfig
from tests.conformance.harness import PROBE, Probe

LOOPBACK = "127.0.0.1"
SECRET = b"conformance suite cluster secret"
T = TypeVar("T")


class _Rogue(asyncio.Protocol):
    """A raw client. With `hello_as` it sends MetadataExchange first and, once the node's Ack
    arrives, a JoinProof made with `secret` followed by `payload`; otherwise just `payload`."""

    def __init__(self, dst: str, payload: bytes, hello_as: str | None, secret: bytes) -> None:
        self.received = bytearray()
        self.closed = False
        self.sent = False  # the payload went out (or never will: the node refused the handshake)
        self.transport: asyncio.Transport | None = None
        self._dst, self._payload, self._hello_as, self._secret = dst, payload, hello_as, secret
        self._challenge = os.urandom(CHALLENGE_SIZE)
        self._decoder = FrameDecoder()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self._hello_as is None:
            self._send(self._payload)
        else:
            hello = MetadataExchange(self._hello_as, PROTOCOL_VERSION, ServerStatus.HEALTHY, self._challenge)
            self.transport.write(encode_frame(DEFAULT_CODEC.encode_message(hello)))

    def _send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)  # one write: the proof and the payload arrive together
        self.sent = True

    def data_received(self, data: bytes) -> None:
        self.received += data
        if self.sent or self._hello_as is None:
            return
        for frame in self._decoder.feed(data):
            try:
                ack = DEFAULT_CODEC.decode_message(frame)
            except RemoteProtocolError:
                self.sent = True  # an Error: the node refused our MetadataExchange
                return
            assert isinstance(ack, MetadataExchangeAck)
            proof = handshake_proof(link_key(self._secret), DIALER, self._hello_as, self._dst, self._challenge,
                                    ack.challenge)
            self._send(encode_frame(DEFAULT_CODEC.encode_message(JoinProof(proof))) + self._payload)
            return

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.sent = True


class TcpHarness:
    name = "tcp"

    def __init__(self, *, prefer_uvloop: bool = True, connect_timeout: float = 10.0) -> None:
        self.loop = new_event_loop(prefer_uvloop)
        self.nodes: dict[str, RunningNode] = {}
        self.connect_timeout = connect_timeout
        self._rogue: _Rogue | None = None
        self._rogues: list[_Rogue] = []
        # An exception escaping a callback (a handler bug under strict=True) would only be logged by
        # the loop; keep it and raise it from the next harness call instead.
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, context: self.errors.append(context))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        result = self.loop.run_until_complete(coro)
        if self.errors:
            context = self.errors[0]
            raise AssertionError(f"callback failed in the event loop: {context.get('message')}") from context.get(
                "exception")
        return result

    def start(self, nodes: list[str], *, max_frame: int | None = None) -> None:
        config = TcpConfig(max_frame=max_frame or DEFAULT_MAX_FRAME)

        async def go() -> None:
            for i, name in enumerate(nodes):
                self.nodes[name] = await start_node(name, (LOOPBACK, 0), secret=SECRET, heartbeat=None,
                                                    actors={PROBE: Probe}, seed=1000 + i, tcp=config, strict=True)
            for name, running in self.nodes.items():
                for other, peer in self.nodes.items():
                    if other != name:
                        running.transport.add_peer(other, peer.address)

        self._run(go())
        if not self.run_until(self._settled, self.connect_timeout):
            raise TimeoutError(f"nodes did not connect within {self.connect_timeout} s")

    def _settled(self) -> bool:
        return all(
            r.transport.settled() and all(r.transport.connection_count(o) == 1 for o in self.nodes if o != n)
            for n, r in self.nodes.items()
        )

    def send(self, src: str, dst: str, body: Message) -> None:
        self.nodes[src].node.send(Address(src, PROBE), Address(dst, PROBE), body, None)

    def probe(self, node: str) -> Probe:
        return cast(Probe, self.nodes[node].node.actors[PROBE])

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        async def wait() -> bool:
            deadline = self.loop.time() + timeout
            while not done():
                if self.loop.time() >= deadline:
                    return False
                await asyncio.sleep(0.001)
            return True

        return self._run(wait())

    def break_link(self, a: str, b: str) -> None:
        self.nodes[a].transport.drop_peer(b, "broken by the test harness")

    def inject_raw(self, dst: str, data: bytes, *, hello_as: str | None = None, secret: bytes | None = None) -> None:
        host, port = self.nodes[dst].address
        rogue = _Rogue(dst, data, hello_as, SECRET if secret is None else secret)

        async def go() -> None:
            await self.loop.create_connection(lambda: rogue, host, port)

        self._run(go())
        self._rogue = rogue
        self._rogues.append(rogue)
        if not self.run_until(lambda: rogue.sent, self.connect_timeout):
            raise TimeoutError(f"the node did not answer the rogue's handshake within {self.connect_timeout} s")

    def rogue_received(self) -> bytes:
        return bytes(self._rogue.received) if self._rogue is not None else b""

    def rogue_closed(self) -> bool:
        """TCP only: the node closed the rogue connection."""
        return self._rogue is not None and self._rogue.closed

    def stop(self) -> None:
        async def go() -> None:
            for rogue in self._rogues:
                if rogue.transport is not None:
                    rogue.transport.abort()
            for running in self.nodes.values():
                await running.close()

        try:
            self.loop.run_until_complete(go())
        finally:
            self.loop.close()

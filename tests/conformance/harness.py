"""The one interface the conformance suite drives, implemented over every transport.

Each harness starts nodes named by the test; every node hosts a `Probe` actor named "probe" that
records what it receives (envelopes) and the link events its node publishes (LinkUp / LinkDown).
Times are in seconds: virtual in the simulator, real (bounded) over TCP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from commy.core.actor import Actor, handles
from commy.messages import Envelope, LinkDown, LinkUp, Message

PROBE = "probe"


class Probe(Actor):
    """Records every envelope addressed to it and every link event."""

    def __init__(self, ctx):  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        self.received: list[Envelope] = []
        self.link_events: list[Message] = []

    def receive(self, env: Envelope) -> bool:
        if type(env.body) in (LinkUp, LinkDown):
            self.link_events.append(env.body)
        else:
            self.received.append(env)
        return True

    @handles(LinkUp, LinkDown)
    def _on_link(self, msg: Message, env: Envelope) -> None:  # pragma: no cover - receive() takes it
        pass


class Harness(Protocol):
    name: str

    def start(self, nodes: list[str], *, max_frame: int | None = None) -> None:
        """Start these nodes, all knowing each other as peers, each with a Probe."""

    def send(self, src: str, dst: str, body: Message) -> None:
        """From src's probe to dst's probe."""

    def probe(self, node: str) -> Probe: ...

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Advance (virtual or real) time until done() or timeout; returns done()."""

    def break_link(self, a: str, b: str) -> None:
        """Drop the connection between a and b (both see LinkDown); the transport reconnects."""

    def inject_raw(self, dst: str, data: bytes, *, hello_as: str | None = None, secret: bytes | None = None) -> None:
        """Open a rogue connection to dst and write `data` to it. With `hello_as`, the rogue first
        runs the dialer's side of the link handshake as that node, proving with `secret` (None:
        the cluster's own, a rogue that holds it; anything else: a rogue that does not)."""

    def rogue_received(self) -> bytes:
        """Bytes the rogue connection got back (e.g. the framed Error before the close)."""

    def stop(self) -> None: ...

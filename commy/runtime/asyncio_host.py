"""`AsyncioHost`: the `Host` a `Node` runs on inside an asyncio event loop.

The node's clock reads seconds since the Unix epoch: the loop's monotonic clock plus the offset to
wall time taken once at start, so it never goes back within a process while its timestamps (token
expiry, catalog records) still mean the same on every machine and after a restart. Its one-shot
callbacks are `loop.call_later` handles, and `transmit` hands envelopes for other nodes to the
transport attached with `attach` (the TCP transport needs the node to exist first, so the two are
tied after construction) and envelopes for client connections (`is_client(receiver)`: the pseudo-
node `client:<id>`) to the WebSocket gateway attached with `attach_clients`. Envelopes with
nowhere to go are counted: in `dropped` here when nothing is attached for them, or as unroutable
by the TCP transport when it is the only one attached (then `transmit` is its method itself, with
no routing step), so nothing is lost silently.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Protocol

from commy.messages import CLIENT_NODE_PREFIX, Envelope


class Transmitter(Protocol):
    def transmit(self, env: Envelope) -> None: ...


def node_seed(seed: int | None) -> int:
    """`seed` when given (a reproducible run), else 64 bits from the OS."""
    return seed if seed is not None else int.from_bytes(os.urandom(8), "big")


def _wall_aligned(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    offset = time.time() - loop.time()
    mono = loop.time

    def now() -> float:
        return mono() + offset

    return now


class AsyncioHost:
    """Implements `commy.core.node.Host` on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: Transmitter | None = None,
                 clients: Transmitter | None = None) -> None:
        self.loop = loop
        self.transport = transport
        self.clients = clients
        self.dropped = 0  # envelopes transmitted with no transport or gateway to carry them
        # `now` and `transmit` run on every send: they are the loop's clock and the transport's
        # method themselves (or one small routing closure), not wrappers around them.
        self.now: Callable[[], float] = _wall_aligned(loop)
        self._rebind()

    def attach(self, transport: Transmitter) -> None:
        """Carry envelopes for other nodes with `transport` (the TCP peer transport)."""
        self.transport = transport
        self._rebind()

    def attach_clients(self, gateway: Transmitter) -> None:
        """Carry envelopes for client connections with `gateway` (the WebSocket gateway)."""
        self.clients = gateway
        self._rebind()

    def _rebind(self) -> None:
        peers = self.transport.transmit if self.transport is not None else self._drop
        if self.clients is None:
            self.transmit = peers  # type: ignore[method-assign]
            return
        clients = self.clients.transmit

        def route(env: Envelope, prefix: str = CLIENT_NODE_PREFIX) -> None:
            if env.receiver.node.startswith(prefix):
                clients(env)
            else:
                peers(env)

        self.transmit = route  # type: ignore[method-assign]

    def _drop(self, env: Envelope) -> None:
        self.dropped += 1

    def call_later(self, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, fn)

    def cancel_call(self, handle: asyncio.TimerHandle) -> None:
        handle.cancel()

    def transmit(self, env: Envelope) -> None:
        """Replaced per instance by `_rebind`; kept so the class satisfies `Host`."""
        self._drop(env)

"""`AsyncioHost`: the `Host` a `Node` runs on inside an asyncio event loop.

The node's clock is the loop's monotonic clock, its one-shot callbacks are `loop.call_later`
handles, and `transmit` hands envelopes for other nodes to the transport attached with `attach`
(the TCP transport needs the node to exist first, so the two are tied after construction). Until a
transport is attached, outgoing envelopes are counted and dropped: nothing may be lost silently.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Protocol

from commy.messages import Envelope


class Transmitter(Protocol):
    def transmit(self, env: Envelope) -> None: ...


def node_seed(seed: int | None) -> int:
    """`seed` when given (a reproducible run), else 64 bits from the OS."""
    return seed if seed is not None else int.from_bytes(os.urandom(8), "big")


class AsyncioHost:
    """Implements `commy.core.node.Host` on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: Transmitter | None = None) -> None:
        self.loop = loop
        self.transport = transport
        self.dropped = 0  # envelopes transmitted before a transport was attached
        # `now` and `transmit` run on every send: once a transport is attached they are the loop's
        # clock and the transport's method themselves, not wrappers around them.
        self.now: Callable[[], float] = loop.time
        if transport is not None:
            self.attach(transport)

    def attach(self, transport: Transmitter) -> None:
        self.transport = transport
        self.transmit = transport.transmit  # type: ignore[method-assign]

    def call_later(self, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, fn)

    def cancel_call(self, handle: asyncio.TimerHandle) -> None:
        handle.cancel()

    def transmit(self, env: Envelope) -> None:
        if self.transport is None:
            self.dropped += 1
            return
        self.transport.transmit(env)

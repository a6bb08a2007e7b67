"""One TCP connection of the peer transport: an `asyncio.Protocol` wrapped around a `PeerLink`.

The protocol is deliberately thin. Bytes read go to `PeerLink.receive_data`; the envelopes it
returns go straight to the node; whatever the link queues (handshake frames, envelopes, an
`Error`) is written out. Every protocol decision -- does the peer hold the cluster secret, is this
frame valid, who is the peer, is the sender spoofed -- is the link's. What lives here is only what
a socket adds:

- write coalescing: the owner appends envelopes to the link and schedules one `flush` per loop
  iteration (`flush_scheduled`), so a burst leaves in a single `transport.write`, not one per
  message;
- back-pressure: past the high-water mark the connection is `paused` and the owner queues new
  envelopes itself; a buffer that does not drain within `write_timeout` aborts the connection;
- a handshake check: a connection whose handshake is not done within `handshake_timeout` is aborted;
- an idle check: nothing read for `read_timeout` closes it (one timer, re-armed lazily, instead of
  resetting a timer on every read);
- closing politely: after a violation the link's `Error` frame is written, the write side is shut
  (`write_eof`) and the socket lingers, discarding input, until the peer closes or `linger` passes.
  Closing at once with unread input would make the kernel send a reset, which can destroy the
  `Error` frame before the peer reads it. `retire` (a duplicate connection) shuts the write side
  the same way but keeps delivering what the peer already sent on it, so nothing in flight is lost.

The owner (`TcpTransport`) hears `conn_opened` (the socket is connected), `conn_ready` (the link
is OPEN: the peer proved it holds the cluster secret -- its `MetadataExchangeAck` when we dialed,
its `JoinProof` when we accepted), `conn_gone` (at most once,
with a reason; a connection the owner retired itself is not reported), `conn_writable`, and
`conn_lost` when the socket is finally shut.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Protocol, cast

from commy.codec import Codec
from commy.errors import TIMEOUT
from commy.link import LinkState, PeerLink
from commy.messages import Envelope

_SEQ = itertools.count(1)


class ConnOwner(Protocol):
    node_id: str
    codec: Codec
    loop: asyncio.AbstractEventLoop

    def conn_opened(self, conn: Connection) -> None: ...
    def conn_ready(self, conn: Connection) -> None: ...
    def conn_gone(self, conn: Connection, reason: str, detail: str) -> None: ...
    def conn_writable(self, conn: Connection) -> None: ...
    def conn_lost(self, conn: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """`peer` is given when we dial (we open the handshake) and None when we accept."""

    def __init__(
        self,
        owner: ConnOwner,
        peer: str | None,
        deliver: Callable[[Envelope], None],
        *,
        secret: bytes,
        entropy: Callable[[int], bytes],
        max_frame: int,
        read_timeout: float,
        handshake_timeout: float,
        write_timeout: float,
        linger: float,
        high_water: int,
    ) -> None:
        self.owner = owner
        self.outbound = peer is not None
        self.link = PeerLink(owner.node_id, peer, secret=secret, entropy=entropy, codec=owner.codec,
                             max_frame=max_frame)
        self.seq = next(_SEQ)  # creation order: among duplicates from one dialer the newest wins
        self.transport: asyncio.Transport | None = None
        self.ready = False  # the owner has registered us as a connection to `link.peer`
        self.gone = False  # the owner has been told we are finished (told once only)
        self.eof_sent = False  # our write side is shut: nothing more may be written
        self.paused = False  # the write buffer is over the high-water mark
        self._deliver = deliver
        self._loop = owner.loop
        self._time = owner.loop.time
        self._read_timeout = read_timeout
        self._handshake_timeout = handshake_timeout
        self._write_timeout = write_timeout
        self._linger = linger
        self._high_water = high_water
        self.flush_scheduled = False
        self.last_read = self._time()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

    @property
    def dialer(self) -> str | None:
        """The node that opened this connection (None while an accepted one awaits its MetadataExchange)."""
        return self.owner.node_id if self.outbound else self.link.peer

    def __repr__(self) -> str:
        return f"<Connection #{self.seq} {self.owner.node_id}<->{self.link.peer} dialer={self.dialer}>"

    # ---- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only shaped like it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=self._high_water)
        self._idle_timer = self._loop.call_later(self._read_timeout, self._check_idle)
        self._handshake_timer = self._loop.call_later(self._handshake_timeout, self._check_handshake)
        self.owner.conn_opened(self)
        if self.gone:
            return  # the owner is shutting down and dropped us at once
        self.flush()  # our MetadataExchange, when we dialed

    def data_received(self, data: bytes) -> None:
        self.last_read = self._time()
        link = self.link
        if link.closed:
            return  # lingering after a violation: the rest is discarded
        envelopes = link.receive_data(data)
        if link.closed:
            # Report first: what the good frames before the violation trigger (replies) must
            # not be sent on this link any more.
            self._link_failed()
        elif not self.ready and not self.gone:
            self.flush()  # our next handshake frame: the Ack when we accepted, the JoinProof when we dialed
            if link.state is LinkState.OPEN:
                if self._handshake_timer is not None:
                    self._handshake_timer.cancel()
                    self._handshake_timer = None
                self.owner.conn_ready(self)
        if envelopes:
            deliver = self._deliver
            for env in envelopes:
                deliver(env)

    def eof_received(self) -> bool:
        # The peer will send nothing more, so this connection is finished. Returning False lets
        # the transport close itself after writing out what is still buffered.
        self._report_gone("closed", "closed by the peer")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._idle_timer, self._handshake_timer, self._write_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        if exc is None:
            self._report_gone("closed", "connection closed")
        else:
            self._report_gone("reset", f"{type(exc).__name__}: {exc}")
        self.owner.conn_lost(self)

    def pause_writing(self) -> None:
        self.paused = True
        if self._write_timer is None:
            self._write_timer = self._loop.call_later(self._write_timeout, self._write_stalled)

    def resume_writing(self) -> None:
        self.paused = False
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        if not self.gone:
            self.owner.conn_writable(self)

    # ---- writing

    def flush(self) -> None:
        """Write what the link has queued (handshake frames, envelopes, an Error)."""
        self.flush_scheduled = False
        if self.eof_sent or self.transport is None or self.transport.is_closing():
            return
        data = self.link.data_to_send()
        if data:
            self.transport.write(data)

    # ---- closing

    def retire(self) -> None:
        """Stop sending on this (duplicate) connection but read what the peer already sent."""
        self.gone = True  # the owner has dropped us itself; it needs no report
        self.flush()
        self._shut_write_side()

    def abort(self, reason: str, detail: str) -> None:
        """Drop the connection at once (a break, a stalled peer, shutdown)."""
        self._report_gone(reason, detail)
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Write out what is buffered, then close (clean shutdown)."""
        self._report_gone("closed", "closed by this node")
        if self.transport is not None:
            self.flush()
            self.transport.close()

    def _link_failed(self) -> None:
        failure = self.link.failure
        assert failure is not None
        self._report_gone(failure.code, failure.detail)
        if failure.by_peer:
            assert self.transport is not None
            self.transport.close()  # the peer said why and is closing; nothing more to say
        else:
            self.flush()  # the Error frame the link queued for the peer
            self._shut_write_side()

    def _shut_write_side(self) -> None:
        transport = self.transport
        if transport is None or self.eof_sent or transport.is_closing():
            return
        self.eof_sent = True
        if transport.can_write_eof():
            transport.write_eof()
        else:  # pragma: no cover - TCP transports can; kept for exotic ones
            transport.close()
            return
        self._linger_timer = self._loop.call_later(self._linger, transport.abort)

    def _report_gone(self, reason: str, detail: str) -> None:
        if not self.gone:
            self.gone = True
            self.owner.conn_gone(self, reason, detail)

    # ---- timers

    def _check_idle(self) -> None:
        idle = self._time() - self.last_read
        if idle >= self._read_timeout:
            self.abort(TIMEOUT, f"nothing read for {idle:.1f} s")
        else:
            self._idle_timer = self._loop.call_later(self._read_timeout - idle, self._check_idle)

    def _check_handshake(self) -> None:
        self._handshake_timer = None
        if not self.ready and not self.gone:
            self.abort(TIMEOUT, f"no handshake within {self._handshake_timeout:g} s")

    def _write_stalled(self) -> None:
        self._write_timer = None
        self.abort(TIMEOUT, f"write buffer did not drain within {self._write_timeout:g} s")

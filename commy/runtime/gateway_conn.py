"""One client's WebSocket connection inside the gateway: frames in without a task, frames out in batches.

`ClientConnection` is the websockets `ServerConnection` the gateway's server creates for every
connection (websockets' `create_connection` hook). It changes two things, both for speed:

- **In**: complete data frames do not go through websockets' message queue and `recv()` coroutine.
  `process_event` (called synchronously from `data_received`) hands each whole message to the
  gateway at once (fragments are joined here first, within websockets' `max_size`), so a request
  is decoded, dispatched by the node and answered in the same callback. Control frames (ping, pong,
  close) and the handshake stay websockets' business. Frames that arrive before the gateway has
  registered the connection wait in a short list.
- **Out**: the gateway appends ready-made frames to `out` (a deque) and the connection writes them
  with one `transport.write` per batch: at the end of the `data_received` that produced them, or
  otherwise when the gateway flushes every connection with pending frames, once per loop
  iteration (one `call_soon` for all of them) -- never a coroutine per message. Server
  frames are not masked, so without extensions a frame's bytes are the same for every connection
  and the gateway builds them once (`frame`); with a negotiated extension (permessage-deflate) the
  queue holds `(text, payload)` pairs that go through websockets' protocol instead.

Flow control: while the transport is paused (its buffer above `write_limit`) frames stay in `out`.
The gateway bounds `out` (messages and bytes) and times pauses out (`blocked_since`), dropping the
connection as stalled either way; `resume_writing` flushes again.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode, apply_mask
from websockets.protocol import CLOSED, CLOSING, OPEN

from commy.messages import Address

if TYPE_CHECKING:
    from commy.runtime.gateway import Gateway

OP_TEXT, OP_BINARY, OP_CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_FIN_TEXT, _FIN_BINARY = 0x81, 0x82
_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")
_U16, _U64 = struct.Struct("!H"), struct.Struct("!Q")
BATCH = 256 * 1024  # bytes joined into one write at most
_ENDING = (CLOSING, CLOSED)
MAX_EARLY = 1024  # frames held before the gateway registers the connection


# The two header bytes of every short frame (payload under 126 bytes), per form: [text][length].
HEADS = ([bytes((_FIN_BINARY, n)) for n in range(126)], [bytes((_FIN_TEXT, n)) for n in range(126)])


def frame(payload: bytes, text: bool) -> bytes:
    """A complete, unmasked, final WebSocket data frame carrying `payload` (server to client)."""
    first = _FIN_TEXT if text else _FIN_BINARY
    n = len(payload)
    if n < 126:
        return HEADS[text][n] + payload
    if n < 65536:
        return _H16.pack(first, 126, n) + payload
    return _H64.pack(first, 127, n) + payload


class ClientConnection(ServerConnection):
    """A WebSocket connection served by the gateway (see the module docstring)."""

    gateway: Gateway | None = None
    conn_id = ""
    node_key = ""  # the receiver node of envelopes for this connection: "client:<conn_id>"
    address = Address("", "")  # client_address(conn_id)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.out: deque[Any] = deque()  # frames (bytes), or (text, payload) with an extension
        self.out_bytes = 0
        self.raw = True  # no extension negotiated: `out` holds finished frames
        self.scheduled = False  # on the gateway's list of connections to flush soon
        self.receiving = False  # inside data_received: flushed at its end
        self.text = False  # the form of the most recent request (events go out in it)
        self.text_ids: set[int] = set()  # request ids that came as text frames, not answered yet
        self.bad_frames = 0
        self.closing = False  # the gateway decided to close it; nothing more is queued
        self.reason = ""  # why it went (for ClientDisconnected), once known
        self.blocked_since: float | None = None  # when the transport paused, while it is
        self.early: list[tuple[bytes, bool]] | None = []  # frames before `attach`
        self.fast: bool | None = None  # frames parsed here (see data_received); None: not decided yet
        self._inbuf = bytearray()  # a partial frame, in fast mode
        self._fragments: bytearray | None = None
        self._fragments_text = False
        self.close_wanted = self.loop.create_future()  # (code, reason) for the handler to close with

    def attach(self, gateway: Gateway, conn_id: str, node_key: str, address: Address) -> None:
        self.gateway = gateway
        self.conn_id = conn_id
        self.node_key = node_key
        self.address = address
        self.raw = not self.protocol.extensions
        early, self.early = self.early, None
        self.receiving = True
        try:
            for data, text in early or ():
                gateway.on_frame(self, data, text)
        finally:
            self.receiving = False
        if self.out:
            self.flush()

    # ---- in

    def data_received(self, data: bytes) -> None:
        self.receiving = True
        try:
            if self.fast:
                self._fast_received(data)
            elif self.fast is None and self.protocol.state is OPEN:
                # Decided once, at the first bytes after the handshake: websockets' parser is then
                # at a frame boundary with nothing buffered, and stays there as long as it is only
                # ever fed whole frames.
                self.fast = not self.protocol.extensions and not self.protocol.reader.buffer
                if self.fast:
                    self._fast_received(data)
                else:
                    super().data_received(data)
            else:
                super().data_received(data)
        finally:
            self.receiving = False
        if self.out and not self.scheduled:
            self.flush()
        if self.protocol.state in _ENDING and not self.close_wanted.done():
            # The client's close frame, or a protocol error (an oversize frame: 1009): the handler
            # completes the closing handshake, bounded by close_timeout.
            self.close_wanted.set_result((1000, ""))

    def _fast_received(self, data: bytes) -> None:
        """Whole, final, masked text/binary frames are unmasked and handled here; every other frame
        (control frames, fragments, reserved bits) goes to websockets whole; anything it must refuse
        (an unmasked or oversize frame) hands it the rest of the stream for good.

        The usual frame -- FIN, no reserved bits, masked, under 126 bytes -- takes the first branch:
        two byte reads, one unmask, one call. The protocol's state (a property) is checked on entry
        and after each frame websockets handles, the only thing here that can change it."""
        buf = self._inbuf
        if buf:
            buf += data
            view: bytes | bytearray = buf
        else:
            view = data
        end, pos = len(view), 0
        protocol = self.protocol
        max_size = protocol.max_message_size
        short_max = 125 if max_size is None else min(max_size, 125)  # largest short frame allowed
        gateway = self.gateway
        opened = protocol.state is OPEN
        while end - pos >= 2:
            b0, n = view[pos], view[pos + 1] ^ 0x80  # a masked frame's length byte has its top bit set
            if n <= short_max and (b0 == _FIN_BINARY or b0 == _FIN_TEXT) and opened and self._fragments is None:
                stop = pos + 6 + n
                if stop > end:
                    break
                payload = apply_mask(view[pos + 6:stop], view[pos + 2:pos + 6])
                if gateway is not None:
                    gateway.on_frame(self, payload, b0 == _FIN_TEXT)
                else:
                    self._message(payload, b0 == _FIN_TEXT)
                pos = stop
                continue
            b1 = n ^ 0x80
            n, head = b1 & 0x7F, 6
            if n == 126:
                if end - pos < 8:
                    break
                (n,) = _U16.unpack_from(view, pos + 2)
                head = 8
            elif n == 127:
                if end - pos < 14:
                    break
                (n,) = _U64.unpack_from(view, pos + 2)
                head = 14
            if not b1 & 0x80 or (max_size is not None and n > max_size) or not opened:
                self.fast = False
                self._inbuf = bytearray()
                super().data_received(bytes(view[pos:]))
                return
            stop = pos + head + n
            if stop > end:
                break
            op = b0 & 0x0F
            if b0 & 0xF0 == 0x80 and (op == 2 or op == 1) and self._fragments is None:
                self._message(apply_mask(view[pos + head:stop], view[stop - n - 4:stop - n]), op == 1)
            else:
                super().data_received(bytes(view[pos:stop]))
                opened = protocol.state is OPEN
            pos = stop
        if pos == end:
            if buf:
                buf.clear()
        elif buf:
            del buf[:pos]
        else:
            self._inbuf = bytearray(view[pos:])

    def process_event(self, event: Any) -> None:
        if type(event) is not Frame:  # the handshake request
            super().process_event(event)
            return
        op = event.opcode
        if op is OP_BINARY or op is OP_TEXT:
            if event.fin:
                self._message(event.data, op is OP_TEXT)  # type: ignore[arg-type]  # bytes from the parser
            else:
                self._fragments = bytearray(event.data)
                self._fragments_text = op is OP_TEXT
        elif op is OP_CONT:
            if self._fragments is None:
                return  # websockets' parser already refuses a continuation without a start
            self._fragments += event.data
            if event.fin:
                data, self._fragments = bytes(self._fragments), None
                self._message(data, self._fragments_text)
        else:
            super().process_event(event)  # ping, pong, close

    def _message(self, data: bytes, text: bool) -> None:
        gateway = self.gateway
        if gateway is not None:
            gateway.on_frame(self, data, text)
        elif self.early is not None:
            if len(self.early) >= MAX_EARLY:  # flooding before its session even exists
                self.early = None
                self.transport.abort()
            else:
                self.early.append((data, text))

    # ---- out

    def flush(self) -> None:
        self.scheduled = False
        out = self.out
        if not out or self.paused or self.protocol.state is not OPEN:
            return
        if not self.raw:
            self._flush_via_protocol()
            return
        write = self.transport.write
        while out and not self.paused:
            if len(out) == 1:
                data = out.popleft()
            else:
                batch, size = [], 0
                while out and size < BATCH:
                    item = out.popleft()
                    batch.append(item)
                    size += len(item)
                data = b"".join(batch)
            self.out_bytes -= len(data)
            write(data)
        if not out:
            self.out_bytes = 0

    def _flush_via_protocol(self) -> None:
        out, protocol = self.out, self.protocol
        while out and not self.paused:
            text, payload = out.popleft()
            self.out_bytes -= len(payload)
            if text:
                protocol.send_text(payload)
            else:
                protocol.send_binary(payload)
            self.send_data()
        if not out:
            self.out_bytes = 0

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.gateway is not None:
            self.blocked_since = self.loop.time()
            self.gateway.blocked.add(self)

    def resume_writing(self) -> None:
        super().resume_writing()
        self.blocked_since = None
        if self.gateway is not None:
            self.gateway.blocked.discard(self)
        if self.out and not self.scheduled:
            self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.out.clear()
        self.out_bytes = 0
        if self.gateway is not None:
            self.gateway.blocked.discard(self)
        super().connection_lost(exc)

"""`RawClient`: a minimal WebSocket client on an asyncio protocol, for the benchmarks' receivers.

It does the opening handshake, sends binary frames masked with a zero key (which leaves the
payload as it is, so nothing is copied or XORed) and, for every text or binary frame it reads,
records the frame and a `time.perf_counter()` timestamp taken when its bytes arrived. That is all:
a thousand of them cost the loop they share with the server under test next to nothing, so a
fan-out benchmark measures the server, not a thousand client stacks. `call` sends a request and
waits for the next frame (setup only: logging in, subscribing). Used by `wsbench` and
`clusterbench`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from typing import cast

from commy.client_codec import ClientCodec
from commy.messages import Error, Message


class RawClient(asyncio.Protocol):
    """A minimal WebSocket client: the handshake, masked (zero key) frames out, a timestamp per frame in."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str) -> None:
        self.loop = loop
        self.host = host
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.buf = bytearray()
        self.handshaken = False
        self.arrivals: list[float] = []
        self.frames: list[bytes] = []
        self.wake = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(f"GET / HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.buf
        buf += data
        if not self.handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(bytes(buf[:64]).decode(errors="replace")))
                return
            del buf[:end + 4]
            self.handshaken = True
            self.opened.set_result(None)
        pos = 0
        while len(buf) - pos >= 2:
            opcode, size = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            head = 2
            if size == 126:
                if len(buf) - pos < 4:
                    break
                (size,) = struct.unpack_from("!H", buf, pos + 2)
                head = 4
            elif size == 127:
                if len(buf) - pos < 10:
                    break
                (size,) = struct.unpack_from("!Q", buf, pos + 2)
                head = 10
            if len(buf) - pos < head + size:
                break
            if opcode in (1, 2):
                self.arrivals.append(now)
                self.frames.append(bytes(buf[pos + head:pos + head + size]))
            pos += head + size
        del buf[:pos]
        self.wake.set()

    def send(self, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = bytes((0x82, 0x80 | n))
        elif n < 65536:
            head = struct.pack("!BBH", 0x82, 0xFE, n)
        else:
            head = struct.pack("!BBQ", 0x82, 0xFF, n)
        assert self.transport is not None
        self.transport.write(head + b"\0\0\0\0" + payload)  # a zero mask leaves the payload as it is

    async def call(self, codec: ClientCodec, request_id: int, msg: Message) -> Message:
        seen = len(self.frames)
        self.send(codec.encode_binary(request_id, msg))
        while len(self.frames) == seen:
            self.wake.clear()
            await asyncio.wait_for(self.wake.wait(), 10.0)
        _, reply = codec.decode_binary(self.frames[seen])
        if isinstance(reply, Error):
            raise RuntimeError(f"benchmark setup: {type(msg).__name__} got {reply!r}")
        return reply

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

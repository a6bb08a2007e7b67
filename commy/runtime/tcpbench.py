"""The peer-transport benchmark and its ceiling, both run on the caller's event loop.

`measure_peer_transport(n)`: two nodes in this loop, connected by our `TcpTransport` on loopback.
A sender actor on node A floods `n` `HeartbeatPing`s to a receiver actor on node B in bursts of
`burst`, yielding to the loop between bursts (a zero-delay timer) so the receiving side runs; the
clock stops when the receiver counts the last one. Everything a real message pays is on the path:
envelope, node routing, codec, framing, link checks, actor dispatch. (The links are authenticated
with a fixed benchmark secret before the clock starts; the handshake is not timed.)

`measure_bare_framing(n)`: the ceiling -- a bare `asyncio.Protocol` pair with a 4-byte length
prefix and `msgpack.packb`/`unpackb` of an equivalent flat map (the envelope's fields and the
ping's, as `commy bench`'s codec row uses, built per message as our sender builds each ping), sent
in the same bursts over the same kind of loop, parsed without a copy per frame.

Both return one-way messages per second.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import msgpack

from commy.core.actor import Actor, Context, handles
from commy.messages import Address, Envelope, HeartbeatPing, HeartbeatTick, ServerStatus
from commy.runtime.standalone import start_node

LOOPBACK = "127.0.0.1"
BURST = 1000
SECRET = b"commy transport benchmark secret"
TIMEOUT = 120.0
_LEN = struct.Struct(">I")


def bare_payload(i: int, now: float) -> dict[str, object]:
    """What the bare sender packs for message i: the same fields our envelope and ping carry."""
    return {"msg_id": i, "request_id": None, "sender_node": "a", "sender_name": "sender",
            "receiver_node": "b", "receiver_name": "receiver", "sent_at": now,
            "type": "HeartbeatPing", "seq": i, "ping_sent_at": now, "status": "healthy"}


class _Sender(Actor):
    def __init__(self, ctx: Context, n: int, burst: int) -> None:
        super().__init__(ctx)
        self.left = n
        self.burst = burst
        self.to = Address("b", "receiver")

    @handles(HeartbeatTick)
    def on_tick(self, msg: HeartbeatTick, env: Envelope) -> None:
        send, to, now = self.ctx.send, self.to, self.ctx.now()
        count = min(self.burst, self.left)
        for i in range(count):
            send(to, HeartbeatPing(i, now, ServerStatus.HEALTHY))
        self.left -= count
        if self.left:
            self.ctx.set_timer(0.0, HeartbeatTick())


class _Receiver(Actor):
    def __init__(self, ctx: Context, n: int, done: Callable[[], None]) -> None:
        super().__init__(ctx)
        self.left = n
        self.done = done

    @handles(HeartbeatPing)
    def on_ping(self, msg: HeartbeatPing, env: Envelope) -> None:
        self.left -= 1
        if self.left == 0:
            self.done()


async def measure_peer_transport(n: int, burst: int = BURST) -> float:
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[float] = loop.create_future()

    def done() -> None:
        finished.set_result(loop.time())

    b = await start_node("b", (LOOPBACK, 0), secret=SECRET, heartbeat=None,
                         actors={"receiver": lambda ctx: _Receiver(ctx, n, done)}, seed=2)
    a = await start_node("a", (LOOPBACK, 0), {"b": b.address}, secret=SECRET, heartbeat=None,
                         actors={"sender": lambda ctx: _Sender(ctx, n, burst)}, seed=1)
    try:
        deadline = loop.time() + 10.0
        while not (a.transport.settled() and b.transport.settled()):
            if loop.time() > deadline:
                raise TimeoutError("the benchmark nodes did not connect")
            await asyncio.sleep(0.005)
        start = loop.time()
        sender = Address("a", "sender")
        a.node.send(sender, sender, HeartbeatTick(), None)
        end = await asyncio.wait_for(finished, TIMEOUT)
        return n / (end - start)
    finally:
        await a.close()
        await b.close()


class _BareReceiver(asyncio.Protocol):
    """Length-prefixed msgpack, parsed as cheaply as plain Python allows (no copies per frame)."""

    def __init__(self, n: int, finished: asyncio.Future[float]) -> None:
        self.left = n
        self.finished = finished
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, end = 0, len(buf)
        unpackb, unpack_len = msgpack.unpackb, _LEN.unpack_from
        with memoryview(buf) as view:
            while end - pos >= 4:
                (size,) = unpack_len(buf, pos)
                if end - pos - 4 < size:
                    break
                unpackb(view[pos + 4:pos + 4 + size], raw=False)
                pos += 4 + size
                self.left -= 1
        del buf[:pos]
        if self.left == 0 and not self.finished.done():
            self.finished.set_result(asyncio.get_running_loop().time())


class _BareSender(asyncio.Protocol):
    transport: asyncio.Transport


async def measure_bare_framing(n: int, burst: int = BURST) -> float:
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[float] = loop.create_future()
    server = await loop.create_server(lambda: _BareReceiver(n, finished), LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await loop.create_connection(_BareSender, LOOPBACK, port)
    packb, pack_len = msgpack.packb, _LEN.pack
    left = n

    def send_burst() -> None:
        nonlocal left
        frames = []
        now = loop.time()
        for i in range(min(burst, left)):
            # Built per message, as our sender builds each ping: a real payload is not a constant.
            payload = packb(bare_payload(i, now), use_bin_type=True)
            frames.append(pack_len(len(payload)))
            frames.append(payload)
        left -= min(burst, left)
        transport.write(b"".join(frames))
        if left:
            loop.call_later(0.0, send_burst)

    try:
        start = loop.time()
        send_burst()
        end = await asyncio.wait_for(finished, TIMEOUT)
        return n / (end - start)
    finally:
        transport.close()
        server.close()
        await server.wait_closed()

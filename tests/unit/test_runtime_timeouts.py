"""TCP transport timeouts: a silent connection is closed after `read_timeout`, a write buffer that
does not drain is closed after `write_timeout`, and traffic keeps a connection open.

Timeouts here are a few hundred milliseconds, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import socket

from commy.codec import DEFAULT_CODEC
from commy.errors import TIMEOUT
from commy.framing import encode_frame
from commy.messages import Address, Envelope, HeartbeatPing, LinkDown, LinkUp, ServerStatus
from commy.runtime.loop import run
from commy.runtime.standalone import RunningNode, start_node
from commy.runtime.tcp import TcpConfig
from tests.conformance.harness import PROBE, Probe
from tests.helpers.aio import probe, until
from tests.helpers.link_peer import SECRET, handshake, link_as

LOOPBACK = "127.0.0.1"




def downs(r: RunningNode, peer: str) -> list[LinkDown]:
    return [m for m in probe(r).link_events if isinstance(m, LinkDown) and m.peer == peer]


def ping_frame(src: str, dst: str, seq: int) -> bytes:
    env = Envelope(seq, None, Address(src, PROBE), Address(dst, PROBE), 0.0,
                   HeartbeatPing(seq, 0.0, ServerStatus.HEALTHY))
    return encode_frame(DEFAULT_CODEC.encode(env))


def test_a_silent_connection_is_closed_after_the_read_timeout() -> None:
    async def main() -> None:
        a = await start_node("a", (LOOPBACK, 0), secret=SECRET, heartbeat=None, actors={PROBE: Probe},
                             tcp=TcpConfig(read_timeout=0.3))
        try:
            reader, writer = await asyncio.open_connection(*a.address)
            await handshake(link_as("z", "a"), reader, writer)
            started = asyncio.get_running_loop().time()
            assert await until(lambda: any(isinstance(m, LinkUp) for m in probe(a).link_events), 2.0)
            # After the handshake the node sends nothing; then it closes the connection.
            assert await asyncio.wait_for(reader.read(), 3.0) == b""
            assert 0.25 <= asyncio.get_running_loop().time() - started < 2.0
            assert await until(lambda: bool(downs(a, "z")), 1.0)
            assert downs(a, "z")[0].reason == TIMEOUT
            writer.close()
        finally:
            await a.close()

    run(main())


def test_traffic_keeps_a_connection_open() -> None:
    async def main() -> None:
        a = await start_node("a", (LOOPBACK, 0), secret=SECRET, heartbeat=None, actors={PROBE: Probe},
                             tcp=TcpConfig(read_timeout=0.3))
        try:
            reader, writer = await asyncio.open_connection(*a.address)
            await handshake(link_as("z", "a"), reader, writer)
            for seq in range(8):  # 0.8 s of traffic, a frame every 0.1 s
                writer.write(ping_frame("z", "a", seq))
                await asyncio.sleep(0.1)
            assert downs(a, "z") == []
            assert [e.body.seq for e in probe(a).received] == list(range(8))  # type: ignore[attr-defined]
            writer.close()
        finally:
            await a.close()

    run(main())


def test_a_write_buffer_that_does_not_drain_is_closed_after_the_write_timeout() -> None:
    async def main() -> None:
        # A peer that completes the handshake, then never reads again.
        stuck: list[asyncio.StreamWriter] = []

        async def answer_then_stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await handshake(link_as("z", None), reader, writer)
            writer.transport.pause_reading()
            stuck.append(writer)

        sink = await asyncio.start_server(answer_then_stall, LOOPBACK, 0)
        sink.sockets[0].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        config = TcpConfig(write_timeout=0.3, high_water=16 * 1024, queue_limit=100)
        a = await start_node("a", (LOOPBACK, 0), {"z": sink.sockets[0].getsockname()[:2]}, secret=SECRET,
                             heartbeat=None, actors={PROBE: Probe}, tcp=config)
        try:
            assert await until(lambda: a.transport.connection_count("z") == 1, 2.0)
            sender, to = Address("a", PROBE), Address("z", PROBE)
            for seq in range(50_000):  # far more than the socket buffers hold: the write pauses
                a.node.send(sender, to, HeartbeatPing(seq, 0.0, ServerStatus.HEALTHY), None)
            assert await until(lambda: a.transport.peers["z"].active is not None
                               and a.transport.peers["z"].active.paused, 1.0)
            for seq in range(500):  # held back in the bounded queue while paused
                a.node.send(sender, to, HeartbeatPing(seq, 0.0, ServerStatus.HEALTHY), None)
            assert a.transport.stats.queue_dropped == 400
            assert await until(lambda: bool(downs(a, "z")), 3.0)
            assert downs(a, "z")[0].reason == TIMEOUT
        finally:
            await a.close()
            for writer in stuck:
                writer.close()
            sink.close()

    run(main())


def test_a_connection_that_never_starts_the_handshake_is_dropped() -> None:
    async def main() -> None:
        a = await start_node("a", (LOOPBACK, 0), secret=SECRET, heartbeat=None, actors={PROBE: Probe},
                             tcp=TcpConfig(connect_timeout=0.2))
        try:
            reader, writer = await asyncio.open_connection(*a.address)
            assert await asyncio.wait_for(reader.read(), 3.0) == b""  # closed, having said nothing
            writer.close()
        finally:
            await a.close()

    run(main())


def test_silent_strangers_beyond_the_cap_are_evicted_oldest_first_and_peers_still_connect() -> None:
    async def main() -> None:
        a = await start_node("a", (LOOPBACK, 0), secret=SECRET, heartbeat=None, actors={PROBE: Probe},
                             tcp=TcpConfig(max_unidentified=3))
        writers = []
        try:
            for _ in range(6):
                writers.append((await asyncio.open_connection(*a.address))[1])
            assert await until(lambda: a.transport.stats.refused == 3, 2.0)
            assert await until(lambda: a.transport.open_connections() == 3, 2.0)
            # The three newest strangers still hold every slot, and stay: a real peer gets in anyway,
            # because the oldest stranger makes room for it.
            reader, writer = await asyncio.open_connection(*a.address)
            writers.append(writer)
            await handshake(link_as("z", "a"), reader, writer)
            assert await until(lambda: any(isinstance(m, LinkUp) for m in probe(a).link_events), 2.0)
            assert a.transport.stats.refused == 4
        finally:
            for w in writers:
                w.close()
            await a.close()

    run(main())


def test_a_slow_answering_peer_gets_one_connection_not_one_per_backoff() -> None:
    async def main() -> None:
        accepted: list[asyncio.StreamWriter] = []

        async def answer_late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)
            await asyncio.sleep(0.6)  # far longer than the first backoff steps (50, 100, 200 ms)
            await handshake(link_as("z", None), reader, writer)

        z = await asyncio.start_server(answer_late, LOOPBACK, 0)
        a = await start_node("a", (LOOPBACK, 0), {"z": z.sockets[0].getsockname()[:2]}, secret=SECRET,
                             heartbeat=None, actors={PROBE: Probe})
        try:
            assert await until(lambda: any(isinstance(m, LinkUp) for m in probe(a).link_events), 3.0)
            await asyncio.sleep(0.3)
            assert len(accepted) == 1
        finally:
            await a.close()
            for w in accepted:
                w.close()
            z.close()

    run(main())

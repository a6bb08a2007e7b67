"""`TcpTransport`: a node's peer transport over TCP, one connection per pair of nodes.

The transport listens on one address and knows its peers' addresses. Per peer it keeps the set of
*ready* connections (the peer is known), the *active* one that carries our envelopes, a bounded
queue for envelopes sent while no connection is writable (oldest dropped first, and counted), and
a capped exponential `Backoff` (jitter from the node's seeded rng) for redialing.

One connection per pair: both nodes dial, but only while they have no ready connection to the
peer, and the node with the higher id waits `dial_grace` before its first dial so both dialing at
once is rare. When a pair still ends up with two connections, the one dialed by the lower node id
is kept; between two connections from the same dialer the newer wins (a dialer only dials when it
has given up on its previous connection). A node retires a losing connection only when it dialed
it itself or when it is an older duplicate, so each loser is closed by exactly one side; retiring
shuts the write side but still delivers what the peer already sent on it.

Every connection is authenticated with the cluster secret (`secret`) before it is ready: the
`PeerLink` handshake, with challenges from `entropy` (`os.urandom` unless a test passes another).
A connection that fails it is closed and counted as a violation; it never becomes ready, so the
node never hears of it and nothing it sent reaches an actor.

The node hears `LinkUp(peer)` when the first ready connection to a peer appears and
`LinkDown(peer, reason, detail)` when the last one goes; switching between duplicates is silent.
A protocol violation on one connection closes that connection only (see `tcp_conn`).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from commy.codec import DEFAULT_CODEC, Codec
from commy.core.node import Node
from commy.framing import DEFAULT_MAX_FRAME
from commy.messages import Envelope, LinkDown, LinkUp
from commy.runtime.backoff import Backoff
from commy.runtime.tcp_conn import Connection

LOG_ACTOR = "transport"


@dataclass(frozen=True, slots=True)
class TcpConfig:
    max_frame: int = DEFAULT_MAX_FRAME
    read_timeout: float = 30.0  # nothing read for this long closes a connection
    write_timeout: float = 30.0  # a write buffer over high water for this long closes it
    connect_timeout: float = 5.0  # to connect, and then to complete the handshake
    max_unidentified: int = 64  # accepted connections that have not completed the handshake
    backoff_initial: float = 0.05
    backoff_cap: float = 2.0
    queue_limit: int = 10_000  # envelopes held per peer while no connection is writable
    high_water: int = 1 << 20  # bytes buffered by the socket before we hold envelopes back
    dial_grace: float = 0.1  # the higher id's head start for the lower id's dial
    linger: float = 2.0  # how long a closing connection waits for the peer's close

    def __post_init__(self) -> None:
        for name in ("read_timeout", "write_timeout", "connect_timeout", "backoff_initial", "linger"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ValueError(f"tcp.{name} must be a finite number > 0, got {getattr(self, name)}")
        if self.queue_limit < 1 or self.high_water < 1 or self.max_unidentified < 1:
            raise ValueError("tcp.queue_limit, tcp.high_water and tcp.max_unidentified must be >= 1")


@dataclass
class TransportStats:
    queue_dropped: int = 0  # envelopes dropped from a full per-peer queue
    unroutable: int = 0  # envelopes for a node we have no address or connection for
    violations: int = 0  # connections closed because the other side broke the protocol
    links_up: int = 0
    links_down: int = 0
    refused: int = 0  # accepted connections dropped because too many had not completed the handshake


class PeerState:
    __slots__ = ("active", "addr", "backoff", "conns", "dialing", "dropped", "name", "queue", "retry", "up")

    def __init__(self, name: str, addr: tuple[str, int] | None, backoff: Backoff, queue_limit: int) -> None:
        self.name = name
        self.addr = addr
        self.backoff = backoff
        self.conns: list[Connection] = []  # ready, not retired
        self.active: Connection | None = None
        self.queue: deque[Envelope] = deque(maxlen=queue_limit)
        self.dropped = 0
        self.dialing = False
        self.retry: asyncio.TimerHandle | None = None
        self.up = False


class TcpTransport:
    def __init__(
        self,
        node: Node,
        listen: tuple[str, int],
        peers: Mapping[str, tuple[str, int]] | None = None,
        config: TcpConfig | None = None,
        *,
        secret: bytes,
        entropy: Callable[[int], bytes] = os.urandom,
        loop: asyncio.AbstractEventLoop | None = None,
        codec: Codec = DEFAULT_CODEC,
    ) -> None:
        if not secret:
            raise ValueError("the peer transport needs the cluster secret")
        self.node = node
        self.node_id = node.node_id
        self.config = config or TcpConfig()
        self.codec = codec
        self._secret = secret
        self._entropy = entropy
        self.loop = loop or asyncio.get_running_loop()
        self.listen = listen
        self.listen_address: tuple[str, int] | None = None  # the bound address once started
        self.stats = TransportStats()
        self.peers: dict[str, PeerState] = {}
        self._rng = random.Random(node.rng.getrandbits(64))  # jitter, from the node's seeded stream
        self._server: asyncio.Server | None = None
        self._conns: set[Connection] = set()  # every connection object not yet lost
        self._handshaking: dict[Connection, None] = {}  # accepted, handshake not done; oldest first
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._closing = False
        for name, addr in (peers or {}).items():
            self.add_peer(name, addr)

    # ---- lifecycle

    async def start(self) -> tuple[str, int]:
        """Listen, then start dialing the peers; returns the bound (host, port)."""
        host, port = self.listen
        self._server = await self.loop.create_server(lambda: self._new_conn(None), host, port)
        sockname = self._server.sockets[0].getsockname()
        self.listen_address = (sockname[0], sockname[1])
        self._started = True
        for peer in self.peers.values():
            self._schedule_dial(peer, 0.0 if self.node_id < peer.name else self.config.dial_grace)
        return self.listen_address

    async def close(self) -> None:
        """Stop listening and dialing, close every connection (writing out buffers), bounded."""
        self._closing = True
        for peer in self.peers.values():
            if peer.retry is not None:
                peer.retry.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.close()
        deadline = self.loop.time() + 1.0
        while self._conns and self.loop.time() < deadline:
            await asyncio.sleep(0.005)
        for conn in list(self._conns):  # the peer never acknowledged our close
            conn.abort("closed", "transport closed")
        await asyncio.sleep(0)
        if self._server is not None:
            await self._server.wait_closed()

    def add_peer(self, name: str, addr: tuple[str, int]) -> None:
        """Learn (or update) a peer's address; dials it if started and not connected.

        Idempotent: the same address again changes nothing. A new address replaces a pending
        redial (it was backing off from the old one) with a fresh dial; the higher id waits
        `dial_grace`, as at start, since both ends often learn of each other at once."""
        peer = self._peer(name)
        if peer.addr == addr:
            return
        peer.addr = addr
        if peer.retry is not None:
            peer.retry.cancel()
            peer.retry = None
        if self._started:
            self._schedule_dial(peer, 0.0 if self.node_id < name else self.config.dial_grace)

    def _peer(self, name: str) -> PeerState:
        peer = self.peers.get(name)
        if peer is None:
            backoff = Backoff(self._rng, self.config.backoff_initial, self.config.backoff_cap)
            peer = self.peers[name] = PeerState(name, None, backoff, self.config.queue_limit)
        return peer

    # ---- sending (the hot path)

    def transmit(self, env: Envelope) -> None:
        peer = self.peers.get(env.receiver.node)
        if peer is None:
            self.stats.unroutable += 1
            return
        conn = peer.active
        if conn is not None and not conn.paused and not peer.queue:
            # Append to the link; one flush per loop iteration writes the whole burst at once.
            conn.link.send(env)
            if not conn.flush_scheduled:
                conn.flush_scheduled = True
                self.loop.call_soon(conn.flush)
            return
        if peer.addr is None and not peer.up:
            self.stats.unroutable += 1
            return
        if len(peer.queue) == peer.queue.maxlen:  # the deque drops the oldest by itself
            peer.dropped += 1
            self.stats.queue_dropped += 1
        peer.queue.append(env)

    def _drain_queue(self, peer: PeerState) -> None:
        conn = peer.active
        if conn is None:
            return
        queue = peer.queue
        while queue and not conn.paused:
            # Send in slices and flush between them so `pause_writing` can stop us at high water.
            for _ in range(min(len(queue), 512)):
                conn.link.send(queue.popleft())
            conn.flush()

    # ---- dialing

    def _new_conn(self, peer: str | None) -> Connection:
        c = self.config
        return Connection(self, peer, self.node.deliver, secret=self._secret, entropy=self._entropy,
                          max_frame=c.max_frame, read_timeout=c.read_timeout, handshake_timeout=c.connect_timeout,
                          write_timeout=c.write_timeout, linger=c.linger, high_water=c.high_water)

    def _schedule_dial(self, peer: PeerState, delay: float) -> None:
        if self._closing or peer.addr is None or peer.up or peer.dialing or peer.retry is not None:
            return
        peer.retry = self.loop.call_later(delay, self._dial_now, peer)

    def _dial_now(self, peer: PeerState) -> None:
        peer.retry = None
        if self._closing or peer.up or peer.dialing or peer.addr is None:
            return
        peer.dialing = True
        task = self.loop.create_task(self._dial(peer, peer.addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dial(self, peer: PeerState, addr: tuple[str, int]) -> None:
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: self._new_conn(peer.name), addr[0], addr[1]),
                self.config.connect_timeout,
            )
        except (TimeoutError, OSError) as exc:
            self._log("debug", "dial_failed", peer=peer.name, error=f"{type(exc).__name__}: {exc}")
            peer.dialing = False
            self._schedule_dial(peer, peer.backoff.next())
        # Connected: the dial is still in flight until the handshake makes the connection ready
        # (`conn_ready`) or it is lost first (`conn_gone` redials, with a longer backoff).

    # ---- connection events (from tcp_conn.Connection)

    def conn_ready(self, conn: Connection) -> None:
        self._handshaking.pop(conn, None)
        if self._closing:
            conn.abort("closed", "transport closing")
            return
        name = conn.link.peer
        assert name is not None
        peer = self._peer(name)
        if conn.outbound:
            peer.dialing = False
        conn.ready = True
        peer.conns.append(conn)
        self._resolve(peer)
        if not peer.up:
            peer.up = True
            peer.backoff.reset()
            if peer.retry is not None:
                peer.retry.cancel()
                peer.retry = None
            self.stats.links_up += 1
            self._drain_queue(peer)
            self._log("info", "link_up", peer=name, dialer=conn.dialer)
            self.node.publish(LinkUp(name))

    def conn_opened(self, conn: Connection) -> None:
        # Tracked from here, not from construction: uvloop builds the protocol before it knows
        # whether the connect succeeds, and a failed dial must not leave an entry behind.
        self._conns.add(conn)
        if self._closing:
            conn.abort("closed", "transport closing")
        elif not conn.outbound:
            # Strangers that connect and say nothing must not pile up. The oldest waiting one goes,
            # not the newest: a real peer finishes its handshake in milliseconds, so a flood of
            # idle sockets cannot keep it out (it would have to outpace every handshake).
            self._handshaking[conn] = None
            if len(self._handshaking) > self.config.max_unidentified:
                oldest = next(iter(self._handshaking))
                del self._handshaking[oldest]
                self.stats.refused += 1
                oldest.abort("refused", "too many connections waiting for their handshake")

    def _unidentified(self) -> int:
        return len(self._handshaking)

    def conn_lost(self, conn: Connection) -> None:
        self._conns.discard(conn)
        self._handshaking.pop(conn, None)

    def conn_gone(self, conn: Connection, reason: str, detail: str) -> None:
        failure = conn.link.failure
        if failure is not None and not failure.by_peer:
            self.stats.violations += 1
            self._log("warning", "link_violation", peer=conn.link.peer, code=failure.code, detail=failure.detail)
        elif failure is not None and not conn.ready:
            # The peer refused our handshake (another cluster secret, another protocol version).
            self._log("warning", "link_refused", peer=conn.link.peer, code=failure.code, detail=failure.detail)
        if conn.outbound and not conn.ready:
            dialed = self.peers.get(conn.link.peer or "")
            if dialed is not None:  # our dial ended before the handshake did: try again, later
                dialed.dialing = False
                self._schedule_dial(dialed, dialed.backoff.next())
            return
        peer = self.peers.get(conn.link.peer) if conn.ready and conn.link.peer is not None else None
        if peer is None or conn not in peer.conns:
            return  # never ready, or already retired
        peer.conns.remove(conn)
        if peer.active is conn:
            peer.active = None
            if peer.conns:
                self._resolve(peer)
        if not peer.conns and peer.up:
            peer.up = False
            self.stats.links_down += 1
            self._log("info", "link_down", peer=peer.name, reason=reason, detail=detail)
            if not self._closing:
                self.node.publish(LinkDown(peer.name, reason, detail))
            if peer.addr is None:
                del self.peers[peer.name]  # an unconfigured node that dialed us: forget it
            else:
                self._schedule_dial(peer, peer.backoff.next())

    def conn_writable(self, conn: Connection) -> None:
        peer = self.peers.get(conn.link.peer) if conn.link.peer is not None else None
        if peer is not None and peer.active is conn:
            self._drain_queue(peer)

    def _resolve(self, peer: PeerState) -> None:
        """Pick the active connection; retire the losers this side is responsible for."""
        preferred = min(self.node_id, peer.name)
        best = max(peer.conns, key=lambda c: (c.dialer == preferred, c.seq))
        for conn in list(peer.conns):
            if conn is not best and (conn.dialer == best.dialer or conn.outbound):
                peer.conns.remove(conn)
                self._log("debug", "duplicate_retired", peer=peer.name, dialer=conn.dialer)
                conn.retire()
        if peer.active is not best:
            peer.active = best
            if peer.queue:
                self._drain_queue(peer)

    # ---- operations for tests and the harness

    def drop_peer(self, name: str, detail: str = "dropped by this node") -> int:
        """Abort every connection to `name` (the transport redials); returns how many."""
        peer = self.peers.get(name)
        conns = list(peer.conns) if peer is not None else []
        for conn in conns:
            conn.abort("closed", detail)
        return len(conns)

    def connection_count(self, name: str) -> int:
        peer = self.peers.get(name)
        return len(peer.conns) if peer is not None else 0

    def open_connections(self) -> int:
        """Connections not yet lost: peers, duplicates being retired and strangers alike."""
        return len(self._conns)

    def settled(self) -> bool:
        """Every configured peer has exactly one connection, no dial is in flight and no accepted
        connection is mid-handshake (the dialer is ready one frame before the acceptor: until
        the acceptor is too, the two ends may not yet agree on which duplicate to keep)."""
        if any(not (c.ready or c.outbound or c.gone) for c in self._conns):
            return False
        return all(len(p.conns) == 1 and not p.dialing for p in self.peers.values() if p.addr is not None)

    def _log(self, level: str, event: str, **fields: object) -> None:
        self.node.log_sink(self.node_id, LOG_ACTOR, level, event, fields)

"""The simulated network: links that carry bytes, with latency, loss, duplication and partitions.

Every ordered pair of nodes has a `SimLink` holding the two ends of one connection as the real
transport would: a sender-side `PeerLink` that frames and encodes each envelope, and a
receiver-side `PeerLink` that decodes and validates the bytes when they arrive. So the codec, the
framing and the link's anti-spoofing checks run on every simulated message exactly as over TCP,
and a protocol violation closes the connection the same way (LinkDown on both ends, then a
reconnect). These links are `PeerLink.trusted` (open from the start, no handshake): the
simulated network is the trusted fabric and only ever connects the cluster's own nodes.

Delivery time is `now + latency sample` (uniform `latency ± jitter`, lognormal, or fixed), then
pushed back to the link's previous delivery time so each directed link is FIFO like a TCP stream;
the `reorder` fault lets a message skip that clamp and overtake. `loss` drops, `duplicate` sends a
second copy with its own latency. Partitions are per directed link (`blocked`), checked when a
message is sent and again when it arrives (a cut wire loses what is in flight). A crash or a
broken connection bumps the link's `epoch`: bytes of the old connection still in flight are lost.
Events for a crashed node are dropped and for a paused node held (see `SimHost`).

Rogue connections (`inject_raw`) are not trusted: the conformance suite speaks raw bytes to a node
through a fresh accepting `PeerLink` that runs the real cluster-secret handshake (`secret`,
challenges from the network's seeded rng), and keeps what that link answers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from commy.codec import DEFAULT_CODEC, Codec
from commy.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame
from commy.link import DIALER, PROTOCOL_VERSION, LinkState, PeerLink, handshake_proof, link_key
from commy.messages import (
    Envelope,
    JoinProof,
    LinkDown,
    LinkUp,
    Message,
    MetadataExchange,
    MetadataExchangeAck,
    ServerStatus,
)
from sim.host import SimHost
from sim.scheduler import Scheduler
from sim.trace import CHUNK, Trace

DISTRIBUTIONS = ("uniform", "lognormal", "fixed")
SIM_SECRET = b"commy simulated cluster secret"
_CLOSED = LinkState.CLOSED


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """How one directed link behaves. Probabilities are per message."""

    latency: float = 0.001
    """Median one-way delay, seconds."""
    jitter: float = 0.0005
    """uniform: delay is latency ± jitter; lognormal: sigma = jitter / latency; fixed: ignored."""
    distribution: str = "uniform"
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    """Chance that a message ignores FIFO order and may overtake the ones sent before it."""
    min_latency: float = 0.00001

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {self.distribution!r}")
        for name in ("loss", "duplicate", "reorder"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if not (0.0 < self.min_latency <= self.latency < math.inf and 0.0 <= self.jitter < math.inf):
            raise ValueError(f"need 0 < min_latency <= latency and jitter >= 0, got {self}")


class SimLink:
    """One direction of one connection between two nodes."""

    __slots__ = ("blocked", "cfg", "down_until", "dst", "dst_host", "epoch", "fast", "last", "lo", "rx", "span",
                 "src", "tx")

    def __init__(self, src: str, dst: str, cfg: LinkConfig) -> None:
        self.src, self.dst = src, dst
        self.blocked = False
        self.set_cfg(cfg)
        self.down_until = -math.inf
        self.last = -math.inf  # delivery time of the last in-order message: the FIFO clamp
        self.epoch = 0
        self.dst_host: SimHost  # set by Network.attach before anything is sent
        self.tx: PeerLink
        self.rx: PeerLink

    # `fast` caches "nothing special about this link": uniform latency that never needs the
    # min_latency clamp, no loss, duplication or reordering, no partition. `cfg` and `blocked`
    # change only through the setters below, which keep it in step, so the per-message path
    # tests one flag (plain attributes: a property would cost a call per message).

    def set_cfg(self, cfg: LinkConfig) -> None:
        self.cfg = cfg
        self.lo = cfg.latency - cfg.jitter
        self.span = 2.0 * cfg.jitter
        self._refresh()

    def set_blocked(self, blocked: bool) -> None:
        self.blocked = blocked
        self._refresh()

    def _refresh(self) -> None:
        cfg = self.cfg
        self.fast = (
            not self.blocked and cfg.distribution == "uniform" and self.lo >= cfg.min_latency
            and not (cfg.loss or cfg.duplicate or cfg.reorder)
        )


class Network:
    """All links of a cluster; the cluster tells it about hosts coming and going."""

    def __init__(
        self,
        sched: Scheduler,
        rng: random.Random,
        trace: Trace,
        node_ids: Iterable[str],
        config: LinkConfig = LinkConfig(),
        *,
        codec: Codec = DEFAULT_CODEC,
        max_frame: int = DEFAULT_MAX_FRAME,
        reconnect_delay: float = 0.05,
        secret: bytes = SIM_SECRET,
    ) -> None:
        self.sched, self.rng, self.trace = sched, rng, trace
        # Bound once: the per-message path (SimHost.transmit) would otherwise look them up each time.
        self.random = rng.random
        self.arrive = self._arrive
        self._trace_buf = trace.buf  # the same list for the whole run (flush clears it in place)
        self.codec, self.max_frame, self.reconnect_delay = codec, max_frame, reconnect_delay
        self.secret = secret
        self.node_ids = list(node_ids)
        self.hosts: dict[str, SimHost] = {}
        self.links: dict[tuple[str, str], SimLink] = {}
        for a in self.node_ids:
            for b in self.node_ids:
                if a != b:
                    link = self.links[a, b] = SimLink(a, b, config)
                    self._reset(link)
        self.delivered = 0
        self.dropped = 0
        self.rogue_out = bytearray()

    def _reset(self, link: SimLink) -> None:
        """A new connection: fresh PeerLinks, and whatever was in flight on the old one is lost."""
        link.epoch += 1
        link.last = -math.inf
        link.tx = PeerLink.trusted(link.src, link.dst, codec=self.codec, max_frame=self.max_frame)
        link.rx = PeerLink.trusted(link.dst, link.src, codec=self.codec, max_frame=self.max_frame)

    def _t(self) -> float:
        return self.sched.now - self.sched.epoch

    # ---- configuration

    def configure(self, src: str | None = None, dst: str | None = None, **changes: Any) -> None:
        """Change LinkConfig fields on matching links (None matches every node)."""
        for (a, b), link in self.links.items():
            if (src is None or a == src) and (dst is None or b == dst):
                link.set_cfg(replace(link.cfg, **changes))

    def block(self, src: str, dst: str, blocked: bool = True) -> None:
        self.links[src, dst].set_blocked(blocked)

    def blocked(self, src: str, dst: str) -> bool:
        return self.links[src, dst].blocked

    def heal(self) -> None:
        for link in self.links.values():
            link.set_blocked(False)

    def blocked_pairs(self) -> list[tuple[str, str]]:
        return [key for key, link in self.links.items() if link.blocked]

    def link_up(self, src: str, dst: str) -> bool:
        """Whether a message sent now from src would be carried (no cut wire, no reconnect pending)."""
        link = self.links[src, dst]
        return not link.blocked and self.sched.now >= link.down_until

    # ---- hosts

    def attach(self, host: SimHost) -> None:
        """A node (re)started: route its links to the new host."""
        self.hosts[host.node_id] = host
        host.links = {b: self.links[a, b] for (a, b) in self.links if a == host.node_id}
        for (_, b), link in self.links.items():
            if b == host.node_id:
                link.dst_host = host

    def start(self) -> None:
        """Every node gets LinkUp for every peer at time zero."""
        for a in self.node_ids:
            for b in self.node_ids:
                if a != b:
                    self._publish_at(0.0, self.hosts[a], LinkUp(b))

    def crashed(self, node: str) -> None:
        """Its connections die: peers see LinkDown after one latency, in-flight bytes are lost."""
        for peer in self.node_ids:
            if peer == node:
                continue
            self._reset(self.links[node, peer])
            self._reset(self.links[peer, node])
            other = self.hosts.get(peer)
            if other is not None and other.alive:
                delay = self._latency(self.links[node, peer].cfg)
                self._publish_at(delay, other, LinkDown(node, "closed", "connection closed by peer"))

    def restarted(self, node: str) -> None:
        """It dials its peers again: both ends see LinkUp after one latency."""
        host = self.hosts[node]
        for peer in self.node_ids:
            other = self.hosts.get(peer)
            if peer == node or other is None or not other.alive:
                continue
            delay = self._latency(self.links[node, peer].cfg)
            self._publish_at(delay, other, LinkUp(node))
            self._publish_at(delay, host, LinkUp(peer))

    def break_link(self, a: str, b: str, code: str = "closed", detail: str = "connection broken") -> None:
        """Close the a<->b connection: LinkDown on both ends now, LinkUp after the reconnect delay.

        `a` is the side that closed. On a protocol violation (`code` not "closed") `b` learns the
        code too, as it would from the Error frame `a` sends before closing.
        """
        until = self.sched.now + self.reconnect_delay
        for key in ((a, b), (b, a)):
            link = self.links[key]
            self._reset(link)
            link.down_until = until
        ha, hb = self.hosts[a], self.hosts[b]
        self._publish_at(0.0, ha, LinkDown(b, code, detail))
        if code == "closed":
            self._publish_at(0.0, hb, LinkDown(a, "closed", "connection closed by peer"))
        else:
            self._publish_at(0.0, hb, LinkDown(a, code, f"closed by peer: {detail}"))
        self.sched.at(until, self._reconnect, (ha, hb))

    def _reconnect(self, pair: tuple[SimHost, SimHost]) -> None:
        ha, hb = pair
        # Only if both ends are the incarnations that lost the connection: a restart in between
        # has already announced its own LinkUp.
        if self.hosts[ha.node_id] is ha and self.hosts[hb.node_id] is hb and ha.alive and hb.alive:
            self._publish_at(0.0, ha, LinkUp(hb.node_id))
            self._publish_at(0.0, hb, LinkUp(ha.node_id))

    def _publish_at(self, delay: float, host: SimHost, msg: Message) -> None:
        self.sched.after(delay, self._publish_gate, (host, msg))

    def _publish_gate(self, item: tuple[SimHost, Message]) -> None:
        item[0].run(self._publish, item)

    def _publish(self, item: tuple[SimHost, Message]) -> None:
        host, msg = item
        detail = (msg.peer, msg.reason) if type(msg) is LinkDown else getattr(msg, "peer", None)
        self.trace.record(self._t(), host.node_id, "net", type(msg).__name__, detail)
        host.node.publish(msg)

    # ---- carrying messages

    def _latency(self, cfg: LinkConfig) -> float:
        if cfg.distribution == "uniform":
            d = cfg.latency + cfg.jitter * (2.0 * self.rng.random() - 1.0)
        elif cfg.distribution == "lognormal":
            d = cfg.latency * math.exp(self.rng.gauss(0.0, cfg.jitter / cfg.latency))
        else:
            d = cfg.latency
        return d if d > cfg.min_latency else cfg.min_latency

    def _drop(self, link: SimLink, reason: str, what: Any) -> None:
        self.dropped += 1
        self.trace.record(self._t(), link.src, "net", "drop", (reason, link.dst, what))

    def unroutable(self, src: str, env: Envelope) -> None:
        """`src` sent to a node it has no link to: dropped and traced, as TCP counts it."""
        self.dropped += 1
        self.trace.record(self._t(), src, "net", "drop", ("unroutable", env.receiver.node, env.msg_id))

    def transmit(self, link: SimLink, env: Envelope) -> None:
        """Carry `env` over `link`: everything but the common case, which `SimHost.transmit`
        inlines (uniform latency, FIFO, no loss, no partition: see `SimLink.fast`)."""
        now = self.sched.now
        if link.blocked or now < link.down_until:
            self._drop(link, "partition" if link.blocked else "link-down", env.msg_id)
            return
        data = link.tx.encode(env)  # encoded even if lost: encoding bugs must show up every time
        cfg = link.cfg
        if cfg.loss and self.random() < cfg.loss:
            self._drop(link, "loss", env.msg_id)
            return
        self._send_faulty(link, cfg, data, env.msg_id)

    def _send_faulty(self, link: SimLink, cfg: LinkConfig, data: bytes, msg_id: int) -> None:
        """Duplication, reordering, non-uniform or clamped latency: the general path."""
        sched = self.sched
        now = sched.now
        copies = 2 if cfg.duplicate and self.random() < cfg.duplicate else 1
        for copy in range(copies):
            when = now + self._latency(cfg)
            if cfg.reorder and self.random() < cfg.reorder:
                if when < link.last:  # it overtakes at least one message sent before it
                    self.trace.record(now - sched.epoch, link.src, "net", "reorder", (link.dst, msg_id))
            elif when < link.last:
                when = link.last
            else:
                link.last = when
            if copy:
                self.trace.record(now - sched.epoch, link.src, "net", "dup", (link.dst, msg_id))
            sched.at(when, self._arrive, (link, data, link.epoch))

    def _arrive(self, item: tuple[SimLink, bytes, int]) -> None:
        link, data, epoch = item
        host = link.dst_host
        if link.epoch != epoch or link.blocked or not host.alive or host.paused:
            self._not_delivered(item)
            return
        rx = link.rx
        envs = rx.receive_data(data)
        if envs:
            # The trace entry of an arrival is its time and wire bytes: already at hand, more
            # telling than any summary, and far cheaper to hash than a formatted row.
            buf = self._trace_buf
            buf.append((self.sched.now, data))
            if len(buf) >= CHUNK:
                self.trace.flush()
            if self.trace.active:
                self._emit_arrivals(link, envs)
            self.delivered += len(envs)
            deliver = host.node.deliver
            for env in envs:
                deliver(env)
        if rx.state is _CLOSED:
            failure = rx.failure
            code, detail = (failure.code, failure.detail) if failure else ("closed", "link closed")
            self.trace.record(self._t(), link.dst, "net", "link_error", (link.src, code, detail))
            self.break_link(link.dst, link.src, code, detail)

    def _emit_arrivals(self, link: SimLink, envs: list[Envelope]) -> None:
        t = self._t()
        for env in envs:
            self.trace.emit((t, link.dst, env.receiver.name, "recv", (type(env.body).__name__, env.sender.node,
                                                                      env.msg_id)))

    def _not_delivered(self, item: tuple[SimLink, bytes, int]) -> None:
        link, data, epoch = item
        host = link.dst_host
        if link.epoch != epoch:
            self._drop(link, "connection-reset", len(data))
        elif link.blocked:
            self._drop(link, "partition", len(data))
        elif not host.alive:
            self._drop(link, "crashed", len(data))
        else:
            host.held.append((self._arrive, item))  # paused: replayed at resume

    # ---- rogue connections (conformance tests)

    def inject_raw(self, dst: str, data: bytes, hello_as: str | None = None, secret: bytes | None = None) -> bytes:
        """Feed raw bytes to `dst` over a fresh accepting link, now; returns what it answered.

        With `hello_as`, the rogue first runs the dialer's side of the handshake as that node,
        proving with `secret` (default: the cluster's, i.e. a rogue that holds it; another value
        is a rogue that does not), then sends `data`. Envelopes that pass the link's checks are
        delivered to the node like any others. Answers also accumulate in `rogue_out`.
        """
        host = self.hosts[dst]
        link = PeerLink(dst, None, secret=self.secret, entropy=self.rng.randbytes, codec=self.codec,
                        max_frame=self.max_frame)
        out = b""
        if hello_as is not None and host.alive:
            ours = self.rng.randbytes(32)
            exchange = MetadataExchange(hello_as, PROTOCOL_VERSION, ServerStatus.HEALTHY, ours)
            link.receive_data(encode_frame(self.codec.encode_message(exchange)))
            out = link.data_to_send()
            ack = self.codec.decode_message(FrameDecoder().feed(out)[0]) if not link.closed else None
            if isinstance(ack, MetadataExchangeAck):
                key = link_key(self.secret if secret is None else secret)
                proof = handshake_proof(key, DIALER, hello_as, dst, ours, ack.challenge)
                data = encode_frame(self.codec.encode_message(JoinProof(proof))) + data
        envs = link.receive_data(data) if host.alive and not link.closed else []
        code = link.failure.code if link.failure else None
        self.trace.record(self._t(), dst, "net", "rogue", (hello_as, data, len(envs), code))
        for env in envs:
            self.delivered += 1
            host.run(host.node.deliver, env)
        out += link.data_to_send()
        self.rogue_out += out
        return out

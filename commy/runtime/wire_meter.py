"""Counting the peer protocol where it is encoded and decoded: messages, bytes, errors, lag per service.

The TCP peer transport hands every envelope it sends to its codec's `encode` and every frame it
reads to `decode`; `MeteredCodec` is that codec with counters, given to the transport by
`start_server`, so the counts cost one extra call per message and no change to the transport.
Bytes are the frames as they go on the wire (payload plus the 4-byte length prefix); handshake
frames (`encode_message` / `decode_message`) count too. An `Error` sent or received is counted by
its code.

Each `Replicate` that arrives also gives the replication lag of its service: for every write in
it, the node's clock at arrival minus the write's stamp (its physical milliseconds), kept for the
last `LAG_WINDOW` writes per service (at most `MAX_SERVICES` services, the least recently written
forgotten first). It is measured at arrival, so it includes the network and any clock skew between
the nodes, like the replicator's own node-wide figure; a resent write counts again.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from commy.codec import Codec
from commy.core.hlc import millis_of
from commy.messages import Envelope, Error, Message, Replicate

__all__ = ["LAG_WINDOW", "MAX_SERVICES", "MeteredCodec", "WireCounts", "p99"]

FRAME_HEADER = 4
LAG_WINDOW = 200
MAX_SERVICES = 10_000


def p99(samples: deque[float] | list[float]) -> float:
    """The 99th percentile (nearest rank) of non-empty `samples`."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@dataclass
class WireCounts:
    """What one protocol carried, as the node sees it."""

    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    errors_out: Counter[str] = field(default_factory=Counter)  # Error messages sent, by code
    errors_in: Counter[str] = field(default_factory=Counter)  # Error messages received, by code


class MeteredCodec(Codec):
    """The default codec, counting what passes through it (see the module docstring)."""

    def __init__(self, now: Callable[[], float]) -> None:
        super().__init__()
        self.now = now
        self.counts = WireCounts()
        self.lag: dict[tuple[str, str], deque[float]] = {}  # (tenant, service) -> seconds, newest last
        # The codec's own methods, bound once: these run for every message, and `super()` is a lookup.
        self._encode, self._decode = Codec.encode.__get__(self), Codec.decode.__get__(self)

    def encode(self, env: Envelope) -> bytes:
        data = self._encode(env)
        counts = self.counts
        counts.messages_out += 1
        counts.bytes_out += len(data) + FRAME_HEADER
        if type(env.body) is Error:
            counts.errors_out[env.body.code] += 1
        return data

    def decode(self, data: bytes) -> Envelope:
        env = self._decode(data)
        counts = self.counts
        counts.messages_in += 1
        counts.bytes_in += len(data) + FRAME_HEADER
        body = env.body
        if type(body) is Replicate:
            self._lag(body)
        elif type(body) is Error:
            counts.errors_in[body.code] += 1
        return env

    def encode_message(self, msg: Message) -> bytes:
        data = super().encode_message(msg)
        self.counts.messages_out += 1
        self.counts.bytes_out += len(data) + FRAME_HEADER
        return data

    def decode_message(self, data: bytes) -> Message:
        msg = super().decode_message(data)
        self.counts.messages_in += 1
        self.counts.bytes_in += len(data) + FRAME_HEADER
        return msg

    def _lag(self, msg: Replicate) -> None:
        key = (msg.tenant, msg.service)
        samples = self.lag.pop(key, None)  # re-inserted below: the dict stays in least-recent order
        if samples is None:
            samples = deque(maxlen=LAG_WINDOW)
            if len(self.lag) >= MAX_SERVICES:
                del self.lag[next(iter(self.lag))]
        self.lag[key] = samples
        now = self.now()
        for w in msg.writes:
            samples.append(now - millis_of(w.stamp) / 1000)

    def lag_p99(self, tenant: str, service: str) -> float | None:
        """Seconds: the p99 lag of the service's recent writes from peers, None if none came."""
        samples = self.lag.get((tenant, service))
        return max(0.0, p99(samples)) if samples else None

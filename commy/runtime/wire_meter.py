"""Counting the peer protocol where it is encoded and decoded: messages, bytes, errors, lag per service.

The TCP peer transport hands every envelope it sends to its codec's `encode` and every frame it
reads to `decode`; `MeteredCodec` is that codec with counters, given to the transport by
`start_server`, so the counts cost one extra call per message and no change to the transport.
Bytes are the frames as they go on the wire (payload plus the 4-byte length prefix); handshake
frames (`encode_message` / `decode_message`) count too. An `Error` sent or received is counted by
its code.

Each `Replicate` that arrives also gives the replication lag of its service: for every write in
it, the node's clock at arrival minus the write's stamp (its physical milliseconds), kept for the
last `LAG_WINDOW` writes per service in a `LagWindow` (a fixed ring of C doubles) for at most
`MAX_SERVICES` services, the least recently written forgotten first: the lag figures take at most
`MAX_SERVICES * LAG_WINDOW * 8` bytes (1 MiB) plus a small object per service, whatever the
cluster holds. It is measured at arrival, so it includes the network and any clock skew between
the nodes, like the replicator's own node-wide figure; a resent write counts again.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from commy.codec import Codec
from commy.core.hlc import millis_of
from commy.messages import Envelope, Error, Message, Replicate

__all__ = ["LAG_WINDOW", "MAX_SERVICES", "LagWindow", "MeteredCodec", "WireCounts", "p99"]

FRAME_HEADER = 4
LAG_WINDOW = 128
MAX_SERVICES = 1024


def p99(samples: Iterable[float]) -> float:
    """The 99th percentile (nearest rank) of non-empty `samples`."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class LagWindow:
    """The last `size` samples of one service, in a ring of C doubles allocated once."""

    __slots__ = ("_next", "count", "ring")

    def __init__(self, size: int = LAG_WINDOW) -> None:
        self.ring = array("d", bytes(8 * size))
        self.count = 0  # samples held (at most size)
        self._next = 0

    def __len__(self) -> int:
        return self.count

    def append(self, value: float) -> None:
        ring = self.ring
        ring[self._next] = value
        self._next = (self._next + 1) % len(ring)
        self.count = min(self.count + 1, len(ring))

    def samples(self) -> array[float]:
        return self.ring if self.count == len(self.ring) else self.ring[:self.count]


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
        self.lag: dict[tuple[str, str], LagWindow] = {}  # (tenant, service) -> seconds, least recent first
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
            samples = LagWindow()
            if len(self.lag) >= MAX_SERVICES:
                del self.lag[next(iter(self.lag))]
        self.lag[key] = samples
        now = self.now()
        for w in msg.writes:
            samples.append(now - millis_of(w.stamp) / 1000)

    def lag_p99(self, tenant: str, service: str) -> float | None:
        """Seconds: the p99 lag of the service's recent writes from peers, None if none came."""
        samples = self.lag.get((tenant, service))
        return max(0.0, p99(samples.samples())) if samples else None

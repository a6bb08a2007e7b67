"""Hybrid logical clock stamps: one u64 that orders writes cluster-wide and names their origin.

    bits 63..20   milliseconds since the Unix epoch (44 bits: good until the year 2527)
    bits 19..8    logical counter (12 bits), for writes within one millisecond
    bits  7..0    origin node index (1..255; 0 = unknown, a legacy or unstamped write)

Comparing two stamps as plain integers compares time first, then the logical counter, then the
origin, so the order is total and the same on every node. `HybridClock` issues a node's stamps:
each new one is above every stamp it issued or observed, and follows the wall clock when the wall
clock is ahead. When it is not (it went backwards, or a peer's clock runs ahead), the clock keeps
the newest millisecond it knows and counts up in the logical part; 4096 writes in one millisecond
carry into the millisecond, exactly as adding one to the packed bits does. The wall clock comes in
as a callable (`ctx.now`), so this module stays pure and the simulator can skew it.
"""

from __future__ import annotations

from collections.abc import Callable

from commy.errors import LocalProtocolError

__all__ = ["LOGICAL_BITS", "MAX_AHEAD_MS", "MAX_LOGICAL", "MAX_MILLIS", "MAX_ORIGIN", "HybridClock", "logical_of",
           "make_stamp", "millis_of", "origin_of"]

ORIGIN_BITS = 8
LOGICAL_BITS = 12
MILLIS_SHIFT = ORIGIN_BITS + LOGICAL_BITS
MAX_ORIGIN = (1 << ORIGIN_BITS) - 1
MAX_LOGICAL = (1 << LOGICAL_BITS) - 1
MAX_MILLIS = (1 << (64 - MILLIS_SHIFT)) - 1
MAX_STAMP = (1 << 64) - 1
MAX_AHEAD_MS = 60_000
"""How far ahead of the local wall clock an observed stamp may be: clocks in a cluster are kept
within milliseconds by NTP; a minute ahead is a broken clock or a forged stamp, not skew."""
_ONE_LOGICAL = 1 << ORIGIN_BITS
_NO_ORIGIN = MAX_STAMP ^ MAX_ORIGIN  # mask that clears the origin byte


def origin_of(stamp: int) -> int:
    """The index of the node that issued `stamp` (0: unknown)."""
    return stamp & MAX_ORIGIN


def millis_of(stamp: int) -> int:
    """The physical part of `stamp`: milliseconds since the Unix epoch."""
    return stamp >> MILLIS_SHIFT


def logical_of(stamp: int) -> int:
    """The logical counter of `stamp`."""
    return (stamp >> ORIGIN_BITS) & MAX_LOGICAL


def make_stamp(millis: int, logical: int, origin: int) -> int:
    """Pack the three parts; each must be an int within its field."""
    for what, v, top in (("millis", millis, MAX_MILLIS), ("logical", logical, MAX_LOGICAL),
                         ("origin", origin, MAX_ORIGIN)):
        if type(v) is not int or not 0 <= v <= top:
            raise LocalProtocolError(f"stamp {what} must be an int in 0..{top}, not {v!r}")
    return (millis << MILLIS_SHIFT) | (logical << ORIGIN_BITS) | origin


def _check_stamp(stamp: object) -> int:
    if type(stamp) is not int or not 0 <= stamp <= MAX_STAMP:
        raise LocalProtocolError(f"a stamp must be an int in 0..2**64-1, not {stamp!r}")
    return stamp


class HybridClock:
    """A node's stamp source; one per node, shared by everything on it that stamps or observes."""

    __slots__ = ("_now", "index", "last")

    def __init__(self, index: int, now: Callable[[], float]) -> None:
        # 0 is allowed for a node with no cluster identity: its stamps read as "origin unknown".
        if type(index) is not int or not 0 <= index <= MAX_ORIGIN:
            raise LocalProtocolError(f"clock index must be an int in 0..{MAX_ORIGIN}, not {index!r}")
        self.index = index
        self._now = now
        self.last = 0

    def __repr__(self) -> str:
        return f"<HybridClock index {self.index} last {millis_of(self.last)}ms+{logical_of(self.last)}>"

    def tick(self) -> int:
        """A new stamp for a local write, above every stamp issued or observed so far."""
        wall = int(self._now() * 1000) << MILLIS_SHIFT
        # One logical step past `last` (whatever its origin); a full counter carries into the millis.
        stamp = max(wall, (self.last & _NO_ORIGIN) + _ONE_LOGICAL) | self.index
        if stamp > MAX_STAMP:
            raise LocalProtocolError(f"clock overflow: {stamp:#x} does not fit in 64 bits")
        self.last = stamp
        return stamp

    def observe(self, stamp: int) -> bool:
        """Note a stamp made elsewhere (a remote write, a file's clocks): later ticks go above it.

        A stamp more than `MAX_AHEAD_MS` ahead of this node's wall clock is not taken (returns
        False): one node with a wild clock -- or a forged stamp near 2**64 -- would otherwise drag
        every clock of the cluster with it, for good. The caller decides what to do with its write."""
        if _check_stamp(stamp) <= self.last:
            return True
        if (stamp >> MILLIS_SHIFT) - int(self._now() * 1000) > MAX_AHEAD_MS:
            return False
        self.last = stamp
        return True

    def plausible(self, stamp: int) -> bool:
        """Whether `stamp` is within `MAX_AHEAD_MS` of this node's wall clock (or behind it)."""
        return (stamp >> MILLIS_SHIFT) - int(self._now() * 1000) <= MAX_AHEAD_MS

"""The virtual clock and the event heap every simulated effect goes through.

Time starts at a fixed epoch and only moves forward, to the time of the next event. Events live
in a binary heap of `[time, seq, fn, arg]` lists: `seq` grows by one per scheduled event, so two
events at the same instant run in the order they were scheduled, whatever the callables are, and
the heap never has to compare anything but numbers. Cancelling an event only clears its `fn`
slot; the heap skips dead entries when it pops them, which is cheaper than removing them.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

EPOCH = 1_000_000.0
"""Where virtual time starts: far from zero so that a bug treating it as a duration shows."""

Event = list[Any]
"""`[time, seq, fn | None, arg]`; `fn(arg)` runs at `time` unless cancelled (fn set to None)."""


class Scheduler:
    """A virtual clock plus a heap of pending events."""

    __slots__ = ("epoch", "fired", "heap", "next_seq", "now")

    def __init__(self, epoch: float = EPOCH) -> None:
        self.epoch = epoch
        self.now = epoch
        self.fired = 0
        self.heap: list[Event] = []
        # Hot paths (the network) push `[when, next_seq(), fn, arg]` onto `heap` themselves,
        # with `when >= now`; everything else goes through `at`/`after`.
        self.next_seq: Callable[[], int] = itertools.count(1).__next__

    @property
    def elapsed(self) -> float:
        """Seconds since the epoch: what traces and timelines show."""
        return self.now - self.epoch

    @property
    def pending(self) -> int:
        """Entries still in the heap (cancelled ones included until they are popped)."""
        return len(self.heap)

    def at(self, when: float, fn: Callable[[Any], None], arg: Any = None) -> Event:
        """Run `fn(arg)` at absolute virtual time `when` (never earlier than now)."""
        if when < self.now:
            raise ValueError(f"cannot schedule at {when - self.epoch:.6f}s, before now ({self.elapsed:.6f}s)")
        ev = [when, self.next_seq(), fn, arg]
        heapq.heappush(self.heap, ev)
        return ev

    def after(self, delay: float, fn: Callable[[Any], None], arg: Any = None) -> Event:
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        return self.at(self.now + delay, fn, arg)

    @staticmethod
    def cancel(ev: Event) -> None:
        ev[2] = None

    def next_time(self) -> float | None:
        """Time of the next live event, dropping dead ones on the way; None when idle."""
        heap = self.heap
        while heap and heap[0][2] is None:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run_until(self, when: float, stop: Callable[[], bool] | None = None) -> bool:
        """Run every event due at or before `when`, then set the clock to `when`.

        With `stop`, it is checked after each event and the run ends early (clock left at that
        event's time) as soon as it returns True; the return value says whether it did.
        """
        heap = self.heap
        pop = heapq.heappop
        fired = 0
        try:
            if stop is None:
                # The hot loop of the whole simulator: keep it free of attribute lookups.
                while heap and heap[0][0] <= when:
                    at, _, fn, arg = pop(heap)
                    if fn is not None:
                        self.now = at
                        fired += 1
                        fn(arg)
            else:
                if stop():
                    return True
                while heap and heap[0][0] <= when:
                    ev = pop(heap)
                    fn = ev[2]
                    if fn is not None:
                        self.now = ev[0]
                        fired += 1
                        fn(ev[3])
                        if stop():
                            return True
        finally:
            self.fired += fired
        if when > self.now:
            self.now = when
        return False

"""A tiny deterministic `Host` for a `Node`: a list-based scheduler and a list of transmissions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from commy.messages import Envelope


@dataclass
class _Call:
    due: float
    seq: int
    fn: Callable[[], None]
    cancelled: bool = False


class FakeHost:
    def __init__(self, now: float = 0.0) -> None:
        self.current = now
        self.calls: list[_Call] = []
        self.transmitted: list[Envelope] = []
        self._seq = 0

    def now(self) -> float:
        return self.current

    def call_later(self, delay: float, fn: Callable[[], None]) -> _Call:
        self._seq += 1
        call = _Call(self.current + delay, self._seq, fn)
        self.calls.append(call)
        return call

    def cancel_call(self, handle: _Call) -> None:
        handle.cancelled = True

    def transmit(self, env: Envelope) -> None:
        self.transmitted.append(env)

    @property
    def pending(self) -> int:
        return sum(not c.cancelled for c in self.calls)

    def advance(self, dt: float) -> int:
        """Run every callback due within `dt`, in (due, seq) order; returns how many ran."""
        end = self.current + dt
        ran = 0
        while True:
            due = [c for c in self.calls if c.due <= end]
            if not due:
                break
            call = min(due, key=lambda c: (c.due, c.seq))
            self.calls.remove(call)
            self.current = max(self.current, call.due)
            if not call.cancelled:
                call.fn()
                ran += 1
        self.current = end
        return ran

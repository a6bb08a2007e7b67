"""The scheduler's ordering and cancellation, and the trace's hash and rows."""

from __future__ import annotations

import pytest

from sim.scheduler import EPOCH, Scheduler
from sim.trace import Trace


def test_events_run_in_time_then_schedule_order() -> None:
    s = Scheduler()
    seen: list[str] = []
    s.after(0.2, seen.append, "late")
    s.after(0.1, seen.append, "first")
    s.after(0.1, seen.append, "second")  # same instant: scheduling order breaks the tie
    s.at(s.now, seen.append, "now")
    s.run_until(EPOCH + 1.0)
    assert seen == ["now", "first", "second", "late"]
    assert s.now == EPOCH + 1.0 and s.elapsed == 1.0


def test_cancelled_events_are_skipped_and_time_never_goes_back() -> None:
    s = Scheduler()
    seen: list[int] = []
    ev = s.after(0.5, seen.append, 1)
    s.after(0.6, seen.append, 2)
    Scheduler.cancel(ev)
    assert s.next_time() == EPOCH + 0.6
    s.run_until(EPOCH + 2.0)
    assert seen == [2]
    with pytest.raises(ValueError):
        s.at(EPOCH + 1.0, seen.append, 3)
    with pytest.raises(ValueError):
        s.after(-0.1, seen.append, 3)
    s.run_until(EPOCH + 1.5)  # asking for an earlier time does not move the clock back
    assert s.now == EPOCH + 2.0


def test_run_until_stops_early_on_the_predicate() -> None:
    s = Scheduler()
    seen: list[int] = []
    for i in range(5):
        s.after(0.1 * (i + 1), seen.append, i)
    assert s.run_until(EPOCH + 10.0, stop=lambda: len(seen) == 3) is True
    assert seen == [0, 1, 2] and s.now == pytest.approx(EPOCH + 0.3)
    assert s.run_until(EPOCH + 10.0, stop=lambda: False) is False
    assert seen == [0, 1, 2, 3, 4] and s.now == EPOCH + 10.0


def _fill(trace: Trace, n: int, peek_every: int = 0) -> str:
    for i in range(n):
        trace.record(i * 0.001, f"n{i % 3}", "heartbeat", "recv", ("HeartbeatPing", "n1", i))
        if peek_every and i % peek_every == 0:
            _ = trace.hash  # reading the hash flushes early; the digest must not depend on it
    return trace.hash


def test_trace_hash_is_independent_of_flush_points_and_sensitive_to_content() -> None:
    a = _fill(Trace(), 10_000)
    b = _fill(Trace(), 10_000, peek_every=777)
    assert a == b and len(a) == 64
    t = Trace()
    _fill(t, 9_999)
    t.record(9.999, "n0", "heartbeat", "recv", ("HeartbeatPing", "n1", 10_000))  # one field differs
    assert t.hash != a


def test_trace_keeps_capped_rows_and_feeds_listeners() -> None:
    t = Trace(keep=3)
    everything: list[object] = []
    crashes: list[object] = []
    t.subscribe(everything.append)
    t.subscribe(crashes.append, events=["crash"])
    for i in range(5):
        t.record(float(i), "n1", "sim", "crash" if i == 2 else "tick", {"i": i})
    assert len(everything) == 5 and crashes == [(2.0, "n1", "sim", "crash", {"i": 2})]
    assert t.export() == [
        {"time": float(i), "node": "n1", "actor": "sim", "event": "crash" if i == 2 else "tick", "detail": {"i": i}}
        for i in range(3)
    ]

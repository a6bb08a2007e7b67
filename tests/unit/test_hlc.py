"""Hybrid logical clock stamps: packing, monotonicity, observing, overflow, a clock that jumps back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commy.core.hlc import (
    MAX_AHEAD_MS,
    MAX_LOGICAL,
    MAX_MILLIS,
    MAX_ORIGIN,
    HybridClock,
    logical_of,
    make_stamp,
    millis_of,
    origin_of,
)
from commy.errors import LocalProtocolError

NOW = 1_700_000_000.0  # seconds; any plausible wall time
ORIGINS = st.integers(1, MAX_ORIGIN)
MILLIS = st.integers(0, MAX_MILLIS)
LOGICAL = st.integers(0, MAX_LOGICAL)
STAMPS = st.integers(0, (1 << 64) - 1)
# A wall clock that wanders: each step moves it by -5 s .. +5 s (so it goes backwards too).
STEPS = st.lists(st.floats(-5.0, 5.0, allow_nan=False), max_size=40)


class Wall:
    """A settable clock for `HybridClock(now=...)`."""

    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@given(MILLIS, LOGICAL, st.integers(0, MAX_ORIGIN))
def test_make_stamp_round_trips(millis: int, logical: int, origin: int) -> None:
    s = make_stamp(millis, logical, origin)
    assert 0 <= s < 1 << 64
    assert (millis_of(s), logical_of(s), origin_of(s)) == (millis, logical, origin)


@pytest.mark.parametrize("args", [(-1, 0, 1), (MAX_MILLIS + 1, 0, 1), (0, MAX_LOGICAL + 1, 1), (0, 0, 256),
                                  (0, 0, -1), (1.0, 0, 1), (0, 0, True)])
def test_make_stamp_refuses_out_of_range_parts(args: tuple[object, object, object]) -> None:
    with pytest.raises(LocalProtocolError):
        make_stamp(*args)  # type: ignore[arg-type]


@given(MILLIS, LOGICAL, ORIGINS, ORIGINS)
def test_same_time_different_origins_are_distinct_and_ordered_by_origin(millis: int, logical: int, a: int,
                                                                         b: int) -> None:
    sa, sb = make_stamp(millis, logical, a), make_stamp(millis, logical, b)
    assert (sa == sb) == (a == b)
    assert (sa < sb) == (a < b)


def test_stamps_order_by_time_then_logical_then_origin() -> None:
    assert make_stamp(5, 0, 1) > make_stamp(4, MAX_LOGICAL, MAX_ORIGIN)
    assert make_stamp(5, 1, 1) > make_stamp(5, 0, MAX_ORIGIN)


def test_first_tick_follows_the_wall_clock() -> None:
    clock = HybridClock(7, Wall())
    assert clock.last == 0
    s = clock.tick()
    assert (millis_of(s), logical_of(s), origin_of(s)) == (int(NOW * 1000), 0, 7)
    assert clock.last == s


@given(ORIGINS, STEPS)
def test_ticks_strictly_increase_and_carry_the_index_even_when_the_wall_goes_back(index: int,
                                                                                  steps: list[float]) -> None:
    wall = Wall()
    clock = HybridClock(index, wall)
    prev = clock.tick()
    for step in steps:
        wall.t += step
        s = clock.tick()
        assert s > prev and origin_of(s) == index
        assert millis_of(s) >= int(wall.t * 1000)  # never behind the wall clock either
        prev = s


@given(ORIGINS, st.lists(st.tuples(st.booleans(), STAMPS, st.floats(-5.0, 5.0, allow_nan=False)), max_size=40))
def test_a_tick_is_above_everything_issued_or_observed(index: int, ops: list[tuple[bool, int, float]]) -> None:
    wall = Wall()
    clock = HybridClock(index, wall)
    newest = 0
    for is_observe, stamp, step in ops:
        wall.t += step
        if is_observe and stamp < (MAX_MILLIS - 1) << 20:  # leave room to tick after it
            taken = clock.observe(stamp)
            assert taken == (stamp <= newest or clock.plausible(stamp))  # a wild future stamp is refused
            if taken:
                newest = max(newest, stamp)
            assert clock.last == newest
        else:
            newest = clock.tick()
        s = clock.tick()
        assert s > newest and origin_of(s) == index
        newest = s


def test_observe_ignores_older_stamps() -> None:
    ms = int(NOW * 1000) + 10
    clock = HybridClock(1, Wall())
    clock.observe(make_stamp(ms, 3, 9))
    clock.observe(make_stamp(ms, 2, 200))
    assert clock.last == make_stamp(ms, 3, 9)
    assert clock.tick() == make_stamp(ms, 4, 1)  # the remote ms, one logical step on, our origin


def test_a_stamp_more_than_a_minute_ahead_is_not_observed() -> None:
    clock = HybridClock(1, Wall())
    assert not clock.observe(make_stamp(int(NOW * 1000) + MAX_AHEAD_MS + 1, 0, 2))
    assert not clock.observe((1 << 64) - 1)  # a forged stamp would pin every clock of the cluster
    assert clock.last == 0 and millis_of(clock.tick()) == int(NOW * 1000)
    assert clock.observe(make_stamp(int(NOW * 1000) + MAX_AHEAD_MS, 0, 2))  # a minute of skew is followed


def test_a_stamp_from_the_future_is_followed_then_the_wall_takes_over() -> None:
    wall = Wall()
    clock = HybridClock(2, wall)
    ahead = make_stamp(int(NOW * 1000) + 500, 0, 3)
    clock.observe(ahead)
    assert clock.tick() == make_stamp(millis_of(ahead), 1, 2)
    wall.t += 1.0
    assert clock.tick() == make_stamp(int(wall.t * 1000), 0, 2)


def test_logical_overflow_carries_into_the_millis() -> None:
    clock = HybridClock(4, Wall())
    ms = int(NOW * 1000)
    stamps = [clock.tick() for _ in range(MAX_LOGICAL + 3)]
    assert stamps == sorted(set(stamps))
    assert stamps[MAX_LOGICAL] == make_stamp(ms, MAX_LOGICAL, 4)
    assert stamps[MAX_LOGICAL + 1] == make_stamp(ms + 1, 0, 4)
    assert stamps[MAX_LOGICAL + 2] == make_stamp(ms + 1, 1, 4)


def test_observed_full_counter_carries_too() -> None:
    clock = HybridClock(4, Wall(0.0))
    clock.observe(make_stamp(100, MAX_LOGICAL, 250))
    assert clock.tick() == make_stamp(101, 0, 4)


def test_a_wall_clock_at_or_before_the_epoch_still_ticks() -> None:
    wall = Wall(0.0)
    clock = HybridClock(1, wall)
    first = clock.tick()
    assert millis_of(first) == 0 and first > 0
    wall.t = -3.0
    assert clock.tick() == first + (1 << 8)


def test_bad_arguments() -> None:
    for index in (-1, 256, 1.0, "1"):
        with pytest.raises(LocalProtocolError):
            HybridClock(index, Wall())  # type: ignore[arg-type]
    clock = HybridClock(0, Wall())
    assert origin_of(clock.tick()) == 0  # a node with no cluster index stamps "origin unknown"
    for stamp in (-1, 1 << 64, 2.0, None):
        with pytest.raises(LocalProtocolError):
            clock.observe(stamp)  # type: ignore[arg-type]
    late = HybridClock(0, Wall(MAX_MILLIS / 1000))  # the year 2527
    late.observe(make_stamp(MAX_MILLIS, MAX_LOGICAL, 1))
    with pytest.raises(LocalProtocolError, match="overflow"):
        late.tick()

"""Reconnect backoff: doubling from `initial` to `cap`, jitter within bounds, reproducible by seed."""

from __future__ import annotations

import random

import pytest

from commy.runtime.backoff import Backoff


def test_without_jitter_it_doubles_up_to_the_cap() -> None:
    b = Backoff(random.Random(1), initial=0.05, cap=2.0, jitter=0.0)
    assert [round(b.next(), 6) for _ in range(9)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]


def test_jitter_stays_within_bounds() -> None:
    b = Backoff(random.Random(2), initial=0.05, cap=2.0, jitter=0.5)
    for n in range(40):
        base = min(2.0, 0.05 * 2**n)
        assert 0.5 * base <= b.next() <= base


def test_reset_starts_over() -> None:
    b = Backoff(random.Random(3), jitter=0.0)
    for _ in range(5):
        b.next()
    b.reset()
    assert b.next() == pytest.approx(0.05)


def test_same_seed_same_delays() -> None:
    one, two = Backoff(random.Random(7)), Backoff(random.Random(7))
    assert [one.next() for _ in range(10)] == [two.next() for _ in range(10)]


def test_a_peer_away_for_ages_does_not_overflow() -> None:
    b = Backoff(random.Random(4), jitter=0.0)
    b.attempts = 10_000
    assert b.next() == 2.0


@pytest.mark.parametrize(("initial", "cap", "jitter"), [(0, 1, 0.1), (2, 1, 0.1), (0.1, 1, 1.0), (0.1, 1, -0.1)])
def test_bad_settings_are_refused(initial: float, cap: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        Backoff(random.Random(0), initial=initial, cap=cap, jitter=jitter)

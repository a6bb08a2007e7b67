"""Capped exponential backoff with jitter, for reconnecting to a peer.

Delay n (counting from 0) is `min(cap, initial * 2**n)` scaled by a factor drawn uniformly from
`[1 - jitter, 1]`: jitter keeps two nodes that lost each other at the same instant from redialing
in lockstep, and drawing it from the node's seeded rng keeps a run reproducible. `reset()` after a
connection succeeds starts the sequence over.
"""

from __future__ import annotations

import random


class Backoff:
    __slots__ = ("attempts", "cap", "initial", "jitter", "rng")

    def __init__(self, rng: random.Random, initial: float = 0.05, cap: float = 2.0, jitter: float = 0.5) -> None:
        if not 0 < initial <= cap:
            raise ValueError(f"backoff needs 0 < initial <= cap, got {initial} and {cap}")
        if not 0 <= jitter < 1:
            raise ValueError(f"backoff jitter must be in [0, 1), got {jitter}")
        self.rng = rng
        self.initial = initial
        self.cap = cap
        self.jitter = jitter
        self.attempts = 0

    def next(self) -> float:
        """The delay before the next attempt; each call counts one attempt."""
        # The exponent is clamped so a peer that stays away for days cannot overflow the float.
        base = min(self.cap, self.initial * 2.0 ** min(self.attempts, 64))
        self.attempts += 1
        return base * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        self.attempts = 0

"""Percentiles of simulated timings, and the one-line form `commy sim run` and `sim sweep` print.

Percentiles use the nearest-rank rule: p-th percentile = the smallest sample with at least p% of
the samples at or below it, i.e. `sorted(xs)[ceil(p/100 * n) - 1]`. It always returns a value that
was measured (no interpolation), so a p99 can be replayed: some seed produced exactly it. The
samples are simulated seconds, so the same seeds always give the same lines.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PERCENTILES = (50, 90, 99)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted, non-empty `sorted_values` (0 < p <= 100)."""
    if not sorted_values:
        raise ValueError("percentile of no samples")
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


@dataclass(frozen=True)
class Distribution:
    """Count, p50/p90/p99 and max of some samples (seconds unless the name says otherwise)."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    total: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution | None:
        """The distribution of `values`, or None when there are none."""
        xs = sorted(values)
        if not xs:
            return None
        p50, p90, p99 = (percentile(xs, p) for p in PERCENTILES)
        return cls(len(xs), p50, p90, p99, xs[-1], math.fsum(xs))

    def as_dict(self) -> dict[str, float]:
        return {"count": self.count, "p50": self.p50, "p90": self.p90, "p99": self.p99,
                "max": self.max, "total": self.total}


def describe(label: str, dist: Distribution | None, noun: str, *, unit: str = "s", spec: str = ".3f",
             none: str = "") -> str:
    """`detection: 4 detections, p50 1.518s, p90 1.732s, p99 1.732s, max 1.732s` (or `label: none`).

    `spec` formats each value (`.4g` suits samples of unknown scale, like milliseconds in seconds).
    """
    if dist is None:
        return f"{label}: none" + (f" ({none})" if none else "")
    plural = noun if dist.count == 1 else noun + "s"
    parts = ", ".join(f"{name} {value:{spec}}{unit}" for name, value in
                      (("p50", dist.p50), ("p90", dist.p90), ("p99", dist.p99), ("max", dist.max)))
    return f"{label}: {dist.count} {plural}, {parts}"

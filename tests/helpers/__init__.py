"""Test helpers: fakes for one actor or one node, hypothesis strategies, sweep sizes.

`SLOW` is set by `tests/conftest.py` when pytest runs with `--slow` (or the `slow` hypothesis
profile); `sweep_size` reads it, so it also works in decorators evaluated at collection time.
"""

from __future__ import annotations

SLOW = False


def sweep_size(default: int, slow: int) -> int:
    """How many cases a sweep runs: `default` normally, `slow` under `--slow`."""
    return slow if SLOW else default

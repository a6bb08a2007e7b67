"""The local fast-path benchmarks run and return well-formed rows (their numbers are not checked here)."""

from __future__ import annotations

from commy.bench import Row
from commy.store.storebench import bench_local_read, bench_local_write


def test_read_and_write_rows() -> None:
    for row, unit in ((bench_local_read(1, 200), "µs"), (bench_local_write(1, 200), "µs")):
        assert isinstance(row, Row) and row.unit == unit
        assert row.value > 0 and row.ceiling is not None and row.ceiling > 0
        assert row.ratio == row.value / row.ceiling and isinstance(row.met, bool) and row.target

"""Benchmarks of the local fast path, each beside its raw ceiling measured in the same run.

`bench_local_read`: `ServiceFile.read_value` of a 64 B variable against the bare ceiling, a mmap
and a `memoryview.cast("Q")` doing one seqlock write and one seqlock read of 64 B at a fixed
offset (no name, no lookup, no checks) -- the anchor DESIGN.md quotes. `bench_local_write`:
`ServiceFile.write` of 64 B (validation, process lock, OS byte-range lock, seqlock, counter)
against a bare seqlock write. Both report the median microseconds per operation over `repeats`
rounds that alternate commy and ceiling, so a busy machine slows both sides alike.

`bench_local_processes`: N spawned OS processes, each writing its own variable of one service
file through its own `ServiceFile` (its own writer slot), against the same processes doing bare
seqlock writes into their own slot of a scratch mapping. The processes start once and are told,
per round, a start instant a little in the future and a window length; each spins until the
start, writes until the window ends (checking the clock every 64 writes) and reports its count
and the time it actually stopped. A round's rate is the total count over the longest such span.
Every process is joined, or killed by its handle, before the function returns.
"""

from __future__ import annotations

import mmap
import statistics
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from commy.store.service_file import ServiceFile

if TYPE_CHECKING:
    from commy.bench import Row

__all__ = ["bench_local_processes", "bench_local_read", "bench_local_write"]

PAYLOAD = bytes(range(64))
_SLOT = 64  # the raw ceiling's slot: seq u64 then 64 data bytes, padded to a 128-byte stride
_STRIDE = 128
_LEAD = 0.1  # seconds between telling the processes to go and the window opening


def _row(*args: object) -> Row:
    from commy.bench import Row  # lazy: bench.py imports the codec and msgpack

    return Row(*args)  # type: ignore[arg-type]


def _medians(fns: list[Callable[[], float]], repeats: int) -> list[float]:
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(max(1, repeats)):
        for i, fn in enumerate(fns):
            samples[i].append(fn())
    return [statistics.median(s) for s in samples]


class _Raw:
    """A bare seqlock over a mapped scratch file: the ceiling no store can beat."""

    def __init__(self, folder: Path, slots: int = 1) -> None:
        path = folder / "raw.bin"
        with open(path, "wb") as f:
            f.truncate(max(mmap.PAGESIZE, slots * _STRIDE))
        with open(path, "r+b") as f:
            self.mm = mmap.mmap(f.fileno(), 0)
        self.q = memoryview(self.mm).cast("Q")

    def write_read_us(self, n: int) -> float:
        """µs per bare seqlock write then read of 64 B at a fixed offset (the read rows' ceiling)."""
        q, mm = self.q, self.mm
        t = time.perf_counter()
        for _ in range(n):
            s = q[0]
            q[0] = s + 1
            mm[8:72] = PAYLOAD
            q[0] = s + 2
            s = q[0]
            v = mm[8:72]
            if q[0] != s or s & 1 or not v:
                raise AssertionError("nobody else writes here")
        return (time.perf_counter() - t) / n * 1e6

    def write_us(self, n: int) -> float:
        """µs per bare seqlock write of 64 B (the write rows' ceiling)."""
        q, mm = self.q, self.mm
        t = time.perf_counter()
        for _ in range(n):
            s = q[0]
            q[0] = s + 1
            mm[8:72] = PAYLOAD
            q[0] = s + 2
        return (time.perf_counter() - t) / n * 1e6

    def close(self) -> None:
        self.q.release()
        self.mm.close()


def bench_local_read(repeats: int, n: int) -> Row:
    with tempfile.TemporaryDirectory(prefix="commy-bench-") as d:
        sf = ServiceFile.create(Path(d) / "bench.svc")
        raw = _Raw(Path(d))
        try:
            sf.write("v", PAYLOAD)
            read_value = sf.read_value

            def ours() -> float:
                t = time.perf_counter()
                for _ in range(n):
                    read_value("v")
                return (time.perf_counter() - t) / n * 1e6

            def ceiling() -> float:
                return raw.write_read_us(n)

            value, ceil = _medians([ours, ceiling], repeats)
        finally:
            sf.close()
            raw.close()
    ratio = value / ceil
    return _row("local mapped read 64 B (read_value)", value, "µs", ceil, ratio,
                "<= 1 µs and <= 5x raw seqlock w+r", value <= 1.0 and ratio <= 5.0)


def bench_local_write(repeats: int, n: int) -> Row:
    with tempfile.TemporaryDirectory(prefix="commy-bench-") as d:
        sf = ServiceFile.create(Path(d) / "bench.svc")
        raw = _Raw(Path(d))
        try:
            sf.write("v", PAYLOAD)
            write = sf.write

            def ours() -> float:
                t = time.perf_counter()
                for _ in range(n):
                    write("v", PAYLOAD)
                return (time.perf_counter() - t) / n * 1e6

            def ceiling() -> float:
                return raw.write_us(n)

            value, ceil = _medians([ours, ceiling], repeats)
        finally:
            sf.close()
            raw.close()
    return _row("local mapped write 64 B (write)", value, "µs", ceil, value / ceil, "<= 5 µs", value <= 5.0)


def _worker(conn: Connection, path: str, raw_path: str, slot: int) -> None:
    """One benchmark process: writes variable p<slot> (or raw slot `slot`) when told; see the docstring."""
    sf = ServiceFile.open(path, writer=slot)
    with open(raw_path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 0)
    q = memoryview(mm).cast("Q")
    name, write, mono = f"p{slot}", sf.write, time.monotonic
    seq, lo = slot * _STRIDE // 8, slot * _STRIDE + 8
    hi = lo + len(PAYLOAD)
    conn.send("ready")
    try:
        while True:
            order = conn.recv()
            if order is None:
                return
            mode, start, seconds = order
            end = start + seconds
            while mono() < start:
                pass
            count = 0
            while True:
                if mode == "ours":
                    for _ in range(64):
                        write(name, PAYLOAD)
                else:
                    for _ in range(64):
                        s = q[seq]
                        q[seq] = s + 1
                        mm[lo:hi] = PAYLOAD
                        q[seq] = s + 2
                count += 64
                now = mono()
                if now >= end:
                    break
            conn.send((count, now - start))
    finally:
        sf.close()
        q.release()
        mm.close()


def bench_local_processes(repeats: int, seconds: float, processes: int = 8) -> Row:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="commy-bench-") as d:
        path = Path(d) / "bench.svc"
        with ServiceFile.create(path) as sf:
            for slot in range(1, processes + 1):
                sf.write(f"p{slot}", PAYLOAD)  # created up front: the window measures writes, not growth
        raw = _Raw(Path(d), processes + 1)
        raw.close()
        raw_path = Path(d) / "raw.bin"
        procs, conns = [], []
        try:
            for slot in range(1, processes + 1):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_worker, args=(child, str(path), str(raw_path), slot), daemon=True)
                p.start()
                child.close()
                procs.append(p)
                conns.append(parent)
            for c in conns:
                if not c.poll(60) or c.recv() != "ready":
                    raise RuntimeError("a benchmark process did not start")

            def run(mode: str) -> float:
                start = time.monotonic() + _LEAD
                for c in conns:
                    c.send((mode, start, seconds))
                results = [c.recv() for c in conns]
                return sum(r[0] for r in results) / max(r[1] for r in results)

            value, ceil = _medians([lambda: run("ours"), lambda: run("raw")], repeats)
        finally:
            for c in conns:
                try:
                    c.send(None)
                except OSError:
                    pass
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
                    p.join(5)
            for c in conns:
                c.close()
    return _row(f"{processes} processes writing one service locally", value, "writes/s", ceil, value / ceil,
                ">= 200000 writes/s (original: 6,922 ops/s)", value >= 200_000)

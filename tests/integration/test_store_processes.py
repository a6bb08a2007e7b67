"""Real OS processes sharing one service file: no torn reads, no lost writes, growth under load.

Each process is spawned (a fresh interpreter, as a separate local client would be), maps the file
with its own writer slot and reports back over a pipe. Every value written is self-checking: a
4-byte little-endian length followed by one byte repeated, so a reader that accepted a torn value
(old length with new bytes, half old and half new bytes, a value read through a stale mapping)
would see it. Each test runs twice: with the default locks (open-file-description locks on Linux)
and with classic POSIX record locks in the children, which die with any descriptor of the file
closing (CPython's mmap closes one when a map is freed) -- the case that once lost writes here.
Loops are bounded by counts or a deadline; every process is joined, and killed by its handle if it
has not exited, before the test returns.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

from commy.store import ServiceFile, locks

pytestmark = pytest.mark.integration

CTX = multiprocessing.get_context("spawn")
SIZES = [16, 64, 300, 1500, 5000, 40]  # crosses several capacities, so values move while being read
TIMEOUT = 60.0


def make_value(size: int, fill: int) -> bytes:
    return size.to_bytes(4, "little") + bytes([fill % 256]) * (size - 4)


def is_whole(value: bytes) -> bool:
    if len(value) < 5 or int.from_bytes(value[:4], "little") != len(value):
        return False
    return value[4:] == value[4:5] * (len(value) - 4)


def run_guarded(conn: Connection, body: Any, *args: Any) -> None:
    try:
        conn.send(("ok", body(conn, *args)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def ready_set_go(conn: Connection, go: Any) -> None:
    conn.send(("ready", None))
    assert go.wait(TIMEOUT)


def _same_variable_writer(conn: Connection, path: str, slot: int, writes: int, go: Any) -> dict[str, int]:
    with ServiceFile.open(path, writer=slot) as sf:
        ready_set_go(conn, go)
        for i in range(writes):
            sf.write("x", make_value(SIZES[(i + slot) % len(SIZES)], slot * 64 + i))
            if i % 100 == 0:  # new variables now and then: the table fills and moves mid-run
                sf.write(f"w{slot}-{i}", make_value(8, i))
        return {"writes": writes + (writes + 99) // 100, "kind": locks.KIND}


def same_variable_writer(conn: Connection, path: str, slot: int, writes: int, go: Any) -> None:
    run_guarded(conn, _same_variable_writer, path, slot, writes, go)


def _reader(conn: Connection, path: str, stop: Any, go: Any) -> dict[str, int]:
    reads = bad = entries = 0
    first_bad = b""
    with ServiceFile.open(path, writer=63) as sf:
        ready_set_go(conn, go)
        deadline = time.monotonic() + TIMEOUT
        while not stop.is_set() and time.monotonic() < deadline:
            for _ in range(200):
                value = sf.read_value("x")
                reads += 1
                if value is None or not is_whole(value):
                    bad += 1
                    first_bad = first_bad or (value or b"None")[:32]
            entry = sf.read("x")
            entries += 1
            if entry is None or not is_whole(entry.value):
                bad += 1
    return {"reads": reads, "bad": bad, "entries": entries, "first_bad": int.from_bytes(first_bad[:8], "little")}


def reader(conn: Connection, path: str, stop: Any, go: Any) -> None:
    run_guarded(conn, _reader, path, stop, go)


def _own_variables(conn: Connection, path: str, slot: int, rounds: int, go: Any) -> dict[str, int]:
    writes = 0
    with ServiceFile.open(path, writer=slot) as sf:
        ready_set_go(conn, go)
        for r in range(rounds):
            for j in range(25):
                # sizes grow with the round: values outgrow their capacity and the file grows
                sf.write(f"p{slot}-{j}", make_value(8 + (r * 97 + j * 13) % (200 + r * 40), slot + r + j))
                writes += 1
            own = sf.read_value(f"p{slot}-0")
            assert own is not None and is_whole(own)
    return {"writes": writes, "kind": locks.KIND}


def own_variables(conn: Connection, path: str, slot: int, rounds: int, go: Any) -> None:
    run_guarded(conn, _own_variables, path, slot, rounds, go)


@pytest.fixture(params=["default", "posix"])
def lock_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The lock kind the children will use; "posix" forces classic record locks (see locks.py)."""
    if request.param == "posix":
        monkeypatch.setenv("COMMY_STORE_LOCKS", "posix")  # read by each child at import
        return "posix"
    monkeypatch.delenv("COMMY_STORE_LOCKS", raising=False)
    return locks.KIND


@pytest.fixture
def spawn(lock_kind: str) -> Iterator[Any]:
    started: list[tuple[BaseProcess, Connection]] = []

    def start(target: Any, *args: Any) -> Connection:
        parent, child = CTX.Pipe()
        proc = CTX.Process(target=target, args=(child, *args), daemon=True)
        proc.start()
        child.close()
        started.append((proc, parent))
        return parent

    yield start
    for proc, conn in started:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        conn.close()
    assert all(proc.exitcode == 0 for proc, _ in started), [proc.exitcode for proc, _ in started]


def wait_ready(conns: list[Connection]) -> None:
    for conn in conns:
        assert conn.poll(TIMEOUT), "a process did not start in time"
        status, payload = conn.recv()
        assert status == "ready", payload


def result(conn: Connection) -> dict[str, Any]:
    assert conn.poll(TIMEOUT), "a process did not report in time"
    status, payload = conn.recv()
    assert status == "ok", payload
    return payload  # type: ignore[no-any-return]


def test_concurrent_writers_of_one_variable_never_show_a_torn_value(tmp_path: Path, spawn: Any,
                                                                   lock_kind: str) -> None:
    path = tmp_path / "shared.svc"
    writers, writes = 3, 1500
    with ServiceFile.create(path, table_capacity=4, data_size=0) as sf:
        sf.write("x", make_value(16, 0))
    go, stop = CTX.Event(), CTX.Event()
    reader_conn = spawn(reader, str(path), stop, go)
    writer_conns = [spawn(same_variable_writer, str(path), slot, writes, go) for slot in range(1, writers + 1)]
    wait_ready([reader_conn, *writer_conns])  # all mapped before the table starts moving
    go.set()
    done = [result(c) for c in writer_conns]
    assert {d["kind"] for d in done} == {lock_kind}
    stop.set()
    seen = result(reader_conn)
    assert seen["bad"] == 0, seen
    assert seen["reads"] > 1000 and seen["entries"] > 0
    with ServiceFile.open(path, writer=5) as sf:
        entry = sf.read("x")
        assert entry is not None and is_whole(entry.value) and entry.writer in (1, 2, 3)
        assert entry.version == 1 + writers * writes  # no write lost or doubled
        assert sf.change_mark() == 1 + sum(d["writes"] for d in done)
        assert len(sf.names()) == 1 + writers * ((writes + 99) // 100)


def test_processes_writing_their_own_variables_while_the_file_grows(tmp_path: Path, spawn: Any,
                                                                   lock_kind: str) -> None:
    path = tmp_path / "grow.svc"
    procs, rounds = 4, 40
    ServiceFile.create(path, table_capacity=2, data_size=0).close()
    go = CTX.Event()
    conns = [spawn(own_variables, str(path), slot, rounds, go) for slot in range(1, procs + 1)]
    wait_ready(conns)
    go.set()
    done = [result(c) for c in conns]
    assert {d["kind"] for d in done} == {lock_kind}
    with ServiceFile.open(path) as sf:
        assert sf.change_mark() == sum(d["writes"] for d in done) == procs * rounds * 25
        assert len(sf.names()) == procs * 25
        last = rounds - 1
        for slot in range(1, procs + 1):
            for j in range(25):
                entry = sf.read(f"p{slot}-{j}")
                assert entry is not None and entry.version == rounds and entry.writer == slot
                assert entry.value == make_value(8 + (last * 97 + j * 13) % (200 + last * 40), slot + last + j)
        assert sf.generation > 1


def test_the_processes_benchmark_runs_and_cleans_up() -> None:
    from commy.bench import Row
    from commy.store.storebench import bench_local_processes

    before = set(multiprocessing.active_children())
    row = bench_local_processes(1, 0.05, processes=2)
    assert isinstance(row, Row) and row.unit == "writes/s" and row.value > 0 and row.ceiling
    assert set(multiprocessing.active_children()) <= before

"""The cluster rows of `commy bench` run end to end at tiny sizes and return well-formed rows.

Behaviour only: their numbers are never checked. The helpers are tested on made-up data; the two
process rows start real `commy serve` processes (marked `integration`) and must leave none behind.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from commy.bench import Row, bench_cluster_sim, render
from commy.client.types import ConnectionLostError
from commy.client_codec import client_codec
from commy.messages import VariableChanged, VariablesUpdated
from commy.runtime import clusterbench, killbench
from commy.runtime.wsbench import RawClient


def _children() -> set[int]:
    """PIDs of this process's children still running (zombies excluded)."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == os.getpid():
            out.add(int(entry))
    return out


def _client_with(frames: list[bytes], arrivals: list[float]) -> RawClient:
    client = RawClient(asyncio.new_event_loop(), "host:1")
    client.loop.close()
    client.frames, client.arrivals = frames, arrivals
    return client


def test_percentile_picks_the_sample_at_the_rank() -> None:
    samples = [float(i) for i in range(100, 0, -1)]
    assert clusterbench.percentile(samples, 0.5) == 51.0
    assert clusterbench.percentile(samples, 0.99) == 100.0
    assert clusterbench.percentile([3.0], 0.99) == 3.0


def test_writes_carry_their_sequence_number_to_the_subscribers() -> None:
    codec = client_codec()
    writes = [clusterbench._write(seq) for seq in (7, 23, 7)]
    assert {len(w.variables[0].value) for w in writes} == {clusterbench.VALUE_SIZE}
    assert writes[0].variables[0].name == "v7" and writes[1].variables[0].name == "v7"  # 23 % 16
    assert writes[0].concern == "local"
    changes = [VariableChanged("bench", "svc", w.variables[0].name, w.variables[0].value, 1, "x") for w in writes]
    frames = [codec.encode_binary(0, c) for c in changes]
    frames.insert(1, codec.encode_binary(5, VariablesUpdated("bench", "svc", ())))  # not a change: ignored
    client = _client_with(frames, [1.0, 1.5, 2.0, 3.0])
    assert clusterbench._arrivals(client, codec) == {7: 1.0, 23: 2.0}  # the first arrival counts


def test_resume_counts_only_writes_sent_after_the_kill() -> None:
    writer = killbench._Writer(None, 0)  # type: ignore[arg-type]
    assert writer.resumed(10.0) is None
    writer.acks = [(9.0, 9.2), (9.9, 10.1)]  # sent before the kill, one acknowledged after it
    assert writer.resumed(10.0) is None
    writer.acks.append((10.05, 12.5))
    assert writer.resumed(10.0) == pytest.approx(2.5)


def test_only_lost_connection_futures_are_silenced(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    try:
        monkeypatch.setattr(loop, "default_exception_handler", seen.append)
        killbench._quiet_lost_futures(loop, {"message": "x", "exception": ConnectionLostError(detail="gone")})
        assert seen == []
        other = {"message": "y", "exception": RuntimeError("bug")}
        killbench._quiet_lost_futures(loop, other)
        assert seen == [other]
    finally:
        loop.close()


def test_simulated_cluster_row() -> None:
    (row,) = bench_cluster_sim(1, nodes=2, sim_seconds=6.0)
    assert isinstance(row, Row) and row.unit == "s" and row.value > 0
    assert row.name == "simulated 2 nodes x 6 simulated s with clients"
    assert "cluster-load" in row.note and "0 violations" in row.note and isinstance(row.met, bool)


@pytest.mark.integration
def test_replication_lag_row_on_three_processes() -> None:
    before = _children()
    row = clusterbench.lag_row(1, 0.2, rate=300)
    assert isinstance(row, Row) and row.unit == "ms" and row.ceiling is not None and row.ratio is None
    assert row.name.startswith("replication lag p99, 3 nodes, ") and "300 writes/s" in row.target
    assert "net p50" in row.note and "one-way on n1" in row.note
    assert row.name in render([row])
    batched = clusterbench.lag_row(1, 0.2, rate=300, batch=10)
    assert batched.name.endswith(", 10 per request") and "10 variables per SetVariables" in batched.note
    assert _children() <= before  # every node process stopped


@pytest.mark.integration
def test_kill_rows_on_three_processes() -> None:
    before = _children()
    detection, resume = clusterbench.kill_rows(1, clients=3)
    assert detection.name == "kill -9 of one of 3 nodes: detection" and detection.unit == "s"
    assert resume.name == "kill -9 of one of 3 nodes: client resume" and resume.unit == "s"
    assert detection.value > 0 and resume.value > 0
    assert "1 (of 3) SDK clients" in resume.note
    assert _children() <= before

"""`commy bench`: each measurement beside its raw ceiling, measured in the same run.

Every row runs the commy path and the bare ceiling alternately, `repeats` times each, and reports
the medians and their ratio, so a slow or busy machine moves both sides together. Rows: the codec
(encode + strict decode of an envelope) against `msgpack.packb/unpackb` of an equivalent flat dict;
the TCP peer transport (actor to actor across two nodes on loopback) against a bare asyncio
length-prefixed sender/receiver; and the simulator's delivered messages per second with the codec
in flight, which has no ceiling, only an absolute target. The cluster rows run three real server
processes on loopback (`cluster-lag`, `cluster-kill`: `commy.runtime.clusterbench` and
`killbench`) or the simulated cluster with clients (`cluster-sim`), and explain their figures in
a note printed under the table. Benchmarks are never timed tests.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any

import msgpack

from commy.codec import DEFAULT_CODEC
from commy.messages import Address, Envelope, HeartbeatPing, ServerStatus


@dataclass(frozen=True)
class Row:
    name: str
    value: float
    unit: str
    ceiling: float | None
    ratio: float | None
    target: str
    met: bool
    note: str = ""  # how the row was measured, printed under the table


def _median_rates(fns: list[Callable[[], float]], repeats: int) -> list[float]:
    """Run each fn (which returns a rate) `repeats` times, interleaved; return each median."""
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            samples[i].append(fn())
    return [statistics.median(s) for s in samples]


def bench_codec(repeats: int, n: int) -> Row:
    codec = DEFAULT_CODEC
    env = Envelope(41, None, Address("n1", "heartbeat"), Address("n2", "heartbeat"), 1234.5,
                   HeartbeatPing(7, 1234.5, ServerStatus.HEALTHY))
    flat = {"msg_id": 41, "request_id": None, "sender_node": "n1", "sender_name": "heartbeat",
            "receiver_node": "n2", "receiver_name": "heartbeat", "sent_at": 1234.5,
            "type": "HeartbeatPing", "seq": 7, "ping_sent_at": 1234.5, "status": "healthy"}
    encode, decode = codec.encode, codec.decode
    packb, unpackb = msgpack.packb, msgpack.unpackb

    def ours() -> float:
        t = time.perf_counter()
        for _ in range(n):
            decode(encode(env))
        return n / (time.perf_counter() - t)

    def raw() -> float:
        t = time.perf_counter()
        for _ in range(n):
            unpackb(packb(flat, use_bin_type=True), raw=False)
        return n / (time.perf_counter() - t)

    value, ceiling = _median_rates([ours, raw], repeats)
    ratio = value / ceiling
    return Row("codec encode+decode (envelope)", value, "msg/s", ceiling, ratio, "ratio >= 0.5", ratio >= 0.5)


def bench_transport(repeats: int, n: int) -> Row:
    from commy.runtime.loop import new_event_loop
    from commy.runtime.tcpbench import measure_bare_framing, measure_peer_transport

    def run(coro_fn: Callable[[int], object]) -> float:
        loop = new_event_loop()
        try:
            return float(loop.run_until_complete(coro_fn(n)))  # type: ignore[arg-type]
        finally:
            loop.close()
            asyncio.set_event_loop(None)

    value, ceiling = _median_rates([lambda: run(measure_peer_transport), lambda: run(measure_bare_framing)], repeats)
    ratio = value / ceiling
    return Row("peer transport one-way (TCP)", value, "msg/s", ceiling, ratio, "ratio >= 0.5", ratio >= 0.5)


def _run_async(fn: Callable[[], Coroutine[Any, Any, float]]) -> float:
    from commy.runtime.loop import run

    return float(run(fn()))


def bench_local(repeats: int, n: int, seconds: float) -> list[Row]:
    from commy.client.localbench import bench_sdk_local_read, bench_sdk_local_write
    from commy.store.storebench import bench_local_processes

    return [bench_sdk_local_read(repeats, n), bench_sdk_local_write(repeats, n // 4),
            bench_local_processes(max(1, repeats // 2), seconds)]


def bench_websocket(repeats: int, n: int, fanout: int) -> list[Row]:
    from commy.runtime import wsbench

    rt, echo = _median_rates([lambda: _run_async(lambda: wsbench.measure_set_round_trips(n)),
                              lambda: _run_async(lambda: wsbench.measure_bare_echo(n))], repeats)
    piped, one_way = _median_rates([lambda: _run_async(lambda: wsbench.measure_pipelined_sets(n)),
                                    lambda: _run_async(lambda: wsbench.measure_bare_one_way(n))], repeats)
    p99 = statistics.median(_run_async(lambda: wsbench.measure_fanout_p99(fanout, rounds=20))
                            for _ in range(max(1, repeats // 2))) * 1000
    return [
        Row("remote set round trips (one WebSocket)", rt, "msg/s", echo, rt / echo, "ratio >= 0.5", rt / echo >= 0.5),
        Row("pipelined remote sets (one WebSocket)", piped, "msg/s", one_way, piped / one_way, "ratio >= 0.4",
            piped / one_way >= 0.4),
        Row(f"one change fanned out to {fanout:,} clients, p99", p99, "ms", None, None, "<= 50 ms", p99 <= 50.0),
    ]


def bench_simulator(repeats: int, n: int) -> list[Row]:
    from sim.throughput import measure_delivery_rate, measure_five_nodes

    rate = statistics.median(measure_delivery_rate(n, seed=i + 1) for i in range(repeats))
    secs = statistics.median(measure_five_nodes(60.0, seed=i + 1) for i in range(max(1, repeats // 2)))
    return [
        Row("simulator delivered messages (codec on)", rate, "msg/s", None, None, ">= 100000 msg/s", rate >= 100_000),
        Row("simulator 5 nodes x 60 simulated s", secs, "s", None, None, "<= 2 s", secs <= 2.0),
    ]


def bench_cluster_lag(runs: int, seconds: float) -> list[Row]:
    from commy.runtime.clusterbench import lag_row

    # One variable per request (the row), and the same write rate in requests of 10: what a
    # client that batches its writes sees (the per-request costs dominate on the writing node).
    return [lag_row(runs, seconds), lag_row(runs, seconds, batch=10)]


def bench_cluster_kill(runs: int) -> list[Row]:
    from commy.runtime.clusterbench import kill_rows

    return kill_rows(runs)


def bench_cluster_sim(runs: int, nodes: int = 5, sim_seconds: float = 60.0, target: float = 2.0) -> list[Row]:
    """Real seconds to run the `cluster-load` scenario (full nodes, clients writing with concern
    replicated, the checkers) for `sim_seconds`, one seed per run."""
    from sim.scenarios import run_scenario

    times, acked, delivered, violations = [], [], [], 0
    for seed in range(1, runs + 1):
        t = time.perf_counter()
        result = run_scenario("cluster-load", seed=seed, nodes=nodes, duration=sim_seconds)
        times.append(time.perf_counter() - t)
        acked.append(len(result.metrics.get("write_latency", [])))
        delivered.append(result.delivered)
        violations += len(result.violations)
    secs = statistics.median(times)
    note = (f"`commy sim run cluster-load` ({nodes} full nodes, clients writing with concern replicated), "
            f"checkers included; median {statistics.median(acked):,.0f} acknowledged writes and "
            f"{statistics.median(delivered):,.0f} peer messages per run; {violations} violations; "
            f"median of {runs} seed{'s' if runs > 1 else ''}")
    return [Row(f"simulated {nodes} nodes x {sim_seconds:g} simulated s with clients", secs, "s", None, None,
                f"<= {target:g} s", secs <= target and violations == 0, note)]


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    if unit in ("s", "µs", "ms") or v < 100:
        return f"{v:.3g}"
    return f"{v:,.0f}"


def render(rows: list[Row]) -> str:
    head = ["benchmark", "commy", "ceiling", "ratio", "target", "met"]
    body = [[r.name, f"{_fmt(r.value, r.unit)} {r.unit}", _fmt(r.ceiling) + (f" {r.unit}" if r.ceiling else ""),
             "-" if r.ratio is None else f"{r.ratio:.2f}", r.target, "yes" if r.met else "NO"] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in body]
    return "\n".join(lines)


def main(quick: bool = False, json_path: str | None = None, only: list[str] | None = None) -> int:
    repeats = 3 if quick else 7
    plan: list[tuple[str, Callable[[], list[Row]]]] = [
        ("codec", lambda: [bench_codec(repeats, 20_000 if quick else 100_000)]),
        ("transport", lambda: [bench_transport(repeats, 20_000 if quick else 100_000)]),
        ("simulator", lambda: bench_simulator(repeats, 50_000 if quick else 200_000)),
        ("local", lambda: bench_local(repeats, 50_000 if quick else 200_000, 0.5 if quick else 1.0)),
        ("websocket", lambda: bench_websocket(repeats, 5_000 if quick else 20_000, 1000)),
        ("cluster-lag", lambda: bench_cluster_lag(repeats, 1.0 if quick else 2.0)),
        ("cluster-kill", lambda: bench_cluster_kill(max(1, repeats // 2))),
        ("cluster-sim", lambda: bench_cluster_sim(max(1, repeats // 2))),
    ]
    rows: list[Row] = []
    for key, run in plan:
        if only and not any(o in key for o in only):
            continue
        rows += run()
    print(render(rows))
    for r in rows:
        if r.note:
            print(f"- {r.name}: {r.note}")
    print(f"\n(median of {repeats} interleaved runs; `commy bench{' --quick' if quick else ''}`)")
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump([asdict(r) for r in rows], f, indent=2)
    return 0 if all(r.met for r in rows) else 1

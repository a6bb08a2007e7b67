"""Cluster benchmarks: replication lag on real processes, and the rows `commy bench` prints for the cluster.

The process rows start three `commy serve --config F --node ID` processes on loopback (`LocalCluster`), with
the default heartbeat settings, and stop them by PID when done, whatever happened.

**Replication lag** (`measure_replication_lag`). One writer connection on n1 sends `SetVariables`
(concern `local`, 64-byte values carrying their sequence numbers, rotating over 16 variables; one
variable per request, or `batch` of them) pipelined and paced to `rate` writes/s: every millisecond
or so it sends the requests that are due and notes the time (`time.perf_counter`, this machine's
monotonic clock). Two subscribers, on the whole service, read the changes: one on n2 (the writes
reach it through replication) and one on n1 itself (the same path without replication: the writer's
frame, n1's gateway and hub, a subscriber's socket). The connections are the minimal WebSocket
clients of `wsbench`, stamping each frame as it is read, all in this process, so one clock measures
both ends. Per write: raw lag = arrival on n2 - sent; local = arrival on n1 - sent. Net replication
lag = raw lag - the median local one-way time of the same run: what replication adds beyond what any
client pays to see another client's write on one node. The target applies to the net p99; the note
shows the raw and local figures. The rate reported is the writes n1 acknowledged per second (the
writer's last reply ends the window). A run stops early once n1's acks or n2's changes fall
`BACKLOG` seconds of writes behind the pace: a queue that only grows measures the queue (and a
subscriber 10,000 messages behind is dropped by the gateway). When n1 cannot sustain `rate`, short
probes step the pace down by 0.8 until one holds, the runs are made at that pace, and the row names
the rate reached instead of the rate asked for.

The kill -9 measurement is in `commy.runtime.killbench`; the builders of both process rows for
`commy bench` are at the end of this module (the simulated cluster's row is in `commy.bench`, the
one product module besides the CLI that may reach into `sim`).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from commy.client_codec import ClientCodec, client_codec
from commy.messages import (
    Authenticate,
    AuthenticationResponse,
    NamedValue,
    SetVariables,
    Subscribe,
    VariableChanged,
    VariablesUpdated,
)
from commy.runtime.local_cluster import LocalCluster
from commy.runtime.wsbench import RawClient

if TYPE_CHECKING:
    from commy.bench import Row

TENANT, SERVICE = "bench", "svc"
VARIABLES = 16
VALUE_SIZE = 64
PROBE = 1 << 62  # sequence numbers of warm-up writes (never measured)
SETUP_TIMEOUT = 20.0
BACKLOG = 0.05  # seconds of writes n1 (or n2) may fall behind the pace before a run stops
SUSTAINED = 0.95  # a run sustained its pace if n1 acknowledged at least this share of it
PROBE_SECONDS = 0.5
T = TypeVar("T")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def retry(what: str, fn: Callable[[], Awaitable[T]], timeout: float = SETUP_TIMEOUT) -> T:
    """`fn()` until it succeeds: a node learns the catalog (tenant, key) from its peers within a
    second or so of its creation elsewhere."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await fn()
        except Exception as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"benchmark setup: {what} kept failing: {exc}") from exc
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def three_nodes(timeout: float = 30.0) -> AsyncIterator[LocalCluster]:
    """A fresh cluster of 3 processes in a temporary folder, every node seeing the others healthy;
    stopped (SIGTERM, then SIGKILL, by PID) and removed on the way out, whatever happened."""
    with tempfile.TemporaryDirectory(prefix="commy-clusterbench-") as folder, \
            LocalCluster(Path(folder), 3, write_concern="local") as cluster:
        cluster.start(timeout=timeout)
        deadline = time.monotonic() + timeout
        while not cluster.all_healthy():
            dead = [n.node_id for n in cluster.nodes.values() if not n.alive()]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"the benchmark cluster did not come up (exited: {dead or 'none'}):\n"
                                   + "\n".join(n.text()[-1500:] for n in cluster.nodes.values()))
            await asyncio.sleep(0.02)
        yield cluster


def node_url(cluster: LocalCluster, node_id: str) -> str:
    return cluster.nodes[node_id].url


async def client_key(cluster: LocalCluster, scopes: tuple[str, ...] = ("read", "write")) -> str:
    """Create the tenant, its service and a client key through n1 (as the server admin)."""
    from commy.client.aio import AsyncClient

    async with AsyncClient.connect(node_url(cluster, "n1"), reconnect=False) as admin:
        await admin.authenticate("", api_key=cluster.admin_key)
        await admin.create_tenant(TENANT)
        await admin.create_service(TENANT, SERVICE)
        _, key = await admin.create_api_key("bench-client", tenant=TENANT, scopes=scopes)
        return key


# --------------------------------------------------------------------------- replication lag


def _value(seq: int) -> bytes:
    return seq.to_bytes(8, "big") + bytes(VALUE_SIZE - 8)


def _write(seq: int, batch: int = 1) -> SetVariables:
    """Writes `seq` .. `seq + batch - 1` in one request (distinct variables while batch <= VARIABLES)."""
    return SetVariables(TENANT, SERVICE, tuple(NamedValue(f"v{s % VARIABLES}", _value(s))
                                               for s in range(seq, seq + batch)), "local")


async def _open(url: str) -> RawClient:
    loop = asyncio.get_running_loop()
    host, _, port = url.removeprefix("ws://").rpartition(":")
    client = RawClient(loop, f"{host}:{port}")
    await loop.create_connection(lambda: client, host, int(port))
    await asyncio.wait_for(client.opened, 10.0)
    return client


async def _login(url: str, key: str, codec: ClientCodec, subscribe: bool) -> RawClient:
    async def attempt() -> RawClient:
        client = await _open(url)
        try:
            reply = await client.call(codec, 1, Authenticate(TENANT, "api_key", key))
            assert isinstance(reply, AuthenticationResponse)
            if subscribe:
                await client.call(codec, 2, Subscribe(TENANT, SERVICE, ()))
        except BaseException:
            client.close()
            raise
        return client

    return await retry(f"login on {url}", attempt)


def _arrivals(client: RawClient, codec: ClientCodec) -> dict[int, float]:
    """Sequence number -> first arrival, from the changes `client` read."""
    out: dict[int, float] = {}
    for data, at in zip(client.frames, client.arrivals, strict=True):
        _, msg = codec.decode_binary(data)
        if type(msg) is VariableChanged and len(msg.value) >= 8:
            out.setdefault(int.from_bytes(msg.value[:8], "big"), at)
    return out


def _reset(*clients: RawClient) -> None:
    for c in clients:
        c.frames.clear()
        c.arrivals.clear()


@dataclass(frozen=True)
class LagRun:
    """One paced run; times in seconds."""

    offered: float  # the pace, writes/s
    rate: float  # writes acknowledged per second
    sustained: bool  # n1 kept up: acks within BACKLOG seconds of the pace, the whole run
    writes: int
    received: int  # changes that reached the subscriber on n2
    raw_p50: float
    raw_p99: float
    local_p50: float
    local_p99: float
    net_p50: float
    net_p99: float


async def _warm_up(writer: RawClient, subs: list[RawClient], codec: ClientCodec, timeout: float = 15.0) -> None:
    """Write probes until every subscriber sees them: n2 holds the service and n1 streams to it."""
    deadline = time.monotonic() + timeout
    seq = PROBE
    while True:
        _reset(*subs)
        writer.send(codec.encode_binary(3, _write(seq)))
        await asyncio.sleep(0.05)
        if all(seq in _arrivals(s, codec) for s in subs):
            break
        if time.monotonic() > deadline:
            raise TimeoutError("replication lag: the subscriber on n2 never saw n1's writes")
        seq += 1
    await asyncio.sleep(0.3)
    _reset(writer, *subs)


async def _drain(clients: list[RawClient], count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(len(c.frames) < count for c in clients) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)  # anything late (or extra) arrives before the next run resets


async def _paced_run(writer: RawClient, local: RawClient, remote: RawClient, codec: ClientCodec,
                     first: int, count: int, rate: float, batch: int = 1) -> LagRun:
    """Send `count` writes, `batch` per request, paced at `rate` writes/s; stop early (unsustained)
    once n1's acks or n2's changes fall more than BACKLOG seconds of writes behind -- a queue that
    only grows measures the queue."""
    requests = max(1, count // batch)
    frames = [codec.encode_binary(first + j * batch + 10, _write(first + j * batch, batch)) for j in range(requests)]
    sent = [0.0] * requests  # per request: each of its writes was sent then
    _reset(writer, local, remote)
    clock = time.perf_counter
    limit = max(50, int(rate * BACKLOG))  # writes
    start = clock()
    i = 0  # requests sent
    sustained = True
    while i < requests:
        now = clock()
        due = min(requests, int((now - start) * rate / batch) + 1)
        for j in range(i, due):
            writer.send(frames[j])
            sent[j] = now
        i = due
        if (i - len(writer.frames)) * batch > limit or i * batch - len(remote.frames) > limit:
            sustained = False
            break
        await asyncio.sleep(0.0005)
    requests, count = i, i * batch
    await _drain([writer], requests)
    await _drain([local, remote], count)
    acks = 0
    for data in writer.frames:
        _, msg = codec.decode_binary(data)
        if type(msg) is not VariablesUpdated:
            raise RuntimeError(f"replication lag: a write was answered with {msg!r}")
        acks += 1
    at_local, at_remote = _arrivals(local, codec), _arrivals(remote, codec)
    local_lags = [at_local[first + k] - sent[k // batch] for k in range(count) if first + k in at_local]
    raw = [at_remote[first + k] - sent[k // batch] for k in range(count) if first + k in at_remote]
    if acks < requests or not raw or not local_lags:
        closed = [name for name, c in (("writer", writer), ("n1 subscriber", local), ("n2 subscriber", remote))
                  if c.transport is None or c.transport.is_closing()]
        raise RuntimeError(f"replication lag: of {count} writes ({requests} requests) {acks} requests were "
                           f"acknowledged, {len(local_lags)} "
                           f"reached the subscriber on n1 and {len(raw)} the one on n2 "
                           f"(connections closed: {', '.join(closed) or 'none'})")
    rate_done = count / (writer.arrivals[requests - 1] - start)
    sustained = sustained and rate_done >= SUSTAINED * rate
    overhead = statistics.median(local_lags)
    net = [x - overhead for x in raw]
    return LagRun(rate, rate_done, sustained, count, len(raw), percentile(raw, 0.5), percentile(raw, 0.99),
                  percentile(local_lags, 0.5), percentile(local_lags, 0.99),
                  percentile(net, 0.5), percentile(net, 0.99))


async def measure_replication_lag(cluster: LocalCluster, runs: int, seconds: float,
                                  rate: float = 10_000, batch: int = 1) -> list[LagRun]:
    """`runs` paced runs of `seconds` each on a ready cluster (see the module docstring), at `rate`
    or, if n1 cannot keep up with it, at the highest pace of a short search (rate x 0.8 a step,
    two short probes each) that it sustained."""
    codec = client_codec()
    key = await client_key(cluster)
    clients: list[RawClient] = []
    seq = 0

    async def paced(pace: float, duration: float) -> LagRun:
        nonlocal seq
        count = max(batch, int(pace * duration))
        result = await _paced_run(writer, local, remote, codec, seq, count, pace, batch)
        seq += count
        return result

    try:
        for node, subscribe in (("n1", False), ("n1", True), ("n2", True)):
            clients.append(await _login(node_url(cluster, node), key, codec, subscribe))
        writer, local, remote = clients
        await _warm_up(writer, [local, remote], codec)
        pace = rate
        # Two probes per pace: one stall of a busy machine should not cost a step.
        while not ((await paced(pace, PROBE_SECONDS)).sustained or (await paced(pace, PROBE_SECONDS)).sustained):
            pace *= 0.8
            if pace < rate * 0.05:
                raise RuntimeError(f"replication lag: n1 sustained no pace down to {pace:.0f} writes/s")
        return [await paced(pace, seconds) for _ in range(runs)]
    finally:
        for c in clients:
            c.close()


async def replication_lag(runs: int, seconds: float, rate: float = 10_000, batch: int = 1) -> list[LagRun]:
    """A fresh 3-node cluster of processes, measured, then stopped."""
    async with three_nodes() as cluster:
        return await measure_replication_lag(cluster, runs, seconds, rate, batch)


# --------------------------------------------------------------------------- rows for `commy bench`


def lag_row(runs: int, seconds: float, rate: float = 10_000, target_ms: float = 5.0, batch: int = 1) -> Row:
    from commy.bench import Row
    from commy.runtime.loop import run

    results = run(replication_lag(runs, seconds, rate, batch))

    def med(field: str, scale: float = 1000.0) -> float:
        return statistics.median(getattr(r, field) for r in results) * scale

    pace, reached = results[0].offered, med("rate", 1.0)
    sustained = pace >= rate and all(r.sustained for r in results)
    name = "replication lag p99, 3 nodes, " + (f"{rate:,.0f} writes/s" if sustained else
                                                f"{reached:,.0f} writes/s ({rate:,.0f} not sustained)")
    if batch > 1:
        name += f", {batch} per request"
    net = med("net_p99")
    note = (f"net = arrival on n2 - sent - the median one-way time to a subscriber on n1 in the same run; "
            f"net p50 {med('net_p50'):.2f} ms; raw (n2 arrival - sent) p50 {med('raw_p50'):.2f} / p99 "
            f"{med('raw_p99'):.2f} ms; one-way on n1 p50 {med('local_p50'):.2f} / p99 {med('local_p99'):.2f} ms "
            f"(the ceiling column); {reached:,.0f} writes/s acknowledged at a pace of {pace:,.0f}/s"
            + ("" if sustained else f" (the fastest pace n1 kept up with; {rate:,.0f}/s fell behind)")
            + f"; median of {len(results)} runs of {seconds:g} s, 64-byte values, concern local, "
            + (f"{batch} variables per SetVariables" if batch > 1 else "one variable per SetVariables"))
    return Row(name, net, "ms", med("local_p99"), None, f"net p99 <= {target_ms:g} ms at {rate:,.0f} writes/s",
               sustained and net <= target_ms, note)


def kill_rows(runs: int, clients: int = 6) -> list[Row]:
    from commy.bench import Row
    from commy.runtime.killbench import failover
    from commy.runtime.loop import run

    results = [run(failover(clients)) for _ in range(runs)]
    detection = statistics.median(r.detection for r in results)
    resume = statistics.median(r.resume for r in results)
    others = statistics.median(r.others for r in results)
    affected = statistics.median(r.affected for r in results)
    where = f"median of {len(results)} run{'s' if len(results) > 1 else ''}, a fresh cluster each, default heartbeat"
    return [
        Row("kill -9 of one of 3 nodes: detection", detection, "s", None, None, "<= 2 s", detection <= 2.0,
            f"SIGKILL to the first survivor's peer_state down log line; {where}"),
        Row("kill -9 of one of 3 nodes: client resume", resume, "s", None, None, "<= 3 s", resume <= 3.0,
            f"SIGKILL to the ack of the next replicated write of each of the {affected:g} (of {clients}) SDK "
            f"clients that were on the killed node, the largest; the clients on survivors resumed after "
            f"{others:.2f} s (their replicated writes wait for the dead replica too); {where}"),
    ]

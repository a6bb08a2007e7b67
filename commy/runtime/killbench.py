"""Kill -9 of one of three `commy serve` processes under a `replicated` write load: detection and resume.

`failover(clients)` starts a fresh cluster (`clusterbench.three_nodes`), creates a tenant and a
client key, and connects `clients` SDK clients (`AsyncClient` with all three URLs, each list
rotated so the clients spread over the nodes). Each writes its own variable in a loop with concern
`replicated`, retrying after any error (a lost connection, `outcome_unknown`, `unavailable`), and
notes when each write was sent and acknowledged. After a short steady phase n1 gets SIGKILL, by PID.

Detection = from the kill to the first survivor's `peer_state` log line saying n1 is `down` (the
nodes' JSON log lines carry `time.time()`; the kill is stamped with the same clock just before the
signal). Resume = from the kill to the acknowledgement of the first write each client that was
connected to n1 sent after the kill, the largest over those clients (an ack read after the kill
for a write n1 took before it does not count). The same figure for the clients on the survivors
is reported too: their `replicated` writes wait for n1 as well, until it is declared down or the
write times out.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from commy.runtime.clusterbench import SERVICE, TENANT, client_key, node_url, retry, three_nodes

if TYPE_CHECKING:
    from commy.client.aio import AsyncClient
    from commy.runtime.local_cluster import LocalCluster

T = TypeVar("T")


@dataclass(frozen=True)
class FailoverRun:
    detection: float  # seconds from the SIGKILL to the first survivor logging the node down
    resume: float  # seconds from the SIGKILL to the last affected client's next acknowledged write
    others: float  # the same for the clients connected to survivors (their writes wait for n1 too)
    affected: int  # clients that were connected to the killed node
    writes: int  # acknowledged writes in the whole run


class _Writer:
    """One SDK client writing its own variable with concern `replicated`, as fast as acks come."""

    def __init__(self, client: AsyncClient, index: int) -> None:
        self.client = client
        self.name = f"c{index}"
        self.acks: list[tuple[float, float]] = []  # (sent, acknowledged), time.monotonic()
        self.errors = 0
        self.task: asyncio.Task[None] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        service = self.client.service(TENANT, SERVICE, local=False)
        n = 0
        while not stop.is_set():
            n += 1
            sent = time.monotonic()
            try:
                await service.set(self.name, n.to_bytes(8, "big"), concern="replicated")
            except Exception:  # lost connection, outcome unknown, unavailable: try again
                self.errors += 1
                await asyncio.sleep(0.01)
                continue
            self.acks.append((sent, time.monotonic()))

    def resumed(self, kill: float) -> float | None:
        """Seconds from `kill` to the ack of this client's first write sent after it (an ack read
        after the kill for a write the dead node took before it does not count)."""
        return next((acked - kill for sent, acked in self.acks if sent >= kill), None)


def kill(cluster: LocalCluster, node_id: str) -> float:
    """SIGKILL one node by its PID; returns time.time() taken just before the signal (the clock of
    the nodes' log lines)."""
    node = cluster.nodes[node_id]
    t = time.time()
    node.signal(signal.SIGKILL)
    node.proc.wait()
    return t


async def _first_down(cluster: LocalCluster, victim: str, timeout: float) -> float:
    """time.time() of the first survivor's log line saying `victim` is down."""
    deadline = time.monotonic() + timeout
    while True:
        stamps = [t for n in cluster.ids if n != victim for t, state in cluster.nodes[n].peer_states(victim)
                  if state == "down"]
        if stamps:
            return min(stamps)
        if time.monotonic() > deadline:
            raise TimeoutError(f"kill -9: no survivor logged {victim} down within {timeout:g} s")
        await asyncio.sleep(0.02)


async def measure_failover(cluster: LocalCluster, clients: int = 6, steady: float = 1.0,
                           timeout: float = 15.0) -> FailoverRun:
    """Kill n1 under a `replicated` write load on a ready cluster; see the module docstring."""
    from commy.client.aio import AsyncClient

    key = await client_key(cluster)
    urls = cluster.urls
    writers: list[_Writer] = []
    stop = asyncio.Event()
    try:
        for i in range(clients):
            mine = urls[i % len(urls):] + urls[:i % len(urls)]

            async def connect(mine: list[str] = mine) -> AsyncClient:
                client = await AsyncClient.connect(mine)  # the SDK's default reconnection
                try:
                    await client.authenticate(TENANT, api_key=key)
                except BaseException:
                    await client.close()
                    raise
                return client

            writers.append(_Writer(await retry("client login", connect), i))
        for w in writers:
            w.task = asyncio.get_running_loop().create_task(w.run(stop))
        await asyncio.sleep(steady)
        victim = "n1"
        affected = [w for w in writers if w.client.connection.url == node_url(cluster, victim)]
        if not affected or not all(w.acks for w in writers):
            raise RuntimeError("kill -9: the clients were not all writing before the kill")
        m_kill = time.monotonic()
        t_kill = kill(cluster, victim)
        detected = await _first_down(cluster, victim, timeout)
        deadline = time.monotonic() + timeout
        while any(w.resumed(m_kill) is None for w in writers):
            if time.monotonic() > deadline:
                raise TimeoutError(f"kill -9: clients did not resume within {timeout:g} s")
            await asyncio.sleep(0.01)

        def resumed(group: list[_Writer]) -> float:
            return max(w.resumed(m_kill) or 0.0 for w in group) if group else 0.0

        others = [w for w in writers if w not in affected]
        return FailoverRun(detected - t_kill, resumed(affected), resumed(others), len(affected),
                           sum(len(w.acks) for w in writers))
    finally:
        stop.set()
        for w in writers:
            if w.task is not None:
                w.task.cancel()
                with contextlib.suppress(BaseException):
                    await w.task
            with contextlib.suppress(Exception):
                await asyncio.wait_for(w.client.close(), 2.0)


async def failover(clients: int = 6) -> FailoverRun:
    """A fresh 3-node cluster of processes, one node killed, the rest stopped."""
    async def measure() -> FailoverRun:
        async with three_nodes() as cluster:
            return await measure_failover(cluster, clients)

    return await _with_quiet_handler(measure)


def _quiet_lost_futures(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """The SDK leaves a request's future holding a ConnectionLostError nobody awaits when the
    connection drops while the request is being sent (`Connection.request`: `_dropped` fails the
    future, then the send raises on its own), and asyncio prints it when the future is collected.
    That one is expected when a node is killed; anything else goes to the default handler."""
    from commy.client.types import ConnectionLostError

    if isinstance(context.get("exception"), ConnectionLostError):
        return
    loop.default_exception_handler(context)


async def _with_quiet_handler(fn: Callable[[], Awaitable[T]]) -> T:
    loop = asyncio.get_running_loop()
    before = loop.get_exception_handler()
    loop.set_exception_handler(_quiet_lost_futures)
    try:
        return await fn()
    finally:
        loop.set_exception_handler(before)

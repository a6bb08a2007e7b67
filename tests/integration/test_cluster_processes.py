"""The `failover` scenario on real processes: SIGKILL one of three `commy serve` nodes under a
`replicated` write load over loopback TCP, and lose no acknowledged write.

Three nodes (replication factor 2, default heartbeat tuning) are set up through the SDK: a tenant,
a service and a client key, made on n1 and used on every node (the catalog is replicated). Six
writers, two per node, each connected with the list of all three URLs (its own node first), write
their own variables with increasing values, concern `replicated`, and record every acknowledged
(variable, value, stamp). The node two writers are on is killed with SIGKILL in the middle of the
load. Then: those writers reconnected to a survivor and went on writing; after the load stops and
anti-entropy settles, each survivor, read by a client connected to it alone, holds for every
variable the last acknowledged value or a newer one (stamp >=), and the survivors agree.

Measured and printed, not asserted on (a loaded CI machine is no benchmark): the detection time
(the kill to each survivor's `peer_state ... down` log line, both on the wall clock) and each
affected writer's resume time (the kill to its first acknowledged write after it).
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from commy.client import AsyncClient, CommyClientError
from commy.messages import NamedValue, SetVariables, VariablesUpdated, VariableValue
from tests.helpers.cluster_procs import LocalCluster, ProcessGuard, process_guard, wait_for  # noqa: F401

pytestmark = pytest.mark.integration

TENANT, SERVICE = "acme", "load"
WRITERS, VARIABLES = 6, 3  # each writer cycles over its own VARIABLES names
VICTIM = "n2"


@dataclass
class Writer:
    """One SDK client writing `name.0 .. name.{VARIABLES-1}` with increasing values."""

    name: str
    urls: list[str]
    key: str
    client: AsyncClient | None = None
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)  # variable -> last acked (value, stamp)
    acks: list[tuple[float, float, str]] = field(default_factory=list)  # (sent, acked: wall time, URL)
    failures: Counter[str] = field(default_factory=Counter)

    async def connect(self) -> None:
        self.client = await AsyncClient.connect(self.urls, timeout=5.0, backoff=(0.02, 0.5))
        await self.client.authenticate(TENANT, api_key=self.key)

    @property
    def url(self) -> str | None:
        return self.client.connection.url if self.client is not None else None

    async def run(self, stop: asyncio.Event) -> None:
        assert self.client is not None
        conn = self.client.connection
        n = 0
        while not stop.is_set():
            n += 1
            var = f"{self.name}.{n % VARIABLES}"
            msg = SetVariables(TENANT, SERVICE, (NamedValue(var, str(n).encode()),), "replicated")
            sent = time.time()
            try:
                reply = await conn.request(msg)
            except CommyClientError as exc:  # connection lost, outcome unknown, unavailable: not acked
                self.failures[exc.code] += 1
                await asyncio.sleep(0.01)
                continue
            assert isinstance(reply, VariablesUpdated), reply
            self.acked[var] = (n, reply.versions[0].stamp)
            self.acks.append((sent, time.time(), conn.url or ""))

    def first_ack_after(self, t: float) -> tuple[float, str] | None:
        """(ack time, URL) of the first acknowledged write sent after `t` (a reply read after `t`
        may have left the server before it)."""
        return next(((at, url) for sent, at, url in self.acks if sent > t), None)


async def one_node_client(url: str, key: str) -> AsyncClient:
    client = await AsyncClient.connect(url, reconnect=False, timeout=5.0)
    try:
        await client.authenticate(TENANT, api_key=key)
    except BaseException:
        await client.close()
        raise
    return client


async def poll(check: Callable[[], bool | Awaitable[bool]], timeout: float) -> bool:
    """Call (and await) `check` until it says True or `timeout` s pass; an SDK error counts as False."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = check()
            if await answer if inspect.isawaitable(answer) else answer:
                return True
        except CommyClientError:
            pass
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


async def set_up(cluster: LocalCluster) -> str:
    """Tenant, service and a writer key made on n1; returns the key once every node accepts it and
    a replicated write on n1 is readable on the other nodes."""
    async with AsyncClient.connect(cluster.urls[0]) as admin:
        await admin.authenticate("", api_key=cluster.admin_key)
        await admin.create_tenant(TENANT)
        await admin.create_service(TENANT, SERVICE)
        _, key = await admin.create_api_key("writer", tenant=TENANT, scopes=["write"])
        await admin.authenticate(TENANT, api_key=cluster.admin_key)
        await admin.service(TENANT, SERVICE, local=False).set("probe", b"ready", concern="replicated")

    async def readable_everywhere() -> bool:
        for url in cluster.urls:
            client = await one_node_client(url, key)
            try:
                if await client.service(TENANT, SERVICE, local=False).get("probe") != b"ready":
                    return False
            finally:
                await client.close()
        return True

    assert await poll(readable_everywhere, 10.0), "the catalog or the probe write never reached every node"
    return key


async def read_all(url: str, key: str) -> dict[str, VariableValue]:
    client = await one_node_client(url, key)
    try:
        return await client.service(TENANT, SERVICE, local=False).get_many()
    finally:
        await client.close()


def problems(writers: list[Writer], views: dict[str, dict[str, VariableValue]]) -> list[str]:
    """What is wrong with the survivors' contents: a lost acknowledged write, or disagreement."""
    out = []
    for node, view in views.items():
        for w in writers:
            for var, (value, stamp) in w.acked.items():
                got = view.get(var)
                if got is None:
                    out.append(f"{node}: {var} missing (acked {value})")
                elif int(got.value) < value or got.stamp < stamp or (int(got.value) == value and got.stamp != stamp):
                    out.append(f"{node}: {var} = {got.value!r} stamp {got.stamp}, acked {value} stamp {stamp}")
    (a, va), (b, vb) = views.items()
    for var in sorted(set(va) | set(vb)):
        x, y = va.get(var), vb.get(var)
        if (x and (x.value, x.stamp)) != (y and (y.value, y.stamp)):
            out.append(f"{a} and {b} disagree on {var}: {x} vs {y}")
    return out


async def failover(cluster: LocalCluster) -> None:
    key = await set_up(cluster)
    victim = cluster.nodes[VICTIM]
    survivors = [n for n in cluster.ids if n != VICTIM]
    urls = cluster.urls
    writers = [Writer(f"w{i}", urls[i % 3:] + urls[:i % 3], key) for i in range(WRITERS)]
    await asyncio.gather(*(w.connect() for w in writers))
    affected = [w for w in writers if w.url == victim.url]
    assert len(affected) == WRITERS // 3, [w.url for w in writers]

    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in writers]
    try:
        assert await poll(lambda: all(len(w.acks) >= 20 for w in writers), 10.0), "the load never started"
        victim.signal(signal.SIGKILL)
        killed_at = time.time()
        await asyncio.to_thread(victim.proc.wait, 5)
        resumed = await poll(lambda: all(w.first_ack_after(killed_at) for w in writers), 12.0)
        await asyncio.sleep(0.5)  # a little more load on the two survivors
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in writers:
            if w.client is not None:
                await w.client.close()
    assert resumed, {w.name: (w.url, len(w.acks), dict(w.failures)) for w in writers}

    views: dict[str, dict[str, VariableValue]] = {}

    async def converged() -> bool:
        views.clear()
        for node in survivors:
            views[node] = await read_all(cluster.nodes[node].url, key)
        return not problems(writers, views)

    ok = await poll(converged, 8.0)
    assert ok, problems(writers, views)[:20]

    report = [f"failover on processes: killed {VICTIM} (SIGKILL) under {WRITERS} replicated writers; "
              f"{sum(len(w.acked) for w in writers)} variables, {sum(len(w.acks) for w in writers)} acked writes"]
    downs = {}
    for node in survivors:
        proc = cluster.nodes[node]
        assert wait_for(lambda: proc.state_of(VICTIM) == "down", 5.0), proc.text()[-3000:]  # noqa: B023
        downs[node] = next(t for t, s in proc.peer_states(VICTIM) if s == "down") - killed_at
        report.append(f"  detection: {node} saw {VICTIM} down after {downs[node]:.3f} s")
    for w in affected:
        at, url = w.first_ack_after(killed_at) or (float("nan"), "")
        assert url != victim.url and url in urls, (w.name, url)
        report.append(f"  resume: {w.name} wrote again through {url} after {at - killed_at:.3f} s "
                      f"(not acknowledged meanwhile: {dict(w.failures)})")
    for w in writers:
        if w not in affected:
            at, _ = w.first_ack_after(killed_at) or (float("nan"), "")
            report.append(f"  stall: {w.name} (not on {VICTIM}) next ack after {at - killed_at:.3f} s")
    print("\n".join(report))


def test_sigkill_one_of_three_under_replicated_load(process_guard: ProcessGuard) -> None:  # noqa: F811
    cluster = process_guard.cluster(3, replication_factor=2, write_concern="replicated")
    cluster.start()
    assert cluster.wait_until(cluster.all_healthy, 10.0), {n: cluster.nodes[n].text()[-2000:] for n in cluster.ids}
    asyncio.run(failover(cluster))
    for node in cluster.ids:
        if node != VICTIM:
            assert cluster.stop(node) == 0, cluster.nodes[node].text()[-3000:]

"""`commy demo`: a local cluster, a node killed with SIGKILL, and what the others make of it.

The demo starts `--nodes` (default 3) `commy serve` processes on loopback from a generated
configuration (`commy.runtime.local_cluster`: free ports, a 0600 secret file and the data folders in
a temporary folder, or in `--dir`), replication factor 2, write concern `replicated`, default
heartbeat tuning. Through the SDK it makes a tenant, a service and a client key on the first node,
waits until every node accepts the key and serves the service, and connects one client per node,
each given every node's URL with its own first. The clients write a counter each (concern
`replicated`, every acknowledged value and stamp recorded); then the last node is killed with
SIGKILL. It shows, with timings from the kill: when each survivor's failure detector declared the
node down (from their JSON logs), when the dead node's client reconnected to a survivor and had its
first write acknowledged there, and how long the others waited (a `replicated` write in flight to
the dead node waits for the write timeout). After the load stops it reads every counter on each
survivor through a client connected to that survivor alone, until the survivors agree and hold
every acknowledged write (convergence).

Finally the survivors get SIGTERM, everything is reaped, and every PID the demo started is checked:
exit 0 if the demo went as described and no process is left, 1 otherwise. The temporary folder is
removed unless `--keep` is given or something failed (then its logs are worth reading); a `--dir`
folder is always left in place.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from commy.client import AsyncClient, CommyClientError, VariableValue
from commy.messages import NamedValue, SetVariables, VariablesUpdated
from commy.runtime.local_cluster import LocalCluster, NodeProcess, StartError, pid_alive

TENANT, SERVICE = "demo", "counters"
PACE = 0.02  # seconds between a client's writes: a demo, not a benchmark
LOAD_BEFORE = 1.0  # seconds of writes before the kill
LOAD_AFTER = 1.0  # seconds of writes once every client writes again after the kill


class DemoFailed(Exception):
    """Something the demo shows did not happen; the message says what."""


def say(text: str) -> None:
    print(text, flush=True)


@dataclass
class DemoClient:
    """One SDK client writing `NAME.count` = 1, 2, 3, ... with concern `replicated`."""

    name: str
    home: str  # the node it connects to first
    client: AsyncClient
    acked: tuple[int, int] = (0, 0)  # the last acknowledged (value, stamp)
    acks: list[tuple[float, float, str]] = field(default_factory=list)  # (sent, acked, URL), wall clock
    failures: dict[str, int] = field(default_factory=dict)
    moved: tuple[float, str] | None = None  # (when, to which URL) it first connected elsewhere than home

    @property
    def variable(self) -> str:
        return f"{self.name}.count"

    async def run(self, stop: asyncio.Event, home_url: str) -> None:
        conn, n = self.client.connection, 0
        while not stop.is_set():
            n += 1
            sent = time.time()
            try:
                reply = await conn.request(SetVariables(TENANT, SERVICE, (NamedValue(self.variable, b"%d" % n),),
                                                        "replicated"))
            except CommyClientError as exc:  # lost connection, outcome unknown: not acknowledged
                self.failures[exc.code] = self.failures.get(exc.code, 0) + 1
            else:
                if isinstance(reply, VariablesUpdated):
                    self.acked = (n, reply.versions[0].stamp)
                    self.acks.append((sent, time.time(), conn.url or ""))
            await asyncio.sleep(PACE)

    async def watch(self, stop: asyncio.Event, home_url: str) -> None:
        """Note when the client is first connected (session restored) somewhere else than home."""
        conn = self.client.connection
        while not stop.is_set() and self.moved is None:
            if conn.connected and conn.url not in (None, home_url):
                self.moved = (time.time(), conn.url or "")
            await asyncio.sleep(0.005)

    def first_ack_after(self, t: float) -> tuple[float, str] | None:
        """(ack time, URL) of the first acknowledged write sent after `t`."""
        return next(((at, url) for sent, at, url in self.acks if sent > t), None)


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str, step: float = 0.02) -> float:
    """Await `check()` until true; the seconds it took. Raises DemoFailed naming `what` on timeout."""
    started = time.monotonic()
    while True:
        try:
            if await check():
                return time.monotonic() - started
        except CommyClientError:
            pass
        if time.monotonic() - started > timeout:
            raise DemoFailed(f"{what} (waited {timeout:g} s)")
        await asyncio.sleep(step)


async def alone(url: str, tenant: str, key: str) -> AsyncClient:
    """A client of one node only (no other URL, no reconnection)."""
    client = await AsyncClient.connect(url, reconnect=False, timeout=5.0)
    try:
        await client.authenticate(tenant, api_key=key)
    except BaseException:
        await client.close()
        raise
    return client


async def read_all(url: str, key: str) -> dict[str, VariableValue]:
    client = await alone(url, TENANT, key)
    try:
        return await client.service(TENANT, SERVICE, local=False).get_many()
    finally:
        await client.close()


async def set_up(cluster: LocalCluster) -> str:
    """Tenant, service and client key made on the first node; the key, once every node serves it."""
    first = cluster.nodes[cluster.ids[0]]
    async with AsyncClient.connect(first.url) as admin:
        await admin.authenticate("", api_key=cluster.admin_key)
        await admin.create_tenant(TENANT)
        await admin.create_service(TENANT, SERVICE)
        _, key = await admin.create_api_key("demo-client", tenant=TENANT, scopes=["write"])
        await admin.authenticate(TENANT, api_key=cluster.admin_key)
        await admin.service(TENANT, SERVICE, local=False).set("hello", b"world", concern="replicated")

    async def everywhere() -> bool:
        for url in cluster.urls:
            if (await read_all(url, key)).get("hello") is None:
                return False
        return True

    took = await until(everywhere, 15.0, "the key or the first write did not reach every node")
    say(f'setup: tenant "{TENANT}", service "{SERVICE}" and a client key made on {first.node_id}; '
        f"every node accepts the key and holds the first write ({took:.2f} s)")
    return key


def survivors_problems(clients: list[DemoClient], views: dict[str, dict[str, VariableValue]]) -> list[str]:
    out = []
    for node, view in views.items():
        for c in clients:
            value, stamp = c.acked
            got = view.get(c.variable)
            if value and (got is None or int(got.value) < value or got.stamp < stamp):
                out.append(f"{node} lacks {c.variable} = {value} (acknowledged), has {got and got.value!r}")
    first, *others = views.values()
    for node, view in zip(list(views)[1:], others, strict=True):
        if {k: (v.value, v.stamp) for k, v in view.items()} != {k: (v.value, v.stamp) for k, v in first.items()}:
            out.append(f"{node} differs from {next(iter(views))}")
    return out


async def scenario(cluster: LocalCluster) -> None:
    if not cluster.wait_until(cluster.all_healthy, 15.0):
        raise DemoFailed("the nodes did not all see each other healthy")
    say(f"cluster formed: every node sees the {len(cluster.ids) - 1} others healthy")
    key = await set_up(cluster)
    urls = cluster.urls
    by_url = {n.url: n.node_id for n in cluster.nodes.values()}
    clients = []
    for i, node in enumerate(cluster.ids):
        client = await AsyncClient.connect(urls[i:] + urls[:i], timeout=5.0, backoff=(0.02, 0.5))
        await client.authenticate(TENANT, api_key=key)
        clients.append(DemoClient(f"c{i + 1}", node, client))
    say(f"clients: {', '.join(f'{c.name} on {c.home}' for c in clients)} (each knows all {len(urls)} URLs); "
        'each writes its counter every 20 ms with write concern "replicated"')

    victim = cluster.nodes[cluster.ids[-1]]
    survivors = [cluster.nodes[n] for n in cluster.ids[:-1]]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(work(stop, cluster.nodes[c.home].url)) for c in clients
             for work in (c.run, c.watch)]
    try:
        await asyncio.sleep(LOAD_BEFORE)
        say("  " + ", ".join(f"{c.variable} = {c.acked[0]}" for c in clients) + " (acknowledged so far)")
        say(f"killing {victim.node_id} (pid {victim.pid}) with SIGKILL")
        victim.signal(signal.SIGKILL)
        killed = time.time()
        await asyncio.to_thread(victim.proc.wait, 5)
        await report_detection(survivors, victim, killed)
        moved = [c for c in clients if c.home == victim.node_id]

        async def all_writing() -> bool:
            return all(c.first_ack_after(killed) for c in clients)

        await until(all_writing, 15.0, "not every client wrote again after the kill")
        for c in sorted(clients, key=lambda c: c not in moved):
            at, url = c.first_ack_after(killed) or (0.0, "")
            if c in moved:
                if url == victim.url or c.moved is None:
                    raise DemoFailed(f"{c.name} did not move off {victim.node_id}")
                say(f"failover: {c.name} lost {victim.node_id}, reconnected to {by_url[url]} after "
                    f"{c.moved[0] - killed:.2f} s; first acknowledged write there after {at - killed:.2f} s")
            else:
                say(f"  {c.name} (on {c.home}) stayed; its first write sent after the kill was acknowledged "
                    f"after {at - killed:.2f} s (a replicated write waits for {victim.node_id}'s ack until "
                    "it is declared down, then goes to another holder)")
        await asyncio.sleep(LOAD_AFTER)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in clients:
            await c.client.close()
    unacked = sum(sum(c.failures.values()) for c in clients)
    say(f"load stopped: {sum(len(c.acks) for c in clients)} writes acknowledged, {unacked} not "
        "(connection lost or outcome unknown: the client is told, never misled)")
    await report_convergence(survivors, clients, key)


async def report_detection(survivors: list[NodeProcess], victim: NodeProcess, killed: float) -> None:
    async def all_down() -> bool:
        return all(n.state_of(victim.node_id) == "down" for n in survivors)

    await until(all_down, 10.0, f"the survivors did not all declare {victim.node_id} down")
    for node in survivors:
        states = node.peer_states(victim.node_id)
        down = next(t for t, s in states if s == "down")
        suspected = next((t for t, s in states if s == "suspected" and t >= killed), None)
        seen = f"suspected after {suspected - killed:.2f} s, " if suspected is not None else ""
        say(f"detection: {node.node_id} {seen}declared {victim.node_id} down after {down - killed:.2f} s")


async def report_convergence(survivors: list[NodeProcess], clients: list[DemoClient], key: str) -> None:
    views: dict[str, dict[str, VariableValue]] = {}

    async def converged() -> bool:
        views.clear()
        for node in survivors:
            views[node.node_id] = await read_all(node.url, key)
        return not survivors_problems(clients, views)

    try:
        took = await until(converged, 10.0, "the survivors did not converge", step=0.1)
    except DemoFailed as exc:
        raise DemoFailed(f"{exc}: {'; '.join(survivors_problems(clients, views)[:5])}") from None
    names = ", ".join(n.node_id for n in survivors)
    say(f"convergence: {names} hold the same {len(next(iter(views.values())))} variables (values and stamps) "
        f"{took:.2f} s after the load stopped; every acknowledged write is there")
    view = views[survivors[0].node_id]
    for c in clients:
        got = view.get(c.variable)
        say(f"  {c.variable} = {got.value.decode() if got else '-'} (last acknowledged {c.acked[0]})")


def stop_all(cluster: LocalCluster) -> bool:
    """SIGTERM the survivors, reap everything, check every PID; whether all is clean."""
    running = [n for n in cluster.started if n.alive()]
    codes = {n.node_id: cluster.stop(n.node_id) for n in running}
    forced = cluster.close()
    shown = ", ".join(f"{n} exited {'after SIGKILL' if rc is None else rc}" for n, rc in codes.items())
    say(f"stopping {', '.join(codes) or 'nothing'} with SIGTERM: {shown or '-'}")
    left = [n for n in cluster.started if pid_alive(n.pid)]
    pids = ", ".join(str(n.pid) for n in cluster.started)
    if left:
        say(f"processes left behind: {', '.join(f'{n.node_id} (pid {n.pid})' for n in left)}")
    else:
        say(f"no process left behind ({len(cluster.started)} started, pids {pids}: none running)")
    return not left and not forced and all(rc == 0 for rc in codes.values())


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(nodes: int, folder: Path | None, keep: bool) -> int:
    temporary = folder is None
    where = Path(tempfile.mkdtemp(prefix="commy-demo-")) if folder is None else folder
    if not temporary and where.exists() and any(where.iterdir()):
        print(f"commy demo: error: --dir: {where} is not empty", file=sys.stderr)
        return 2
    cluster = LocalCluster(where, nodes, replication_factor=2, write_concern="replicated")
    say(f"commy demo: {nodes} nodes on loopback, replication factor 2, folder {where}")
    ok = False
    previous = signal.signal(signal.SIGTERM, _interrupt)  # stopped like Ctrl-C: clean up, then exit
    try:
        cluster.start()
        for node in cluster.nodes.values():
            say(f"  {node.node_id}  pid {node.pid}  {node.url}  (log {node.log.name})")
        from commy.runtime.loop import run

        run(scenario(cluster))
        ok = True
    except (DemoFailed, StartError, CommyClientError, OSError) as exc:
        say(f"demo failed: {exc}")
    except KeyboardInterrupt:
        say("interrupted")
    finally:
        clean = stop_all(cluster)
        signal.signal(signal.SIGTERM, previous)
    ok = ok and clean
    if temporary and ok and not keep:
        shutil.rmtree(where, ignore_errors=True)
    else:
        say(f"folder kept: {where} (configuration, secret, data and one log per node)")
    say("demo: ok" if ok else "demo: FAILED")
    return 0 if ok else 1


def run_demo_cli(args: argparse.Namespace) -> int:
    if not 3 <= args.nodes <= 9:
        print(f"commy demo: error: --nodes: expected 3 to 9, got {args.nodes}", file=sys.stderr)
        return 2
    return run_demo(args.nodes, Path(args.dir) if args.dir else None, args.keep)

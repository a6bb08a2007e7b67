"""Scripted runs of a simulated 3-node commy cluster, recorded as a schedule and replayed exactly.

A `ClusterRun` is full nodes (`sim.app.SimApp`: the production actors, `MemoryStore` disks kept
across crashes) without the automatic client load: one `ScriptClient` per (node, tenant) stays
connected to its node and writes or reads only when told. Everything done to a run goes through
`do(action, *args)`, which appends `(time, action, args)` to `schedule`: `write`, `intrude`, `read`,
`cut` (symmetric), `one_way`, `bridge`, `heal`, `crash` (the disk is kept), `restart`, `pause`,
`resume`, `jump` (a node's clock), `flaky` (loss, duplication, reordering on every link), `run`
(advance virtual time) and `finish` (heal, restart and resume every node, clean links, quiesce).
The cluster is deterministic from its seed, so `replay(seed, schedule)` repeats a run call for
call -- the times are only there to read -- and `python -m sim.schedule SEED "SCHEDULE"` does it
from a shell.

The model is what the clients were told: every write and read and its outcome
(`sim.script_client`). After every action `check_step` reads every disk: no value of one tenant in
another's service, no refused write anywhere, no version-vector entry going down, every
acknowledged `replicated` or `quorum` write (its stamp or a higher one) on at least two disks, no
intrusion accepted; the stamps a node gives carry its index and grow (a write sent after another
was answered gets a higher one); a read returns a value that may exist, no older than what the
same client had written (acknowledged) or read on that node before. After `finish`, `check_end`:
every running holder has the same entries and version vector, each entry's stamp is covered by
the vector, every acknowledged write survives (final stamp >= acknowledged stamp, the value
matching when the stamps are equal) -- `replicated` and `quorum` ones while at most
replication_factor - 1 nodes were down at once, `local` ones too since disks are kept -- every
request got an answer, and a write sent after CALM seconds of a whole cluster (all running, no
cut, clean links) and answered before the next fault was acknowledged within PROMPT. The
application's checkers (`sim.cluster_checkers`: heartbeat views, convergence) watch as well;
everything found is in `violations`.
"""

from __future__ import annotations

import ast
import random
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from commy.core.hlc import origin_of
from sim.app import AppConfig, SimApp
from sim.client_net import ClientNetwork
from sim.cluster import SimCluster
from sim.script_client import ACKED, PENDING, READ, REFUSED, Read, ScriptClient, Write
from sim.timeline import Timeline

NODES = ("n1", "n2", "n3")
TENANTS = ("acme", "globex")
SERVICE = "telemetry"
VARIABLES = ("x", "y")
CONCERNS = ("local", "replicated", "quorum")
WARMUP = 1.0  # before the first action: members joined, clients logged in
QUIESCE = 6.0  # after the final heal: detection (2 s) + write timeout (2 s) + anti-entropy rounds
CALM = 4.0  # seconds without a fault after which a write must succeed (recovery: rejoin + heartbeats)
PROMPT = 0.25  # ... and be answered within (a healthy cluster acknowledges in milliseconds)
FAULTS = frozenset({"cut", "one_way", "bridge", "heal", "crash", "restart", "pause", "resume", "jump", "flaky"})
DURABLE = 2  # disks that hold an acknowledged replicated/quorum write (rf = 2; a majority of 3)

Step = tuple[float, str, tuple[Any, ...]]


class ScriptedApp(SimApp):
    """`SimApp` without its clients' load: `start` only opens the client network."""

    def __init__(self, node_ids: Sequence[str], seed: int) -> None:
        super().__init__(node_ids, seed, AppConfig(tenants=TENANTS, service=SERVICE, writers=1, readers=0,
                                                   intruders=False))

    def start(self, cluster: SimCluster, duration: float = 0.0, timeline: Timeline | None = None) -> None:
        self.cluster = cluster
        cluster.app = self
        self.net = ClientNetwork(cluster, random.Random(self.rng.getrandbits(64)), latency=self.config.client_latency,
                                 jitter=self.config.client_jitter)


class ClusterRun:
    """A cluster, its scripted clients, the schedule so far and what the checks found."""

    def __init__(self, seed: int, nodes: Sequence[str] = NODES) -> None:
        self.seed = seed
        self.nodes = list(nodes)
        self.app = ScriptedApp(self.nodes, seed)
        self.cluster = SimCluster(seed, self.nodes, self.app.build, checkers=self.app.checkers)
        self.app.start(self.cluster)
        assert self.app.net is not None
        self.clients: dict[tuple[str, str], ScriptClient] = {}
        for i, (node, tenant) in enumerate((n, t) for n in self.nodes for t in TENANTS):
            cred = self.app.credentials[f"{tenant}-w1"]
            client = ScriptClient(self.app.net, node, tenant, cred.key, f"10.2.0.{i + 1}:{50000 + i}")
            self.clients[node, tenant] = client
            client.start()
        self.schedule: list[Step] = []
        self.writes: list[Write] = []
        self.reads: list[Read] = []
        self.down: dict[str, float] = {}  # crashed node -> since
        self.most_down = 0  # the most nodes down at once
        self.finished = False
        self.whole_since: float | None = 0.0  # since when every node runs and reaches every other (None: not now)
        self.whole_at_send: dict[int, float | None] = {}  # write id -> whole_since when it was sent
        self.fault_times: list[float] = []  # exact times (the schedule's are rounded)
        self.found: list[str] = []
        self._vv: dict[tuple[str, str, str], dict[int, int]] = {}  # (node, tenant, service) -> last vector seen
        self.cluster.run_for(WARMUP)
        self.check_step()

    @classmethod
    def replay(cls, seed: int, schedule: Iterable[Step]) -> ClusterRun:
        run = cls(seed)
        for _, action, args in schedule:
            run.do(action, *args)
        return run

    @property
    def violations(self) -> list[str]:
        return self.found + self.cluster.violations

    def where(self) -> str:
        return f"t={self.cluster.now:.3f}s, seed {self.seed}"

    # ---- actions

    def do(self, action: str, *args: Any) -> None:
        """Run one action now, record it, check the disks."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {sorted(ACTIONS)}")
        self.schedule.append((round(self.cluster.now, 6), action, args))
        getattr(self, "_" + action)(*args)
        if action in FAULTS:
            c = self.cluster
            self.fault_times.append(c.now)
            clean = not any(k.cfg.loss or k.cfg.duplicate or k.cfg.reorder for k in c.network.links.values())
            whole = all(c.running(n) for n in self.nodes) and not c.network.blocked_pairs() and clean
            self.whole_since = c.now if whole else None
        self.check_step()

    def _write(self, node: str, tenant: str, name: str, concern: str) -> None:
        self._send(self.clients[node, tenant], tenant, name, concern, intrusion=False)

    def _intrude(self, node: str, tenant: str, name: str) -> None:
        """The client of `tenant` on `node` writes into the other tenant (it has no grant there)."""
        other = next(t for t in TENANTS if t != tenant)
        self._send(self.clients[node, tenant], other, name, "local", intrusion=True)

    def _send(self, client: ScriptClient, tenant: str, name: str, concern: str, *, intrusion: bool) -> None:
        wid = len(self.writes) + 1
        value = f"{client.tenant}:{'i' if intrusion else 'w'}{wid}".encode()  # unique, and says whose it is
        w = Write(wid, client.node, tenant, SERVICE, name, value, concern, self.cluster.now, intrusion)
        self.writes.append(w)
        self.whole_at_send[wid] = self.whole_since
        client.write(w)

    def _read(self, node: str, tenant: str, name: str) -> None:
        r = Read(len(self.reads) + 1, node, tenant, SERVICE, name, self.cluster.now)
        self.reads.append(r)
        self.clients[node, tenant].read(r)

    def _cut(self, left: Sequence[str]) -> None:
        self.cluster.partition(list(left))

    def _one_way(self, srcs: Sequence[str], dsts: Sequence[str]) -> None:
        self.cluster.partition_one_way(list(srcs), list(dsts))

    def _bridge(self, left: Sequence[str], right: Sequence[str]) -> None:
        self.cluster.bridge(list(left), list(right))

    def _heal(self) -> None:
        self.cluster.heal()

    def _crash(self, node: str) -> None:
        if node not in self.down:
            self.cluster.crash(node)
            self.down[node] = self.cluster.now
            self.most_down = max(self.most_down, len(self.down))

    def _restart(self, node: str) -> None:
        if self.down.pop(node, None) is not None:
            self.cluster.restart(node)

    def _pause(self, node: str) -> None:
        self.cluster.pause(node)

    def _resume(self, node: str) -> None:
        self.cluster.resume(node)

    def _flaky(self, loss: float, duplicate: float, reorder: float) -> None:
        """Every link loses, duplicates and reorders messages with these chances (0, 0, 0: clean)."""
        self.cluster.configure(loss=loss, duplicate=duplicate, reorder=reorder)

    def _jump(self, node: str, seconds: float) -> None:
        """The node's clock jumps (back if negative); virtual time does not."""
        self.cluster.jump_clock(node, seconds)

    def _run(self, dt: float) -> None:
        self.cluster.run_for(dt)

    def _finish(self, quiesce: float = QUIESCE) -> None:
        for node in sorted(self.down):
            self._restart(node)
        self.cluster.heal_and_quiesce(quiesce)  # the application's checkers run their end checks here
        self.finished = True
        self.check_end()

    # ---- reading the disks

    def entries(self, node: str, tenant: str) -> dict[str, tuple[bytes, int]] | None:
        handle = self.app.disks[node].store.files.get((tenant, SERVICE))
        return None if handle is None else {e.name: (e.value, e.stamp) for e in handle.entries()}

    def clocks(self, node: str, tenant: str) -> dict[int, int]:
        handle = self.app.disks[node].store.files.get((tenant, SERVICE))
        return {} if handle is None else {o: s for o, s in handle.clocks().items() if s}

    def report(self, text: str) -> None:
        if text not in self.found:
            self.found.append(text)

    # ---- checks

    def check_step(self) -> None:
        """Safety, after every action: what may never be seen on any disk, at any time."""
        refused = {w.value: w for w in self.writes if w.outcome == REFUSED or w.intrusion}
        for node in self.nodes:
            store = self.app.disks[node].store
            for (tenant, service), handle in sorted(store.files.items()):
                for e in handle.entries():
                    author = e.value.split(b":", 1)[0].decode("ascii", "replace")
                    if author != tenant:
                        self.report(f"{node}: {tenant}/{service}/{e.name} holds {e.value!r}, a value of tenant "
                                    f"{author!r} ({self.where()})")
                    if e.value in refused:
                        self.report(f"{node}: {tenant}/{service}/{e.name} holds the value of {refused[e.value]}, "
                                    f"which was refused ({self.where()})")
                key = (node, tenant, service)
                now, before = handle.clocks(), self._vv.get(key, {})
                for origin, stamp in sorted(before.items()):
                    if now.get(origin, 0) < stamp:
                        self.report(f"{node}: {tenant}/{service} version vector went down for origin {origin}: "
                                    f"{stamp:#x} -> {now.get(origin, 0):#x} ({self.where()})")
                self._vv[key] = now
        for w in self.writes:
            if w.intrusion and w.outcome == ACKED:
                self.report(f"intrusion accepted: {w} ({self.where()})")
            elif w.outcome == ACKED and w.concern != "local":
                holding = [n for n in self.nodes if self._has(n, w)]
                if len(holding) < DURABLE:
                    self.report(f"acknowledged {w} is held on {holding} only, fewer than {DURABLE} disks "
                                f"({self.where()})")
        for client in self.clients.values():
            for t, what in client.foreign:
                self.report(f"{t:.3f}s client {client.name} received {what}")
        self._check_stamps()
        self._check_reads()

    def _check_stamps(self) -> None:
        """A node stamps with its own index, and a write sent after another was answered gets a
        higher stamp from the same node (its clock never goes back, not even across a restart)."""
        last: dict[str, Write] = {}  # node -> the acknowledged write with the highest stamp answered so far
        events = sorted([(w.answered_at or 0.0, 1, w.wid, w) for w in self.writes if w.outcome == ACKED]
                        + [(w.sent_at, 0, w.wid, w) for w in self.writes if w.outcome == ACKED])
        for _, answered, _, w in events:
            index = self.nodes.index(w.node) + 1
            if origin_of(w.stamp) != index:
                self.report(f"{w}: the stamp's origin is {origin_of(w.stamp)}, not {w.node}'s index {index}")
            before = last.get(w.node)
            if answered:
                if before is None or w.stamp > before.stamp:
                    last[w.node] = w
            elif before is not None and w.stamp <= before.stamp:
                self.report(f"{w} was sent after {before} was answered, yet its stamp is not higher")

    def _check_reads(self) -> None:
        """A read returns a value that may exist, never older than what the same client wrote and
        had acknowledged, or read, on that node before (a node's entries only move forward)."""
        by_value = {w.value: w for w in self.writes}
        for r in self.reads:
            if r.outcome != READ:
                continue
            source = by_value.get(r.value) if r.value is not None else None
            if r.value is not None and (source is None or (source.tenant, source.name) != (r.tenant, r.name)
                                        or source.outcome == REFUSED or source.intrusion):
                self.report(f"{r} returned a value that may not exist ({source or 'never written'})")
            assert r.answered_at is not None
            for w in self.writes:
                if ((w.node, w.tenant, w.name) == (r.node, r.tenant, r.name) and w.outcome == ACKED
                        and w.answered_at is not None and w.answered_at < r.sent_at and r.stamp < w.stamp):
                    self.report(f"{r} is older than {w}, acknowledged to the same client before")
            for q in self.reads:
                if ((q.node, q.tenant, q.name) == (r.node, r.tenant, r.name) and q.outcome == READ
                        and q.answered_at is not None and q.answered_at < r.sent_at and r.stamp < q.stamp):
                    self.report(f"{r} is older than {q}, read by the same client before")

    def _has(self, node: str, w: Write) -> bool:
        entries = self.entries(node, w.tenant)
        got = entries.get(w.name) if entries is not None else None
        return got is not None and got[1] >= w.stamp

    def check_end(self) -> None:
        """After `finish`: the holders agree and every acknowledged write survived."""
        running = [n for n in self.nodes if self.cluster.running(n)]
        by_value = {w.value: w for w in self.writes}
        for tenant in TENANTS:
            holders = [n for n in running if self.entries(n, tenant) is not None]
            if not holders:
                if any(w.outcome == ACKED for w in self.writes if w.tenant == tenant):
                    self.report(f"{tenant}: writes were acknowledged but no running node holds {SERVICE}")
                continue
            first = holders[0]
            final = self.entries(first, tenant) or {}
            for n in holders[1:]:
                if self.entries(n, tenant) != final:
                    self.report(f"{tenant}: {first} and {n} differ after quiesce: {_fmt(final)} vs "
                                f"{_fmt(self.entries(n, tenant) or {})}")
                if self.clocks(n, tenant) != self.clocks(first, tenant):
                    self.report(f"{tenant}: version vectors differ after quiesce: {first} "
                                f"{_fmt_vv(self.clocks(first, tenant))}, {n} {_fmt_vv(self.clocks(n, tenant))}")
            for n in holders:
                vv = self.clocks(n, tenant)
                for name, (value, stamp) in sorted((self.entries(n, tenant) or {}).items()):
                    if vv.get(origin_of(stamp), 0) < stamp:
                        self.report(f"{n}: {tenant}/{name}={value!r} stamp {stamp:#x} is not covered by its version "
                                    f"vector {_fmt_vv(vv)}: no digest will ever offer it")
            for name, (value, stamp) in sorted(final.items()):
                w = by_value.get(value)
                if w is None or w.outcome == REFUSED or w.intrusion:
                    self.report(f"{tenant}/{name}: final value {value!r} is not a write that may exist "
                                f"({w if w is not None else 'never written'})")
                elif w.outcome == ACKED and w.stamp != stamp:
                    self.report(f"{tenant}/{name}: final value is {w} but its stamp is {stamp:#x}")
        covered = self.most_down <= self.app.replication.replication_factor - 1
        for w in self.writes:
            if w.outcome != ACKED or w.intrusion or (w.concern != "local" and not covered):
                continue
            got = (self.entries(running[0], w.tenant) or {}).get(w.name) if running else None
            if got is None or got[1] < w.stamp:
                shown = "nothing" if got is None else f"{got[0]!r} stamp {got[1]:#x}"
                self.report(f"acknowledged {w} was lost: the final value is {shown}")
            elif got[1] == w.stamp and got[0] != w.value:
                self.report(f"acknowledged {w}: the final entry has its stamp but the value {got[0]!r}")
        requests: list[Write | Read] = [*self.writes, *self.reads]
        for request in requests:
            if request.outcome == PENDING:
                self.report(f"{request} never got an answer (the run ended at {self.cluster.now:.3f}s)")
        self._check_available()
        for client in self.clients.values():
            if not client.ready:
                self.report(f"client {client.name} has no working session at the end (phase {client.phase})")

    def _check_available(self) -> None:
        """Liveness: a write sent when every node had been running and reaching every other for CALM
        seconds, and answered before the next fault, is acknowledged within PROMPT seconds --
        whatever its concern."""
        for w in self.writes:
            since = self.whole_at_send[w.wid]
            if w.intrusion or since is None or w.sent_at - since < CALM:
                continue
            until = w.answered_at if w.answered_at is not None else self.cluster.now
            if any(w.sent_at <= t <= until for t in self.fault_times):
                continue
            if w.outcome != ACKED:
                self.report(f"{w} failed ({w.detail or 'no detail'}) though every node ran and reached every "
                            f"other from {since:.3f}s on")
            elif until - w.sent_at > PROMPT:
                self.report(f"{w} took {until - w.sent_at:.3f}s to be acknowledged though every node ran and "
                            f"reached every other from {since:.3f}s on")

    # ---- telling about it

    def replay_command(self) -> str:
        return f'python -m sim.schedule {self.seed} "{self.schedule!r}"'

    def replay_snippet(self) -> str:
        lines = ",\n".join(f"    {step!r}" for step in self.schedule)
        return (f"from sim.schedule import ClusterRun\nrun = ClusterRun.replay({self.seed}, [\n{lines},\n])\n"
                "print('\\n'.join(run.violations) or 'no violation')")

    def explain(self) -> str:
        outcomes = "\n".join(f"  {w}" for w in [*self.writes, *self.reads])
        return (f"cluster seed {self.seed}, {len(self.schedule)} actions, ended at t={self.cluster.now:.3f}s\n"
                f"writes and reads:\n{outcomes}\nreplay:\n{self.replay_command()}\n"
                f"or in Python:\n{self.replay_snippet()}")


ACTIONS = frozenset({"write", "intrude", "read", "cut", "one_way", "bridge", "heal", "crash", "restart", "pause",
                     "resume", "jump", "flaky", "run", "finish"})


def _fmt(entries: dict[str, tuple[bytes, int]]) -> str:
    return "{" + ", ".join(f"{n}: {v!r}@{s:#x}" for n, (v, s) in sorted(entries.items())) + "}"


def _fmt_vv(vv: dict[int, int]) -> str:
    return "{" + ", ".join(f"{o}: {s:#x}" for o, s in sorted(vv.items())) + "}"


def main(argv: Sequence[str]) -> int:
    """`python -m sim.schedule SEED "SCHEDULE"`: replay, print the writes and the violations."""
    if len(argv) != 2:
        print(__doc__.split("\n\n")[0] + '\n\nusage: python -m sim.schedule SEED "[(t, action, args), ...]"')
        return 2
    run = ClusterRun.replay(int(argv[0]), ast.literal_eval(argv[1]))
    if not run.finished:
        run.do("finish")
    print("\n".join(f"{w}" for w in run.writes))
    print("\n".join(run.violations) or "no violation")
    return 1 if run.violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

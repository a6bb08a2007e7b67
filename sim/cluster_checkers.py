"""Checkers of the cluster application (`sim.app`): what replication and failover promise.

They read the clients' records (`sim.clients`), the trace rows clients write (`c:recv` for every
value received, `c:data` for any other reply carrying a tenant's data, `c:admin`, ...), and at the
end the nodes' disks. "Holders" of a service are the running members (not drained) whose store
has it.

- `AckedWritesKept`: every write acknowledged with concern `replicated` or `quorum` survives: after
  heal and quiesce each holder's entry for the variable has a stamp >= the acknowledged stamp
  (lww: that write, or a later one, won). Checked while at most replication_factor - 1 nodes failed
  for good (down at the end, or wiped by a lost disk); beyond that the promise does not hold.
- `ReplicasConverge`: all holders of a service have equal entries (values and stamps) and equal
  version vectors, and there are at least min(replication_factor, running nodes) of them.
- `TenantIsolation`: no client receives data of a tenant it was not granted or holds no session
  on, and no holder keeps a value written by a client of another tenant.
- `RevokedGetsNothing`: once a client's key is revoked (or it logged out), it receives no data
  after the enforcement deadline: 1 s after the revocation, or 1 s after the heal when the cluster
  was partitioned then; and its session must have ended by that deadline.
- `DrainCompletes` / `MembersHealthyAtEnd`: a drained node has no client left 3 s after the drain
  request, and at the end every member sees it LEFT (and every other member HEALTHY).
- `SessionsResume`: every client that is not revoked holds its session again at the end (so every
  failover resumed); no node refuses a `Resume` of a client whose rights are intact, nor drops a
  client that broke no rule; per connection, the stamps it receives for a variable never go down;
  and what it last received for each subscribed variable is the holders' final value.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from commy.errors import UNAVAILABLE
from sim.checkers import Checker, DownDetection, NoDeadLetters, NoFalseDown, peer_state
from sim.clients import REFUSED_FOR_GOOD
from sim.trace import Row

if TYPE_CHECKING:
    from sim.app import SimApp
    from sim.clients import SimClient

ENFORCEMENT_BOUND = 1.0
DRAIN_BOUND = 3.0
CUTS = frozenset({"partition", "partition_one_way", "bridge"})
DATA_EVENTS = frozenset({"c:recv", "c:data", "c:ack", "c:auth", "c:resumed"})
MAX_REPORTS = 5  # per checker and kind: one bug should not bury the others


class AppChecker(Checker):
    events: frozenset[str] | None = frozenset()  # the trace events `on_event` looks at (none: only `at_end`)

    def __init__(self, app: SimApp) -> None:
        super().__init__()
        self.app = app
        self._reported: dict[str, int] = defaultdict(int)

    def violate_once(self, kind: str, text: str) -> None:
        """Report at most MAX_REPORTS violations of one kind (then one line saying how many more)."""
        self._reported[kind] += 1
        n = self._reported[kind]
        if n <= MAX_REPORTS:
            self.violate(text)

    def at_end(self) -> None:
        for kind, n in self._reported.items():
            if n > MAX_REPORTS:
                self.violate(f"... and {n - MAX_REPORTS} more of kind {kind!r}")

    def running(self) -> list[str]:
        """Running members: a drained node left the cluster, whatever files it still has."""
        retired = self.app.retired
        return [n for n in self.cluster.node_ids if self.cluster.running(n) and n not in retired]

    def holders(self, tenant: str, service: str) -> list[str]:
        return [n for n in self.running() if self.app.disks[n].store.exists(tenant, service)]

    def services(self) -> list[tuple[str, str]]:
        keys = {k for n in self.running() for k in self.app.disks[n].store.files}
        return sorted(keys)


class AckedWritesKept(AppChecker):
    name = "acked-writes-kept"

    def at_end(self) -> None:
        app, c = self.app, self.cluster
        failed = {n for n in c.node_ids if not c.alive(n)} | {n for _, n in app.disk_losses}
        if len(failed) >= app.replication.replication_factor:
            super().at_end()
            return  # more replicas failed than the concern covers
        expected: dict[tuple[str, str, str], tuple[int, str]] = {}
        for client in app.clients:
            key = (client.spec.tenant, client.spec.service)
            for w in client.acked:
                if w.concern in ("replicated", "quorum"):
                    k = (*key, w.name)
                    if k not in expected or w.stamp > expected[k][0]:
                        expected[k] = (w.stamp, f"{client.name} at {w.acked_at:.3f}s via {w.node}")
        for (tenant, service, name), (stamp, who) in sorted(expected.items()):
            holders = self.holders(tenant, service)
            if not holders:
                self.violate_once("no-holder", f"{tenant}/{service}/{name}: acknowledged write (stamp {stamp:#x}, "
                                               f"{who}) but no running node holds the service")
            for n in holders:
                entry = app.disks[n].store.open(tenant, service).read(name)
                got = entry.stamp if entry is not None else None
                if got is None or got < stamp:
                    shown = "none" if got is None else hex(got)
                    self.violate_once("lost", f"{n} has {tenant}/{service}/{name} at stamp {shown}, below the "
                                              f"acknowledged {stamp:#x} ({who}): an acknowledged write was lost")
        super().at_end()


class ReplicasConverge(AppChecker):
    name = "replicas-converge"

    def at_end(self) -> None:
        app = self.app
        running = self.running()
        need = min(app.replication.replication_factor, len(running))
        for tenant, service in self.services():
            holders = self.holders(tenant, service)
            if len(holders) < need:
                self.violate_once("few", f"{tenant}/{service} is held by {holders}, fewer than {need} running nodes")
            states = {}
            for n in holders:
                handle = app.disks[n].store.open(tenant, service)
                entries = tuple(sorted((e.name, e.value, e.stamp) for e in handle.entries()))
                clocks = tuple(sorted((o, s) for o, s in handle.clocks().items() if s))
                states[n] = (entries, clocks)
            first = holders[0] if holders else None
            for n in holders[1:]:
                assert first is not None
                if states[n][0] != states[first][0]:
                    self.violate_once("values", f"{tenant}/{service}: {first} and {n} differ after quiesce: "
                                                f"{_diff(states[first][0], states[n][0])}")
                elif states[n][1] != states[first][1]:
                    self.violate_once("clocks", f"{tenant}/{service}: version vectors differ after quiesce: {first} "
                                                f"{_fmt_clocks(states[first][1])}, {n} {_fmt_clocks(states[n][1])}")
        super().at_end()


class TenantIsolation(AppChecker):
    name = "tenant-isolation"
    events = frozenset({"c:recv", "c:data"})

    def __init__(self, app: SimApp) -> None:
        super().__init__(app)
        self._clients: dict[str, SimClient] = {}

    def on_event(self, row: Row) -> None:
        t, who, _, event, detail = row
        if event not in ("c:recv", "c:data"):
            return
        client = self._client(who)
        if client is None:
            return
        tenant = detail[1] if event == "c:recv" else detail[0]
        granted = self.app.credentials[client.spec.client_id].tenant
        if tenant != granted:
            self.violate_once("read", f"{t:.3f}s client {who} ({client.spec.client_id}, granted {granted!r}) "
                                      f"received {detail} of tenant {tenant!r}")
        elif tenant not in client.sessions and (event == "c:recv" or detail[1] == "VariablesData"):
            # Reads only: the answer to a write made while the session was open may come after it ended.
            self.violate_once("session", f"{t:.3f}s client {who} received {detail} of tenant {tenant!r} without a "
                                         "session there")

    def _client(self, name: str) -> SimClient | None:
        if name not in self._clients:
            found = next((c for c in self.app.clients if c.name == name), None)
            if found is None:
                return None
            self._clients[name] = found
        return self._clients[name]

    def at_end(self) -> None:
        writers = {c.name: c.spec.tenant for c in self.app.clients}
        for tenant, service in self.services():
            for n in self.holders(tenant, service):
                for e in self.app.disks[n].store.open(tenant, service).entries():
                    author = e.value.split(b":", 1)[0].decode("ascii", "replace")
                    if author in writers and writers[author] != tenant:
                        self.violate_once("write", f"{n}: {tenant}/{service}/{e.name} holds {e.value!r}, written by "
                                                   f"{author}, a client of tenant {writers[author]!r}")
        super().at_end()


class RevokedGetsNothing(AppChecker):
    name = "revoked-gets-nothing"
    events = CUTS | DATA_EVENTS | {"heal", "c:admin", "c:logged_out"}

    def __init__(self, app: SimApp) -> None:
        super().__init__(app)
        self._cut = False
        self._waiting: list[tuple[frozenset[str], float, str]] = []  # revoked during a cut: (names, at, why)
        self._deadlines: dict[str, tuple[float, float, str]] = {}  # client name -> (deadline, at, why)

    def on_event(self, row: Row) -> None:
        t, who, _, event, detail = row
        if event in CUTS:
            self._cut = True
        elif event == "heal":
            self._cut = False
            for names, at, why in self._waiting:
                self._start(names, t + ENFORCEMENT_BOUND, at, why + " (enforced from the heal)")
            self._waiting.clear()
        elif event == "c:admin" and detail[0] == "RevokeApiKey" and detail[2] == "AdminDone":
            rev = next((r for r in self.app.revocations if r.admin.name == who), None)
            if rev is not None:
                victim = self.app.client(rev.target).spec.client_id
                names = frozenset(c.name for c in self.app.clients if c.spec.client_id == victim)
                why = f"key of {victim} revoked via {rev.via} at {t:.3f}s"
                if self._cut:
                    self._waiting.append((names, t, why))
                else:
                    self._start(names, t + ENFORCEMENT_BOUND, t, why)
        elif event == "c:logged_out":
            self._start(frozenset({who}), t + ENFORCEMENT_BOUND, t, f"logged out at {t:.3f}s")
        elif event in DATA_EVENTS:
            found = self._deadlines.get(who)
            if found is not None and t > found[0]:
                self.violate_once("data", f"{t:.3f}s client {who} got {event} {detail} after its deadline "
                                          f"{found[0]:.3f}s ({found[2]})")

    def _start(self, names: frozenset[str], deadline: float, at: float, why: str) -> None:
        sched = self.cluster.sched
        for name in sorted(names):
            if name not in self._deadlines:
                self._deadlines[name] = (deadline, at, why)
                sched.at(sched.epoch + deadline, self._at_deadline, name)

    def _at_deadline(self, name: str) -> None:
        client = self.app.client(name)
        deadline, _, why = self._deadlines[name]
        if client.sessions:
            self.violate_once("alive", f"{deadline:.3f}s client {name} still holds a session on "
                                       f"{sorted(client.sessions)} at its deadline ({why})")

    def at_end(self) -> None:
        for name in sorted(self._deadlines):
            client = self.app.client(name)
            if client.sessions:
                self.violate_once("alive", f"client {name} holds a session on {sorted(client.sessions)} at the end "
                                           f"({self._deadlines[name][2]})")
        for _, _, why in self._waiting:
            self.violate_once("never", f"{why}: never enforced (no heal after it)")
        super().at_end()


class SessionsResume(AppChecker):
    name = "sessions-resume"
    events = frozenset({"c:recv"})

    def __init__(self, app: SimApp) -> None:
        super().__init__(app)
        self._last: dict[tuple[str, ...], tuple[int, str]] = {}  # (client, conn, tenant, variable) -> (stamp, kind)

    def on_event(self, row: Row) -> None:
        if row[3] != "c:recv":
            return
        t, who, _, _, (kind, tenant, name, stamp) = row
        client = self.app.client(who)
        conn = client.conn.conn_id if client.conn is not None else ""
        key = (who, conn, tenant, name)
        prev = self._last.get(key)
        if prev is not None and stamp < prev[0]:
            self.violate_once("order", f"{t:.3f}s client {who} on {client.node} got {tenant}/{name} stamp {stamp:#x} "
                                       f"({kind}) after {prev[0]:#x} ({prev[1]}) on the same connection")
        self._last[key] = (stamp, kind)

    def at_end(self) -> None:
        app = self.app
        drained = {d.target for d in app.drains}
        for client in app.clients:
            for t, request, code, detail, node in client.errors:
                if node in drained and code == UNAVAILABLE:
                    continue  # a draining node turns sessions away: the client goes elsewhere
                if request == "Resume" and code not in REFUSED_FOR_GOOD:
                    self.violate_once("resume-refused", f"{t:.3f}s a node refused client {client.name}'s Resume: "
                                                        f"{code}: {detail}")
                elif request == "" and client.revoked_at is None:
                    self.violate_once("dropped", f"{t:.3f}s client {client.name} (rights intact) was dropped by its "
                                                 f"node: {code}: {detail}")
            if client.phase in ("revoked", "logged_out"):
                continue
            if not client.sessions or client.phase != "ready":
                lost = client.failovers[-1] if client.failovers else None
                since = f", lost {lost.from_node} at {lost.lost_at:.3f}s" if lost and lost.resumed_at is None else ""
                self.violate_once("no-session", f"client {client.name} has no working session at the end "
                                                f"(phase {client.phase}{since})")
                continue
            spec = client.spec
            holders = self.holders(spec.tenant, spec.service)
            if not holders:
                continue
            handle = app.disks[holders[0]].store.open(spec.tenant, spec.service)
            for name in spec.subscribe:
                final = handle.read(name)
                seen = client.view.get(name)
                if final is None:
                    continue
                if seen is None or (seen.value, seen.stamp) != (final.value, final.stamp):
                    got = ("nothing" if seen is None
                           else f"{seen.value!r} stamp {seen.stamp:#x} ({seen.kind} from {seen.node})")
                    self.violate_once("final", f"client {client.name} (on {client.node}) last saw {spec.tenant}/{name} "
                                               f"= {got}; the final value is {final.value!r} stamp {final.stamp:#x}")
        super().at_end()


class MembersHealthyAtEnd(AppChecker):
    """After heal and quiesce every running member sees every other one HEALTHY, and a drained node
    LEFT (the heartbeat checkers' `AllHealthyAtEnd`, which knows nothing of drains)."""

    name = "all-healthy-at-end"

    def at_end(self) -> None:
        c, retired = self.cluster, self.app.retired
        members = self.running()
        for a in members:
            for b in [n for n in c.node_ids if c.running(n) and n != a]:
                want = "left" if b in retired else "healthy"
                state = peer_state(c, a, b)
                if state != want:
                    self.violate(f"{c.now:.3f}s {a} sees {b} {str(state).upper()} after heal and quiesce "
                                 f"(expected {want.upper()})")
        super().at_end()


class DrainCompletes(AppChecker):
    """Within DRAIN_BOUND seconds of a drain request, no client is connected to the drained node
    (each was told where to go, moved, and resumed there: `SessionsResume` checks that part)."""

    name = "drain-completes"
    events = frozenset({"c:admin"})

    def on_event(self, row: Row) -> None:
        t, who, _, _, detail = row
        if detail[0] != "DrainNode" or detail[2] != "AdminDone":
            return
        drain = next((d for d in self.app.drains if d.admin.name == who), None)
        if drain is not None:
            sched = self.cluster.sched
            sched.at(sched.now + DRAIN_BOUND, self._check, (drain.target, t))

    def _check(self, item: tuple[str, float]) -> None:
        node, since = item
        stuck = sorted(c.name for c in self.app.clients
                       if c.node == node and c.conn is not None and c.conn.state == "open")
        if stuck:
            self.violate(f"{self.cluster.now:.3f}s clients {stuck} are still connected to {node}, drained at "
                         f"{since:.3f}s")


def _fmt_clocks(clocks: tuple[tuple[int, int], ...]) -> str:
    return "{" + ", ".join(f"{o}:{s:#x}" for o, s in clocks) + "}"


def _diff(a: tuple[Any, ...], b: tuple[Any, ...]) -> str:
    da, db = {e[0]: e[1:] for e in a}, {e[0]: e[1:] for e in b}
    for name in sorted(set(da) | set(db)):
        if da.get(name) != db.get(name):
            return f"{name}: {_fmt_entry(da.get(name))} vs {_fmt_entry(db.get(name))}"
    return "?"


def _fmt_entry(e: Any) -> str:
    return "missing" if e is None else f"{e[0]!r} stamp {e[1]:#x}"


def cluster_checkers(app: SimApp) -> list[Checker]:
    """The heartbeat checkers (the nodes run the same monitor) plus the application's."""
    return [NoDeadLetters(), NoFalseDown(), DownDetection(), MembersHealthyAtEnd(app), AckedWritesKept(app),
            ReplicasConverge(app), TenantIsolation(app), RevokedGetsNothing(app), SessionsResume(app),
            DrainCompletes(app)]

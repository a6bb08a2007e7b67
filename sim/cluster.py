"""`SimCluster`: a cluster of real `commy.core.node.Node`s on one virtual clock and network.

Determinism: one `random.Random(seed)` per run hands out, in a fixed order, the seed of the
network's stream, of a stream for scenario decisions, and of one stream per node; each
incarnation of a node takes its `Node` seed from that node's stream, so restarting one node never
shifts the randomness of another. Nothing here reads the wall clock.

Faults are methods -- crash, restart, pause, resume, set_skew, jump_clock, partition,
partition_one_way, bridge, heal, break_link, configure -- that act now, and `schedule(at, action,
*args)` (or `faults=[Fault(...)]`) runs any of them at a virtual time. Each is recorded in the
trace, so checkers and timelines see faults and effects in one ordered stream. Called directly,
`restart` of a running node is a mistake and raises; scheduled, a crash of a crashed node or a
restart of a running one (two plans met on one node) does nothing but record a `skip` event,
detail `(action, "crashed" | "running")`.

A crash stops the node (`node.stop()`) and kills its host, so its timers and everything in
flight to it are discarded, and resets its client connections (`sim.client_net`: each client
hears it one latency later); `restart` builds a fresh Node (next incarnation) with the same
`build` callable and the same disk folder. A paused node's events are held and replayed at resume.
A scenario's application, if it brought one, is reachable as `app` (see `sim.scenarios`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from commy.core.node import Node
from commy.framing import DEFAULT_MAX_FRAME
from commy.messages import Envelope
from sim.host import SimHost
from sim.network import LinkConfig, Network
from sim.scheduler import EPOCH, Scheduler
from sim.trace import CHUNK, Trace

if TYPE_CHECKING:
    from sim.checkers import Checker

ACTIONS = frozenset({
    "crash", "restart", "pause", "resume", "set_skew", "jump_clock", "partition", "partition_one_way", "bridge",
    "heal", "break_link", "configure",
})


@dataclass(frozen=True, slots=True)
class Fault:
    """Run `SimCluster.<action>(*args, **kwargs)` at `at` seconds after the start."""

    at: float
    action: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


class SimCluster:
    """Nodes, network, clock, trace and checkers of one deterministic run."""

    def __init__(
        self,
        seed: int,
        node_ids: Sequence[str],
        build: Callable[[Node], None] | None = None,
        *,
        net: LinkConfig = LinkConfig(),
        faults: Iterable[Fault] = (),
        checkers: Iterable[Checker] = (),
        keep_rows: int = 0,
        max_frame: int = DEFAULT_MAX_FRAME,
        reconnect_delay: float = 0.05,
        disk_root: str | Path | None = None,
        epoch: float = EPOCH,
    ) -> None:
        if len(set(node_ids)) != len(node_ids) or not node_ids:
            raise ValueError(f"node ids must be unique and non-empty, got {list(node_ids)}")
        self.seed = seed
        self.node_ids = list(node_ids)
        self.build = build
        self.disk_root = Path(disk_root) if disk_root is not None else None
        master = random.Random(seed)
        self.sched = Scheduler(epoch)
        self.trace = Trace(keep=keep_rows)
        self.network = Network(self.sched, random.Random(master.getrandbits(64)), self.trace, self.node_ids, net,
                               max_frame=max_frame, reconnect_delay=reconnect_delay)
        self.rng = random.Random(master.getrandbits(64))
        """For scenario decisions (which node to crash, when): separate from nodes and network."""
        self._node_rngs = {n: random.Random(master.getrandbits(64)) for n in self.node_ids}
        self.hosts: dict[str, SimHost] = {}
        self.skews: dict[str, float] = dict.fromkeys(self.node_ids, 0.0)
        self.incarnations: dict[str, int] = dict.fromkeys(self.node_ids, 0)
        self.checkers: list[Checker] = []
        self.app: Any = None
        """The application a scenario runs on the nodes (`sim.app.SimApp`), if it brought one."""
        for checker in checkers:
            self.add_checker(checker)
        for n in self.node_ids:
            self._boot(n)
        self.network.start()
        for fault in faults:
            self.schedule(fault.at, fault.action, *fault.args, **fault.kwargs)

    # ---- queries

    @property
    def now(self) -> float:
        """Seconds since the start of the run."""
        return self.sched.now - self.sched.epoch

    def node(self, node_id: str) -> Node:
        return self.hosts[node_id].node

    def alive(self, node_id: str) -> bool:
        return self.hosts[node_id].alive

    def paused(self, node_id: str) -> bool:
        return self.hosts[node_id].paused

    def running(self, node_id: str) -> bool:
        """Alive and not paused: its actors are running."""
        host = self.hosts[node_id]
        return host.alive and not host.paused

    def reachable(self, a: str, b: str) -> bool:
        """Both running and the connection carries messages both ways right now."""
        net = self.network
        return self.running(a) and self.running(b) and net.link_up(a, b) and net.link_up(b, a)

    def disk_dir(self, node_id: str) -> Path | None:
        """The node's disk folder (kept across crashes), or None when the run has no disks."""
        if self.disk_root is None:
            return None
        path = self.disk_root / node_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def delivered(self) -> int:
        """Envelopes carried by the network and handed to a node."""
        return self.network.delivered

    # ---- checkers

    def add_checker(self, checker: Checker) -> None:
        self.checkers.append(checker)
        checker.attach(self)
        # A checker may name the only events it looks at (`events`): the others skip it.
        self.trace.subscribe(checker.on_event, getattr(checker, "events", None))

    @property
    def violations(self) -> list[str]:
        return [v for c in self.checkers for v in c.violations]

    def heal_and_quiesce(self, quiesce: float = 3.0) -> None:
        """Heal the network, resume paused nodes, let things settle, run end-of-run checks.

        Healing removes partitions and the message faults too (loss, duplication, reordering):
        with any loss left, "every pair HEALTHY" holds only most of the time, not at an instant.
        """
        self.heal()
        if any(link.cfg.loss or link.cfg.duplicate or link.cfg.reorder for link in self.network.links.values()):
            self.configure(loss=0.0, duplicate=0.0, reorder=0.0)
        for n in self.node_ids:
            if self.hosts[n].paused:
                self.resume(n)
        self.run_for(quiesce)
        for checker in self.checkers:
            checker.at_end()

    # ---- running

    def run_until(self, t: float) -> None:
        """Run until `t` seconds after the start."""
        self.sched.run_until(self.sched.epoch + t)

    def run_for(self, dt: float) -> None:
        self.sched.run_until(self.sched.now + dt)

    def run_until_condition(self, pred: Callable[[], bool], timeout: float) -> bool:
        """Run until `pred()` holds (checked after every event) or `timeout` seconds pass."""
        return self.sched.run_until(self.sched.now + timeout, pred)

    def schedule(self, at: float, action: str, *args: Any, **kwargs: Any) -> None:
        """Run the fault `action(*args, **kwargs)` at `at` seconds after the start."""
        if action not in ACTIONS:
            raise ValueError(f"unknown fault action {action!r}; one of {sorted(ACTIONS)}")
        self.sched.at(self.sched.epoch + at, self._run_fault, (action, args, kwargs))

    def _run_fault(self, item: tuple[str, tuple[Any, ...], dict[str, Any]]) -> None:
        action, args, kwargs = item
        if action in ("crash", "restart") and not kwargs and len(args) == 1 and args[0] in self.hosts:
            # Two plans may meet on one node (a scenario's and the command line's): a scheduled crash
            # of a crashed node, or restart of a running one, does nothing -- and says so in the trace.
            alive = self.hosts[args[0]].alive
            if (action == "crash") != alive:
                self._record(args[0], "skip", (action, "running" if alive else "crashed"))
                return
        getattr(self, action)(*args, **kwargs)

    def _record(self, node: str, event: str, detail: Any = None) -> None:
        self.trace.record(self.now, node, "sim", event, detail)

    # ---- nodes

    def _boot(self, node_id: str) -> None:
        self.incarnations[node_id] += 1
        host = SimHost(node_id, self.incarnations[node_id], self.sched, self.network, self.skews[node_id])
        self.hosts[node_id] = host
        self.network.attach(host)
        seed = self._node_rngs[node_id].getrandbits(64)
        node = Node(node_id, host, seed, log_sink=self._log_sink, observer=self._observer(node_id), strict=True)
        host.node = node
        if self.build is not None:
            self.build(node)

    def _observer(self, node_id: str) -> Callable[[str, Envelope, bool], None]:
        trace = self.trace
        buf = trace.buf
        append = buf.append
        sched = self.sched
        epoch = sched.epoch

        def observe(actor: str, env: Envelope, handled: bool) -> None:
            # Trace.record, inlined and flattened: this runs for every dispatch. A message from
            # another node that found its handler is already in the trace: the network records
            # its arrival with the wire bytes.
            msg_id = env.msg_id
            if msg_id and handled and env.sender.node != node_id:
                return
            # msg_id 0: a timer or a published event; otherwise a message between local actors.
            kind = ("recv" if msg_id else "local") if handled else "dead"
            body = env.body
            append((sched.now, node_id, actor, kind, body.TAG, env.sender.node, msg_id))
            if len(buf) >= CHUNK:
                trace.flush()
            if trace.active:
                trace.emit((sched.now - epoch, node_id, actor, kind, (type(body).__name__, env.sender.node, msg_id)))

        return observe

    def _log_sink(self, node: str, actor: str, level: str, event: str, fields: dict[str, object]) -> None:
        self.trace.record(self.now, node, actor, "log:" + event, (level, fields))

    def crash(self, node_id: str) -> None:
        """Kill the node: memory, timers and in-flight messages are lost; its disk folder stays."""
        host = self.hosts[node_id]
        if not host.alive:
            return
        host.alive = False  # first: nothing it does while stopping may reach the network
        host.held.clear()
        self._record(node_id, "crash", host.incarnation)
        host.node.stop()
        self.network.crashed(node_id)
        for conn in list(host.clients.values()):
            conn.server_crashed()

    def restart(self, node_id: str) -> None:
        """Boot a fresh incarnation of a crashed node (`build` runs again)."""
        if self.hosts[node_id].alive:
            raise ValueError(f"restart of {node_id}, which is running (crash it first)")
        self._record(node_id, "restart", self.incarnations[node_id] + 1)
        self._boot(node_id)
        self.network.restarted(node_id)

    def pause(self, node_id: str) -> None:
        """Freeze the node (think SIGSTOP or a long GC pause): its events wait for `resume`."""
        host = self.hosts[node_id]
        if host.alive and not host.paused:
            host.paused = True
            self._record(node_id, "pause")

    def resume(self, node_id: str) -> None:
        host = self.hosts[node_id]
        if not host.alive or not host.paused:
            return
        host.paused = False
        held = host.take_held()
        self._record(node_id, "resume", len(held))
        for fn, arg in held:  # in their original order, now
            self.sched.at(self.sched.now, _replay, (host, fn, arg))

    def set_skew(self, node_id: str, seconds: float) -> None:
        """Set the node's clock offset from virtual time (it persists across restarts)."""
        self.skews[node_id] = seconds
        self.hosts[node_id].skew = seconds
        self._record(node_id, "skew", seconds)

    def jump_clock(self, node_id: str, seconds: float) -> None:
        """Jump the node's clock by `seconds` (negative goes back); virtual time is unaffected."""
        self.set_skew(node_id, self.skews[node_id] + seconds)

    # ---- network faults

    def _groups(self, groups: Sequence[Iterable[str]]) -> list[list[str]]:
        out = [[g] if isinstance(g, str) else sorted(g) for g in groups]
        named = {n for g in out for n in g}
        rest = [n for n in self.node_ids if n not in named]
        return [*out, rest] if rest else out

    def partition(self, *groups: Iterable[str]) -> None:
        """Symmetric partition; nodes not named form one more group."""
        parts = self._groups(groups)
        for i, g in enumerate(parts):
            for h in parts[i + 1 :]:
                for a in g:
                    for b in h:
                        self.network.block(a, b)
                        self.network.block(b, a)
        self._record("*", "partition", tuple(tuple(g) for g in parts))  # after: checkers read the cuts

    def partition_one_way(self, srcs: Iterable[str], dsts: Iterable[str]) -> None:
        """Messages from `srcs` to `dsts` are lost; the other direction still works."""
        s, d = _names(srcs), _names(dsts)
        for a in s:
            for b in d:
                if a != b:
                    self.network.block(a, b)
        self._record("*", "partition_one_way", (tuple(s), tuple(d)))

    def bridge(self, left: Iterable[str], right: Iterable[str]) -> None:
        """`left` and `right` cannot talk to each other; every other node (the bridge) talks to both."""
        lft, rgt = _names(left), _names(right)
        for a in lft:
            for b in rgt:
                self.network.block(a, b)
                self.network.block(b, a)
        self._record("*", "bridge", (tuple(lft), tuple(rgt)))

    def heal(self) -> None:
        """Remove every partition."""
        if self.network.blocked_pairs():
            self._record("*", "heal")
        self.network.heal()

    def break_link(self, a: str, b: str) -> None:
        """Close the a<->b connection: both see LinkDown, then LinkUp after the reconnect delay."""
        self._record(a, "break_link", b)
        self.network.break_link(a, b)

    def configure(self, src: str | None = None, dst: str | None = None, **changes: Any) -> None:
        """Change link settings (latency, jitter, loss, ...) on links from src to dst (None: all)."""
        self._record(src or "*", "configure", (dst, tuple(sorted(changes.items()))))
        self.network.configure(src, dst, **changes)


def _replay(item: tuple[SimHost, Callable[[Any], None], Any]) -> None:
    host, fn, arg = item
    host.run(fn, arg)


def _names(nodes: Iterable[str]) -> list[str]:
    """Sorted node ids; a bare string is one node (and sets never leak their hash order)."""
    return [nodes] if isinstance(nodes, str) else sorted(nodes)

"""The director: the thespian actor on the convention leader that launches, supervises and stops the nodes.

It is a thin adapter over `commy.launch.supervision.Supervisor`: thespian events in, supervisor
calls, thespian sends and wake-ups out. `LaunchCluster` loads the configuration, subscribes to
convention changes (the leader's host counts as registered at once; a member host when its
`ActorSystemConventionUpdate` arrives) and creates one `NodeActor` per node on its host. Exits come
as `ChildActorExited` (twice, on TCP: the supervisor drops the second by generation), as
`NodeFailed`, as a start that outlives `ready_timeout`, or -- when a whole host died and thespian
says nothing -- from the status polls (a ready node that stops answering while most nodes see it
DOWN) and, later, from the convention (the host's registration lapsed: its nodes wait for it to
come back). Each is restarted after the supervisor's backoff.

Every `POLL_INTERVAL` seconds the director asks each ready node for its status (a node that hears
no poll for `launch.orphan_timeout` concludes its director is gone and stops itself); a
`StatusRequest` is answered with the rows of the next completed poll. `StopCluster` tells every
node to close cleanly and answers when all have (or after `STOP_TIMEOUT`). Requests from outside
carry a proof made with the cluster secret; one without a valid proof, or a replayed one, is
refused with an error.
"""

from __future__ import annotations

import os
import random
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from thespian.actors import (
    Actor,
    ActorExitRequest,
    ActorSystemConventionUpdate,
    ChildActorExited,
    WakeupMessage,
)

from commy.config import ClusterConfig, load_cluster_config
from commy.launch.control import (
    LaunchCluster,
    LaunchStatus,
    NodeFailed,
    NodeReady,
    NodeStatus,
    NodeStatusRequest,
    NodeStopped,
    StatusRequest,
    StopCluster,
    StopNode,
    proof_holds,
)
from commy.launch.node_actor import NodeActor
from commy.launch.supervision import NodeState, Supervisor
from commy.launch.systems import CAP_HOST, CAP_LEADER

POLL_INTERVAL = 2.0
POLL_WAIT = 1.0  # how long a poll waits for the nodes' answers
STOP_TIMEOUT = 20.0
START_MARGIN = 10.0  # beyond ready_timeout (the node's own limit), so the node's NodeFailed comes first
SEEN_REQUESTS = 1000  # request ids remembered to refuse a replayed request


@dataclass(frozen=True, slots=True)
class _Restart:
    node_id: str
    generation: int


@dataclass(frozen=True, slots=True)
class _StartTimeout:
    node_id: str
    generation: int


@dataclass(frozen=True, slots=True)
class _PollDue:
    pass


@dataclass(frozen=True, slots=True)
class _PollDone:
    poll: int


@dataclass(frozen=True, slots=True)
class _Deadline:
    """The launch (or stop) answer is due even if not every node got there."""

    request: str


class Director(Actor):
    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any], requirements: Any) -> bool:
        return capabilities.get(CAP_LEADER) is True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config: ClusterConfig | None = None
        self.sup: Supervisor | None = None
        # (actor address, node id, generation): matched by ==, because the address createActor returns
        # is a placeholder whose str() differs from the one ChildActorExited carries.
        self.children: list[tuple[Any, str, int]] = []
        self.addresses: dict[str, Any] = {}  # node id -> its current actor's address
        self.launches: dict[str, tuple[Any, tuple[str, ...]]] = {}  # request -> (requester, hosts waited for)
        self.stops: dict[str, Any] = {}  # request -> requester
        self.statuses: dict[str, Any] = {}  # request -> requester, answered after the next poll
        self.poll = 0
        self.poll_open = False
        self.asked: dict[str, int] = {}  # node id -> generation, of the nodes the open poll asked
        self.answers: dict[str, NodeStatus] = {}
        self.polling = False
        self.seen: deque[str] = deque(maxlen=SEEN_REQUESTS)

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        handler = _HANDLERS.get(type(msg))
        if handler is not None:
            handler(self, msg, sender)

    def _refused(self, msg: LaunchCluster | StatusRequest | StopCluster, secret: bytes) -> str:
        """Why a request from outside is refused ("" when it is not): a wrong proof or a replay."""
        if not proof_holds(secret, msg):
            return "refused: the request is not signed with this cluster's secret"
        if msg.request in self.seen:
            return "refused: this request was already answered (a replay?)"
        self.seen.append(msg.request)
        return ""

    # ---- launching

    def _launch(self, msg: LaunchCluster, sender: Any) -> None:
        if self.sup is not None:
            assert self.config is not None
            error = self._refused(msg, self.config.secret) or (
                f"cluster {self.sup.cluster} is already launched (commy status shows it; commy stop ends it)")
            self.send(sender, self._status_of(msg.request, error=error))
            return
        try:
            config = load_cluster_config(msg.config_path)
        except Exception as exc:
            self.send(sender, LaunchStatus(msg.request, "", error=str(exc)))
            return
        refused = self._refused(msg, config.secret)
        if refused:
            self.send(sender, LaunchStatus(msg.request, "", error=refused))
            return
        self.config = config
        self.sup = Supervisor.build(config.name, msg.config_path, [(n.id, n.host) for n in config.nodes],
                                    restart_min=config.launch.restart_min, restart_max=config.launch.restart_max,
                                    rng=random.Random())
        self.launches[msg.request] = (sender, msg.wait_hosts)
        self.wakeupAfter(timedelta(seconds=config.launch.ready_timeout), payload=_Deadline(msg.request))
        self.notifyOnSystemRegistrationChanges(True)
        self._host(config.leader.name, True)
        self._schedule_poll()

    def _convention(self, msg: ActorSystemConventionUpdate, sender: Any) -> None:
        host = (msg.remoteCapabilities or {}).get(CAP_HOST)
        if isinstance(host, str):
            self._host(host, bool(msg.remoteAdded))

    def _host(self, host: str, up: bool) -> None:
        if self.sup is None:
            return
        for node_id in self.sup.host_changed(host, up):
            self._start(node_id)
        if not up:  # its actor system is gone, and with it every node actor there (thespian says nothing)
            for node_id, generation in self.sup.running_on(host):
                self._retire(node_id)
                self._exited(node_id, generation, f"host {host} left the convention")

    def _start(self, node_id: str) -> None:
        assert self.sup is not None and self.config is not None
        start = self.sup.start(node_id)
        host = self.sup.records[node_id].host
        address = self.createActor(NodeActor, targetActorRequirements={"host": host})
        self.children.append((address, node_id, start.generation))
        self.addresses[node_id] = address
        self.send(address, start)
        self.wakeupAfter(timedelta(seconds=self.config.launch.ready_timeout + START_MARGIN),
                         payload=_StartTimeout(node_id, start.generation))

    def _ready(self, msg: NodeReady, sender: Any) -> None:
        if self.sup is not None and self.sup.ready(msg, time.monotonic()):
            self._answer_launches(final=False)

    def _answer_launches(self, final: bool, only: str = "") -> None:
        assert self.sup is not None and self.config is not None
        for request, (requester, hosts) in list(self.launches.items()):
            if only and request != only:
                continue
            if self.sup.settled(hosts) or final:
                del self.launches[request]
                late = [r.node_id for r in self.sup.records.values()
                        if r.state is not NodeState.READY and (not hosts or r.host in hosts)]
                error = f"not ready after {self.config.launch.ready_timeout:g} s: {', '.join(late)}" if late else ""
                self.send(requester, self._status_of(request, error=error))

    # ---- exits and restarts

    def _exited(self, node_id: str, generation: int, detail: str) -> None:
        assert self.sup is not None
        delay = self.sup.exited(node_id, generation, time.monotonic(), detail)
        if delay is not None:
            self.wakeupAfter(timedelta(seconds=delay), payload=_Restart(node_id, generation))
        self._answer_stops(final=False)

    def _child_exited(self, msg: ChildActorExited, sender: Any) -> None:
        known = self._forget(msg.childAddress)  # the second notice finds nothing
        if known is not None and self.sup is not None:
            self._exited(*known, detail="its process ended")

    def _forget(self, address: Any) -> tuple[str, int] | None:
        for i, (child, node_id, generation) in enumerate(self.children):
            if child == address:
                del self.children[i]
                return node_id, generation
        return None

    def _failed(self, msg: NodeFailed, sender: Any) -> None:
        if self.sup is None:
            return
        if msg.permanent:
            if self.sup.failed_for_good(msg.node_id, msg.generation, f"cannot start: {msg.detail}"):
                self._answer_launches(final=False)
        else:
            self._exited(msg.node_id, msg.generation, f"start failed: {msg.detail}")

    def _wakeup(self, msg: WakeupMessage, sender: Any) -> None:
        p = msg.payload
        if self.sup is None:
            return
        if isinstance(p, _Restart) and self.sup.due(p.node_id, p.generation):
            self._start(p.node_id)
        elif isinstance(p, _StartTimeout):
            r = self.sup.records.get(p.node_id)
            if r is not None and r.generation == p.generation and r.state is NodeState.STARTING:
                self._retire(p.node_id)
                self._exited(p.node_id, p.generation, "did not report ready in time")
        elif isinstance(p, _PollDue):
            self.polling = False
            self._start_poll()
            self._schedule_poll()
        elif isinstance(p, _PollDone) and p.poll == self.poll and self.poll_open:
            self._finish_poll()
        elif isinstance(p, _Deadline):
            self._answer_launches(final=True, only=p.request)
            if p.request in self.stops:
                self._answer_stops(final=True)

    def _retire(self, node_id: str) -> None:
        """End a node's actor the director gave up on (it may be alive but stuck)."""
        address = self.addresses.get(node_id)
        if address is not None:
            self._forget(address)
            self.send(address, ActorExitRequest())

    # ---- status polls

    def _schedule_poll(self) -> None:
        if not self.polling:
            self.polling = True
            self.wakeupAfter(timedelta(seconds=POLL_INTERVAL), payload=_PollDue())

    def _start_poll(self) -> None:
        if self.poll_open or self.sup is None:
            return
        self.poll += 1
        self.poll_open = True
        self.answers = {}
        self.asked = self.sup.pollable()
        for node_id in self.asked:
            self.send(self.addresses[node_id], NodeStatusRequest(self.poll))
        self.wakeupAfter(timedelta(seconds=POLL_WAIT), payload=_PollDone(self.poll))

    def _node_status(self, msg: NodeStatus, sender: Any) -> None:
        if self.sup is None or msg.poll != self.poll or not self.poll_open:
            return
        if self.asked.get(msg.node_id) == msg.generation:
            self.answers[msg.node_id] = msg
        if all(node_id in self.answers for node_id in self.asked):
            self._finish_poll()

    def _finish_poll(self) -> None:
        assert self.sup is not None
        self.poll_open = False
        for node_id, generation in self.sup.lost_by_membership(self.asked, self.answers):
            self._retire(node_id)
            self._exited(node_id, generation, "peers see it DOWN and it does not answer")
        for request, requester in list(self.statuses.items()):
            del self.statuses[request]
            self.send(requester, self._status_of(request))

    def _status(self, msg: StatusRequest, sender: Any) -> None:
        if self.sup is None or self.config is None:
            self.send(sender, LaunchStatus(msg.request, "", error="no cluster is launched here"))
            self.send(self.myAddress, ActorExitRequest())  # the asking created this director: leave no trace
            return
        refused = self._refused(msg, self.config.secret)
        if refused:
            self.send(sender, LaunchStatus(msg.request, self.sup.cluster, error=refused))
            return
        self.statuses[msg.request] = sender
        self._start_poll()

    def _status_of(self, request: str, error: str = "") -> LaunchStatus:
        assert self.sup is not None
        hosts = tuple((h.name, h.name in self.sup.hosts_up) for h in self.config.hosts) if self.config else ()
        return LaunchStatus(request, self.sup.cluster, self.sup.rows(self.answers, time.monotonic()), hosts, error,
                            os.getpid())

    # ---- stopping

    def _stop(self, msg: StopCluster, sender: Any) -> None:
        if self.sup is None or self.config is None:
            self.send(sender, LaunchStatus(msg.request, "", error="no cluster is launched here"))
            self.send(self.myAddress, ActorExitRequest())
            return
        refused = self._refused(msg, self.config.secret)
        if refused:
            self.send(sender, LaunchStatus(msg.request, self.sup.cluster, error=refused))
            return
        self.stops[msg.request] = sender
        for node_id, generation in self.sup.stop_all():
            self.send(self.addresses[node_id], StopNode(generation))
        self.wakeupAfter(timedelta(seconds=STOP_TIMEOUT), payload=_Deadline(msg.request))
        self._answer_stops(final=False)

    def _stopped(self, msg: NodeStopped, sender: Any) -> None:
        if self.sup is not None:
            self.sup.stopped(msg.node_id, msg.generation)
            self._answer_stops(final=False)

    def _answer_stops(self, final: bool) -> None:
        if self.sup is None or not self.stops or not (final or self.sup.all_stopped()):
            return
        left = [r.node_id for r in self.sup.records.values() if r.state is not NodeState.STOPPED]
        for request, requester in list(self.stops.items()):
            del self.stops[request]
            self.send(requester, self._status_of(request, error=f"did not stop: {', '.join(left)}" if left else ""))


_HANDLERS: dict[type, Any] = {
    LaunchCluster: Director._launch,
    ActorSystemConventionUpdate: Director._convention,
    NodeReady: Director._ready,
    ChildActorExited: Director._child_exited,
    NodeFailed: Director._failed,
    WakeupMessage: Director._wakeup,
    NodeStatus: Director._node_status,
    StatusRequest: Director._status,
    StopCluster: Director._stop,
    NodeStopped: Director._stopped,
}

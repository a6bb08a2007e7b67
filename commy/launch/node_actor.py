"""The node actor: a thespian actor whose process runs one commy node (`NodeRuntime`).

The director creates it on the host the configuration names (`actorSystemCapabilityCheck` on the
`commy_host` capability) and sends `StartNode`. The actor reads its host's copy of the
configuration (`COMMY_LAUNCH_CONFIG`, set when the host's system was started; else the leader's
path), checks it names the same cluster, starts the node, and answers `NodeReady` -- or
`NodeFailed` and ends itself (a configuration problem is `permanent`: retrying cannot mend it).
It answers status polls from the node's snapshot, and on `StopNode` (or thespian's
`ActorExitRequest`) closes the node cleanly. Killing its process kills the node; the director
hears of it and starts another. The polls are also the director's heartbeat: a ready node that
hears none for `launch.orphan_timeout` seconds -- its director was killed, so nothing supervises
it and a new launch would start a second copy -- closes itself and ends.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from thespian.actors import Actor, ActorExitRequest, WakeupMessage

from commy.config import load_cluster_config
from commy.launch.control import (
    NodeFailed,
    NodeReady,
    NodeStatus,
    NodeStatusRequest,
    NodeStopped,
    StartNode,
    StopNode,
)
from commy.launch.node_runtime import NodeRuntime
from commy.launch.systems import CAP_HOST, CONFIG_ENV


@dataclass(frozen=True, slots=True)
class _OrphanCheck:
    pass


class _WrongConfig(Exception):
    """This host's configuration cannot run the node (retrying will not help)."""


class NodeActor(Actor):
    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any], requirements: Any) -> bool:
        return isinstance(requirements, dict) and capabilities.get(CAP_HOST) == requirements.get("host")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime: NodeRuntime | None = None
        self.node_id = ""
        self.generation = 0
        self.orphan_timeout = 0.0
        self.last_poll = 0.0

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, StartNode):
            self._start(msg, sender)
        elif isinstance(msg, NodeStatusRequest) and self.runtime is not None:
            self.last_poll = time.monotonic()
            self._status(msg, sender)
        elif isinstance(msg, WakeupMessage) and isinstance(msg.payload, _OrphanCheck):
            self._check_orphaned()
        elif isinstance(msg, StopNode):
            self._close()
            self.send(sender, NodeStopped(self.node_id, self.generation))
            self.send(self.myAddress, ActorExitRequest())
        elif isinstance(msg, ActorExitRequest):
            self._close()

    def _start(self, msg: StartNode, sender: Any) -> None:
        if self.runtime is not None:
            return  # one node per actor: a repeated StartNode changes nothing
        self.node_id, self.generation = msg.node_id, msg.generation
        try:
            try:
                config = load_cluster_config(os.environ.get(CONFIG_ENV) or msg.config_path)
            except Exception as exc:
                raise _WrongConfig(str(exc)) from exc
            if config.name != msg.cluster:
                raise _WrongConfig(f"this host's configuration ({config.path}) is cluster {config.name!r}, "
                                   f"not {msg.cluster!r}")
            if all(n.id != msg.node_id for n in config.nodes):
                raise _WrongConfig(f"this host's configuration ({config.path}) has no node {msg.node_id!r}")
            runtime = NodeRuntime(config, msg.node_id)
            runtime.start(timeout=config.launch.ready_timeout)
        except Exception as exc:
            detail = (str(exc).splitlines() or [type(exc).__name__])[0][:500]
            self.send(sender, NodeFailed(msg.node_id, msg.generation, detail, isinstance(exc, _WrongConfig)))
            self.send(self.myAddress, ActorExitRequest())
            return
        self.runtime = runtime
        self.orphan_timeout, self.last_poll = config.launch.orphan_timeout, time.monotonic()
        self.wakeupAfter(timedelta(seconds=self.orphan_timeout / 4), payload=_OrphanCheck())
        self.send(sender, NodeReady(msg.node_id, msg.generation, os.getpid(), runtime.url, runtime.peer))

    def _check_orphaned(self) -> None:
        if self.runtime is None:
            return
        silent = time.monotonic() - self.last_poll
        if silent < self.orphan_timeout:
            self.wakeupAfter(timedelta(seconds=self.orphan_timeout / 4), payload=_OrphanCheck())
            return
        logging.warning("commy node %s: no word from the director for %.0f s; stopping (nothing supervises it)",
                        self.node_id, silent)
        self._close()
        self.send(self.myAddress, ActorExitRequest())

    def _status(self, msg: NodeStatusRequest, sender: Any) -> None:
        assert self.runtime is not None
        try:
            s = self.runtime.status()
        except Exception:
            return
        self.send(sender, NodeStatus(self.node_id, self.generation, msg.poll, s.clients, s.services,
                                     s.lag_p99_ms, s.peers))

    def _close(self) -> None:
        if self.runtime is not None:
            self.runtime.stop()
            self.runtime = None

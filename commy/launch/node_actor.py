"""The node actor: a thespian actor whose process runs one commy node (`NodeRuntime`).

The director creates it on the host the configuration names (`actorSystemCapabilityCheck` on the
`commy_host` capability) and sends `StartNode`. The actor reads its host's copy of the
configuration (`COMMY_LAUNCH_CONFIG`, set when the host's system was started; else the leader's
path), checks it names the same cluster, starts the node, and answers `NodeReady` -- or
`NodeFailed` and ends itself. It answers status polls from the node's snapshot, and on `StopNode`
(or thespian's `ActorExitRequest`) closes the node cleanly. Killing its process kills the node;
the director hears of it and starts another.
"""

from __future__ import annotations

import os
from typing import Any

from thespian.actors import Actor, ActorExitRequest

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


class NodeActor(Actor):
    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any], requirements: Any) -> bool:
        return isinstance(requirements, dict) and capabilities.get(CAP_HOST) == requirements.get("host")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime: NodeRuntime | None = None
        self.node_id = ""
        self.generation = 0

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, StartNode):
            self._start(msg, sender)
        elif isinstance(msg, NodeStatusRequest) and self.runtime is not None:
            self._status(msg, sender)
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
            config = load_cluster_config(os.environ.get(CONFIG_ENV) or msg.config_path)
            if config.name != msg.cluster:
                raise RuntimeError(f"this host's configuration ({config.path}) is cluster {config.name!r}, "
                                   f"not {msg.cluster!r}")
            runtime = NodeRuntime(config, msg.node_id)
            runtime.start(timeout=config.launch.ready_timeout)
        except Exception as exc:
            self.send(sender, NodeFailed(msg.node_id, msg.generation, str(exc).splitlines()[0][:500]))
            self.send(self.myAddress, ActorExitRequest())
            return
        self.runtime = runtime
        self.send(sender, NodeReady(msg.node_id, msg.generation, os.getpid(), runtime.url, runtime.peer))

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

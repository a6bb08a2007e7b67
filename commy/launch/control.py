"""The control messages `commy launch` exchanges through thespian (pickled by thespian itself).

They carry ids, names, paths and numbers only -- never the cluster secret, a key or a token:
thespian's transport trusts its network, so nothing on it may be worth stealing. Every request from
outside (the `commy` command) carries a `request` id that its answer repeats, because a thespian
client receives replies from any actor in any order (`ask()` does not correlate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DIRECTOR_NAME = "commy-director"  # the director's thespian global name, on the convention leader


# ---- the command -> the director


@dataclass(frozen=True, slots=True)
class LaunchCluster:
    """Start every node of the configuration at `config_path` (the leader's copy); answered by
    `LaunchStatus` once the nodes of `wait_hosts` (all hosts when empty) are ready or failed."""

    request: str
    config_path: str
    wait_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StatusRequest:
    request: str


@dataclass(frozen=True, slots=True)
class StopCluster:
    """Stop every node cleanly (each leaves the cluster); answered by `LaunchStatus` when done."""

    request: str


# ---- the director -> the command


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One node as `commy status` prints it."""

    node_id: str
    host: str
    state: str
    restarts: int = 0
    pid: int = 0
    url: str = ""
    peer: str = ""
    uptime: float = 0.0  # seconds since the node last became ready
    clients: int = -1  # -1: unknown (the node did not answer)
    services: int = -1
    lag_p99_ms: float = -1.0
    peers: tuple[tuple[str, str], ...] = ()  # (peer id, state) as this node sees them
    detail: str = ""  # the last failure, if any


@dataclass(frozen=True, slots=True)
class LaunchStatus:
    request: str
    cluster: str
    nodes: tuple[NodeRow, ...] = ()
    hosts: tuple[tuple[str, bool], ...] = ()  # (host name, its actor system is registered)
    error: str = ""


# ---- the director <-> a node actor


@dataclass(frozen=True, slots=True)
class StartNode:
    """Run node `node_id`; `generation` numbers the director's attempts, so a late message of an
    older attempt is recognised and dropped."""

    node_id: str
    generation: int
    cluster: str  # the node actor checks its host's configuration names the same cluster
    config_path: str  # the leader's copy: used when the host has no COMMY_LAUNCH_CONFIG of its own


@dataclass(frozen=True, slots=True)
class NodeReady:
    node_id: str
    generation: int
    pid: int
    url: str
    peer: str


@dataclass(frozen=True, slots=True)
class NodeFailed:
    """The node could not start (a bad configuration, a port in use); the director retries later."""

    node_id: str
    generation: int
    detail: str


@dataclass(frozen=True, slots=True)
class NodeStatusRequest:
    poll: int


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node_id: str
    generation: int
    poll: int
    clients: int
    services: int
    lag_p99_ms: float
    peers: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class StopNode:
    """Close the node cleanly, then answer `NodeStopped`; the director then ends the actor."""

    generation: int


@dataclass(frozen=True, slots=True)
class NodeStopped:
    node_id: str
    generation: int

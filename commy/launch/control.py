"""The control messages `commy launch` exchanges through thespian (pickled by thespian itself).

They carry ids, names, paths and numbers only -- never the cluster secret, a key or a token:
thespian's transport trusts its network, so nothing on it may be worth stealing. Every request from
outside (the `commy` command) carries a `request` id that its answer repeats, because a thespian
client receives replies from any actor in any order (`ask()` does not correlate), and a `proof`:
an HMAC of the request with the cluster secret, so only someone who holds the secret can launch,
inspect or stop the cluster through the director (`request_proof`, checked by `proof_holds`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field, replace
from typing import TypeVar

A = TypeVar("A", "LaunchCluster", "StatusRequest", "StopCluster")

DIRECTOR_NAME = "commy-director"  # the director's thespian global name, on the convention leader


# ---- the command -> the director


@dataclass(frozen=True, slots=True)
class LaunchCluster:
    """Start every node of the configuration at `config_path` (the leader's copy); answered by
    `LaunchStatus` once the nodes of `wait_hosts` (all hosts when empty) are ready or failed."""

    request: str
    config_path: str
    wait_hosts: tuple[str, ...] = ()
    proof: str = ""


@dataclass(frozen=True, slots=True)
class StatusRequest:
    request: str
    proof: str = ""


@dataclass(frozen=True, slots=True)
class StopCluster:
    """Stop every node cleanly (each leaves the cluster); answered by `LaunchStatus` when done."""

    request: str
    proof: str = ""


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
    director_pid: int = 0


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
    """The node could not start: a port in use and the like (the director retries later), or -- when
    `permanent` -- a configuration on its host that retrying cannot mend (the node is marked failed)."""

    node_id: str
    generation: int
    detail: str
    permanent: bool = False


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


# ---- proofs

def request_proof(secret: bytes, kind: str, request: str) -> str:
    """The HMAC-SHA256 of one request (its kind and id) with the cluster secret, in hex."""
    return hmac.new(secret, f"commy-launch\0{kind}\0{request}".encode(), hashlib.sha256).hexdigest()


def proof_holds(secret: bytes, msg: LaunchCluster | StatusRequest | StopCluster) -> bool:
    return hmac.compare_digest(msg.proof, request_proof(secret, type(msg).__name__, msg.request))


def proved(secret: bytes, msg: A) -> A:
    """`msg` with its proof filled in."""
    return replace(msg, proof=request_proof(secret, type(msg).__name__, msg.request))

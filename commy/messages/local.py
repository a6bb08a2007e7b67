"""Local-only messages (tags 1000+): timers and events an actor receives from its own node.

They never cross a wire (the default codec cannot decode them), but they are registered like the
others so traces and the dead-letter checks treat every message alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from commy.messages.base import LOCAL, Message, message

# --------------------------------------------------------------------------- local only (1000+)


@message(1000, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class LinkUp(Message):
    """The runtime has a working connection to `peer`."""

    peer: str


@message(1001, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class LinkDown(Message):
    """The connection to `peer` closed or failed; `reason` says why (an error code or 'closed')."""

    peer: str
    reason: str
    detail: str


@message(1002, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class HeartbeatTick(Message):
    """Timer: time for the heartbeat monitor's next round."""


@message(1003, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class PeerStateChanged(Message):
    """Published by the heartbeat monitor when its view of a peer changes."""

    peer: str
    old: str
    new: str
    at: float


@message(1010, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class ClientConnected(Message):
    """From the gateway: a client connection opened. `local`: it comes from this machine."""

    conn_id: str
    local: bool
    peer: str


@message(1011, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class ClientDisconnected(Message):
    """From the gateway: the connection is gone (`closed`, `stalled`, `bad_frame`, ...)."""

    conn_id: str
    reason: str


@message(1012, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class CloseClient(Message):
    """To the gateway: send `Error(code, detail)` (when code is not empty) and close the connection."""

    code: str
    detail: str


@message(1013, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class DelegatedAuthRequest(Message):
    """To the auth-hook runner: ask `hook` whether `credential` opens `tenant`; answer quoting `ref`."""

    ref: str
    tenant: str
    hook: str
    credential: str


@message(1014, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class DelegatedAuthResult(Message):
    """From the auth-hook runner: the client id the hook vouched for, or "" with the reason."""

    ref: str
    client_id: str
    detail: str


@message(1015, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class ClientSweepTick(Message):
    """Timer: time to drop clients whose heartbeats stopped and to prune expired state."""


@message(1016, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class LocalPollTick(Message):
    """Timer: look at the mapped service files for writes made directly by local clients."""


@message(1017, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class CatalogChanged(Message):
    """Published when the tenant catalog changed, so the runtime can persist it."""

    snapshot: bytes

"""Local-only messages (tags 1000+): timers and events an actor receives from its own node.

They never cross a wire (the default codec cannot decode them), but they are registered like the
others so traces and the dead-letter checks treat every message alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from commy.messages.base import LOCAL, Message, message
from commy.messages.client import VariableChanged, VariablesUpdated
from commy.messages.cluster import MemberInfo, SessionRecord, WriteRecord

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


# --------------------------------------------------------------------------- cluster (1020+)


@message(1020, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class MemberUp(Message):
    """Published by the membership actor: `member` is known (joined, or came back with a new
    incarnation). The heartbeat monitor starts watching it; the runtime learns its address."""

    member: MemberInfo


@message(1021, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class MemberLeft(Message):
    """Published by the membership actor: `node_id` announced a graceful leave."""

    node_id: str


@message(1022, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class MembershipTick(Message):
    """Timer: retry joining through the seeds until one answers."""


@message(1023, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class WritesMade(Message):
    """Hub -> replicator: writes just applied here (already stamped and in the file), to stream to
    the other holders. `concern` "local" needs no answer. Otherwise the replicator answers the
    client `conn` (request id `request_id`) with `reply` once enough holders acknowledged, or with
    an `Error` (outcome_unknown) when they do not in time."""

    tenant: str
    service: str
    writes: tuple[WriteRecord, ...]
    concern: str
    conn: str
    request_id: int
    reply: VariablesUpdated | None


@message(1024, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class RemoteWrites(Message):
    """Replicator -> hub: writes from other nodes that won here and are now in the file, for the
    hub to announce to its subscribers."""

    changes: tuple[VariableChanged, ...]


@message(1025, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class ReplicationTick(Message):
    """Timer: time for a round of anti-entropy digests."""


@message(1026, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class ConcernTimeout(Message):
    """Timer: the write waiting for acknowledgements under `ref` ran out of time."""

    ref: int


@message(1027, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class TransferTimeout(Message):
    """Timer: the snapshot transfer `transfer_id` made no progress; resume it or give it up."""

    transfer_id: str


@message(1028, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class CatalogSyncTick(Message):
    """Timer: time to send the catalog digest to the peers."""


@message(1029, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class MergeCatalog(Message):
    """Catalog sync -> hub: a peer's catalog snapshot to merge (newest stamp wins) and enforce."""

    snapshot: bytes


@message(1030, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class EnsureService(Message):
    """Hub -> replicator: a client wants (tenant, service), which has no file here yet: fetch the
    newest state from a holder first (resurrection), then answer `ServiceReady`."""

    tenant: str
    service: str


@message(1031, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class ServiceReady(Message):
    """Replicator -> hub: (tenant, service) is as fresh here as the holders could make it.
    `fetched`: state came from a holder; false: no holder answered in time (it starts empty)."""

    tenant: str
    service: str
    fetched: bool


@message(1032, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class Leave(Message):
    """Runtime -> membership: announce a graceful leave to every member (shutdown or drain)."""


@message(1033, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class MigrationRecorded(Message):
    """Hub -> failover manager: one client moved (or was asked to): from where, to where, why, and
    how it ended (`resumed`, `acknowledged`, `moved`, `closed`, `refused`)."""

    session_id: str
    client_id: str
    from_node: str
    to_node: str
    reason: str
    outcome: str
    at: float


@message(1034, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class LoadTick(Message):
    """Timer: time to send this hub's `LoadReport` (and, while draining, to check on the drain)."""


@message(1040, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class SessionsChanged(Message):
    """Hub -> session sync (published): the sessions of one connection as they are now (`records`,
    `updated_at` left 0 for the session sync to stamp), and sessions that ended for good (`ended`,
    their ids: a logout)."""

    records: tuple[SessionRecord, ...]
    ended: tuple[str, ...]


@message(1041, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class FindSession(Message):
    """Hub -> session sync: the record of `session_id`, for a `Resume`; answered with `SessionFound`."""

    ref: str
    session_id: str


@message(1042, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class SessionFound(Message):
    """Session sync -> hub: the record asked for by `ref` (none: unknown or expired), and whether the
    session ended for good (a logout: it must not be resumed). The hub's own timer sends an empty
    one if the session sync does not answer."""

    ref: str
    records: tuple[SessionRecord, ...]
    ended: bool


@message(1043, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class SessionPushTick(Message):
    """Timer: the session sync may push again (at most one push per debounce interval)."""


@message(1044, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class SessionResyncTick(Message):
    """Timer: time to forget expired records and send this node's own records to every live peer
    again (repairs a lost push)."""


@message(1035, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class ReplicationFlush(Message):
    """Timer (zero delay): stream the writes gathered during this turn of the loop, one `Replicate`
    per service and target instead of one per client request."""


@message(1050, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class ClockCatchingUp(Message):
    """Replicator -> hub (published): the node started at `since` (ctx.now()) and its clock is catching
    up with its peers'. A restart may have lost the disk while the wall clock went back: stamps made
    now could sort below the ones this node issued before, which peers would drop as duplicates. The
    hub refuses writes (`unavailable`) and leaves local mapped writes unstamped until `ClockSynced`."""

    since: float


@message(1051, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class ClockSynced(Message):
    """Replicator -> hub (published): the clock has observed a digest from every live peer
    (`complete`), or the bounded wait ended without (`complete` false): writes may be stamped again.
    `waited`: seconds since the node started."""

    waited: float
    complete: bool


@message(1052, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class ClockCatchUpTimer(Message):
    """Timer (zero delay, set at start): tell the hub -- spawned after the replicator, so it misses
    anything published from `started` -- that the clock is catching up (`ClockCatchingUp`)."""


@message(1053, scope=LOCAL)
@dataclass(frozen=True, slots=True)
class ReplicateResend(Message):
    """Timer: send the `Replicate` of streamed batch `batch` again to the holders whose ack for it
    is still missing (a lost message or a lost ack), while a write concern waits on it."""

    batch: int

"""The cluster protocol (server <-> server, over authenticated links): membership, replication,
anti-entropy, catalog and session sync. Tags 18-19 and 21-49 (the rest of the peer range is in
`peer.py`).

Shared records: `MemberInfo` (who a node is and where to reach it), `Clock` (one entry of a
service's version vector: the newest stamp from one origin node that this holder has without a
gap), `WriteRecord` (one replicated write: value, its hybrid-logical-clock stamp, the stamp of the
origin's previous write to the same service -- so a receiver can tell a gap -- and the client that
wrote it).

A stamp (see `commy.core.hlc`) is one u64 that orders writes cluster-wide and names its origin:
milliseconds, a logical counter and the origin node's index, so `stamp & 0xFF` is the origin.
"""

from __future__ import annotations

from dataclasses import dataclass

from commy.messages.base import Message, message

# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A cluster member: id, index (1-255, from the configuration; stamps carry it), where its peer
    transport listens, its client URL, and its incarnation (bumped by each restart)."""

    node_id: str
    index: int
    peer_host: str
    peer_port: int
    client_url: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class Clock:
    """One version-vector entry: the holder has every write from `origin` up to `stamp`."""

    origin: int
    stamp: int


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """One write as replicated. `prev` is the stamp of the origin's previous write to this service
    (0 when unknown, as in a sync); `writer` is the client id that made it ("" if none)."""

    name: str
    value: bytes
    stamp: int
    prev: int
    writer: str


@dataclass(frozen=True, slots=True)
class ServiceClocks:
    """A service's version vector, as sent in digests."""

    tenant: str
    service: str
    clocks: tuple[Clock, ...]


# --------------------------------------------------------------------------- membership


@message(18)
@dataclass(frozen=True, slots=True)
class JoinRequest(Message):
    """To a seed (or any member): I am `member`; answered with `MemberList`."""

    member: MemberInfo


@message(19)
@dataclass(frozen=True, slots=True)
class MemberList(Message):
    """The members the sender knows (itself included), and the ids it knows have left."""

    members: tuple[MemberInfo, ...]
    left: tuple[str, ...]


@message(21)
@dataclass(frozen=True, slots=True)
class LeaveAnnouncement(Message):
    """The sender is leaving the cluster on purpose (a graceful shutdown or a drain)."""

    node_id: str
    incarnation: int


# --------------------------------------------------------------------------- replication


@message(22)
@dataclass(frozen=True, slots=True)
class Replicate(Message):
    """Writes made at the sender, to apply here. `context` is the sender's version vector of the
    service just before these writes (to tell a concurrent write from a causal one). Answered
    with `ReplicateAck` quoting this message's id."""

    tenant: str
    service: str
    writes: tuple[WriteRecord, ...]
    context: tuple[Clock, ...]


@message(23)
@dataclass(frozen=True, slots=True)
class ReplicateAck(Message):
    """The writes of the `Replicate` this answers are applied (or were already here)."""

    tenant: str
    service: str
    count: int


@message(24)
@dataclass(frozen=True, slots=True)
class ServiceDigest(Message):
    """Anti-entropy: the version vectors of services the sender holds. A receiver that is behind
    on one asks for it with `SyncServiceRequest`."""

    services: tuple[ServiceClocks, ...]


# --------------------------------------------------------------------------- catalog sync


@message(25)
@dataclass(frozen=True, slots=True)
class CatalogDigest(Message):
    """The SHA-256 of the sender's catalog snapshot; a receiver whose own differs pushes its own."""

    digest: bytes


@message(26)
@dataclass(frozen=True, slots=True)
class CatalogPush(Message):
    """The sender's whole catalog (stamped records); the receiver merges it, newest stamp wins."""

    snapshot: bytes
    digest: bytes



# --------------------------------------------------------------------------- drain and load


@message(27)
@dataclass(frozen=True, slots=True)
class DrainRequest(Message):
    """To a node's hub: move your clients elsewhere and leave the cluster (an admin asked)."""

    node_id: str
    requested_by: str


@message(28)
@dataclass(frozen=True, slots=True)
class LoadReport(Message):
    """Each hub tells its peers, every second, how many clients it serves; drains pick targets by it."""

    clients: int
    draining: bool


# --------------------------------------------------------------------------- session sync


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """One subscription of a session: the variables `names` of (tenant, service), or the whole
    service (no names), as `Subscribe` says it."""

    tenant: str
    service: str
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A client session as the node serving it last described it: who, on which tenants, with which
    subscriptions, under which token (the id only, never the token), kept by every node until
    `expires_at` (the token's expiry) so the client can `Resume` anywhere. `updated_at` is a hybrid
    logical clock stamp: of two records of one session, the higher stamp wins."""

    session_id: str
    client_id: str
    node: str
    tenants: tuple[str, ...]
    subscriptions: tuple[SubscriptionRecord, ...]
    token_id: str
    expires_at: float
    updated_at: int


@message(29)
@dataclass(frozen=True, slots=True)
class SessionPush(Message):
    """Session sync: records of sessions that changed (newest `updated_at` wins at the receiver) and
    the ids of sessions that ended for good (a logout): the receiver forgets them and refuses to
    take them back."""

    records: tuple[SessionRecord, ...]
    ended: tuple[str, ...]

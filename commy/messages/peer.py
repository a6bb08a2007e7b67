"""The link and peer protocols (server <-> server): tags 1-9 link, 10-49 peer (the cluster's
membership, replication and sync messages are in `cluster.py`).

The link handshake proves that both ends hold the cluster secret without sending it: the dialer
opens with `MetadataExchange` (its id and a random challenge), the acceptor answers with
`MetadataExchangeAck` (its id, its own challenge, and an HMAC over both challenges and both ids
keyed by the secret), and the dialer finishes with `JoinProof` (its HMAC). See `commy.link`.
"""

from __future__ import annotations

from dataclasses import dataclass

from commy.messages.base import Message, MigrationReason, ServerStatus, message
from commy.messages.cluster import Clock, WriteRecord

# --------------------------------------------------------------------------- link protocol (1-9)


@message(1)
@dataclass(frozen=True, slots=True)
class MetadataExchange(Message):
    """First frame on a new connection, from the dialer: who it is, its protocol version, and a
    random challenge the acceptor must answer with the cluster secret."""

    node_id: str
    protocol_version: int
    status: ServerStatus
    challenge: bytes


@message(2)
@dataclass(frozen=True, slots=True)
class MetadataExchangeAck(Message):
    """The acceptor's answer: who it is, its own challenge, and its proof over the dialer's."""

    node_id: str
    protocol_version: int
    status: ServerStatus
    challenge: bytes
    response: bytes


@message(3)
@dataclass(frozen=True, slots=True)
class JoinProof(Message):
    """The dialer's proof over the acceptor's challenge; the link opens when it checks out."""

    response: bytes


# --------------------------------------------------------------------------- peer protocol (10-49)


@message(10)
@dataclass(frozen=True, slots=True)
class HeartbeatPing(Message):
    seq: int
    sent_at: float
    status: ServerStatus


@message(11)
@dataclass(frozen=True, slots=True)
class HeartbeatPong(Message):
    seq: int
    ping_sent_at: float
    status: ServerStatus


@message(12)
@dataclass(frozen=True, slots=True)
class SyncServiceRequest(Message):
    """Send me what I lack of this service: everything newer than my version vector `clocks`."""

    tenant: str
    service: str
    clocks: tuple[Clock, ...]


@message(13)
@dataclass(frozen=True, slots=True)
class SyncServiceResponse(Message):
    """The writes the requester lacks and the responder's version vector. `transfer` true: too
    much for one message -- fetch a snapshot with `FileTransferRequest` instead."""

    tenant: str
    service: str
    entries: tuple[WriteRecord, ...]
    clocks: tuple[Clock, ...]
    transfer: bool


@message(14)
@dataclass(frozen=True, slots=True)
class ClientMigration(Message):
    session_id: str
    client_id: str
    target_node: str
    target_url: str
    reason: MigrationReason


@message(15)
@dataclass(frozen=True, slots=True)
class ClientMigrationAck(Message):
    session_id: str
    accepted: bool
    detail: str


@message(16)
@dataclass(frozen=True, slots=True)
class FileTransferRequest(Message):
    transfer_id: str
    tenant: str
    service: str
    from_chunk: int
    chunk_size: int


@message(17)
@dataclass(frozen=True, slots=True)
class FileTransferChunk(Message):
    transfer_id: str
    index: int
    total: int
    data: bytes
    sha256: bytes
    whole_sha256: bytes


@message(20)
@dataclass(frozen=True, slots=True)
class Error(Message):
    """A typed error reply: `code` is one of the stable codes in `commy.errors`."""

    code: str
    detail: str

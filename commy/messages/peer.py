"""The link and peer protocols (server <-> server): tags 1-9 link, 10-49 peer."""

from __future__ import annotations

from dataclasses import dataclass

from commy.messages.base import Message, MigrationReason, ServerStatus, TenantMetadata, VariableEntry, message

# --------------------------------------------------------------------------- link protocol (1-9)


@message(1)
@dataclass(frozen=True, slots=True)
class LinkHello(Message):
    """First frame on a new TCP connection: who is dialing, and which protocol version it speaks."""

    node_id: str
    protocol_version: int


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
    tenant: str
    service: str
    since_version: int


@message(13)
@dataclass(frozen=True, slots=True)
class SyncServiceResponse(Message):
    tenant: str
    service: str
    entries: tuple[VariableEntry, ...]
    version: int


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


@message(18)
@dataclass(frozen=True, slots=True)
class MetadataExchange(Message):
    node_id: str
    status: ServerStatus
    tenants: tuple[TenantMetadata, ...]
    challenge: bytes


@message(19)
@dataclass(frozen=True, slots=True)
class MetadataExchangeAck(Message):
    node_id: str
    status: ServerStatus
    tenants: tuple[TenantMetadata, ...]
    response: bytes


@message(20)
@dataclass(frozen=True, slots=True)
class Error(Message):
    """A typed error reply: `code` is one of the stable codes in `commy.errors`."""

    code: str
    detail: str

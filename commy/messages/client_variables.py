"""The client protocol's variable messages: tags 111-135.

The records that travel inside them (`NamedValue` to write, `VariableValue` as read,
`VariableVersion`, and `ServiceVersions`: what a resuming client last saw of one service); `Resume`
(111, 112: reconnect to this or another server and get back the session, its subscriptions and
the changes missed); reading, writing and subscribing (120-128, with the `VariableChanged`
event); and mapping a service file on the server's own machine (130-135, with the
`FileMigration` event when the file moves). `commy.messages.client` re-exports all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from commy.messages.base import Message, message

# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class NamedValue:
    """A value to write."""

    name: str
    value: bytes


@dataclass(frozen=True, slots=True)
class VariableValue:
    """A variable as read: its value, version (bumped by each write on this server), who wrote it
    last, and the stamp of that write (cluster-wide order: see `commy.core.hlc`)."""

    name: str
    value: bytes
    version: int
    changed_by: str
    stamp: int = 0


@dataclass(frozen=True, slots=True)
class VariableVersion:
    """A variable's version on this server and its write's cluster-wide stamp."""

    name: str
    version: int
    stamp: int = 0


@dataclass(frozen=True, slots=True)
class ServiceVersions:
    """What a resuming client last saw of one service."""

    tenant: str
    service: str
    versions: tuple[VariableVersion, ...]


# --------------------------------------------------------------------------- resuming


@message(111)
@dataclass(frozen=True, slots=True)
class Resume(Message):
    """Reconnect (to this or another server) and get back sessions, subscriptions and missed changes."""

    session_id: str
    token: str
    last_seen: tuple[ServiceVersions, ...]


@message(112)
@dataclass(frozen=True, slots=True)
class ResumeResponse(Message):
    session_id: str
    tenants: tuple[str, ...]
    missed: tuple[VariableChanged, ...]


# --------------------------------------------------------------------------- variables


@message(120)
@dataclass(frozen=True, slots=True)
class GetVariables(Message):
    """Read variables of a service; no names means all of them. Missing names are left out."""

    tenant: str
    service: str
    names: tuple[str, ...]


@message(121)
@dataclass(frozen=True, slots=True)
class VariablesData(Message):
    tenant: str
    service: str
    variables: tuple[VariableValue, ...]


@message(122)
@dataclass(frozen=True, slots=True)
class SetVariables(Message):
    """Write variables (created on first write; the service too, with service_create). `concern`:
    `local` (default when empty), `replicated` or `quorum` (cluster write concerns)."""

    tenant: str
    service: str
    variables: tuple[NamedValue, ...]
    concern: str


@message(123)
@dataclass(frozen=True, slots=True)
class VariablesUpdated(Message):
    tenant: str
    service: str
    versions: tuple[VariableVersion, ...]


@message(124)
@dataclass(frozen=True, slots=True)
class Subscribe(Message):
    """Subscribe to variables of a service; no names means the whole service, new variables too."""

    tenant: str
    service: str
    names: tuple[str, ...]


@message(125)
@dataclass(frozen=True, slots=True)
class SubscriptionAck(Message):
    """The subscription holds from here on; `current` is the state it starts from."""

    tenant: str
    service: str
    names: tuple[str, ...]
    current: tuple[VariableValue, ...]


@message(126)
@dataclass(frozen=True, slots=True)
class Unsubscribe(Message):
    """Drop subscriptions; no names means every subscription on the service."""

    tenant: str
    service: str
    names: tuple[str, ...]


@message(127)
@dataclass(frozen=True, slots=True)
class UnsubscribeAck(Message):
    tenant: str
    service: str
    names: tuple[str, ...]


@message(128)
@dataclass(frozen=True, slots=True)
class VariableChanged(Message):
    """Event: a subscribed variable changed (by a remote set or a local mapped write)."""

    tenant: str
    service: str
    name: str
    value: bytes
    version: int
    changed_by: str
    stamp: int = 0


# --------------------------------------------------------------------------- local mapping


@message(130)
@dataclass(frozen=True, slots=True)
class MapService(Message):
    """Ask for the service file's path, to map it (only from the server's own machine)."""

    tenant: str
    service: str


@message(131)
@dataclass(frozen=True, slots=True)
class ServiceMapped(Message):
    """The path to map and the writer slot to write with (it identifies this client's writes)."""

    tenant: str
    service: str
    path: str
    writer: int


@message(132)
@dataclass(frozen=True, slots=True)
class UnmapService(Message):
    tenant: str
    service: str


@message(133)
@dataclass(frozen=True, slots=True)
class ServiceUnmapped(Message):
    tenant: str
    service: str


@message(134)
@dataclass(frozen=True, slots=True)
class FileMigration(Message):
    """Event: the service file moved (rotation after a revocation); remap `path`, then MigrationAck."""

    tenant: str
    service: str
    path: str


@message(135)
@dataclass(frozen=True, slots=True)
class MigrationAck(Message):
    tenant: str
    service: str
    path: str

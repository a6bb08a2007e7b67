"""The client protocol (client <-> server over WebSocket): tags 100-199.

A client sends requests and gets exactly one reply per request, in order (except that a cluster's
`replicated`/`quorum` writes are answered when the replicas confirm), carrying the request's
id: the reply named next to it below, or an `Error(code, detail)`. The server also pushes events
with request id 0: `VariableChanged`, `PermissionRevoked`, `FileMigration`, `ClientMigration`.
`CLIENT_REQUESTS` is every message a client may send; anything else from a client is refused.

Every tenant-scoped request names its tenant: a connection may hold one session per tenant. The
tenant `""` (`SERVER`) is the server itself, for the server-wide admin operations (create and
delete tenants, API keys); only a server admin's key can open a session on it.

The wire forms (`commy.client_codec`): a binary frame is the msgpack array `[request_id, [tag,
version, field, ...]]`; a text frame is a JSON object `{"type": "SetVariables", "id": 7, ...fields
by name}` with bytes as base64 strings.
"""

from __future__ import annotations

from dataclasses import dataclass

from commy.messages.base import Message, message
from commy.messages.peer import ClientMigration, ClientMigrationAck, Error

SERVER = ""
"""The tenant name of the server-wide session (admin operations on tenants and keys)."""

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


# --------------------------------------------------------------------------- sessions


@message(100)
@dataclass(frozen=True, slots=True)
class Authenticate(Message):
    """Open a session on `tenant`. `method`: `api_key` (credential = the key), `token` (a token from
    an earlier AuthenticationResponse) or `delegated` (passed to the tenant's auth hook)."""

    tenant: str
    method: str
    credential: str


@message(101)
@dataclass(frozen=True, slots=True)
class AuthenticationResponse(Message):
    tenant: str
    session_id: str
    client_id: str
    token: str
    expires_at: float
    permissions: tuple[str, ...]


@message(102)
@dataclass(frozen=True, slots=True)
class Logout(Message):
    """Close the session on `tenant` and revoke its token everywhere."""

    tenant: str


@message(103)
@dataclass(frozen=True, slots=True)
class LogoutResponse(Message):
    tenant: str


@message(104)
@dataclass(frozen=True, slots=True)
class RefreshToken(Message):
    """Trade a valid token for a new one with a fresh expiry; the old one is revoked."""

    token: str


@message(105)
@dataclass(frozen=True, slots=True)
class TokenRefreshResponse(Message):
    token: str
    expires_at: float


@message(106)
@dataclass(frozen=True, slots=True)
class CheckPermission(Message):
    tenant: str
    service: str
    permission: str


@message(107)
@dataclass(frozen=True, slots=True)
class PermissionResponse(Message):
    tenant: str
    service: str
    permission: str
    allowed: bool


@message(108)
@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    sent_at: float


@message(109)
@dataclass(frozen=True, slots=True)
class HeartbeatAck(Message):
    sent_at: float
    server_time: float


@message(110)
@dataclass(frozen=True, slots=True)
class PermissionRevoked(Message):
    """Event: the session on `tenant` is over; the client has no access there any more."""

    tenant: str
    reason: str


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


# --------------------------------------------------------------------------- admin


@message(150)
@dataclass(frozen=True, slots=True)
class CreateTenant(Message):
    tenant: str


@message(151)
@dataclass(frozen=True, slots=True)
class DeleteTenant(Message):
    tenant: str


@message(152)
@dataclass(frozen=True, slots=True)
class CreateService(Message):
    tenant: str
    service: str


@message(153)
@dataclass(frozen=True, slots=True)
class DeleteService(Message):
    tenant: str
    service: str


@message(154)
@dataclass(frozen=True, slots=True)
class GrantPermission(Message):
    """Grant `scopes` (`read`, `write`, `admin`, `service:read`, ...) on `tenant` to `client_id`."""

    tenant: str
    client_id: str
    scopes: tuple[str, ...]


@message(155)
@dataclass(frozen=True, slots=True)
class RevokePermission(Message):
    """Revoke `scopes` (no scopes: everything) on `tenant` from `client_id`. Losing all access ends
    the client's sessions there (PermissionRevoked) and rotates the files it had mapped."""

    tenant: str
    client_id: str
    scopes: tuple[str, ...]


@message(156)
@dataclass(frozen=True, slots=True)
class CreateApiKey(Message):
    """A new API key for `client_id` (server admins only); with a tenant, also grant `scopes` there."""

    client_id: str
    server_admin: bool
    tenant: str
    scopes: tuple[str, ...]


@message(157)
@dataclass(frozen=True, slots=True)
class ApiKeyCreated(Message):
    """The key itself is shown this once; the server keeps only a slow hash of it."""

    key_id: str
    key: str
    client_id: str


@message(158)
@dataclass(frozen=True, slots=True)
class RevokeApiKey(Message):
    key_id: str


@message(159)
@dataclass(frozen=True, slots=True)
class AdminDone(Message):
    """The reply to an admin operation that has nothing else to return."""

    operation: str
    detail: str


@message(160)
@dataclass(frozen=True, slots=True)
class ListTenants(Message):
    pass


@message(161)
@dataclass(frozen=True, slots=True)
class TenantList(Message):
    tenants: tuple[str, ...]


@message(162)
@dataclass(frozen=True, slots=True)
class ListServices(Message):
    tenant: str


@message(163)
@dataclass(frozen=True, slots=True)
class ServiceList(Message):
    tenant: str
    services: tuple[str, ...]


@message(164)
@dataclass(frozen=True, slots=True)
class SetAuthHook(Message):
    """Delegate `tenant`'s `delegated` logins to the server's auth hook named `hook` ("" stops it)."""

    tenant: str
    hook: str


@message(165)
@dataclass(frozen=True, slots=True)
class DrainNode(Message):
    """Server admin: move every client off node `node_id` (this one or a peer) and retire it from
    the cluster (`commy admin drain NODE`)."""

    node_id: str


CLIENT_REQUESTS: frozenset[type[Message]] = frozenset({
    Authenticate, Logout, RefreshToken, CheckPermission, Heartbeat, Resume,
    GetVariables, SetVariables, Subscribe, Unsubscribe, MapService, UnmapService, MigrationAck,
    CreateTenant, DeleteTenant, CreateService, DeleteService, GrantPermission, RevokePermission,
    CreateApiKey, RevokeApiKey, ListTenants, ListServices, SetAuthHook, ClientMigrationAck, DrainNode,
})
"""Every message a client may send to a server."""

REPLY_TO: dict[type[Message], type[Message]] = {
    Authenticate: AuthenticationResponse, Logout: LogoutResponse, RefreshToken: TokenRefreshResponse,
    CheckPermission: PermissionResponse, Heartbeat: HeartbeatAck, Resume: ResumeResponse,
    GetVariables: VariablesData, SetVariables: VariablesUpdated, Subscribe: SubscriptionAck,
    Unsubscribe: UnsubscribeAck, MapService: ServiceMapped, UnmapService: ServiceUnmapped,
    CreateTenant: AdminDone, DeleteTenant: AdminDone, CreateService: AdminDone, DeleteService: AdminDone,
    GrantPermission: AdminDone, RevokePermission: AdminDone, CreateApiKey: ApiKeyCreated, RevokeApiKey: AdminDone,
    ListTenants: TenantList, ListServices: ServiceList, SetAuthHook: AdminDone, DrainNode: AdminDone,
}
"""The reply each client request gets when it succeeds (otherwise `Error`)."""

UNANSWERED: frozenset[type[Message]] = frozenset({MigrationAck, ClientMigrationAck})
"""Acknowledgements of server events: the server sends no reply to them."""

CLIENT_REPLIES: frozenset[type[Message]] = frozenset({
    AuthenticationResponse, LogoutResponse, TokenRefreshResponse, PermissionResponse, HeartbeatAck,
    ResumeResponse, VariablesData, VariablesUpdated, SubscriptionAck, UnsubscribeAck, ServiceMapped,
    ServiceUnmapped, ApiKeyCreated, AdminDone, TenantList, ServiceList, Error,
    VariableChanged, PermissionRevoked, FileMigration, ClientMigration,
})
"""Every message a server may send to a client (replies and pushed events)."""

if set(REPLY_TO) | UNANSWERED != CLIENT_REQUESTS:  # checked at import: every request says how it is answered
    raise TypeError("client requests without a documented reply: "
                    f"{sorted(c.__name__ for c in CLIENT_REQUESTS - set(REPLY_TO) - UNANSWERED)}")

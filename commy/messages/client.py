"""The client protocol (client <-> server over WebSocket): tags 100-199.

A client sends requests and gets exactly one reply per request, in order (except that a cluster's
`replicated`/`quorum` writes are answered when the replicas confirm), carrying the request's
id: the reply named next to it below, or an `Error(code, detail)`. The server also pushes events
with request id 0: `VariableChanged`, `PermissionRevoked`, `FileMigration`, `ClientMigration`.
`CLIENT_REQUESTS` is every message a client may send; anything else from a client is refused.

Every tenant-scoped request names its tenant: a connection may hold one session per tenant. The
tenant `""` (`SERVER`) is the server itself, for the server-wide admin operations (create and
delete tenants, API keys); only a server admin's key can open a session on it.

The messages live in one module per part of the protocol, all re-exported here: `client_sessions`
(100-110: log in and out, tokens, permissions, heartbeats), `client_variables` (111-135: resume,
read, write, subscribe, map a file) and `client_admin` (150-165). They are imported below one
after the other, in tag order, so they register with the codec in that order.

The wire forms (`commy.client_codec`): a binary frame is the msgpack array `[request_id, [tag,
version, field, ...]]`; a text frame is a JSON object `{"type": "SetVariables", "id": 7, ...fields
by name}` with bytes as base64 strings.
"""

from __future__ import annotations

from commy.messages.base import Message
from commy.messages.peer import ClientMigration, ClientMigrationAck, Error

# isort: split
from commy.messages.client_sessions import (
    Authenticate,
    AuthenticationResponse,
    CheckPermission,
    Heartbeat,
    HeartbeatAck,
    Logout,
    LogoutResponse,
    PermissionResponse,
    PermissionRevoked,
    RefreshToken,
    TokenRefreshResponse,
)

# isort: split
from commy.messages.client_variables import (
    FileMigration,
    GetVariables,
    MapService,
    MigrationAck,
    NamedValue,
    Resume,
    ResumeResponse,
    ServiceMapped,
    ServiceUnmapped,
    ServiceVersions,
    SetVariables,
    Subscribe,
    SubscriptionAck,
    UnmapService,
    Unsubscribe,
    UnsubscribeAck,
    VariableChanged,
    VariablesData,
    VariablesUpdated,
    VariableValue,
    VariableVersion,
)

# isort: split
from commy.messages.client_admin import (
    AdminDone,
    ApiKeyCreated,
    CreateApiKey,
    CreateService,
    CreateTenant,
    DeleteService,
    DeleteTenant,
    DrainNode,
    GrantPermission,
    ListServices,
    ListTenants,
    RevokeApiKey,
    RevokePermission,
    ServiceList,
    SetAuthHook,
    TenantList,
)

__all__ = [
    "CLIENT_REPLIES", "CLIENT_REQUESTS", "REPLY_TO", "SERVER", "UNANSWERED", "AdminDone", "ApiKeyCreated",
    "Authenticate", "AuthenticationResponse", "CheckPermission", "CreateApiKey", "CreateService", "CreateTenant",
    "DeleteService", "DeleteTenant", "DrainNode", "FileMigration", "GetVariables", "GrantPermission", "Heartbeat",
    "HeartbeatAck", "ListServices", "ListTenants", "Logout", "LogoutResponse", "MapService", "MigrationAck",
    "NamedValue", "PermissionResponse", "PermissionRevoked", "RefreshToken", "Resume", "ResumeResponse",
    "RevokeApiKey", "RevokePermission", "ServiceList", "ServiceMapped", "ServiceUnmapped", "ServiceVersions",
    "SetAuthHook", "SetVariables", "Subscribe", "SubscriptionAck", "TenantList", "TokenRefreshResponse",
    "UnmapService", "Unsubscribe", "UnsubscribeAck", "VariableChanged", "VariableValue", "VariableVersion",
    "VariablesData", "VariablesUpdated",
]

SERVER = ""
"""The tenant name of the server-wide session (admin operations on tenants and keys)."""

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

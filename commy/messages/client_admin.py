"""The client protocol's administration messages: tags 150-165.

Creating and deleting tenants and services, granting and revoking permissions, creating and
revoking API keys, listing tenants and services, delegating a tenant's logins to an auth hook, and
draining a node. Most are answered with `AdminDone`; tenant and key operations are for a session
on the server itself (tenant `""`, `SERVER`). `commy.messages.client` re-exports all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from commy.messages.base import Message, message

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

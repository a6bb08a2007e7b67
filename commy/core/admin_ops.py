"""Administration over the client protocol: tenants, services, grants, API keys, and revocation.

Server-wide operations (tenants, keys, listing tenants) need a server admin's session; a tenant's
services and grants need `tenant_admin` there (or a server admin); creating and deleting a service
needs `service_create` / `service_delete`. Each change goes to the catalog, which the runtime
persists on `CatalogChanged`, and bumps the hub's epoch so open sessions re-read their permissions
on their next request.

Revocation is enforced at once, not at the next request: a client left with no permission on a
tenant has its sessions there ended with `PermissionRevoked`; one that can no longer read loses
its subscriptions and its mapped files are rotated (`rotate_away`), so the path it knows stops
being the service; revoking an API key ends every session that key opened.
"""

from __future__ import annotations

from commy.core.auth_ops import namespaced
from commy.core.catalog_records import check_client_id, check_hook
from commy.core.permissions import Permission, parse_scopes, scope_names
from commy.core.sessions import ClientConn, SessionState
from commy.core.variable_ops import VariableOps
from commy.errors import BAD_REQUEST, NOT_FOUND, RemoteProtocolError
from commy.messages import (
    AdminDone,
    ApiKeyCreated,
    CreateApiKey,
    CreateService,
    CreateTenant,
    DeleteService,
    DeleteTenant,
    Envelope,
    GrantPermission,
    ListServices,
    ListTenants,
    RevokeApiKey,
    RevokePermission,
    ServiceList,
    SetAuthHook,
    TenantList,
)
from commy.messages.client import SERVER
from commy.store.names import check_service, check_tenant


class AdminOps(VariableOps):
    REQUESTS = {CreateTenant: "create_tenant", DeleteTenant: "delete_tenant", CreateService: "create_service_op",
                DeleteService: "delete_service", GrantPermission: "grant_permission",
                RevokePermission: "revoke_permission", CreateApiKey: "create_api_key",
                RevokeApiKey: "revoke_api_key", ListTenants: "list_tenants", ListServices: "list_services",
                SetAuthHook: "set_auth_hook"}

    def _done(self, env: Envelope, operation: str, detail: str) -> None:
        self.ctx.log.info("admin", operation=operation, detail=detail)
        self.ctx.reply(env, AdminDone(operation, detail))

    # ---- tenants

    def create_tenant(self, conn: ClientConn, msg: CreateTenant, env: Envelope) -> None:
        self.require_server_admin(conn)
        check_tenant(msg.tenant)
        self.catalog.create_tenant(msg.tenant, self.ctx.now())
        self.catalog_changed()
        self._done(env, "create_tenant", msg.tenant)

    def delete_tenant(self, conn: ClientConn, msg: DeleteTenant, env: Envelope) -> None:
        self.require_server_admin(conn)
        check_tenant(msg.tenant)
        self.catalog.delete_tenant(msg.tenant, self.ctx.now())
        self.catalog_changed()
        for other in list(self.conns.values()):
            if msg.tenant in other.sessions:
                self.end_session(other, msg.tenant, SessionState.REVOKED, notify="tenant deleted")
        self.subs.drop_tenant(msg.tenant)
        if msg.tenant in self.store.tenants():  # a tenant that never stored anything has no folder
            self.store.remove_tenant(msg.tenant)
        self._done(env, "delete_tenant", msg.tenant)

    def set_auth_hook(self, conn: ClientConn, msg: SetAuthHook, env: Envelope) -> None:
        self.require_server_admin(conn)  # whoever picks the hook decides who the tenant's users are
        check_tenant(msg.tenant)
        hook = check_hook(msg.hook) if msg.hook else None
        if not self.catalog.has_tenant(msg.tenant):
            raise RemoteProtocolError(f"tenant {msg.tenant!r} not found", NOT_FOUND)
        self.catalog.set_auth_hook(msg.tenant, hook, self.ctx.now())
        self.catalog_changed()
        self._done(env, "set_auth_hook", f"{msg.tenant}: {hook or 'none'}")

    def list_tenants(self, conn: ClientConn, msg: ListTenants, env: Envelope) -> None:
        self.require_server_admin(conn)
        self.ctx.reply(env, TenantList(tuple(self.catalog.tenants())))

    # ---- services

    def create_service_op(self, conn: ClientConn, msg: CreateService, env: Envelope) -> None:
        self.require(conn, msg.tenant, Permission.SERVICE_CREATE)
        check_service(msg.service)
        if self.catalog.has_service(msg.tenant, msg.service):
            raise RemoteProtocolError(f"service {msg.service!r} already exists in tenant {msg.tenant!r}", BAD_REQUEST)
        self.create_service(msg.tenant, msg.service)
        self._done(env, "create_service", f"{msg.tenant}/{msg.service}")

    def delete_service(self, conn: ClientConn, msg: DeleteService, env: Envelope) -> None:
        self.require(conn, msg.tenant, Permission.SERVICE_DELETE)
        self.existing_service(msg.tenant, msg.service)
        key = (msg.tenant, msg.service)
        for other in list(self.conns.values()):
            if key in other.mapped:
                self.release_mapping(other, key)
        self.subs.drop_service(*key)
        self.catalog.delete_service(msg.tenant, msg.service, self.ctx.now())
        self.store.remove(*key)
        for k in [k for k in self.last_writer if k[:2] == key]:
            del self.last_writer[k]
        self.catalog_changed()
        self._done(env, "delete_service", f"{msg.tenant}/{msg.service}")

    def list_services(self, conn: ClientConn, msg: ListServices, env: Envelope) -> None:
        self.require(conn, msg.tenant, Permission.SERVICE_READ)
        self.ctx.reply(env, ServiceList(msg.tenant, tuple(self.catalog.services(msg.tenant))))

    # ---- permissions

    def grant_permission(self, conn: ClientConn, msg: GrantPermission, env: Envelope) -> None:
        self.tenant_admin(conn, msg.tenant)
        check_tenant(msg.tenant)
        check_client_id(msg.client_id)
        self.check_count("scopes", msg.scopes)
        perms = parse_scopes(msg.scopes)
        if not perms:
            raise RemoteProtocolError("grant needs at least one scope", BAD_REQUEST)
        now_held = self.catalog.grant(msg.client_id, msg.tenant, perms, self.ctx.now())
        self.catalog_changed()
        self._done(env, "grant", f"{msg.client_id} on {msg.tenant}: {', '.join(scope_names(now_held))}")

    def revoke_permission(self, conn: ClientConn, msg: RevokePermission, env: Envelope) -> None:
        self.tenant_admin(conn, msg.tenant)
        check_tenant(msg.tenant)
        check_client_id(msg.client_id)
        self.check_count("scopes", msg.scopes)
        perms = parse_scopes(msg.scopes) if msg.scopes else None
        removed = self.catalog.revoke(msg.client_id, msg.tenant, perms, self.ctx.now())
        self.catalog_changed()
        self.enforce(msg.tenant, {msg.client_id}, reason="permission revoked")
        self._done(env, "revoke", f"{msg.client_id} on {msg.tenant}: {', '.join(scope_names(removed)) or 'nothing'}")

    def enforce(self, tenant: str, clients: set[str], reason: str, keys: set[str] | None = None) -> None:
        """Bring every session of `clients` on `tenant` (or, with `keys`, every session those keys
        opened, on any tenant) in line with the catalog: end, unsubscribe or unmap what is no longer
        allowed, and rotate files mapped by a client that lost read access."""
        rotations: dict[tuple[str, str], set[str]] = {}
        for conn in list(self.conns.values()):
            for t, session in list(conn.sessions.items()):
                if keys is not None:
                    if session.key_id not in keys:
                        continue
                    perms = frozenset[Permission]()
                elif t != tenant or session.client_id not in clients:
                    continue
                else:
                    perms = self.permissions_of(session.client_id, t)
                if Permission.VARIABLE_READ not in perms:
                    for key in [k for k in conn.mapped if k[0] == t]:
                        rotations.setdefault(key, set()).add(conn.conn_id)
                if not perms:
                    self.end_session(conn, t, SessionState.REVOKED, notify=reason)
                    self.ctx.log.warning("session_revoked", conn=conn.conn_id, tenant=t, client=session.client_id)
                elif Permission.SUBSCRIBE not in perms or Permission.VARIABLE_READ not in perms:
                    self.subs.drop_conn(conn.conn_id, t)  # change events carry values
        # Clients told a file's path keep it after they disconnect: rotate those files too.
        if keys is None:
            lost = {c for c in clients if Permission.VARIABLE_READ not in self.permissions_of(c, tenant)}
        else:
            lost = clients  # the revoked key's client: conservatively, as if it lost everything
        for key, told in self.path_holders.items():
            if (keys is not None or key[0] == tenant) and told & lost:
                rotations.setdefault(key, set())
        for key, banned in rotations.items():
            if key not in self.slots and self.store.exists(*key):
                self.poll_one(key)
                self.store.rotate(*key)
                self.open_services.pop(key, None)
                self.path_holders[key] = set()
                self.stats["rotations"] += 1
                self.ctx.log.warning("file_rotated", tenant=key[0], service=key[1], banned=0, remapping=0)
            if key in self.slots:
                self.rotate_away(key, banned)
            for conn_id in banned:  # a session that ended has released it already; one that lives on may not map
                holder = self.conns.get(conn_id)
                if holder is not None:
                    self.release_mapping(holder, key)

    # ---- API keys

    def create_api_key(self, conn: ClientConn, msg: CreateApiKey, env: Envelope) -> None:
        server_admin = any(s.open and self.catalog.is_server_admin(s.client_id) for s in conn.sessions.values())
        if msg.server_admin or not msg.tenant:
            self.require_server_admin(conn)
        elif not server_admin:
            self.tenant_admin(conn, msg.tenant)
        check_client_id(msg.client_id)
        self.check_count("scopes", msg.scopes)
        perms = parse_scopes(msg.scopes)
        if msg.tenant:
            check_tenant(msg.tenant)
        client_id = msg.client_id
        if not server_admin:
            # A tenant admin mints identities in its tenant's namespace only: a key it makes for
            # "admin" or for another tenant's "bob" must not open their sessions elsewhere.
            client_id = namespaced(msg.tenant, client_id)
        if msg.tenant:
            if not self.catalog.has_tenant(msg.tenant):
                raise RemoteProtocolError(f"tenant {msg.tenant!r} not found", NOT_FOUND)
        elif perms:
            raise RemoteProtocolError("scopes need a tenant to apply to", BAD_REQUEST)
        key_id, key = self.catalog.create_api_key(client_id, server_admin=msg.server_admin, now=self.ctx.now(),
                                                  entropy=self.entropy)
        if perms:
            self.catalog.grant(client_id, msg.tenant, perms, self.ctx.now())
        self.catalog_changed()
        self.ctx.log.info("admin", operation="create_api_key", client=client_id, key_id=key_id,
                          server_admin=msg.server_admin)
        self.ctx.reply(env, ApiKeyCreated(key_id, key, client_id))

    def revoke_api_key(self, conn: ClientConn, msg: RevokeApiKey, env: Envelope) -> None:
        self.require_server_admin(conn)
        rec = self.catalog.revoke_api_key(msg.key_id, self.ctx.now())
        self.catalog_changed()
        self.enforce(SERVER, {rec.client_id}, reason="api key revoked", keys={rec.key_id})
        self._done(env, "revoke_api_key", rec.key_id)

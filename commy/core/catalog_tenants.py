"""The catalog's tenants, their services and the permissions granted on them.

`Tenancy` is the part of `Catalog` (`commy.core.catalog`) that answers what exists and who may do
what. A tenant remembers the stamp it was created at: services and grants stamped before it belong
to a deleted predecessor of the same name and are ignored, so a tenant deleted and created again
starts empty even where a peer's older records are merged in later. Deleting a tenant writes a
tombstone for it and for each of its live services and grants. A grant is the set of permissions
stored for a (client, tenant); `permissions` expands it (`commy.core.permissions`), and a server
admin holds everything everywhere. Every change is a stamped record written through the catalog's
`_write`, like any other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from commy.core.catalog_records import GrantRecord, Record, ServiceRecord, TenantRecord, check_client_id, check_hook
from commy.core.permissions import ALL, Permission, effective
from commy.errors import BAD_REQUEST, NOT_FOUND, LocalProtocolError, RemoteProtocolError
from commy.store.names import check_service, check_tenant

NO_PERMISSIONS: frozenset[Permission] = frozenset()


def check_time(now: float) -> float:
    """`now` as a float, if it is a finite number (anything else is our own misuse)."""
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise LocalProtocolError(f"a time must be a finite number, got {now!r}")
    return float(now)


class Tenancy:
    """Tenants, services and grants of `Catalog`; see the module docstring."""

    # Owned by Catalog (declared here for the type checker).
    _tenants: dict[str, TenantRecord]
    _services: dict[tuple[str, str], ServiceRecord]
    _grants: dict[tuple[str, str], GrantRecord]

    if TYPE_CHECKING:  # Catalog's own methods
        def _stamp(self, stamp: int | None, replaced: Iterable[Record | None]) -> int: ...
        def _write(self, rec: Record) -> None: ...
        def is_server_admin(self, client_id: str) -> bool: ...

    # ---- tenants and services

    def _live_tenant(self, name: str) -> TenantRecord | None:
        rec = self._tenants.get(name)
        return rec if rec is not None and not rec.deleted else None

    def _tenant(self, name: str) -> TenantRecord:
        rec = self._live_tenant(name)
        if rec is None:
            raise RemoteProtocolError(f"tenant {name!r} not found", NOT_FOUND)
        return rec

    def _live_service(self, tenant: TenantRecord, name: str) -> ServiceRecord | None:
        rec = self._services.get((tenant.name, name))
        return rec if rec is not None and not rec.deleted and rec.stamp >= tenant.created_stamp else None

    def _grant(self, tenant: TenantRecord, client_id: str) -> frozenset[Permission]:
        rec = self._grants.get((client_id, tenant.name))
        return rec.permissions if rec is not None and rec.stamp >= tenant.created_stamp else NO_PERMISSIONS

    def create_tenant(self, name: str, now: float, *, stamp: int | None = None) -> None:
        check_tenant(name)
        if self._live_tenant(name) is not None:
            raise RemoteProtocolError(f"tenant {name!r} already exists", BAD_REQUEST)
        s = self._stamp(stamp, [self._tenants.get(name)])
        self._write(TenantRecord(name, check_time(now), False, None, s, s))

    def delete_tenant(self, name: str, now: float, *, stamp: int | None = None) -> None:
        """Delete a tenant with its services and grants (each gets a tombstone)."""
        tenant = self._tenant(name)
        services = [s for (t, n), s in self._services.items() if t == name and self._live_service(tenant, n)]
        grants = [g for (c, t), g in self._grants.items() if t == name and self._grant(tenant, c)]
        s = self._stamp(stamp, [tenant, *services, *grants])
        self._write(replace(tenant, deleted=True, auth_hook=None, stamp=s))
        for svc in services:
            self._write(replace(svc, deleted=True, stamp=s))
        for grant in grants:
            self._write(replace(grant, permissions=NO_PERMISSIONS, stamp=s))

    def has_tenant(self, name: str) -> bool:
        return self._live_tenant(name) is not None

    def tenants(self) -> list[str]:
        return sorted(name for name, rec in self._tenants.items() if not rec.deleted)

    def set_auth_hook(self, tenant: str, hook: str | None, now: float, *, stamp: int | None = None) -> None:
        """Delegate the tenant's authentication to the named hook (None: the catalog's own keys)."""
        rec = self._tenant(tenant)
        if hook is not None:
            check_hook(hook)
        if hook != rec.auth_hook:
            self._write(replace(rec, auth_hook=hook, stamp=self._stamp(stamp, [rec])))

    def auth_hook(self, tenant: str) -> str | None:
        return self._tenant(tenant).auth_hook

    def create_service(self, tenant: str, service: str, now: float, *, stamp: int | None = None) -> None:
        check_service(service)
        rec = self._tenant(tenant)
        if self._live_service(rec, service) is not None:
            raise RemoteProtocolError(f"service '{tenant}/{service}' already exists", BAD_REQUEST)
        s = self._stamp(stamp, [rec, self._services.get((tenant, service))])
        self._write(ServiceRecord(tenant, service, check_time(now), False, s))

    def delete_service(self, tenant: str, service: str, now: float, *, stamp: int | None = None) -> None:
        svc = self._live_service(self._tenant(tenant), service)
        if svc is None:
            raise RemoteProtocolError(f"service '{tenant}/{service}' not found", NOT_FOUND)
        self._write(replace(svc, deleted=True, stamp=self._stamp(stamp, [svc])))

    def has_service(self, tenant: str, service: str) -> bool:
        rec = self._live_tenant(tenant)
        return rec is not None and self._live_service(rec, service) is not None

    def services(self, tenant: str) -> list[str]:
        rec = self._tenant(tenant)
        return sorted(n for (t, n) in self._services if t == tenant and self._live_service(rec, n))

    # ---- permissions

    def grant(self, client_id: str, tenant: str, perms: frozenset[Permission], now: float, *,
              stamp: int | None = None) -> frozenset[Permission]:
        """Add `perms` to what the client holds on the tenant; returns the new (unexpanded) set."""
        check_client_id(client_id)
        rec = self._tenant(tenant)
        held = self._grant(rec, client_id)
        new = held | perms
        if new != held:
            s = self._stamp(stamp, [rec, self._grants.get((client_id, tenant))])
            self._write(GrantRecord(client_id, tenant, frozenset(new), s))
        return new

    def revoke(self, client_id: str, tenant: str, perms: frozenset[Permission] | None, now: float, *,
               stamp: int | None = None) -> frozenset[Permission]:
        """Remove `perms` (None: all) from the client's grant; returns what was removed.

        Only the stored grant shrinks: revoking VARIABLE_READ from a SERVICE_ADMIN removes nothing
        it does not hold, and SERVICE_ADMIN still implies it.
        """
        rec = self._tenant(tenant)
        held = self._grant(rec, client_id)
        removed = held if perms is None else held & perms
        if removed:
            s = self._stamp(stamp, [rec, self._grants.get((client_id, tenant))])
            self._write(GrantRecord(client_id, tenant, held - removed, s))
        return removed

    def permissions(self, client_id: str, tenant: str) -> frozenset[Permission]:
        """What the client may do on the tenant: its grant expanded, or everything for a server admin."""
        if self.is_server_admin(client_id):
            return ALL
        rec = self._live_tenant(tenant)
        return NO_PERMISSIONS if rec is None else effective(self._grant(rec, client_id))

    def clients_of(self, tenant: str) -> list[str]:
        rec = self._tenant(tenant)
        return sorted(c for (c, t) in self._grants if t == tenant and self._grant(rec, c))


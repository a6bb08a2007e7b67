"""Permissions a client holds on a tenant, and the scope names clients ask for them by.

A grant stores the permissions exactly as given; `effective` expands them when checked:
TENANT_ADMIN implies every permission, SERVICE_ADMIN every SERVICE_*, VARIABLE_* and SUBSCRIBE.
Clients and admin commands name permissions by scope (`read`, `write`, `admin`, `service:read`,
... or a permission's own value such as `variable_read`); `parse_scopes` turns a list of scope
names into a set and refuses any name it does not know, naming it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from commy.errors import BAD_REQUEST, RemoteProtocolError


class Permission(enum.Enum):
    TENANT_ADMIN = "tenant_admin"
    SERVICE_ADMIN = "service_admin"
    SERVICE_CREATE = "service_create"
    SERVICE_READ = "service_read"
    SERVICE_WRITE = "service_write"
    SERVICE_DELETE = "service_delete"
    VARIABLE_READ = "variable_read"
    VARIABLE_WRITE = "variable_write"
    SUBSCRIBE = "subscribe"


P = Permission
ALL: frozenset[Permission] = frozenset(Permission)
_READ = frozenset({P.SERVICE_READ, P.VARIABLE_READ, P.SUBSCRIBE})
_WRITE = _READ | {P.SERVICE_WRITE, P.VARIABLE_WRITE, P.SERVICE_CREATE}
_SERVICE_ADMIN_IMPLIES = frozenset({
    P.SERVICE_ADMIN, P.SERVICE_CREATE, P.SERVICE_READ, P.SERVICE_WRITE, P.SERVICE_DELETE,
    P.VARIABLE_READ, P.VARIABLE_WRITE, P.SUBSCRIBE,
})

SCOPES: dict[str, frozenset[Permission]] = {
    "read": _READ,
    "write": _WRITE,
    "admin": ALL,
    "tenant:admin": frozenset({P.TENANT_ADMIN}),
    "service:admin": frozenset({P.SERVICE_ADMIN}),
    "service:create": frozenset({P.SERVICE_CREATE}),
    "service:read": frozenset({P.SERVICE_READ}),
    "service:write": frozenset({P.SERVICE_WRITE}),
    "service:delete": frozenset({P.SERVICE_DELETE}),
    "variable:read": frozenset({P.VARIABLE_READ}),
    "variable:write": frozenset({P.VARIABLE_WRITE}),
    "subscribe": frozenset({P.SUBSCRIBE}),
    **{p.value: frozenset({p}) for p in Permission},
}


def parse_scopes(scopes: Iterable[str]) -> frozenset[Permission]:
    """The union of the named scopes; an unknown (or non-string) scope is the client's error."""
    out: set[Permission] = set()
    for scope in scopes:
        perms = SCOPES.get(scope) if isinstance(scope, str) else None
        if perms is None:
            shown = scope[:64] if isinstance(scope, str) else type(scope).__name__
            raise RemoteProtocolError(f"unknown scope {shown!r}; known: {', '.join(sorted(SCOPES))}", BAD_REQUEST)
        out |= perms
    return frozenset(out)


def scope_names(perms: Iterable[Permission]) -> tuple[str, ...]:
    """Sorted permission values: the canonical way to show or send a set of permissions."""
    return tuple(sorted({p.value for p in perms}))


def effective(perms: frozenset[Permission]) -> frozenset[Permission]:
    if P.TENANT_ADMIN in perms:
        return ALL
    if P.SERVICE_ADMIN in perms:
        return perms | _SERVICE_ADMIN_IMPLIES
    return perms

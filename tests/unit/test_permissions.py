"""Scope names, their parsing, and the implications between permissions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commy.core.permissions import ALL, SCOPES, Permission, effective, parse_scopes, scope_names
from commy.errors import BAD_REQUEST, RemoteProtocolError

P = Permission
READ = {P.SERVICE_READ, P.VARIABLE_READ, P.SUBSCRIBE}


def test_the_broad_scopes() -> None:
    assert parse_scopes(["read"]) == READ
    assert parse_scopes(["write"]) == READ | {P.SERVICE_WRITE, P.VARIABLE_WRITE, P.SERVICE_CREATE}
    assert parse_scopes(["admin"]) == ALL == frozenset(Permission)
    assert parse_scopes([]) == frozenset()


@pytest.mark.parametrize("perm", list(Permission), ids=lambda p: p.value)
def test_every_permission_has_a_colon_scope_and_its_own_value(perm: Permission) -> None:
    colon = perm.value.replace("_", ":")
    assert parse_scopes([colon]) == parse_scopes([perm.value]) == {perm}


def test_scopes_union() -> None:
    assert parse_scopes(["read", "service:delete", "variable_write", "read"]) == READ | {
        P.SERVICE_DELETE, P.VARIABLE_WRITE}


@pytest.mark.parametrize("bad", ["READ", "service:read ", "", "tenant-admin", "x" * 1000])
def test_unknown_scope_is_a_bad_request_naming_it(bad: str) -> None:
    with pytest.raises(RemoteProtocolError) as err:
        parse_scopes(["read", bad])
    assert err.value.code == BAD_REQUEST and repr(bad[:64]) in err.value.detail and "service:read" in err.value.detail
    assert len(err.value.detail) < 600


def test_a_non_string_scope_is_a_bad_request() -> None:
    with pytest.raises(RemoteProtocolError) as err:
        parse_scopes([7])  # type: ignore[list-item]
    assert err.value.code == BAD_REQUEST and "int" in err.value.detail


@given(st.lists(st.sampled_from(sorted(SCOPES))))
def test_scope_names_round_trip(scopes: list[str]) -> None:
    perms = parse_scopes(scopes)
    names = scope_names(perms)
    assert list(names) == sorted(set(names)) and parse_scopes(names) == perms


def test_scope_names_are_sorted_values() -> None:
    assert scope_names([P.VARIABLE_READ, P.SUBSCRIBE, P.VARIABLE_READ]) == ("subscribe", "variable_read")


def test_tenant_admin_implies_everything() -> None:
    assert effective(frozenset({P.TENANT_ADMIN})) == ALL


def test_service_admin_implies_services_variables_and_subscribe_but_not_tenant_admin() -> None:
    got = effective(frozenset({P.SERVICE_ADMIN}))
    assert got == ALL - {P.TENANT_ADMIN}
    assert effective(frozenset({P.SERVICE_ADMIN, P.TENANT_ADMIN})) == ALL


@given(st.frozensets(st.sampled_from(list(Permission))))
def test_effective_only_adds_and_is_idempotent(perms: frozenset[Permission]) -> None:
    once = effective(perms)
    assert perms <= once and effective(once) == once
    if not perms & {P.TENANT_ADMIN, P.SERVICE_ADMIN}:
        assert once == perms

"""The client hub's administration: tenants, services, grants, keys, and revocation enforced at once
(sessions ended, subscriptions dropped, mapped files rotated with FileMigration to the others)."""

from __future__ import annotations

from commy.errors import BAD_REQUEST, FORBIDDEN, NOT_FOUND, UNAUTHENTICATED
from commy.messages import (
    AdminDone,
    ApiKeyCreated,
    Authenticate,
    AuthenticationResponse,
    CreateApiKey,
    CreateService,
    CreateTenant,
    DeleteService,
    DeleteTenant,
    Error,
    FileMigration,
    GetVariables,
    GrantPermission,
    ListServices,
    ListTenants,
    MapService,
    NamedValue,
    PermissionRevoked,
    RevokePermission,
    ServiceList,
    SetVariables,
    Subscribe,
    TenantList,
    VariableChanged,
    VariablesData,
    VariablesUpdated,
)
from tests.helpers.hub import HubHarness


def code(reply: object) -> str:
    assert isinstance(reply, Error), reply
    return reply.code


def test_admin_builds_a_tenant_and_hands_out_a_key() -> None:
    h = HubHarness()
    a = h.admin()
    assert isinstance(h.ask(a, CreateTenant("acme")), AdminDone)
    assert code(h.ask(a, CreateTenant("acme"))) == BAD_REQUEST
    created = h.ask(a, CreateApiKey("alice", False, "acme", ("write",)))
    assert isinstance(created, ApiKeyCreated) and created.key.startswith("ck_")
    c = h.connect()
    h.login(c, "acme", created.key)
    assert isinstance(h.ask(c, CreateService("acme", "svc")), AdminDone)
    assert h.ask(c, ListServices("acme")) == ServiceList("acme", ("svc",))
    assert h.ask(a, ListTenants()) == TenantList(("acme",))


def test_server_operations_need_a_server_admin() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "alice", frozenset({"admin"}))
    c = h.connect()
    h.login(c, "acme", key)
    for msg in (CreateTenant("x"), DeleteTenant("acme"), ListTenants(), CreateApiKey("eve", True, "", ())):
        assert code(h.ask(c, msg)) == FORBIDDEN, msg
    # a tenant admin may make keys for its own tenant
    assert isinstance(h.ask(c, CreateApiKey("bob", False, "acme", ("read",))), ApiKeyCreated)


def test_grant_takes_effect_on_open_sessions() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "bob", frozenset({"read"}))
    b = h.connect()
    h.login(b, "acme", key)
    set_x = SetVariables("acme", "s", (NamedValue("x", b"1"),), "")
    assert code(h.ask(b, set_x)) == FORBIDDEN
    h.ask(h.admin(), GrantPermission("acme", "bob", ("write",)))
    assert isinstance(h.ask(b, set_x), VariablesUpdated)


def test_revocation_ends_sessions_rotates_files_and_migrates_the_other_mappers() -> None:
    h = HubHarness()
    a = h.admin()
    h.ask(a, CreateTenant("acme"))
    keys = {n: h.ask(a, CreateApiKey(n, False, "acme", ("write",))).key for n in ("bob", "carol")}  # type: ignore
    bob, carol = h.connect(), h.connect()
    h.login(bob, "acme", keys["bob"])
    h.login(carol, "acme", keys["carol"])
    h.ask(carol, SetVariables("acme", "s", (NamedValue("x", b"1"),), ""))
    for c in (bob, carol):
        h.ask(c, Subscribe("acme", "s", ()))
        h.ask(c, MapService("acme", "s"))
    old_path = h.store.path("acme", "s")
    assert isinstance(h.ask(a, RevokePermission("acme", "bob", ())), AdminDone)
    assert h.events(bob, PermissionRevoked) == [PermissionRevoked("acme", "permission revoked")]
    assert h.store.rotated == [("acme", "s", old_path)]
    migrations = h.events(carol, FileMigration)
    assert migrations == [FileMigration("acme", "s", str(h.store.path("acme", "s")))]
    assert h.events(bob, FileMigration) == []
    h.ask(carol, SetVariables("acme", "s", (NamedValue("x", b"2"),), ""))
    assert not [e for e in h.events(bob, VariableChanged) if e.value == b"2"]  # type: ignore[attr-defined]
    assert code(h.ask(bob, GetVariables("acme", "s", ()))) == UNAUTHENTICATED
    assert code(h.ask(h.connect(), Authenticate("acme", "api_key", keys["bob"]))) == FORBIDDEN


def test_partial_revocation_keeps_the_session_but_drops_what_is_gone() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "bob", frozenset({"write"}))
    b = h.connect()
    h.login(b, "acme", key)
    h.ask(b, SetVariables("acme", "s", (NamedValue("x", b"1"),), ""))
    h.ask(b, Subscribe("acme", "s", ()))
    h.ask(h.admin(), RevokePermission("acme", "bob", ("subscribe",)))
    assert h.events(b, PermissionRevoked) == []
    assert not h.hub.subs.is_subscribed(b, "acme", "s")
    data = h.ask(b, GetVariables("acme", "s", ()))  # reading is still allowed
    assert isinstance(data, VariablesData) and [v.value for v in data.variables] == [b"1"]


def test_deleting_a_tenant_ends_its_sessions_and_its_files() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "bob")
    b = h.connect()
    h.login(b, "acme", key)
    h.ask(b, SetVariables("acme", "s", (NamedValue("x", b"1"),), ""))
    h.ask(h.admin(), DeleteTenant("acme"))
    assert h.events(b, PermissionRevoked) == [PermissionRevoked("acme", "tenant deleted")]
    assert not h.store.exists("acme", "s")
    assert code(h.ask(h.connect(), Authenticate("acme", "api_key", key))) == "unauthenticated"


def test_delete_service() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "bob", frozenset({"admin"}))
    b = h.connect()
    h.login(b, "acme", key)
    h.ask(b, SetVariables("acme", "s", (NamedValue("x", b"1"),), ""))
    assert isinstance(h.ask(b, DeleteService("acme", "s")), AdminDone)
    assert code(h.ask(b, GetVariables("acme", "s", ()))) == NOT_FOUND
    assert code(h.ask(b, DeleteService("acme", "s"))) == NOT_FOUND


def test_catalog_changes_are_published_for_persistence() -> None:
    h = HubHarness()
    before = h.hub.epoch
    h.ask(h.admin(), CreateTenant("acme"))
    assert h.hub.epoch == before + 1
    assert isinstance(h.login(h.connect(), "", h.admin_key), AuthenticationResponse)


def test_losing_read_ends_subscriptions_even_with_subscribe_left() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "bob", frozenset({"read"}))
    w = h.connect()
    h.login(w, "acme", h.setup_tenant("acme", "alice"))
    h.ask(w, SetVariables("acme", "s", (NamedValue("x", b"1"),), ""))
    b = h.connect()
    h.login(b, "acme", key)
    h.ask(b, Subscribe("acme", "s", ()))
    h.ask(h.admin(), RevokePermission("acme", "bob", ("variable:read",)))
    h.ask(w, SetVariables("acme", "s", (NamedValue("x", b"secret"),), ""))
    assert not [e for e in h.events(b, VariableChanged) if e.value == b"secret"]  # type: ignore[attr-defined]
    assert code(h.ask(b, Subscribe("acme", "s", ()))) == FORBIDDEN


def test_only_a_server_admin_sets_a_tenants_auth_hook() -> None:
    from commy.messages import SetAuthHook
    h = HubHarness()
    key = h.setup_tenant("acme", "ta", frozenset({"admin"}))
    c = h.connect()
    h.login(c, "acme", key)
    assert code(h.ask(c, SetAuthHook("acme", "sso"))) == FORBIDDEN
    a = h.admin()
    assert isinstance(h.ask(a, SetAuthHook("acme", "sso")), AdminDone)
    assert h.catalog.auth_hook("acme") == "sso"
    assert code(h.ask(a, SetAuthHook("ghost", "sso"))) == NOT_FOUND
    assert code(h.ask(a, SetAuthHook("acme", "bad hook!"))) == BAD_REQUEST
    assert isinstance(h.ask(a, SetAuthHook("acme", "")), AdminDone) and h.catalog.auth_hook("acme") is None

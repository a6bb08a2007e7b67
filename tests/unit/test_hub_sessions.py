"""The client hub's sessions: authentication by key, token and hook; lockout; logout; refresh;
heartbeats and the liveness sweep; one in-order reply per request."""

from __future__ import annotations

import pytest

from commy.core.clients import HubConfig
from commy.core.permissions import Permission
from commy.errors import EXPIRED, FORBIDDEN, RATE_LIMITED, TIMEOUT, UNAUTHENTICATED
from commy.messages import (
    Authenticate,
    AuthenticationResponse,
    CheckPermission,
    CloseClient,
    DelegatedAuthRequest,
    DelegatedAuthResult,
    Error,
    GetVariables,
    Heartbeat,
    HeartbeatAck,
    Logout,
    LogoutResponse,
    PermissionResponse,
    PermissionRevoked,
    RefreshToken,
    Resume,
    ResumeResponse,
    ServiceVersions,
    TokenRefreshResponse,
    VariablesData,
)
from tests.helpers.hub import HubHarness


def error_code(reply: object) -> str:
    assert isinstance(reply, Error), reply
    return reply.code


def test_api_key_opens_a_session_with_the_granted_permissions() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "alice", frozenset({"read"}))
    reply = h.login(h.connect(), "acme", key)
    assert reply.client_id == "alice" and reply.tenant == "acme"
    assert set(reply.permissions) == {"service_read", "variable_read", "subscribe"}


def test_bad_key_unknown_tenant_and_no_access_are_refused() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "alice")
    h.catalog.create_tenant("other", h.host.now())
    c = h.connect()
    assert error_code(h.ask(c, Authenticate("acme", "api_key", "ck_nope"))) == UNAUTHENTICATED
    assert error_code(h.ask(c, Authenticate("ghost", "api_key", key))) == UNAUTHENTICATED
    assert error_code(h.ask(c, Authenticate("other", "api_key", key))) == FORBIDDEN
    assert error_code(h.ask(c, Authenticate("", "api_key", key))) == FORBIDDEN  # not a server admin


def test_a_connection_holds_sessions_on_several_tenants() -> None:
    h = HubHarness()
    k1 = h.setup_tenant("t1", "alice")
    h.setup_tenant("t2", "alice")
    c = h.connect()
    h.login(c, "t1", k1)
    h.login(c, "t2", k1)
    assert set(h.hub.conns[c].sessions) == {"t1", "t2"}


def test_token_login_expiry_and_logout_revocation() -> None:
    h = HubHarness(HubConfig(token_ttl=100.0))
    key = h.setup_tenant("acme", "alice")
    token = h.login(h.connect(), "acme", key).token
    c2 = h.connect()
    assert isinstance(h.ask(c2, Authenticate("acme", "token", token)), AuthenticationResponse)
    assert isinstance(h.ask(c2, Logout("acme")), LogoutResponse)
    assert error_code(h.ask(c2, GetVariables("acme", "s", ()))) == UNAUTHENTICATED
    assert error_code(h.ask(h.connect(), Authenticate("acme", "token", token))) == UNAUTHENTICATED
    fresh = h.login(h.connect(), "acme", key).token
    h.host.current += 101
    assert error_code(h.ask(h.connect(), Authenticate("acme", "token", fresh))) == EXPIRED


def test_forged_and_garbage_tokens_are_refused() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "alice")
    token = h.login(h.connect(), "acme", key).token
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    for bad in (forged, "", "v1.x.y", "x" * 5000):
        assert error_code(h.ask(h.connect(), Authenticate("acme", "token", bad))) == UNAUTHENTICATED


def test_refresh_gives_a_new_token_and_revokes_the_old() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "alice")
    c = h.connect()
    old = h.login(c, "acme", key).token
    reply = h.ask(c, RefreshToken(old))
    assert isinstance(reply, TokenRefreshResponse) and reply.token != old
    assert error_code(h.ask(h.connect(), Authenticate("acme", "token", old))) == UNAUTHENTICATED
    assert isinstance(h.ask(h.connect(), Authenticate("acme", "token", reply.token)), AuthenticationResponse)


def test_revoking_the_key_refuses_its_tokens_and_ends_its_sessions() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "alice")
    c = h.connect()
    token = h.login(c, "acme", key).token
    key_id = key[3:19]
    from commy.messages import RevokeApiKey
    h.ask(h.admin(), RevokeApiKey(key_id))
    assert PermissionRevoked("acme", "api key revoked") in h.events(c)
    assert error_code(h.ask(h.connect(), Authenticate("acme", "token", token))) == UNAUTHENTICATED
    assert error_code(h.ask(h.connect(), Authenticate("acme", "api_key", key))) == UNAUTHENTICATED


def test_brute_force_locks_the_key_out() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "alice")
    wrong = key[:-4] + ("AAAA" if key[-4:] != "AAAA" else "BBBB")
    codes = [error_code(h.ask(h.connect(peer=f"10.0.0.{i}:1"), Authenticate("acme", "api_key", wrong)))
             for i in range(6)]
    assert codes == [UNAUTHENTICATED] * 5 + [RATE_LIMITED]
    assert error_code(h.ask(h.connect(), Authenticate("acme", "api_key", key))) == RATE_LIMITED  # even right
    h.host.current += 301
    assert isinstance(h.ask(h.connect(), Authenticate("acme", "api_key", key)), AuthenticationResponse)


def test_a_source_address_spraying_keys_is_locked_out() -> None:
    h = HubHarness()
    h.setup_tenant("acme", "alice")
    c = h.connect(peer="10.9.9.9:1")
    codes = [error_code(h.ask(c, Authenticate("acme", "api_key", f"ck_{i:016x}_" + "A" * 43))) for i in range(51)]
    assert codes[-1] == RATE_LIMITED and codes[0] == UNAUTHENTICATED


def test_check_permission_and_heartbeat() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "alice", frozenset({"read"}))
    c = h.connect()
    h.login(c, "acme", key)
    assert h.ask(c, CheckPermission("acme", "s", "variable:read")) == PermissionResponse("acme", "s",
                                                                                         "variable:read", True)
    assert h.ask(c, CheckPermission("acme", "s", "write")).allowed is False  # type: ignore[attr-defined]
    ack = h.ask(c, Heartbeat(12.5))
    assert isinstance(ack, HeartbeatAck) and ack.sent_at == 12.5


def test_silent_clients_are_dropped_and_heartbeats_keep_them() -> None:
    h = HubHarness(HubConfig(heartbeat_timeout=10.0, sweep_interval=1.0))
    quiet, chatty = h.connect(), h.connect()
    for _ in range(12):
        h.send(chatty, Heartbeat(0.0))
        h.host.advance(1.0)
    assert quiet not in h.hub.conns and chatty in h.hub.conns
    closes = h.events(quiet, CloseClient)
    assert closes and closes[0].code == TIMEOUT  # type: ignore[attr-defined]


def test_delegated_login_parks_later_requests_and_answers_in_order() -> None:
    h = HubHarness(auth_hooks="hooks")
    h.setup_tenant("acme", "acme/carol")  # the hook's users live in the tenant's namespace
    h.catalog.set_auth_hook("acme", "sso", h.host.now())
    c = h.connect()
    first = h.send(c, Authenticate("acme", "delegated", "ticket-123"))
    second = h.send(c, GetVariables("acme", "nope", ()))
    asked = h.hook_requests
    assert len(asked) == 1 and isinstance(asked[0], DelegatedAuthRequest)
    assert not [e for e in h.host.transmitted if e.request_id in (first, second)]  # nothing answered yet
    h.node.deliver(h.node_envelope(DelegatedAuthResult(asked[0].ref, "carol", "")))
    answered = [e for e in h.host.transmitted if e.request_id in (first, second)]
    assert [e.request_id for e in answered] == [first, second]
    assert isinstance(answered[0].body, AuthenticationResponse) and answered[0].body.client_id == "acme/carol"
    assert isinstance(answered[1].body, Error)


def test_delegated_login_times_out() -> None:
    h = HubHarness(HubConfig(delegated_timeout=5.0), auth_hooks="hooks")
    h.setup_tenant("acme", "carol")
    h.catalog.set_auth_hook("acme", "sso", h.host.now())
    c = h.connect()
    rid = h.send(c, Authenticate("acme", "delegated", "ticket"))
    h.host.advance(6.0)
    replies = [e.body for e in h.host.transmitted if e.request_id == rid]
    assert len(replies) == 1 and error_code(replies[0]) == UNAUTHENTICATED


def test_resume_reopens_sessions_and_returns_missed_changes() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "alice")
    c = h.connect()
    token = h.login(c, "acme", key).token
    from commy.messages import NamedValue, SetVariables
    h.ask(c, SetVariables("acme", "s", (NamedValue("a", b"1"), NamedValue("b", b"1")), ""))
    h.disconnect(c)
    w = h.connect()
    h.login(w, "acme", key)
    h.ask(w, SetVariables("acme", "s", (NamedValue("b", b"2"),), ""))
    from commy.messages import VariableVersion
    c2 = h.connect()
    seen = ServiceVersions("acme", "s", (VariableVersion("a", 1), VariableVersion("b", 1)))
    reply = h.ask(c2, Resume("sess", token, (seen,)))
    assert isinstance(reply, ResumeResponse) and reply.tenants == ("acme",)
    assert [(m.name, m.value, m.version) for m in reply.missed] == [("b", b"2", 2)]
    assert isinstance(h.ask(c2, GetVariables("acme", "s", ("a",))), VariablesData)


@pytest.mark.parametrize("method", ["nope", "API_KEY", ""])
def test_unknown_method_is_a_bad_request(method: str) -> None:
    h = HubHarness()
    h.setup_tenant("acme", "alice")
    assert error_code(h.ask(h.connect(), Authenticate("acme", method, "x"))) == "bad_request"


def test_logout_ends_every_session_its_token_opened() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "alice")
    c1 = h.connect()
    token = h.login(c1, "acme", key).token
    c2 = h.connect()
    assert isinstance(h.ask(c2, Authenticate("acme", "token", token)), AuthenticationResponse)
    h.ask(c1, Logout("acme"))
    assert PermissionRevoked("acme", "logged out") in h.events(c2)
    assert error_code(h.ask(c2, GetVariables("acme", "s", ()))) == UNAUTHENTICATED


def test_token_issuance_is_rate_limited_per_client() -> None:
    h = HubHarness()
    key = h.setup_tenant("acme", "alice")
    c = h.connect()
    for _ in range(60):
        h.login(c, "acme", key)
    assert error_code(h.ask(c, Authenticate("acme", "api_key", key))) == RATE_LIMITED
    h.host.current += 301
    h.login(c, "acme", key)


def test_delegated_identities_live_in_the_tenants_namespace() -> None:
    h = HubHarness(auth_hooks="hooks")
    h.setup_tenant("idp", "someone")
    h.catalog.set_auth_hook("idp", "sso", h.host.now())
    h.catalog.grant("idp/admin", "idp", frozenset(Permission), h.host.now())
    c = h.connect()
    rid = h.send(c, Authenticate("idp", "delegated", "x"))
    h.node.deliver(h.node_envelope(DelegatedAuthResult(h.hook_requests[0].ref, "admin", "")))
    reply = next(e.body for e in h.host.transmitted if e.request_id == rid)
    assert isinstance(reply, AuthenticationResponse) and reply.client_id == "idp/admin"
    from commy.messages import ListTenants
    assert error_code(h.ask(c, ListTenants())) == FORBIDDEN  # not the server admin "admin"


def test_an_expired_session_is_refused_even_between_sweeps() -> None:
    h = HubHarness(HubConfig(token_ttl=10.0, sweep_interval=1000.0, heartbeat_timeout=5000.0))
    key = h.setup_tenant("acme", "alice")
    c = h.connect()
    h.login(c, "acme", key)
    h.host.current += 11
    assert error_code(h.ask(c, GetVariables("acme", "s", ()))) in (UNAUTHENTICATED, EXPIRED)


def test_anonymous_connections_are_dropped() -> None:
    h = HubHarness(HubConfig(heartbeat_timeout=1000.0, anonymous_timeout=10.0))
    idle = h.connect()
    for _ in range(12):
        h.send(idle, Heartbeat(0.0))
        h.host.advance(1.0)
    assert idle not in h.hub.conns

"""Hostile clients, 2: access (issue 3, "Bad input and attacks").

Against a real server over real WebSockets, each asserting its error code and that a well-behaved
client is still served: unauthenticated requests of every type; cross-tenant reads, writes,
subscriptions, mapping and administration; forged, expired, refreshed, logged-out and key-revoked
tokens; brute-force logins per key and per source address.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest

from commy.core.hub_base import HubConfig
from commy.errors import (
    EXPIRED,
    FORBIDDEN,
    RATE_LIMITED,
    UNAUTHENTICATED,
)
from commy.messages import ClientMigrationAck, Error, Message
from commy.messages.client import (
    CLIENT_REQUESTS,
    SERVER,
    AdminDone,
    ApiKeyCreated,
    Authenticate,
    AuthenticationResponse,
    CheckPermission,
    CreateApiKey,
    CreateService,
    CreateTenant,
    DeleteService,
    DeleteTenant,
    DrainNode,
    GetVariables,
    GrantPermission,
    Heartbeat,
    HeartbeatAck,
    ListServices,
    ListTenants,
    Logout,
    LogoutResponse,
    MapService,
    MigrationAck,
    NamedValue,
    PermissionRevoked,
    RefreshToken,
    Resume,
    RevokeApiKey,
    RevokePermission,
    ServiceVersions,
    SetAuthHook,
    SetVariables,
    Subscribe,
    SubscriptionAck,
    TenantList,
    TokenRefreshResponse,
    UnmapService,
    Unsubscribe,
    VariableChanged,
    VariablesData,
)
from tests.helpers.hostile import (
    DEADLINE,
    TEN_KB,
    Served,
    Wire,
    admin_of,
    good_client,
    login,
    new_key,
    ok,
    read,
    serving,
    write,
)

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- 2. unauthenticated


def test_unauthenticated_requests_of_every_type_are_refused(tmp_path: Path) -> None:
    with serving(tmp_path / "data") as served:
        admin = admin_of(served, "acme")
        write(admin, "acme", "svc", "x", b"kept")
        alice = new_key(admin, "alice", "acme", "write")
        good = good_client(served, admin)
        forged = "v1.lNkhMzRj.9kysilg2oz84ytjcaLkyAOd9GfDuO1ybya_8U43gu2s"
        cases: list[tuple[Message, str | type[Message] | None]] = [
            (Authenticate("acme", "api_key", "ck_" + alice.key_id + "_" + "A" * 43), UNAUTHENTICATED),
            (Logout("acme"), UNAUTHENTICATED),
            (RefreshToken(forged), UNAUTHENTICATED),
            (CheckPermission("acme", "svc", "read"), UNAUTHENTICATED),
            (Heartbeat(1.0), HeartbeatAck),  # liveness needs no session
            (Resume("s1", forged, (ServiceVersions("acme", "svc", ()),)), UNAUTHENTICATED),
            (GetVariables("acme", "svc", ()), UNAUTHENTICATED),
            (SetVariables("acme", "svc", (NamedValue("x", b"stolen"),), ""), UNAUTHENTICATED),
            (Subscribe("acme", "svc", ()), UNAUTHENTICATED),
            (Unsubscribe("acme", "svc", ()), UNAUTHENTICATED),
            (MapService("acme", "svc"), UNAUTHENTICATED),
            (UnmapService("acme", "svc"), UNAUTHENTICATED),
            (MigrationAck("acme", "svc", "/tmp/x"), None),  # acknowledgements get no reply
            (ClientMigrationAck("s1", True, ""), None),
            (DrainNode("server"), UNAUTHENTICATED),
            (CreateTenant("evil"), UNAUTHENTICATED),
            (DeleteTenant("acme"), UNAUTHENTICATED),
            (CreateService("acme", "evil"), UNAUTHENTICATED),
            (DeleteService("acme", "svc"), UNAUTHENTICATED),
            (GrantPermission("acme", "mallory", ("admin",)), UNAUTHENTICATED),
            (RevokePermission("acme", "alice", ()), UNAUTHENTICATED),
            (CreateApiKey("mallory", True, "", ()), UNAUTHENTICATED),
            (CreateApiKey("mallory", False, "acme", ("admin",)), UNAUTHENTICATED),
            (RevokeApiKey(alice.key_id), UNAUTHENTICATED),
            (ListTenants(), UNAUTHENTICATED),
            (ListServices("acme"), UNAUTHENTICATED),
            (SetAuthHook("acme", "hook"), UNAUTHENTICATED),
        ]
        assert {type(m) for m, _ in cases} == CLIENT_REQUESTS
        for text in (False, True):
            anon = Wire(served.url, text=text)
            for msg, want in cases:
                if want is None:
                    anon.send(msg)
                    ok(anon.ask(Heartbeat(3.0)), HeartbeatAck)
                    assert not anon.strays, f"{msg!r} was answered: {anon.strays}"
                elif isinstance(want, str):
                    anon.refused(msg, want)
                else:
                    ok(anon.ask(msg), want)
            assert not anon.events and not anon.strays
            anon.close()
        # nothing happened: the data, the tenant and alice's access are intact
        assert read(admin, "acme", "svc") == {"x": b"kept"}
        assert ok(admin.ask(ListTenants()), TenantList).tenants == ("acme", "quiet7")
        ok(login(served.url, "acme", alice.key).ask(GetVariables("acme", "svc", ())), VariablesData)
        good.check(fresh=True)


# --------------------------------------------------------------------------- 3. cross-tenant


@dataclass
class TwoTenants:
    admin: Wire
    alice: Wire  # admin of tenant ta only
    bob: Wire  # write on tenant tb only
    keys: dict[str, ApiKeyCreated]
    alice_token: str


def two_tenants(served: Served) -> TwoTenants:
    admin = admin_of(served, "ta", "tb")
    write(admin, "ta", "svc", "x", b"a1")
    write(admin, "tb", "svc", "x", b"b1")
    keys = {"alice": new_key(admin, "alice", "ta", "admin"), "bob": new_key(admin, "bob", "tb", "write"),
            "carol": new_key(admin, "carol", "ta", "read")}
    alice = Wire(served.url)
    auth = ok(alice.ask(Authenticate("ta", "api_key", keys["alice"].key)), AuthenticationResponse)
    bob = login(served.url, "tb", keys["bob"].key)
    return TwoTenants(admin, alice, bob, keys, auth.token)


def test_cross_tenant_requests_of_every_type_are_refused(tmp_path: Path) -> None:
    with serving(tmp_path / "data") as served:
        w = two_tenants(served)
        good = good_client(served, w.admin)
        bob_key_id = w.keys["bob"].key_id
        # alice administers ta; none of it carries over to tb or to the server
        on_tb: list[tuple[Message, str]] = [
            (GetVariables("tb", "svc", ()), UNAUTHENTICATED),
            (SetVariables("tb", "svc", (NamedValue("x", b"evil"),), ""), UNAUTHENTICATED),
            (Subscribe("tb", "svc", ()), UNAUTHENTICATED),
            (Unsubscribe("tb", "svc", ()), UNAUTHENTICATED),
            (MapService("tb", "svc"), UNAUTHENTICATED),
            (UnmapService("tb", "svc"), UNAUTHENTICATED),
            (CheckPermission("tb", "svc", "read"), UNAUTHENTICATED),
            (Logout("tb"), UNAUTHENTICATED),
            (ListServices("tb"), UNAUTHENTICATED),
            (CreateService("tb", "evil"), UNAUTHENTICATED),
            (DeleteService("tb", "svc"), UNAUTHENTICATED),
            (GrantPermission("tb", "alice", ("admin",)), UNAUTHENTICATED),
            (RevokePermission("tb", "bob", ()), UNAUTHENTICATED),
            (CreateApiKey("alice", False, "tb", ("admin",)), UNAUTHENTICATED),
            (CreateTenant("tc"), FORBIDDEN),
            (DeleteTenant("tb"), FORBIDDEN),
            (ListTenants(), FORBIDDEN),
            (RevokeApiKey(bob_key_id), FORBIDDEN),
            (CreateApiKey("mallory", True, "", ()), FORBIDDEN),
            (CreateApiKey("mallory", True, "ta", ("admin",)), FORBIDDEN),
            (CreateApiKey("mallory", False, "", ()), FORBIDDEN),
            (SetAuthHook("tb", "hook"), FORBIDDEN),
            (SetAuthHook("ta", "hook"), FORBIDDEN),  # who picks the hook picks the users: server admins only
            (DrainNode("server"), FORBIDDEN),
            (Authenticate("tb", "api_key", w.keys["alice"].key), FORBIDDEN),
            (Authenticate("tb", "token", w.alice_token), FORBIDDEN),
            (Authenticate(SERVER, "api_key", w.keys["alice"].key), FORBIDDEN),
            (Authenticate(SERVER, "token", w.alice_token), FORBIDDEN),
            (Resume("s1", w.alice_token, (ServiceVersions("tb", "svc", ()),)), FORBIDDEN),
        ]
        exempt = {Heartbeat, RefreshToken, MigrationAck, ClientMigrationAck}  # no tenant, or no reply
        assert {type(m) for m, _ in on_tb} | exempt == CLIENT_REQUESTS
        for text in (False, True):
            for msg, code in on_tb:
                w.alice.refused(msg, code, text=text)
        # and bob, on tb, gets nothing of ta
        for msg, code in [(GetVariables("ta", "svc", ()), UNAUTHENTICATED),
                          (Subscribe("ta", "svc", ()), UNAUTHENTICATED),
                          (SetVariables("ta", "svc", (NamedValue("x", b"evil"),), ""), UNAUTHENTICATED),
                          (Authenticate("ta", "api_key", w.keys["bob"].key), FORBIDDEN),
                          (GrantPermission("ta", "bob", ("admin",)), UNAUTHENTICATED)]:
            w.bob.refused(msg, code)
        # a tenant whose name is another's prefix or differs in case is another tenant
        for other in ("t", "TB", "tb ", "tb."):
            w.alice.refused(GetVariables(other, "svc", ()), UNAUTHENTICATED)
        # nothing moved
        assert read(w.admin, "tb", "svc") == {"x": b"b1"} and read(w.admin, "ta", "svc") == {"x": b"a1"}
        assert ok(w.admin.ask(ListTenants()), TenantList).tenants == ("quiet7", "ta", "tb")
        assert read(w.bob, "tb", "svc") == {"x": b"b1"}
        good.check(fresh=True)


def test_a_tenant_admin_cannot_mint_keys_that_reach_other_tenants_or_the_server(tmp_path: Path) -> None:
    """A tenant admin creates API keys on its tenant; a key minted that way for an existing client id
    (a client of another tenant, or the server admin `admin`) must not open sessions outside the
    tenant. Either the server refuses to mint it (`forbidden`), or the key it mints reaches no further."""
    with serving(tmp_path / "data") as served:
        w = two_tenants(served)
        escalations = []
        for client_id, elsewhere in [("bob", "tb"), ("admin", SERVER), ("admin", "tb")]:
            minted = w.alice.ask(CreateApiKey(client_id, False, "ta", ("read",)))
            if isinstance(minted, Error):
                assert minted.code == FORBIDDEN, minted
                continue
            key = ok(minted, ApiKeyCreated).key
            thief = Wire(served.url)
            stolen = thief.ask(Authenticate(elsewhere, "api_key", key))
            if not (isinstance(stolen, Error) and stolen.code in (FORBIDDEN, UNAUTHENTICATED)):
                escalations.append(f"a key minted by alice (admin of ta only) for {client_id!r} opens a session "
                                   f"on {elsewhere or 'the server'!r}: {type(stolen).__name__}")
                if elsewhere == SERVER and isinstance(stolen, AuthenticationResponse):
                    # ... with every server-wide right: listing and deleting any tenant
                    assert ok(thief.ask(ListTenants()), TenantList).tenants == ("ta", "tb")
            thief.close()
        assert not escalations, "\n".join(escalations)
        assert read(w.admin, "tb", "svc") == {"x": b"b1"}


def test_a_subscriber_on_one_tenant_never_hears_of_another(tmp_path: Path) -> None:
    with serving(tmp_path / "data") as served:
        w = two_tenants(served)
        carol = login(served.url, "ta", w.keys["carol"].key)
        ok(carol.ask(Subscribe("ta", "svc", ())), SubscriptionAck)  # the whole service, new variables too
        carol.refused(Subscribe("tb", "svc", ()), UNAUTHENTICATED)
        # bob writes tb/svc (same service and variable names), then alice writes ta/svc
        for i in range(20):
            write(w.bob, "tb", "svc", "x", b"tb %d" % i)
            write(w.bob, "tb", "svc", f"new{i}", b"tb")
        write(w.alice, "ta", "svc", "x", b"ta only")
        change = ok(carol.next_event(), VariableChanged)
        assert (change.tenant, change.service, change.name, change.value) == ("ta", "svc", "x", b"ta only"), change
        with pytest.raises(TimeoutError):
            carol.next_event(timeout=0.2)
        assert not carol.events and not carol.strays
        # and bob's tb subscription hears nothing of ta
        ok(w.bob.ask(Subscribe("tb", "svc", ())), SubscriptionAck)
        write(w.alice, "ta", "svc", "x", b"ta again")
        write(w.admin, "tb", "svc", "marker", b"tb")
        change = ok(w.bob.next_event(), VariableChanged)
        assert (change.tenant, change.name) == ("tb", "marker"), change


# --------------------------------------------------------------------------- 4. tokens


def _tamper(token: str) -> list[str]:
    """Forgeries of a real token: a flipped signature, a re-signed-nothing payload, no signature..."""
    version, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    raw = msgpack.unpackb(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    longer = [raw[0], raw[1], raw[2], raw[3] + 10**6]
    forged_payload = base64.urlsafe_b64encode(msgpack.packb(longer)).rstrip(b"=").decode()
    return [
        f"{version}.{payload}.{flipped}",
        f"{version}.{forged_payload}.{signature}",  # a later expiry, the old signature
        f"{version}.{payload}.",
        f"{version}.{payload}",
        f"v2.{payload}.{signature}",
        f"{version}.{payload}.{signature}=",
        f"{version}.{payload}.{signature}".upper(),
        token + "x" * 1100,
        "",
        "v1..",
        "é" * 10,
        TEN_KB,
    ]


def test_forged_tokens_and_tokens_from_another_server_are_refused(tmp_path: Path) -> None:
    with serving(tmp_path / "one") as one, serving(tmp_path / "two") as two:
        admin = admin_of(one, "acme")
        key = new_key(admin, "alice", "acme", "write")
        good = good_client(one, admin)
        token = ok(Wire(one.url).ask(Authenticate("acme", "api_key", key.key)), AuthenticationResponse).token
        other = ok(Wire(two.url).ask(Authenticate(SERVER, "api_key", two.admin_key)), AuthenticationResponse).token
        mallory = Wire(one.url)
        for bad in [*_tamper(token), other]:  # `other` is a real token, signed with another server's key
            mallory.refused(Authenticate("acme", "token", bad), UNAUTHENTICATED)
            mallory.refused(Authenticate(SERVER, "token", bad), UNAUTHENTICATED)
            mallory.refused(RefreshToken(bad), UNAUTHENTICATED)
            mallory.refused(Resume("s1", bad, (ServiceVersions("acme", "svc", ()),)), UNAUTHENTICATED)
            mallory.refused(GetVariables("acme", "svc", ()), UNAUTHENTICATED)
        # the real one still works
        ok(mallory.ask(Authenticate("acme", "token", token)), AuthenticationResponse)
        good.check(fresh=True)


def test_expired_tokens_are_refused_and_their_sessions_end(tmp_path: Path) -> None:
    hub = HubConfig(token_ttl=0.5, sweep_interval=0.05)
    with serving(tmp_path / "data", hub=hub) as served:
        holder = Wire(served.url)
        auth = ok(holder.ask(Authenticate(SERVER, "api_key", served.admin_key)), AuthenticationResponse)
        other = Wire(served.url)
        deadline = time.monotonic() + DEADLINE
        while True:  # valid until it expires, then `expired`
            assert time.monotonic() < deadline, "the token never expired"
            reply = other.ask(Authenticate(SERVER, "token", auth.token))
            if isinstance(reply, Error):
                assert reply.code == EXPIRED, reply
                break
            ok(reply, AuthenticationResponse)
            time.sleep(0.05)
        late = Wire(served.url)
        late.refused(Authenticate(SERVER, "token", auth.token), EXPIRED)
        late.refused(RefreshToken(auth.token), EXPIRED)
        late.refused(Resume(auth.session_id, auth.token, ()), EXPIRED)
        # the session it opened is over: told so, then refused
        revoked = ok(holder.next_event(), PermissionRevoked)
        assert revoked.tenant == SERVER and "expired" in revoked.reason, revoked
        holder.refused(ListTenants(), UNAUTHENTICATED)
        # a fresh login is served (and tokens keep a 0.5 s life here: this one is used at once)
        ok(late.ask(Authenticate(SERVER, "api_key", served.admin_key)), AuthenticationResponse)
        ok(late.ask(ListTenants()), TenantList)


def test_logged_out_refreshed_and_key_revoked_tokens_are_refused(tmp_path: Path) -> None:
    with serving(tmp_path / "data") as served:
        admin = admin_of(served, "acme")
        write(admin, "acme", "svc", "x", b"1")
        key = new_key(admin, "alice", "acme", "write")
        good = good_client(served, admin)

        # logout revokes the token everywhere
        alice = Wire(served.url)
        token = ok(alice.ask(Authenticate("acme", "api_key", key.key)), AuthenticationResponse).token
        ok(alice.ask(Logout("acme")), LogoutResponse)
        alice.refused(GetVariables("acme", "svc", ()), UNAUTHENTICATED)
        alice.refused(Logout("acme"), UNAUTHENTICATED)
        for wire in (alice, Wire(served.url)):
            wire.refused(Authenticate("acme", "token", token), UNAUTHENTICATED)
            wire.refused(RefreshToken(token), UNAUTHENTICATED)
            wire.refused(Resume("s1", token, (ServiceVersions("acme", "svc", ()),)), UNAUTHENTICATED)

        # a refreshed token replaces the old one
        token = ok(alice.ask(Authenticate("acme", "api_key", key.key)), AuthenticationResponse).token
        fresh = ok(alice.ask(RefreshToken(token)), TokenRefreshResponse).token
        other = Wire(served.url)
        other.refused(Authenticate("acme", "token", token), UNAUTHENTICATED)
        other.refused(RefreshToken(token), UNAUTHENTICATED)
        ok(other.ask(Authenticate("acme", "token", fresh)), AuthenticationResponse)

        # revoking the key ends its sessions and refuses the key and its tokens
        ok(admin.ask(RevokeApiKey(key.key_id)), AdminDone)
        assert ok(other.next_event(), PermissionRevoked).tenant == "acme"
        other.refused(GetVariables("acme", "svc", ()), UNAUTHENTICATED)
        late = Wire(served.url)
        late.refused(Authenticate("acme", "token", fresh), UNAUTHENTICATED)
        late.refused(Authenticate("acme", "api_key", key.key), UNAUTHENTICATED)
        late.refused(RefreshToken(fresh), UNAUTHENTICATED)
        good.check(fresh=True)


# --------------------------------------------------------------------------- 5. brute force


def test_brute_force_on_one_key_locks_that_key_after_five_tries(tmp_path: Path) -> None:
    with serving(tmp_path / "data") as served:
        admin = admin_of(served, "acme")
        victim = new_key(admin, "victim", "acme", "write")
        bystander = new_key(admin, "bystander", "acme", "write")
        good = good_client(served, admin)
        guess = victim.key[:20] + bystander.key[20:]  # the victim's key id with a wrong (well-formed) secret
        assert guess != victim.key and len(guess) == len(victim.key)
        attacker = Wire(served.url)
        for _ in range(5):
            attacker.refused(Authenticate("acme", "api_key", guess), UNAUTHENTICATED)
        attacker.refused(Authenticate("acme", "api_key", guess), RATE_LIMITED)
        # locked for everyone, the right secret included, from any connection
        attacker.refused(Authenticate("acme", "api_key", victim.key), RATE_LIMITED)
        Wire(served.url).refused(Authenticate("acme", "api_key", victim.key), RATE_LIMITED)
        # other keys are not
        ok(Wire(served.url).ask(Authenticate("acme", "api_key", bystander.key)), AuthenticationResponse)
        good.check(fresh=True)


def test_brute_force_from_one_address_locks_that_address(tmp_path: Path) -> None:
    """A source address gets ten times a key's tries (here 2 x 10): after that every login from it is
    refused, whatever the key -- on loopback that is every local client. Sessions already open stay."""
    with serving(tmp_path / "data", hub=HubConfig(max_failures=2)) as served:
        admin = admin_of(served, "acme")
        good = good_client(served, admin)
        spare = new_key(admin, "spare", "acme", "read")
        attacker = Wire(served.url)
        for i in range(20):
            attacker.refused(Authenticate("acme", "api_key", f"guess-{i}"), UNAUTHENTICATED)
        attacker.refused(Authenticate("acme", "api_key", "guess-20"), RATE_LIMITED)
        Wire(served.url).refused(Authenticate("acme", "api_key", spare.key), RATE_LIMITED)
        good.check()  # an open session is still served

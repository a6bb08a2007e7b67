"""The tenant catalog: CRUD and its error codes, grants, API keys, revoked tokens, stamps, snapshots, merge."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import commy.core.catalog as catalog_module
from commy.core.catalog import Catalog
from commy.core.catalog_records import (
    KEY_LENGTH,
    ApiKeyRecord,
    GrantRecord,
    KdfParams,
    RevokedTokenRecord,
    ServiceRecord,
    TenantRecord,
    from_wire,
    to_wire,
)
from commy.core.permissions import ALL, Permission
from commy.errors import BAD_REQUEST, NOT_FOUND, LocalProtocolError, RemoteProtocolError

P = Permission
CHEAP = KdfParams(n=2, r=1, p=1)
READ = frozenset({P.SERVICE_READ, P.VARIABLE_READ, P.SUBSCRIBE})
B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def entropy(seed: int = 0) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def new(seed: int = 0) -> Catalog:
    return Catalog(kdf=CHEAP, entropy=entropy(seed))


def copy(cat: Catalog) -> Catalog:
    return Catalog.restore(cat.snapshot(), kdf=CHEAP, entropy=entropy(99))


def fails(code: str, fn: Callable[..., object], *args: object, **kwargs: object) -> str:
    with pytest.raises(RemoteProtocolError) as err:
        fn(*args, **kwargs)
    assert err.value.code == code
    return err.value.detail


@pytest.fixture
def kdf_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    real = catalog_module.derive

    def counting(secret: bytes, salt: bytes, kdf: KdfParams) -> bytes:
        calls.append(salt)
        return real(secret, salt, kdf)

    monkeypatch.setattr(catalog_module, "derive", counting)
    return calls


# ---- tenants and services


def test_tenant_crud_and_errors() -> None:
    cat = new()
    cat.create_tenant("acme", 1.0)
    cat.create_tenant("beta", 2.0)
    assert cat.tenants() == ["acme", "beta"] and cat.has_tenant("acme") and not cat.has_tenant("nope")
    assert fails(BAD_REQUEST, cat.create_tenant, "acme", 3.0) == "tenant 'acme' already exists"
    cat.delete_tenant("acme", 4.0)
    assert cat.tenants() == ["beta"] and not cat.has_tenant("acme")
    assert fails(NOT_FOUND, cat.delete_tenant, "acme", 5.0) == "tenant 'acme' not found"
    cat.create_tenant("acme", 6.0)  # over its tombstone
    assert cat.tenants() == ["acme", "beta"]


@pytest.mark.parametrize("bad", ["", "-x", ".x", "..", "a b", "a/b", "x" * 65, "é", "a\n", "CON", None, 5])
def test_bad_names_are_bad_requests(bad: object) -> None:
    cat = new()
    cat.create_tenant("t", 0.0)
    for call in (lambda: cat.create_tenant(bad, 0.0), lambda: cat.create_service("t", bad, 0.0)):  # type: ignore[arg-type]
        assert "name" in fails(BAD_REQUEST, call)
    cat.create_tenant("x" * 64, 0.0)
    cat.create_service("t", "Svc_1.v-2", 0.0)


def test_service_crud_and_errors() -> None:
    cat = new()
    assert fails(NOT_FOUND, cat.create_service, "acme", "s", 0.0) == "tenant 'acme' not found"
    cat.create_tenant("acme", 0.0)
    cat.create_service("acme", "s2", 1.0)
    cat.create_service("acme", "s1", 1.0)
    assert cat.services("acme") == ["s1", "s2"] and cat.has_service("acme", "s1")
    assert not cat.has_service("acme", "zz") and not cat.has_service("nope", "s1")
    assert fails(BAD_REQUEST, cat.create_service, "acme", "s1", 2.0) == "service 'acme/s1' already exists"
    cat.delete_service("acme", "s1", 3.0)
    assert cat.services("acme") == ["s2"]
    assert fails(NOT_FOUND, cat.delete_service, "acme", "s1", 4.0) == "service 'acme/s1' not found"
    assert fails(NOT_FOUND, cat.services, "nope") == "tenant 'nope' not found"
    cat.create_service("acme", "s1", 5.0)
    assert cat.services("acme") == ["s1", "s2"]


def test_deleting_a_tenant_drops_its_services_and_grants() -> None:
    cat = new()
    for t in ("acme", "beta"):
        cat.create_tenant(t, 0.0)
        cat.create_service(t, "s", 0.0)
        cat.grant("c", t, READ, 0.0)
    cat.delete_tenant("acme", 1.0)
    assert not cat.has_service("acme", "s") and cat.permissions("c", "acme") == frozenset()
    assert fails(NOT_FOUND, cat.clients_of, "acme")
    cat.create_tenant("acme", 2.0)
    assert cat.services("acme") == [] and cat.clients_of("acme") == [] and cat.permissions("c", "acme") == frozenset()
    assert cat.services("beta") == ["s"] and cat.permissions("c", "beta") == READ
    assert {r.key for r in cat.records() if isinstance(r, ServiceRecord) and r.deleted} == {("service", "acme", "s")}


def test_auth_hook() -> None:
    cat = new()
    cat.create_tenant("acme", 0.0)
    assert cat.auth_hook("acme") is None
    cat.set_auth_hook("acme", "ldap.corp:check", 1.0)
    assert cat.auth_hook("acme") == "ldap.corp:check"
    clock = cat.clock
    cat.set_auth_hook("acme", "ldap.corp:check", 2.0)
    assert cat.clock == clock  # no change, no new record
    cat.set_auth_hook("acme", None, 3.0)
    assert cat.auth_hook("acme") is None
    assert "auth hook" in fails(BAD_REQUEST, cat.set_auth_hook, "acme", "no spaces", 4.0)
    fails(NOT_FOUND, cat.set_auth_hook, "nope", "h", 4.0)
    fails(NOT_FOUND, cat.auth_hook, "nope")


# ---- permissions


def test_grant_and_revoke() -> None:
    cat = new()
    cat.create_tenant("acme", 0.0)
    assert cat.grant("c1", "acme", READ, 1.0) == READ
    assert cat.grant("c1", "acme", frozenset({P.SERVICE_WRITE}), 1.0) == READ | {P.SERVICE_WRITE}
    assert cat.permissions("c1", "acme") == READ | {P.SERVICE_WRITE}
    assert cat.permissions("c2", "acme") == frozenset() and cat.permissions("c1", "nope") == frozenset()
    cat.grant("c2", "acme", frozenset({P.SERVICE_ADMIN}), 1.0)
    assert cat.clients_of("acme") == ["c1", "c2"]
    assert cat.permissions("c2", "acme") == ALL - {P.TENANT_ADMIN}  # effective(), not the stored set
    assert cat.revoke("c1", "acme", frozenset({P.SERVICE_WRITE, P.TENANT_ADMIN}), 2.0) == {P.SERVICE_WRITE}
    assert cat.revoke("c2", "acme", frozenset({P.VARIABLE_READ}), 2.0) == frozenset()  # implied, not held
    assert cat.revoke("c1", "acme", None, 3.0) == READ
    assert cat.permissions("c1", "acme") == frozenset() and cat.clients_of("acme") == ["c2"]
    assert cat.revoke("c1", "acme", None, 3.0) == frozenset()
    fails(NOT_FOUND, cat.grant, "c1", "nope", READ, 0.0)
    fails(NOT_FOUND, cat.revoke, "c1", "nope", None, 0.0)
    assert "client id" in fails(BAD_REQUEST, cat.grant, "bad client", "acme", READ, 0.0)


def test_server_admins_hold_everything_everywhere_until_their_key_is_revoked() -> None:
    cat = new()
    key_id, _ = cat.create_api_key("root", server_admin=True, now=0.0, entropy=entropy(1))
    cat.create_api_key("root", server_admin=False, now=0.0, entropy=entropy(2))
    cat.create_api_key("user", server_admin=False, now=0.0, entropy=entropy(3))
    assert cat.is_server_admin("root") and not cat.is_server_admin("user") and not cat.is_server_admin("ghost")
    assert cat.permissions("root", "any-tenant") == ALL and cat.permissions("user", "any-tenant") == frozenset()
    cat.revoke_api_key(key_id, 1.0)
    assert not cat.is_server_admin("root") and cat.permissions("root", "any-tenant") == frozenset()


# ---- API keys


def test_api_key_create_and_verify(kdf_calls: list[bytes]) -> None:
    cat = new()
    key_id, key = cat.create_api_key("alice", server_admin=False, now=5.0, entropy=entropy(1))
    assert len(key) == KEY_LENGTH and key.startswith(f"ck_{key_id}_") and len(key_id) == 16
    rec = cat.verify_api_key(key)
    assert rec is not None and rec.key_id == key_id and rec.client_id == "alice"
    assert not rec.server_admin and not rec.revoked
    assert rec.kdf == CHEAP and key.split("_")[-1].encode() not in cat.snapshot() and "salt" not in repr(rec)
    assert cat.api_keys() == cat.api_keys("alice") == [rec] and cat.api_keys("bob") == []
    assert len(kdf_calls) == 2  # one to create, one to verify


def test_wrong_unknown_revoked_keys_all_spend_one_kdf(kdf_calls: list[bytes]) -> None:
    cat = new()
    key_id, key = cat.create_api_key("alice", server_admin=False, now=0.0, entropy=entropy(1))
    other = "0123456789abcdef" if key_id != "0123456789abcdef" else "fedcba9876543210"
    wrong_secret = key[:20] + ("A" if key[20] != "A" else "B") + key[21:]
    del kdf_calls[:]
    assert cat.verify_api_key(wrong_secret) is None and len(kdf_calls) == 1
    assert cat.verify_api_key(key.replace(key_id, other)) is None and len(kdf_calls) == 2
    revoked = cat.revoke_api_key(key_id, 1.0)
    assert revoked.revoked and cat.revoke_api_key(key_id, 2.0) == revoked  # idempotent
    assert cat.verify_api_key(key) is None and len(kdf_calls) == 3
    assert cat.api_keys("alice") == [revoked]
    assert fails(NOT_FOUND, cat.revoke_api_key, other, 0.0) == f"api key {other!r} not found"


def test_malformed_and_oversize_keys_are_refused_without_hashing(kdf_calls: list[bytes]) -> None:
    cat = new()
    _, key = cat.create_api_key("alice", server_admin=False, now=0.0, entropy=entropy(1))
    del kdf_calls[:]
    for bad in ("", key * 160, key + "A", key[:-1], "xx" + key[2:], key[:19] + "-" + key[20:], key.upper(),
                key[:-1] + "=", None, b"ck_", 12):
        assert cat.verify_api_key(bad) is None  # type: ignore[arg-type]
    assert kdf_calls == []


@given(st.one_of(st.text(max_size=200), st.text(min_size=KEY_LENGTH, max_size=KEY_LENGTH),
                 st.builds("ck_{}_{}".format, st.text("0123456789abcdef", min_size=16, max_size=16),
                           st.text(B64_ALPHABET, min_size=43, max_size=43))))
def test_any_text_returns_none_and_never_raises(text: str) -> None:
    assert GARBAGE_TARGET.verify_api_key(text) is None


GARBAGE_TARGET = new()
GARBAGE_TARGET.create_api_key("alice", server_admin=True, now=0.0, entropy=entropy(1))


def test_a_verified_key_is_cached_and_the_cache_forgets_revocations_and_is_bounded(kdf_calls: list[bytes]) -> None:
    cat = Catalog(kdf=CHEAP, entropy=entropy(), cache_size=2)
    keys = [cat.create_api_key("alice", server_admin=False, now=0.0, entropy=entropy(i))[1] for i in range(3)]
    del kdf_calls[:]
    assert cat.verify_api_key(keys[0]) and cat.verify_api_key(keys[0]) and cat.verify_api_key(keys[0])
    assert len(kdf_calls) == 1
    assert cat.verify_api_key(keys[1]) and cat.verify_api_key(keys[2]) and len(kdf_calls) == 3
    assert cat.verify_api_key(keys[0]) and len(kdf_calls) == 4  # evicted (cache_size=2), hashed again
    assert cat.verify_api_key(keys[0]) and len(kdf_calls) == 4
    assert cat._cache and all(len(tag) == 32 for tag in cat._cache)  # HMAC tags, never the keys
    rec = cat.verify_api_key(keys[0])
    assert rec is not None
    cat.revoke_api_key(rec.key_id, 1.0)
    assert cat.verify_api_key(keys[0]) is None


def test_entropy_that_is_not_bytes_of_the_right_length_is_our_bug() -> None:
    cat = new()
    with pytest.raises(LocalProtocolError):
        cat.create_api_key("a", server_admin=False, now=0.0, entropy=lambda n: b"x")
    with pytest.raises(LocalProtocolError, match="already in use"):
        for _ in range(2):
            cat.create_api_key("a", server_admin=False, now=0.0, entropy=lambda n: bytes(n))
    with pytest.raises(ValueError):
        KdfParams(n=3)


# ---- revoked tokens


def test_token_revocation_and_prune() -> None:
    cat = new()
    cat.revoke_token("t1", expires_at=100.0, now=10.0)
    cat.revoke_token("t2", expires_at=200.0, now=10.0)
    cat.revoke_token("t3", expires_at=5.0, now=10.0)  # already expired: refused anyway
    assert cat.token_revoked("t1") and cat.token_revoked("t2") and not cat.token_revoked("t3")
    assert cat.prune(100.0) == 1 and not cat.token_revoked("t1") and cat.token_revoked("t2")
    fails(BAD_REQUEST, cat.revoke_token, "", 1.0, 0.0)


# ---- stamps


def test_stamps_from_the_catalog_clock_or_the_caller() -> None:
    cat = new()
    cat.create_tenant("a", 0.0)
    cat.create_tenant("b", 0.0, stamp=10)
    cat.create_service("a", "s", 0.0)
    assert [r.stamp for r in cat.records()] == [1, 10, 11] and cat.clock == 11
    with pytest.raises(LocalProtocolError, match="not newer"):
        cat.delete_service("a", "s", 0.0, stamp=11)
    with pytest.raises(LocalProtocolError, match="stamp"):
        cat.create_tenant("c", 0.0, stamp=0)
    with pytest.raises(LocalProtocolError, match="finite"):
        cat.create_tenant("c", float("nan"))
    assert cat.tenants() == ["a", "b"]


# ---- snapshots

NAMES = st.sampled_from(["a", "b"])
CLIENTS = st.sampled_from(["c1", "c2", "root"])
PERMS = st.frozensets(st.sampled_from(list(Permission)), max_size=3)
OPS = st.one_of(
    st.tuples(st.just("create_tenant"), NAMES),
    st.tuples(st.just("delete_tenant"), NAMES),
    st.tuples(st.just("set_auth_hook"), NAMES, st.sampled_from([None, "hook1", "hook2"])),
    st.tuples(st.just("create_service"), NAMES, NAMES),
    st.tuples(st.just("delete_service"), NAMES, NAMES),
    st.tuples(st.just("grant"), CLIENTS, NAMES, PERMS),
    st.tuples(st.just("revoke"), CLIENTS, NAMES, st.none() | PERMS),
    st.tuples(st.just("key"), CLIENTS, st.booleans()),
    st.tuples(st.just("revoke_key"), st.integers(0, 5)),
    st.tuples(st.just("revoke_token"), st.sampled_from(["t1", "t2", "t3"]), st.integers(0, 50)),
    st.tuples(st.just("prune"),),
)


def apply(cat: Catalog, ops: list[tuple[object, ...]], seed: int = 0) -> Catalog:
    rng = random.Random(seed)
    for now, op in enumerate(ops):
        apply_one(cat, op, now, rng)
    return cat


def apply_one(cat: Catalog, op: tuple[object, ...], now: int, rng: random.Random) -> None:
    name, *args = op
    try:
        if name == "key":
            cat.create_api_key(args[0], server_admin=args[1], now=now, entropy=rng.randbytes)  # type: ignore[arg-type]
        elif name == "revoke_key":
            keys = cat.api_keys()
            if keys:
                cat.revoke_api_key(keys[args[0] % len(keys)].key_id, now)  # type: ignore[operator]
        elif name == "revoke_token":
            cat.revoke_token(args[0], now + args[1], now)  # type: ignore[arg-type, operator]
        elif name == "prune":
            cat.prune(now)
        else:
            getattr(cat, name)(*args, now)  # type: ignore[call-overload]
    except RemoteProtocolError as exc:
        assert exc.code in (BAD_REQUEST, NOT_FOUND)


def view(cat: Catalog) -> object:
    """Everything the catalog answers, to compare two catalogs by behaviour."""
    tenants = cat.tenants()
    return (tenants, {t: (cat.services(t), cat.clients_of(t), cat.auth_hook(t)) for t in tenants},
            {(c, t): cat.permissions(c, t) for c in ("c1", "c2", "root") for t in ("a", "b")},
            [cat.token_revoked(t) for t in ("t1", "t2", "t3")], cat.api_keys())


@given(st.lists(OPS, max_size=30), st.integers(0, 3))
def test_snapshot_restore_round_trip(ops: list[tuple[object, ...]], seed: int) -> None:
    cat = apply(new(), ops, seed)
    back = copy(cat)
    assert back.records() == cat.records() and back.clock == cat.clock and view(back) == view(cat)
    assert back.snapshot() == cat.snapshot()
    apply(cat, ops, seed + 1)
    apply(back, ops, seed + 1)
    assert back.records() == cat.records()


@given(st.binary(max_size=200))
def test_restoring_garbage_raises_value_error(data: bytes) -> None:
    try:
        Catalog.restore(data, kdf=CHEAP)
    except ValueError:
        pass


def snapshot_of(**doc: object) -> bytes:
    good = msgpack.unpackb(apply(new(), [("create_tenant", "a"), ("key", "c1", False)]).snapshot())
    return msgpack.packb({**good, **doc})


@pytest.mark.parametrize(("data", "message"), [
    (b"\xc1", "not msgpack"),
    (msgpack.packb([1, 2]), "map with keys"),
    (snapshot_of(format="other"), "not a catalog snapshot"),
    (snapshot_of(version=2), "version 2 is not supported"),
    (snapshot_of(version=True), "version True"),
    (snapshot_of(clock=-1), "clock"),
    (snapshot_of(clock=0), "behind"),
    (snapshot_of(records={}), "records must be a list"),
    (snapshot_of(records=[["tenant", "a", 0.0, False, None, 1, 1]] * 2), "record 1 repeats"),
    (snapshot_of(records=[["planet", "x"]]), "record 0: expected [kind"),
    (snapshot_of(records=[["tenant", "a", 0.0, False, None, 1]]), "has 6 fields, got 5"),
    (snapshot_of(records=[["tenant", "a b", 0.0, False, None, 1, 1]]), "record 0 (tenant) name"),
    (snapshot_of(records=[["tenant", "a", 0.0, 1, None, 1, 1]]), "deleted must be bool"),
    (snapshot_of(records=[["tenant", "a", float("inf"), False, None, 1, 1]]), "created_at must be a finite number"),
    (snapshot_of(records=[["tenant", "a", 0.0, False, None, 1, True]]), "stamp must be an int"),
    (snapshot_of(records=[["grant", "c", "a", ["read"], 1]]), "unknown permission"),
    (snapshot_of(records=[["grant", "c", "a", ["subscribe", "subscribe"], 1]]), "repeated permission"),
    (snapshot_of(records=[["api_key", "ABC", "c", b"s", bytes(32), [2, 1, 1], False, 0.0, False, 1]]), "key_id"),
    (snapshot_of(records=[["api_key", "0" * 16, "c", b"s", bytes(31), [2, 1, 1], False, 0.0, False, 1]]), "hash"),
    (snapshot_of(records=[["api_key", "0" * 16, "c", b"s", bytes(32), [2**30, 8, 1], False, 0.0, False, 1]]), "kdf"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_restore_names_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ValueError) as err:
        Catalog.restore(data, kdf=CHEAP)
    assert message in str(err.value)


# ---- merge


def test_newest_stamp_wins_including_tombstones() -> None:
    a = new()
    a.create_tenant("t", 0.0)
    a.create_service("t", "s", 0.0)
    a.grant("c", "t", READ, 0.0)
    b = copy(a)
    a.delete_tenant("t", 1.0)
    stale = b.records()
    changed = b.merge(a.records())
    assert {r.key for r in changed} == {("tenant", "t"), ("service", "t", "s"), ("grant", "c", "t")}
    assert not b.has_tenant("t") and b.records() == a.records()
    assert a.merge(stale) == [] and not a.has_tenant("t")
    b.create_tenant("t", 2.0)  # b's clock moved past the tombstone, so the new incarnation wins back
    assert a.merge(b.records()) == [b.records()[0]] and a.has_tenant("t") and a.services("t") == []


def test_a_grant_concurrent_with_the_deletion_does_not_leak_into_a_recreated_tenant() -> None:
    a = new()
    a.create_tenant("t", 0.0)
    b = copy(a)
    b.grant("c", "t", READ, 1.0, stamp=5)  # concurrently on another node
    a.delete_tenant("t", 1.0, stamp=3)
    a.merge(b.records())
    assert a.permissions("c", "t") == frozenset()
    a.create_tenant("t", 2.0)
    assert a.permissions("c", "t") == frozenset() and a.clients_of("t") == []
    b.merge(a.records())
    assert b.records() == a.records() and b.permissions("c", "t") == frozenset()


def test_equal_stamps_resolve_the_same_way_on_both_sides() -> None:
    a, b = new(1), new(2)
    a.create_tenant("t", 1.0)
    b.create_tenant("t", 2.0)
    a_first, b_first = copy(a), copy(b)
    a_first.merge(b.records())
    b_first.merge(a.records())
    winner = a_first.records()[0]
    assert a_first.records() == b_first.records() and isinstance(winner, TenantRecord) and winner.created_at == 2.0


def test_merge_checks_every_record_before_applying_any() -> None:
    cat = new()
    good = TenantRecord("ok", 0.0, False, None, 1, 1)
    for bad in (TenantRecord("a b", 0.0, False, None, 1, 1), GrantRecord("c", "t", frozenset({"read"}), 1),  # type: ignore[arg-type]
                ServiceRecord("t", "s", 0.0, False, -1), "tenant"):
        detail = fails(BAD_REQUEST, cat.merge, [good, bad])
        assert detail.startswith("catalog merge:")
    assert cat.records() == [] and cat.merge([good]) == [good] and cat.merge([good]) == []


RECORDS = st.one_of(
    st.builds(TenantRecord, NAMES, st.sampled_from([0.0, 1.0]), st.booleans(), st.sampled_from([None, "h"]),
              st.integers(1, 4), st.integers(1, 6)),
    st.builds(ServiceRecord, NAMES, NAMES, st.just(0.0), st.booleans(), st.integers(1, 6)),
    st.builds(GrantRecord, CLIENTS, NAMES, PERMS, st.integers(1, 6)),
    st.builds(ApiKeyRecord, st.sampled_from(["0" * 16, "1" * 16]), CLIENTS, st.just(b"salt"), st.just(bytes(32)),
              st.just(CHEAP), st.booleans(), st.just(0.0), st.booleans(), st.integers(1, 6)),
    st.builds(RevokedTokenRecord, st.sampled_from(["t1", "t2"]), st.sampled_from([10.0, 20.0]), st.integers(1, 6)),
)


@given(st.lists(RECORDS, max_size=25), st.randoms(use_true_random=False))
def test_merge_is_idempotent_and_order_does_not_matter(records: list[object], rnd: random.Random) -> None:
    one, two = new(), new()
    one.merge(records)  # type: ignore[arg-type]
    shuffled = list(records)
    rnd.shuffle(shuffled)
    for rec in shuffled:  # one at a time, in another order
        two.merge([rec])  # type: ignore[list-item]
    assert one.records() == two.records() and one.clock == two.clock
    assert one.merge(records) == [] and one.merge(one.records()) == []  # type: ignore[arg-type]
    assert all(from_wire(to_wire(r)) == r for r in one.records())


@given(st.lists(OPS, max_size=15), st.lists(OPS, max_size=15), st.lists(OPS, max_size=15))
def test_merging_catalogs_commutes_and_converges(base: list[tuple[object, ...]], xs: list[tuple[object, ...]],
                                                 ys: list[tuple[object, ...]]) -> None:
    common = apply(new(), base)
    a, b = apply(copy(common), xs, seed=1), apply(copy(common), ys, seed=2)
    ab, ba = copy(a), copy(b)
    ab.merge(b.records())
    ba.merge(a.records())
    assert ab.records() == ba.records() and view(ab) == view(ba)
    assert ab.merge(a.records()) == [] and ab.merge(b.records()) == []
    changed = copy(a).merge(b.records())
    assert all(replace(r) in ab.records() for r in changed)


# ---- snapshot sync between nodes (merge_snapshot)


def test_merge_snapshot_reports_changes_and_takes_the_higher_clock() -> None:
    a, b = new(1), new(2)
    assert a.snapshot() == b.snapshot()  # no per-catalog secret in the bytes
    a.create_tenant("t", 1.0)
    a.grant("c", "t", READ, 1.0)
    adopted: list[object] = []
    assert b.merge_snapshot(a.snapshot(), adopted=adopted)  # type: ignore[arg-type]
    assert [r.key for r in adopted] == [("tenant", "t"), ("grant", "c", "t")]  # type: ignore[attr-defined]
    assert b.snapshot() == a.snapshot() and not b.merge_snapshot(a.snapshot()) and not a.merge_snapshot(b.snapshot())
    a.revoke_token("tok", 50.0, 2.0)
    a.prune(60.0)  # the record is gone, its stamp stays in the clock
    assert a.records() == b.records() and a.snapshot() != b.snapshot()
    assert b.merge_snapshot(a.snapshot()) and b.clock == a.clock and b.snapshot() == a.snapshot()


def test_merge_snapshot_does_not_take_back_a_revocation_that_expired() -> None:
    a, b = new(1), new(2)
    a.revoke_token("old", 10.0, 0.0)
    a.revoke_token("new", 100.0, 0.0)
    assert b.merge_snapshot(a.snapshot(), now=20.0)
    assert not b.token_revoked("old") and b.token_revoked("new") and b.clock == a.clock
    assert not b.merge_snapshot(a.snapshot(), now=20.0)


BAD_SNAPSHOTS = [b"\xc1", msgpack.packb([1, 2]), b"", "text"]


@pytest.mark.parametrize("data", [
    *BAD_SNAPSHOTS,
    snapshot_of(version=2),
    snapshot_of(clock=0),
    snapshot_of(records=[["tenant", "z", 0.0, False, None, 9, 9], ["grant", "c", "a", ["read"], 9]]),
    snapshot_of(records=[["tenant", "z", 0.0, False, None, 9, 9], ["tenant", "z", 0.0, False, None, 9, 9]]),
], ids=repr)
def test_a_malformed_snapshot_from_a_peer_changes_nothing(data: bytes) -> None:
    cat = apply(new(), [("create_tenant", "a"), ("grant", "c1", "a", READ)])
    before = cat.snapshot()
    assert fails(BAD_REQUEST, cat.merge_snapshot, data).startswith("catalog snapshot:")
    assert cat.snapshot() == before and not cat.has_tenant("z")


def test_concurrent_creations_of_one_tenant_converge() -> None:
    a, b = new(1), new(2)
    a.create_tenant("t", 1.0)
    a.create_service("t", "from_a", 1.0)
    b.create_tenant("t", 2.0)
    b.create_service("t", "from_b", 2.0)
    b.grant("c", "t", READ, 2.0)
    snap_a, snap_b = a.snapshot(), b.snapshot()
    a.merge_snapshot(snap_b)
    b.merge_snapshot(snap_a)
    assert a.snapshot() == b.snapshot() and view(a) == view(b)
    assert a.has_tenant("t") and a.services("t") == ["from_a", "from_b"] and a.permissions("c", "t")


STEPS = st.lists(st.one_of(
    st.tuples(st.sampled_from(["a", "b"]), OPS),
    st.tuples(st.sampled_from(["a->b", "b->a"]), st.integers(0, 100)),  # a snapshot, maybe a stale one
), max_size=30)


@given(st.lists(OPS, max_size=10), STEPS, st.booleans())
def test_catalogs_exchanging_snapshots_converge_whatever_the_order(
        base: list[tuple[object, ...]], steps: list[tuple[str, object]], a_first: bool) -> None:
    common = apply(new(), base)
    cats = {"a": copy(common), "b": copy(common)}
    rngs = {"a": random.Random(1), "b": random.Random(2)}
    sent: dict[str, list[bytes]] = {"a": [cats["a"].snapshot()], "b": [cats["b"].snapshot()]}
    for now, (where, what) in enumerate(steps, start=len(base)):
        if "->" in where:
            src, dst = where.split("->")
            cats[dst].merge_snapshot(sent[src][what % len(sent[src])])  # type: ignore[operator]
        else:
            apply_one(cats[where], what, now, rngs[where])  # type: ignore[arg-type]
        sent[where[0]].append(cats[where[0]].snapshot())
    a, b = cats["a"], cats["b"]
    first, second = (a, b) if a_first else (b, a)
    second.merge_snapshot(first.snapshot())
    first.merge_snapshot(second.snapshot())
    assert a.snapshot() == b.snapshot() and view(a) == view(b)
    assert not a.merge_snapshot(b.snapshot()) and not b.merge_snapshot(a.snapshot())


@given(st.lists(OPS, max_size=15), st.lists(OPS, max_size=15), st.lists(OPS, min_size=1, max_size=10))
def test_after_a_merge_local_changes_are_stamped_above_everything_merged(
        xs: list[tuple[object, ...]], ys: list[tuple[object, ...]], later: list[tuple[object, ...]]) -> None:
    a, b = apply(new(1), xs, seed=1), apply(new(2), ys, seed=2)
    a.merge_snapshot(b.snapshot())
    before = set(a.records())
    apply(a, later, seed=3)
    fresh = [r for r in a.records() if r not in before]
    assert all(r.stamp > b.clock for r in fresh)
    b.merge_snapshot(a.snapshot())  # so each of them wins over what it replaced at b
    assert all(r in b.records() for r in fresh)

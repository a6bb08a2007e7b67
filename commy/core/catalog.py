"""The tenant catalog: tenants, services, API keys, grants and revoked tokens, as stamped records.

Every change writes whole records (see `catalog_records`) through `_write`, each with a stamp: the
caller's, which must be newer than the record it replaces, or else the catalog's own Lamport-style
counter (one past the highest stamp it has seen, merges included). So `records()` from one catalog
can be `merge`d into another record by record, newest stamp winning, and deletions travel as
tombstones. `snapshot()` depends on the records and the clock only (sorted, no per-instance
secret) and `merge_snapshot` takes the higher clock too, so two catalogs that merged each other's
snapshots hold identical bytes: the cluster's catalog sync (`commy.core.catalog_sync`) compares
their SHA-256. Tenants, services and grants are `Tenancy`'s (`commy.core.catalog_tenants`): a
tenant remembers the stamp it was created at, and older services and grants of the same name are
a deleted predecessor's.

API keys: only a salt and an scrypt hash of the secret are kept. Verifying parses and length-checks
the string first, spends one KDF even for an unknown or revoked key id (so timing does not tell
which ids exist), compares in constant time, and remembers verified keys in a small LRU cache
keyed by an HMAC of the key under a per-catalog random secret, so a client reconnecting with the
same key skips the KDF and the cache never holds a key itself.

Operations refused because of what a client asked for raise `RemoteProtocolError` (bad_request,
not_found); misuse by our own code (a stale stamp, broken entropy) raises `LocalProtocolError`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace

from commy.core.catalog_records import (
    KEY_ID_HEX,
    SECRET_BYTES,
    ApiKeyRecord,
    GrantRecord,
    KdfParams,
    Record,
    RevokedTokenRecord,
    ServiceRecord,
    TenantRecord,
    check_client_id,
    check_record,
    check_token_id,
    derive,
    format_key,
    pack_snapshot,
    parse_key,
    rank,
    unpack_snapshot,
)
from commy.core.catalog_tenants import Tenancy, check_time
from commy.errors import BAD_REQUEST, NOT_FOUND, LocalProtocolError, RemoteProtocolError

Entropy = Callable[[int], bytes]


def _draw(entropy: Entropy, n: int) -> bytes:
    data = entropy(n)
    if type(data) is not bytes or len(data) != n:
        raise LocalProtocolError(f"entropy({n}) must return {n} bytes, got a {type(data).__name__}")
    return data


class Catalog(Tenancy):
    """Tenants, services, grants, API keys and revoked tokens; see the module docstring."""

    def __init__(self, *, kdf: KdfParams = KdfParams(), entropy: Entropy = os.urandom, cache_size: int = 1024) -> None:
        self.kdf = kdf
        self._clock = 0
        self._tenants: dict[str, TenantRecord] = {}
        self._services: dict[tuple[str, str], ServiceRecord] = {}
        self._keys: dict[str, ApiKeyRecord] = {}
        self._grants: dict[tuple[str, str], GrantRecord] = {}
        self._tokens: dict[str, RevokedTokenRecord] = {}
        self._client_keys: dict[str, set[str]] = {}
        # Only decides cache hits, never an answer, so the simulator's determinism does not need it seeded.
        self._cache_secret = _draw(entropy, 32)
        self._cache: OrderedDict[bytes, tuple[str, bytes]] = OrderedDict()
        self._cache_size = cache_size
        self._dummy_salt = bytes(16)

    # ---- stamps and the one place records change

    @property
    def clock(self) -> int:
        """The highest stamp this catalog has seen."""
        return self._clock

    def _stamp(self, stamp: int | None, replaced: Iterable[Record | None]) -> int:
        if stamp is None:
            return self._clock + 1
        if type(stamp) is not int or not 0 < stamp < 2**63:
            raise LocalProtocolError(f"a stamp must be an int in 1..2**63-1, got {stamp!r}")
        for old in replaced:
            if old is not None and stamp <= old.stamp:  # a merge would drop this write: our bug
                raise LocalProtocolError(f"stamp {stamp} is not newer than {old.stamp} of {old.key}")
        return stamp

    def _current(self, rec: Record) -> Record | None:
        match rec:
            case TenantRecord():
                return self._tenants.get(rec.name)
            case ServiceRecord():
                return self._services.get((rec.tenant, rec.name))
            case ApiKeyRecord():
                return self._keys.get(rec.key_id)
            case GrantRecord():
                return self._grants.get((rec.client_id, rec.tenant))
            case RevokedTokenRecord():
                return self._tokens.get(rec.token_id)
        raise LocalProtocolError(f"not a catalog record: {type(rec).__name__}")

    def _write(self, rec: Record) -> None:
        self._clock = max(self._clock, rec.stamp)
        match rec:
            case TenantRecord():
                self._tenants[rec.name] = rec
            case ServiceRecord():
                self._services[(rec.tenant, rec.name)] = rec
            case ApiKeyRecord():
                old = self._keys.get(rec.key_id)
                if old is not None:
                    self._client_keys[old.client_id].discard(rec.key_id)
                self._keys[rec.key_id] = rec
                self._client_keys.setdefault(rec.client_id, set()).add(rec.key_id)
            case GrantRecord():
                self._grants[(rec.client_id, rec.tenant)] = rec
            case RevokedTokenRecord():
                self._tokens[rec.token_id] = rec

    # ---- API keys

    def create_api_key(self, client_id: str, *, server_admin: bool, now: float, entropy: Entropy,
                       stamp: int | None = None) -> tuple[str, str]:
        """A new key for the client: (key id, the full key string, which is shown this once only)."""
        check_client_id(client_id)
        for _ in range(16):
            key_id = _draw(entropy, KEY_ID_HEX // 2).hex()
            if key_id not in self._keys:
                break
        else:
            raise LocalProtocolError("entropy keeps returning key ids already in use")
        secret, salt = _draw(entropy, SECRET_BYTES), _draw(entropy, 16)
        rec = ApiKeyRecord(key_id, client_id, salt, derive(secret, salt, self.kdf), self.kdf, bool(server_admin),
                           check_time(now), False, self._stamp(stamp, []))
        self._write(rec)
        return key_id, format_key(key_id, secret)

    def verify_api_key(self, key: str) -> ApiKeyRecord | None:
        """The key's record if `key` is a valid, unrevoked key; None otherwise, whatever `key` is."""
        parsed = parse_key(key)
        if parsed is None:
            return None
        key_id, secret = parsed
        tag = hmac.new(self._cache_secret, key.encode("ascii"), hashlib.sha256).digest()
        rec = self._keys.get(key_id)
        hit = self._cache.get(tag)
        if hit is not None:
            if rec is not None and not rec.revoked and hit == (key_id, rec.hash):
                self._cache.move_to_end(tag)
                return rec
            del self._cache[tag]
        if rec is None or rec.revoked:
            derive(secret, self._dummy_salt, self.kdf)  # as slow as a real check: timing hides which ids exist
            return None
        if not hmac.compare_digest(derive(secret, rec.salt, rec.kdf), rec.hash):
            return None
        self._cache[tag] = (key_id, rec.hash)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return rec

    def revoke_api_key(self, key_id: str, now: float, *, stamp: int | None = None) -> ApiKeyRecord:
        """Revoke a key (already revoked: returned as it is); returns its record."""
        rec = self._keys.get(key_id) if isinstance(key_id, str) else None
        if rec is None:
            raise RemoteProtocolError(f"api key {str(key_id)[:64]!r} not found", NOT_FOUND)
        if not rec.revoked:
            rec = replace(rec, revoked=True, stamp=self._stamp(stamp, [rec]))
            self._write(rec)
        return rec

    def api_keys(self, client_id: str | None = None) -> list[ApiKeyRecord]:
        """Keys (revoked ones too) of one client or of everyone, oldest first."""
        ids = self._keys if client_id is None else self._client_keys.get(client_id, set())
        return sorted((self._keys[k] for k in ids), key=lambda r: (r.created_at, r.key_id))

    def is_server_admin(self, client_id: str) -> bool:
        keys = (self._keys[k] for k in self._client_keys.get(client_id, ()))
        return any(rec.server_admin and not rec.revoked for rec in keys)

    # ---- revoked tokens

    def revoke_token(self, token_id: str, expires_at: float, now: float, *, stamp: int | None = None) -> None:
        """Refuse the token from now on; a token already expired is refused anyway and not stored."""
        check_token_id(token_id)
        expires_at = check_time(expires_at)
        old = self._tokens.get(token_id)
        if expires_at > check_time(now) and (old is None or old.expires_at < expires_at):
            self._write(RevokedTokenRecord(token_id, expires_at, self._stamp(stamp, [old])))

    def token_revoked(self, token_id: str) -> bool:
        return token_id in self._tokens

    def prune(self, now: float) -> int:
        """Forget revocations of tokens that have expired (expiry refuses them); returns how many."""
        gone = [t for t, rec in self._tokens.items() if rec.expires_at <= now]
        for token_id in gone:
            del self._tokens[token_id]
        return len(gone)

    # ---- replication and persistence

    def records(self) -> list[Record]:
        """Every record, tombstones included, in a stable order."""
        out: list[Record] = [self._tenants[k] for k in sorted(self._tenants)]
        out += [self._services[k] for k in sorted(self._services)]
        out += [self._keys[k] for k in sorted(self._keys)]
        out += [self._grants[k] for k in sorted(self._grants)]
        out += [self._tokens[k] for k in sorted(self._tokens)]
        return out

    def merge(self, records: Iterable[Record], *, now: float | None = None) -> list[Record]:
        """Adopt each record that outranks this catalog's version of it; returns the adopted ones.

        Records come from peers, so they are all checked first (a bad batch changes nothing and
        raises RemoteProtocolError). Idempotent, and the result does not depend on the order.
        With `now`, revocations of tokens expired by then are not adopted: this catalog may have
        pruned them, and taking them back would only make two catalogs differ until both prune.
        """
        try:
            incoming = [check_record(r) for r in records]
        except ValueError as exc:
            raise RemoteProtocolError(f"catalog merge: {exc}", BAD_REQUEST) from None
        return self._adopt(incoming, now)

    def merge_snapshot(self, data: bytes, *, now: float | None = None, adopted: list[Record] | None = None) -> bool:
        """Merge a peer's `snapshot()`: its records as `merge` does, its clock by max (else two
        catalogs with the same records but different clocks -- one pruned a record the other never
        saw -- would differ forever). True when this catalog's snapshot changed; the adopted records
        are appended to `adopted`. Malformed: RemoteProtocolError, and nothing changes."""
        try:
            clock, records = unpack_snapshot(data)
        except ValueError as exc:
            raise RemoteProtocolError(f"catalog snapshot: {exc}", BAD_REQUEST) from None
        before = self._clock
        changed = self._adopt(records, now)
        self._clock = max(self._clock, clock)
        if adopted is not None:
            adopted += changed
        return bool(changed) or self._clock != before

    def _adopt(self, incoming: list[Record], now: float | None) -> list[Record]:
        expiry = None if now is None else check_time(now)
        changed: list[Record] = []
        for rec in incoming:
            cur = self._current(rec)
            expired = expiry is not None and isinstance(rec, RevokedTokenRecord) and rec.expires_at <= expiry
            if not expired and (cur is None or rank(rec) > rank(cur)):
                self._write(rec)
                changed.append(rec)
            else:  # Lamport: our next stamp must beat every stamp seen, adopted or not
                self._clock = max(self._clock, rec.stamp)
        return changed

    def snapshot(self) -> bytes:
        return pack_snapshot(self._clock, self.records())

    @classmethod
    def restore(cls, data: bytes, *, kdf: KdfParams = KdfParams(), entropy: Entropy = os.urandom) -> Catalog:
        """Rebuild a catalog from `snapshot()`; anything malformed raises ValueError naming what."""
        clock, records = unpack_snapshot(data)
        catalog = cls(kdf=kdf, entropy=entropy)
        for rec in records:
            catalog._write(rec)
        catalog._clock = clock
        return catalog

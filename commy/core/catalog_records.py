"""The tenant catalog's records, their order for merging, their wire form, and API key strings.

The catalog is a set of records, each identified by its `key` (kind plus identity) and carrying a
`stamp`. Two versions of one record are ordered by `rank` -- the stamp, then, for equal stamps
written concurrently on two nodes, the record's packed bytes -- so merging keeps the same winner
whatever order versions arrive in. Nothing is ever deleted by a merge: a deletion is a newer
version with `deleted`/`revoked` set, or, for a grant, an empty permission set (a tombstone).

Each record packs as a msgpack array `[kind, field, ...]` in field order (KDF parameters as
`[n, r, p]`, permissions as sorted values); a snapshot is the map `{format, version, clock,
records}`. `from_wire` and `unpack_snapshot` are strict: every field's type and every name, id and
parameter is checked, and anything off raises `ValueError` naming the record and field.

Tenant and service names follow `commy.store.names` (the store turns them into folder names);
client ids, token ids and hook names have their own small rules here.

An API key reads `ck_<key_id>_<secret>`: 16 lowercase hex characters of key id and 32 random bytes
of secret in unpadded base64url. The catalog keeps only a salt and the scrypt hash of the secret.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import ClassVar

import msgpack

from commy.core.auth import b64url_decode, b64url_encode
from commy.core.permissions import Permission
from commy.errors import BAD_REQUEST, RemoteProtocolError
from commy.store.names import check_service, check_tenant

KEY_PREFIX = "ck_"
KEY_ID_HEX = 16
SECRET_BYTES = 32
KEY_LENGTH = len(KEY_PREFIX) + KEY_ID_HEX + 1 + len(b64url_encode(bytes(SECRET_BYTES)))
HASH_BYTES = 32
SNAPSHOT_FORMAT = "commy-catalog"
SNAPSHOT_VERSION = 1

_HOOK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_PRINTABLE_ID = re.compile(r"[!-~]{1,128}")  # client and token ids: printable ASCII, no spaces
_KEY_ID = re.compile(r"[0-9a-f]{16}")


def _check(pattern: re.Pattern[str], what: str, value: object, rule: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        shown = repr(value[:80]) if isinstance(value, str) else type(value).__name__
        raise RemoteProtocolError(f"invalid {what} {shown}: {rule}", BAD_REQUEST)
    return value


def check_name(kind: str, name: object) -> str:
    """A tenant or service name checked by `commy.store.names` (kept for callers that pass the kind)."""
    return {"tenant": check_tenant, "service": check_service}[kind](name)


def check_client_id(client_id: object) -> str:
    return _check(_PRINTABLE_ID, "client id", client_id, "1-128 printable ASCII characters, no spaces")


def check_token_id(token_id: object) -> str:
    return _check(_PRINTABLE_ID, "token id", token_id, "1-128 printable ASCII characters, no spaces")


def check_hook(hook: object) -> str:
    return _check(_HOOK, "auth hook", hook, "1-128 of A-Z a-z 0-9 _ . : -, starting with a letter or digit")


@dataclass(frozen=True, slots=True)
class KdfParams:
    """scrypt cost; bounded so a crafted snapshot or peer record cannot ask for gigabytes."""

    n: int = 2**14
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        n, r, p = self.n, self.r, self.p
        if not (all(type(v) is int for v in (n, r, p)) and n >= 2 and n & (n - 1) == 0 and r >= 1
                and 1 <= p <= 16 and 128 * n * r <= 2**28):
            raise ValueError(f"scrypt needs n a power of two >= 2, r >= 1, p in 1..16 and 128*n*r <= 256 MiB; got "
                             f"{n!r:.20}, {r!r:.20}, {p!r:.20}")


def derive(secret: bytes, salt: bytes, kdf: KdfParams) -> bytes:
    maxmem = 128 * kdf.r * (kdf.n + kdf.p + 2) + 2**20  # what OpenSSL computes it needs, plus slack
    return hashlib.scrypt(secret, salt=salt, n=kdf.n, r=kdf.r, p=kdf.p, maxmem=maxmem, dklen=HASH_BYTES)


def format_key(key_id: str, secret: bytes) -> str:
    return f"{KEY_PREFIX}{key_id}_{b64url_encode(secret)}"


def parse_key(text: object) -> tuple[str, bytes] | None:
    """(key id, secret) of a well-formed key string, else None; the length is checked first."""
    if not isinstance(text, str) or len(text) != KEY_LENGTH or not text.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret_text = text[len(KEY_PREFIX):].partition("_")
    if not sep or not _KEY_ID.fullmatch(key_id):
        return None
    secret = b64url_decode(secret_text)
    return (key_id, secret) if secret is not None and len(secret) == SECRET_BYTES else None


# ---- records


@dataclass(frozen=True, slots=True)
class TenantRecord:
    KIND: ClassVar[str] = "tenant"
    name: str
    created_at: float
    deleted: bool
    auth_hook: str | None
    # The stamp this incarnation was created at: services and grants stamped earlier belong to a
    # deleted predecessor of the same name (a concurrent write the deletion could not see).
    created_stamp: int
    stamp: int

    @property
    def key(self) -> tuple[str, ...]:
        return (self.KIND, self.name)


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    KIND: ClassVar[str] = "service"
    tenant: str
    name: str
    created_at: float
    deleted: bool
    stamp: int

    @property
    def key(self) -> tuple[str, ...]:
        return (self.KIND, self.tenant, self.name)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    KIND: ClassVar[str] = "api_key"
    key_id: str
    client_id: str
    salt: bytes = field(repr=False)
    hash: bytes = field(repr=False)
    kdf: KdfParams
    server_admin: bool
    created_at: float
    revoked: bool
    stamp: int

    @property
    def key(self) -> tuple[str, ...]:
        return (self.KIND, self.key_id)


@dataclass(frozen=True, slots=True)
class GrantRecord:
    KIND: ClassVar[str] = "grant"
    client_id: str
    tenant: str
    permissions: frozenset[Permission]
    stamp: int

    @property
    def key(self) -> tuple[str, ...]:
        return (self.KIND, self.client_id, self.tenant)


@dataclass(frozen=True, slots=True)
class RevokedTokenRecord:
    KIND: ClassVar[str] = "revoked_token"
    token_id: str
    expires_at: float
    stamp: int

    @property
    def key(self) -> tuple[str, ...]:
        return (self.KIND, self.token_id)


Record = TenantRecord | ServiceRecord | ApiKeyRecord | GrantRecord | RevokedTokenRecord
RECORD_TYPES: tuple[type[Record], ...] = (TenantRecord, ServiceRecord, ApiKeyRecord, GrantRecord, RevokedTokenRecord)
KINDS: dict[str, type[Record]] = {cls.KIND: cls for cls in RECORD_TYPES}


def _plain(value: object) -> object:
    if isinstance(value, KdfParams):
        return [value.n, value.r, value.p]
    if isinstance(value, frozenset):
        return sorted(p.value for p in value)
    return value


def to_wire(rec: Record) -> list[object]:
    return [rec.KIND, *(_plain(getattr(rec, f.name)) for f in fields(rec))]


def rank(rec: Record) -> tuple[int, bytes]:
    """Total order of two versions of one record: the newer stamp wins, ties broken by content."""
    return rec.stamp, msgpack.packb(to_wire(rec), use_bin_type=True)


# ---- strict decoding

Field = Callable[[object, str], object]


def _exact(tp: type) -> Field:
    def check(v: object, what: str) -> object:
        if type(v) is not tp:  # `type is`, not isinstance: True is not an int here
            raise ValueError(f"{what} must be {tp.__name__}, got {type(v).__name__}")
        return v
    return check


def _stamp(v: object, what: str) -> int:
    if type(v) is not int or not 0 <= v < 2**63:
        raise ValueError(f"{what} must be an int in 0..2**63-1, got {v!r:.40}")
    return v


def _time(v: object, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {v!r:.40}")
    return float(v)


def _rule(check: Callable[[object], str]) -> Field:
    def run(v: object, what: str) -> object:
        try:
            return check(v)
        except RemoteProtocolError as exc:
            raise ValueError(f"{what}: {exc.detail}") from None
    return run


def _optional_hook(v: object, what: str) -> object:
    return None if v is None else _rule(check_hook)(v, what)


def _key_id(v: object, what: str) -> str:
    if not isinstance(v, str) or not _KEY_ID.fullmatch(v):
        raise ValueError(f"{what} must be {KEY_ID_HEX} lowercase hex characters")
    return v


def _sized_bytes(low: int, high: int) -> Field:
    def check(v: object, what: str) -> object:
        if type(v) is not bytes or not low <= len(v) <= high:
            raise ValueError(f"{what} must be {low}..{high} bytes")
        return v
    return check


def _kdf(v: object, what: str) -> KdfParams:
    if type(v) is not list or len(v) != 3:
        raise ValueError(f"{what} must be [n, r, p]")
    try:
        return KdfParams(*v)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _permissions(v: object, what: str) -> frozenset[Permission]:
    if type(v) is not list or any(type(p) is not str for p in v):
        raise ValueError(f"{what} must be a list of permission names")
    try:
        perms = frozenset(Permission(p) for p in v)
    except ValueError:
        raise ValueError(f"{what}: unknown permission in {v[:16]!r}") from None
    if len(perms) != len(v):
        raise ValueError(f"{what}: repeated permission")
    return perms


_BOOL, _STR = _exact(bool), _exact(str)
_TENANT, _SERVICE = _rule(check_tenant), _rule(check_service)
_CLIENT, _TOKEN = _rule(check_client_id), _rule(check_token_id)

_SCHEMA: dict[type[Record], tuple[Field, ...]] = {
    TenantRecord: (_TENANT, _time, _BOOL, _optional_hook, _stamp, _stamp),
    ServiceRecord: (_TENANT, _SERVICE, _time, _BOOL, _stamp),
    ApiKeyRecord: (_key_id, _CLIENT, _sized_bytes(1, 64), _sized_bytes(HASH_BYTES, HASH_BYTES), _kdf, _BOOL,
                   _time, _BOOL, _stamp),
    GrantRecord: (_CLIENT, _TENANT, _permissions, _stamp),
    RevokedTokenRecord: (_TOKEN, _time, _stamp),
}


def from_wire(obj: object, what: str = "record") -> Record:
    if type(obj) is not list or not obj or type(obj[0]) is not str or obj[0] not in KINDS:
        raise ValueError(f"{what}: expected [kind, ...] with kind one of {sorted(KINDS)}")
    cls = KINDS[obj[0]]
    names = [f.name for f in fields(cls)]
    if len(obj) != 1 + len(names):
        raise ValueError(f"{what}: a {cls.KIND} record has {len(names)} fields, got {len(obj) - 1}")
    checks = zip(_SCHEMA[cls], names, obj[1:], strict=True)
    values = [check(v, f"{what} ({cls.KIND}) {name}") for check, name, v in checks]
    return cls(*values)  # type: ignore[arg-type]


def check_record(rec: object) -> Record:
    """`rec` as `from_wire` would rebuild it; ValueError if a field has the wrong type or value."""
    if not isinstance(rec, RECORD_TYPES):
        raise ValueError(f"not a catalog record: {type(rec).__name__}")
    try:
        wire = to_wire(rec)
    except (AttributeError, TypeError) as exc:
        raise ValueError(f"{rec.KIND} record: {exc}") from None
    return from_wire(wire, f"{rec.KIND} record")


# ---- snapshots


def pack_snapshot(clock: int, records: list[Record]) -> bytes:
    doc = {"format": SNAPSHOT_FORMAT, "version": SNAPSHOT_VERSION, "clock": clock,
           "records": [to_wire(r) for r in records]}
    return msgpack.packb(doc, use_bin_type=True)


def unpack_snapshot(data: object) -> tuple[int, list[Record]]:
    """(clock, records) of a snapshot; ValueError naming the first thing wrong with it."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"catalog snapshot must be bytes, got {type(data).__name__}")
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises many types (ExtraData, FormatError, ValueError, ...)
        raise ValueError(f"catalog snapshot is not msgpack: {type(exc).__name__}: {exc}") from None
    keys = {"format", "version", "clock", "records"}
    if type(doc) is not dict or set(doc) != keys:
        raise ValueError(f"catalog snapshot must be a map with keys {sorted(keys)}")
    if doc["format"] != SNAPSHOT_FORMAT:
        raise ValueError(f"not a catalog snapshot (format {str(doc['format'])[:40]!r})")
    version = doc["version"]
    if type(version) is not int or version != SNAPSHOT_VERSION:
        raise ValueError(f"catalog snapshot version {version!r:.40} is not supported (this is {SNAPSHOT_VERSION})")
    clock, items = doc["clock"], doc["records"]
    if type(clock) is not int or not 0 <= clock < 2**63:
        raise ValueError(f"catalog snapshot clock must be an int in 0..2**63-1, got {clock!r:.40}")
    if type(items) is not list:
        raise ValueError("catalog snapshot records must be a list")
    records: list[Record] = []
    seen: set[tuple[str, ...]] = set()
    for i, item in enumerate(items):
        rec = from_wire(item, f"catalog snapshot record {i}")
        if rec.key in seen:
            raise ValueError(f"catalog snapshot record {i} repeats {rec.key}")
        seen.add(rec.key)
        records.append(rec)
    newest = max((r.stamp for r in records), default=0)
    if clock < newest:
        raise ValueError(f"catalog snapshot clock {clock} is behind its newest record's stamp {newest}")
    return clock, records

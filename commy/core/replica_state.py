"""The replicator's configuration, its conflict rules, and the bookkeeping it keeps per service.

`Resolver.resolve` is the one place a conflict rule lives. Given what the file holds for a variable
(value and stamp) and an incoming write, it says what the file must hold afterwards, or None when
the file already holds it. Each rule is a join over all writes ever seen, so replicas that see the
same writes in any order, duplicates included, end with the same value and stamp:

- "lww": the higher stamp wins. A stamp's low byte is its origin, so stamps never tie across
  writes and the order is total.
- "priority": the higher `(priorities[origin], stamp)` wins (a node's configured priority first).
- "merge": the value becomes `merge(lower, higher)` (ordered by stamp, then bytes) and the stamp
  the higher one. The application's function must be commutative, associative and idempotent;
  then the result is the join of every value seen, whatever the order. Equal stamps with
  different values (one replica has merged in more than the other) merge too.

`ServiceState` is what the replicator remembers about one service in memory only (a restart loses
it, and anti-entropy makes up for that): last writers per variable (for sync records), writes
applied across a gap (`stash`, so the version vector can advance once the gap is filled), and
which sync or snapshot transfer is in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from commy.core.actor import TimerId
from commy.core.hlc import origin_of
from commy.errors import LocalProtocolError, RemoteProtocolError
from commy.messages import Address, Clock, Replicate, VariablesUpdated

Merge = Callable[[bytes, bytes], bytes]
Key = tuple[str, str]
"""(tenant, service)"""

REPLICATOR = "replicator"
RULES = ("lww", "priority", "merge")
CONCERNS = ("local", "replicated", "quorum")
STAT_NAMES = ("writes_streamed", "applied", "duplicates", "conflicts", "gaps", "syncs", "transfers", "bad_chunks",
              "transfer_resumes", "concern_timeouts", "resends")
LAG_SAMPLES = 10_000
MAX_ORIGIN = 255
MAX_STAMP = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    replication_factor: int = 2
    cluster_size: int = 1
    write_timeout: float = 2.0  # a replicated/quorum write's acks; also how long a sync stays "in flight"
    anti_entropy_interval: float = 0.5
    max_sync_bytes: int = 1 << 20  # a sync answer bigger than this goes as a chunked snapshot
    chunk_size: int = 256 << 10
    transfer_timeout: float = 1.0  # no chunk for this long: resume from the first missing one
    transfer_retries: int = 5  # resumes in a row without progress before giving up
    snapshot_ttl: float = 30.0  # how long a sender keeps an encoded snapshot for resumes
    ensure_timeout: float = 2.0
    conflict: str = "lww"
    priorities: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("replication_factor", "cluster_size", "max_sync_bytes", "chunk_size"):
            v = getattr(self, name)
            if type(v) is not int or v < 1:
                raise ValueError(f"replication.{name} must be an int >= 1, got {v!r}")
        if type(self.transfer_retries) is not int or self.transfer_retries < 0:
            raise ValueError(f"replication.transfer_retries must be an int >= 0, got {self.transfer_retries!r}")
        for name in ("write_timeout", "anti_entropy_interval", "transfer_timeout", "snapshot_ttl", "ensure_timeout"):
            v = getattr(self, name)
            if not 0 < v < float("inf"):  # also refuses NaN
                raise ValueError(f"replication.{name} must be a finite number > 0, got {v!r}")
        if self.conflict not in RULES:
            raise ValueError(f"replication.conflict must be one of {RULES}, got {self.conflict!r}")
        for origin, prio in self.priorities.items():
            if type(origin) is not int or not 0 <= origin <= MAX_ORIGIN or type(prio) is not int:
                raise ValueError(f"replication.priorities maps node indexes 0..{MAX_ORIGIN} to ints, got "
                                 f"{origin!r}: {prio!r}")


# --------------------------------------------------------------------------- version vectors


def clocks_from(clocks: Iterable[Clock]) -> dict[int, int]:
    """A version vector from the wire (a peer's), checked; zero entries dropped."""
    out: dict[int, int] = {}
    for c in clocks:
        if not 0 <= c.origin <= MAX_ORIGIN or not 0 <= c.stamp <= MAX_STAMP:
            raise RemoteProtocolError(f"bad clock entry {c.origin}:{c.stamp}")
        if c.stamp:
            out[c.origin] = max(out.get(c.origin, 0), c.stamp)
    return out


def clocks_to(vv: Mapping[int, int]) -> tuple[Clock, ...]:
    """A version vector for the wire: sorted by origin, zero entries left out."""
    return tuple(Clock(o, s) for o, s in sorted(vv.items()) if s)


def check_stamp(stamp: int) -> int:
    if not 0 <= stamp <= MAX_STAMP:
        raise RemoteProtocolError(f"stamp {stamp} out of range")
    return stamp


# --------------------------------------------------------------------------- conflict rules


class Resolver:
    """The configured conflict rule (see the module docstring)."""

    def __init__(self, rule: str, priorities: Mapping[int, int], merge: Merge | None) -> None:
        if rule not in RULES:
            raise LocalProtocolError(f"unknown conflict rule {rule!r}")
        if rule == "merge" and merge is None:
            raise LocalProtocolError("conflict rule 'merge' needs a merge function")
        self.rule = rule
        self.priorities = dict(priorities)
        self.merge = merge

    def resolve(self, current: tuple[bytes, int] | None, value: bytes, stamp: int) -> tuple[bytes, int] | None:
        """What the file must hold after the write (value, stamp) meets `current`; None: keep it."""
        if current is None:
            return value, stamp
        cur_value, cur_stamp = current
        if self.rule == "merge":
            assert self.merge is not None
            if cur_stamp == stamp and cur_value == value:
                return None
            lo, hi = sorted(((cur_stamp, cur_value), (stamp, value)))
            out = (self.merge(lo[1], hi[1]), hi[0])
            return None if out == current else out
        if stamp == cur_stamp:
            return None  # the same write (a stamp names one write)
        if self.rule == "priority":
            prio = self.priorities.get
            wins = (prio(origin_of(stamp), 0), stamp) > (prio(origin_of(cur_stamp), 0), cur_stamp)
        else:
            wins = stamp > cur_stamp
        return (value, stamp) if wins else None

    def needed(self, stamp: int, theirs: Mapping[int, int], floor: int) -> bool:
        """Whether a holder with version vector `theirs` lacks an entry stamped `stamp`.

        Under lww and priority an entry is exactly its winning write: they lack it iff they have
        not seen that write. A merged entry also carries other writes' values, which may be older
        than its stamp: it is needed if it is newer than `floor`, their lowest clock among the
        origins they are behind on (any write they lack is newer than that)."""
        if stamp > theirs.get(origin_of(stamp), 0):
            return True
        return self.rule == "merge" and stamp > floor


def sync_floor(ours: Mapping[int, int], theirs: Mapping[int, int]) -> int:
    """The lowest of their clocks among origins where ours is ahead (no such origin: no floor)."""
    behind = [theirs.get(o, 0) for o, s in ours.items() if s > theirs.get(o, 0)]
    return min(behind) if behind else MAX_STAMP


# --------------------------------------------------------------------------- bookkeeping


@dataclass
class ServiceState:
    """What the replicator keeps in memory about one service."""

    writers: dict[str, str] = field(default_factory=dict)  # variable -> the client that last wrote it
    stash: dict[int, dict[int, int]] = field(default_factory=dict)  # origin -> {prev: stamp} applied across a gap
    sync_until: float = float("-inf")  # a sync request is in flight until then
    transfer: str | None = None  # the snapshot transfer in flight, if any

    def advance(self, vv: dict[int, int], origin: int, stamp: int) -> int:
        """Raise vv[origin] to `stamp`, then past every stashed write whose gap that closes."""
        v = max(vv.get(origin, 0), stamp)
        stash = self.stash.get(origin)
        while stash:
            ready = [p for p in stash if p <= v]
            if not ready:
                break
            for p in ready:
                v = max(v, stash.pop(p))
        if stash is not None and not stash:
            del self.stash[origin]
        vv[origin] = v
        return v


@dataclass
class PendingConcern:
    """A replicated/quorum write waiting for acknowledgements."""

    client: Address
    request_id: int
    reply: VariablesUpdated | None
    needed: int
    floor: int = 0  # acks it needs however many targets it has (rf - 1, or a majority - 1)
    quorum: bool = False
    message: Replicate | None = None  # sent again to a new holder when a target dies before acking
    targets: set[str] = field(default_factory=set)
    timer: TimerId | None = None
    acked: set[str] = field(default_factory=set)
    sent: list[int] = field(default_factory=list)  # the msg ids of its Replicate messages
    batch: int = 0  # the ReplicateResend batch that sends its Replicate again (0: none)


@dataclass
class PendingEnsure:
    """An EnsureService waiting for the holders' answers."""

    ref: int
    waiting: set[str]
    requesters: list[Address]
    timer: TimerId | None = None
    fetched: bool = False

"""Catalog sync: keeps every node's tenant catalog equal to its peers' (sans-IO actor).

The actor never reads the catalog: it holds the latest snapshot bytes the hub published (given
the first one at construction, then every `CatalogChanged`) and their SHA-256. Two catalogs
holding the same records and clock have the same bytes (see `commy.core.catalog`), so comparing
digests is enough to tell whether two nodes agree.

- A change here (`CatalogChanged` with new bytes) is pushed at once, whole, to every live peer's
  catalog-sync actor (`CatalogPush`).
- Every `interval` (the `CatalogSyncTick` timer, first one at a random offset so nodes do not tick
  in lockstep) a `CatalogDigest` goes to every live peer. A peer whose digest differs answers with
  its `CatalogPush`: that repairs whatever a lost push or a partition left behind.
- A `CatalogPush` whose digest differs from ours goes to the local hub as `MergeCatalog`; the hub
  merges it (newest stamp wins, order-independent) and enforces what changed, and if its catalog
  changed it publishes `CatalogChanged`, which pushes the merged catalog on.

Live peers: the static `peers` given at construction, plus members announced by `MemberUp`; a
`PeerStateChanged` to down or left takes one out, back to healthy, suspected or joining puts it
back in, and `MemberLeft` takes it out. Sending to a peer that turns out dead only loses a message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from commy.core.actor import Actor, Context, handles
from commy.core.membership import NOT_GONE
from commy.messages import (
    Address,
    CatalogChanged,
    CatalogDigest,
    CatalogPush,
    CatalogSyncTick,
    Envelope,
    MemberLeft,
    MemberUp,
    MergeCatalog,
    PeerStateChanged,
)

CATALOG_SYNC = "catalog-sync"
HUB = "clients"
LIVE_STATES = NOT_GONE  # joining: known, not heard from yet


def digest_of(snapshot: bytes) -> bytes:
    return hashlib.sha256(snapshot).digest()


class CatalogSync(Actor):
    def __init__(self, ctx: Context, snapshot: bytes, *, peers: Iterable[str] = (), interval: float = 0.5,
                 hub: str = HUB) -> None:
        super().__init__(ctx)
        if not 0 < interval < float("inf"):  # also refuses NaN
            raise ValueError(f"catalog_sync.interval must be a finite number > 0, got {interval!r}")
        self.interval = interval
        self.hub = Address(ctx.address.node, hub)
        self.snapshot = bytes(snapshot)
        self.digest = digest_of(self.snapshot)
        self.live: set[str] = {p for p in peers if p != ctx.address.node}
        # (our digest, theirs) last forwarded to the hub: merging is deterministic, so the same pair
        # again (a peer that cannot converge, e.g. a newer snapshot format) would change nothing.
        self.tried: tuple[bytes, bytes] | None = None
        self.stats = {"pushes_sent": 0, "digests_sent": 0, "merges": 0, "bad_pushes": 0}

    def started(self) -> None:
        self.ctx.set_timer(self.ctx.rng.uniform(0, self.interval), CatalogSyncTick())

    # ---- our catalog

    @handles(CatalogChanged)
    def on_changed(self, msg: CatalogChanged, env: Envelope) -> None:
        digest = digest_of(msg.snapshot)
        if digest == self.digest:
            return  # the hub said so, but the bytes are the same: peers already have them
        self.snapshot, self.digest = bytes(msg.snapshot), digest
        for peer in sorted(self.live):
            self._push(peer)

    @handles(CatalogSyncTick)
    def on_tick(self, msg: CatalogSyncTick, env: Envelope) -> None:
        self.ctx.set_timer(self.interval, CatalogSyncTick())
        for peer in sorted(self.live):
            self.ctx.send(Address(peer, CATALOG_SYNC), CatalogDigest(self.digest))
            self.stats["digests_sent"] += 1

    def _push(self, peer: str) -> None:
        self.ctx.send(Address(peer, CATALOG_SYNC), CatalogPush(self.snapshot, self.digest))
        self.stats["pushes_sent"] += 1

    # ---- peers' catalogs

    @handles(CatalogDigest)
    def on_digest(self, msg: CatalogDigest, env: Envelope) -> None:
        if msg.digest != self.digest:
            self._push(env.sender.node)

    @handles(CatalogPush)
    def on_push(self, msg: CatalogPush, env: Envelope) -> None:
        digest = digest_of(msg.snapshot)
        if digest != msg.digest:  # damaged or forged on the way: never merge what does not check
            self.stats["bad_pushes"] += 1
            self.ctx.log.warning("catalog_push_bad_digest", peer=env.sender.node, size=len(msg.snapshot))
            return
        if digest == self.digest or self.tried == (self.digest, digest):
            return
        self.tried = (self.digest, digest)
        self.stats["merges"] += 1
        self.ctx.send(self.hub, MergeCatalog(msg.snapshot))

    # ---- membership

    @handles(MemberUp)
    def on_member_up(self, msg: MemberUp, env: Envelope) -> None:
        peer = msg.member.node_id
        if peer != self.ctx.address.node and peer not in self.live:
            self.live.add(peer)
            # A newcomer answers with its push if it differs; ours reaches it on its next tick.
            self.ctx.send(Address(peer, CATALOG_SYNC), CatalogDigest(self.digest))
            self.stats["digests_sent"] += 1

    @handles(PeerStateChanged)
    def on_peer_state(self, msg: PeerStateChanged, env: Envelope) -> None:
        if msg.peer == self.ctx.address.node:
            return
        if msg.new in LIVE_STATES:
            self.live.add(msg.peer)
        else:
            self.live.discard(msg.peer)

    @handles(MemberLeft)
    def on_member_left(self, msg: MemberLeft, env: Envelope) -> None:
        self.live.discard(msg.node_id)

"""Peer states and the one table of their transitions.

Each node keeps its own view of every peer: JOINING (configured or just announced by the
membership actor, never heard from), HEALTHY, SUSPECTED, DOWN, LEFT (announced a graceful leave).
`PeerTable.add` starts a view (JOINING); `PeerTable.move` is the only place a peer's state changes:
it refuses transitions the table does not list (our bug, so it raises) and returns the
`PeerStateChanged` event to publish, or None when nothing changed. The one way back from LEFT is
JOINING: the peer came back as a new incarnation, and `rejoin` starts its counts afresh.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from commy.errors import LocalProtocolError
from commy.messages import PeerStateChanged


class PeerState(enum.Enum):
    JOINING = "joining"
    HEALTHY = "healthy"
    SUSPECTED = "suspected"
    DOWN = "down"
    LEFT = "left"


REACHABLE = frozenset({PeerState.HEALTHY.value, PeerState.SUSPECTED.value})
"""Peer states (as `PeerStateChanged` carries them) in which a peer counts as live: writes go to it."""
NOT_GONE = REACHABLE | {PeerState.JOINING.value}
"""...and the states in which it is worth telling (a joining peer is known, just not heard yet)."""

TRANSITIONS: dict[PeerState, frozenset[PeerState]] = {
    PeerState.JOINING: frozenset({PeerState.HEALTHY, PeerState.SUSPECTED, PeerState.DOWN, PeerState.LEFT}),
    PeerState.HEALTHY: frozenset({PeerState.SUSPECTED, PeerState.DOWN, PeerState.LEFT}),
    PeerState.SUSPECTED: frozenset({PeerState.HEALTHY, PeerState.DOWN, PeerState.LEFT}),
    PeerState.DOWN: frozenset({PeerState.HEALTHY, PeerState.LEFT}),
    PeerState.LEFT: frozenset({PeerState.JOINING}),
}


@dataclass
class PeerView:
    """What this node knows about one peer."""

    state: PeerState = PeerState.JOINING
    missed: int = 0
    last_sent_seq: int = 0
    last_acked_seq: int = 0
    rtt: float | None = None
    changed_at: float = 0.0


class PeerTable:
    def __init__(self, peers: list[str]) -> None:
        self.views: dict[str, PeerView] = {p: PeerView() for p in peers}

    def state(self, peer: str) -> PeerState:
        return self.views[peer].state

    def add(self, peer: str) -> bool:
        """Start watching `peer` (JOINING); False if it already has a view, which is kept as is."""
        if peer in self.views:
            return False
        self.views[peer] = PeerView()
        return True

    def rejoin(self, peer: str, now: float) -> PeerStateChanged | None:
        """A LEFT peer is back (a new incarnation): JOINING, with no misses held against it."""
        view = self.views[peer]
        event = self.move(peer, PeerState.JOINING, now)
        # The pings sent before it left will never be answered; they are not misses of the new one.
        view.missed = 0
        view.last_acked_seq = view.last_sent_seq
        view.rtt = None
        return event

    def move(self, peer: str, new: PeerState, now: float) -> PeerStateChanged | None:
        view = self.views[peer]
        old = view.state
        if new is old:
            return None
        if new not in TRANSITIONS[old]:
            raise LocalProtocolError(f"peer {peer}: no transition {old.name} -> {new.name}")
        view.state = new
        view.changed_at = now
        return PeerStateChanged(peer, old.value, new.value, now)

"""Client connections, their per-tenant sessions, and the one table of session transitions.

A connection (`ClientConn`) is what the gateway reported with `ClientConnected`: an address, whether
it comes from this machine, when it was last heard from. It holds at most one `Session` per tenant
(a client may work in several tenants at once). A session is ANONYMOUS until authentication, then
ACTIVE; MIGRATING while the server moves the client elsewhere; and ends CLOSED (logout, disconnect)
or REVOKED (its access was taken away). `Session.move` is the only place a state changes and it
refuses transitions the table does not list. Sessions also remember which key opened them, so
revoking a key ends them, and the permissions they hold, refreshed when the catalog changes.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from commy.core.permissions import Permission
from commy.errors import LocalProtocolError
from commy.messages import Address, Envelope


class SessionState(enum.Enum):
    ANONYMOUS = "anonymous"
    ACTIVE = "active"
    MIGRATING = "migrating"
    CLOSED = "closed"
    REVOKED = "revoked"


TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.ANONYMOUS: frozenset({SessionState.ACTIVE, SessionState.CLOSED}),
    SessionState.ACTIVE: frozenset({SessionState.MIGRATING, SessionState.CLOSED, SessionState.REVOKED}),
    SessionState.MIGRATING: frozenset({SessionState.ACTIVE, SessionState.CLOSED, SessionState.REVOKED}),
    SessionState.CLOSED: frozenset(),
    SessionState.REVOKED: frozenset(),
}


@dataclass
class Session:
    """One client's authenticated session on one tenant, on one connection."""

    tenant: str
    session_id: str
    client_id: str
    key_id: str  # the API key behind the session ("delegated:<hook>" for delegated logins)
    token_id: str
    expires_at: float
    permissions: frozenset[Permission] = frozenset()
    epoch: int = -1  # the catalog epoch `permissions` was computed at
    state: SessionState = SessionState.ANONYMOUS

    def move(self, new: SessionState) -> None:
        if new is self.state:
            return
        if new not in TRANSITIONS[self.state]:
            raise LocalProtocolError(f"session {self.session_id}: no transition {self.state.name} -> {new.name}")
        self.state = new

    @property
    def open(self) -> bool:
        return self.state in (SessionState.ACTIVE, SessionState.MIGRATING)


@dataclass
class ClientConn:
    """One client connection as the hub sees it."""

    conn_id: str
    address: Address
    local: bool
    peer: str
    last_seen: float
    opened_at: float = 0.0
    sessions: dict[str, Session] = field(default_factory=dict)
    # Requests that arrived while an authentication was waiting on a delegated hook: answered in
    # order once it completes, so replies stay in request order.
    parked: deque[Envelope] | None = None
    mapped: dict[tuple[str, str], int] = field(default_factory=dict)  # (tenant, service) -> writer slot
    bad_requests: int = 0

    def session(self, tenant: str) -> Session | None:
        s = self.sessions.get(tenant)
        return s if s is not None and s.open else None


class WriterSlots:
    """Writer slots of one mapped service file: slot 0 is the server, 1..63 go to local clients."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self.owners: dict[int, tuple[str, str]] = {}  # slot -> (conn_id, client_id)

    def claim(self, conn_id: str, client_id: str) -> int | None:
        for slot in range(1, self.capacity):
            if slot not in self.owners:
                self.owners[slot] = (conn_id, client_id)
                return slot
        return None

    def release(self, slot: int) -> None:
        self.owners.pop(slot, None)

    def client_of(self, slot: int, server_writer: str) -> str:
        """Who wrote with `slot`: the mapped client, or `server_writer` for slot 0 / a freed slot."""
        owner = self.owners.get(slot)
        return owner[1] if owner else server_writer

    def holders(self) -> list[str]:
        return sorted({conn for conn, _ in self.owners.values()})

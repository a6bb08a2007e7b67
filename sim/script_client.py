"""A scripted client: pinned to one node and one tenant, it writes only when told, and remembers.

`ScriptClient` is the smallest client a model-based test needs (`sim.schedule`): it dials its node,
logs in with its API key and then sends each `Write` it is handed at once, several in flight if
need be, recording what became of it -- `acked` (with the stamp the node gave it), `refused`
(`unavailable`: nothing was written), `unknown` (`outcome_unknown`, or the connection dropped
before the answer), another error, or `not_sent` when it had no working session at that moment.
A `Read` (GetVariables of one variable) records the value and stamp the node returned.
When its connection drops (the node crashed, or closed it) it dials the same node again every
`RETRY` seconds until it is back. An idle session heartbeats so the hub never drops it.

Unlike `sim.clients.SimClient` it has no load of its own, no failover and no subscriptions: every
write is an explicit step of a schedule, so a run is exactly its list of actions. It runs on the
cluster's scheduler and records its moments in the trace under its name (`acme@n1`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from commy.errors import OUTCOME_UNKNOWN, UNAVAILABLE
from commy.messages import (
    Authenticate,
    AuthenticationResponse,
    Error,
    GetVariables,
    Heartbeat,
    Message,
    NamedValue,
    SetVariables,
    VariablesData,
    VariablesUpdated,
)
from sim.client_net import ClientNetwork, SimConnection

RETRY = 0.1  # seconds between dials while the node is down
BEAT = 20.0  # heartbeat period of an idle session (the hub drops a client silent for 60 s)

NOT_SENT, PENDING, ACKED, REFUSED, UNKNOWN, READ = "not_sent", "pending", "acked", "refused", "unknown", "read"


@dataclass
class Write:
    """One write request and what the client learned of it."""

    wid: int
    node: str
    tenant: str  # the tenant written (an intrusion names another one than the client's)
    service: str
    name: str
    value: bytes
    concern: str
    sent_at: float
    intrusion: bool = False
    outcome: str = PENDING  # NOT_SENT, PENDING, ACKED, REFUSED, UNKNOWN or "error:<code>"
    stamp: int = 0
    answered_at: float | None = None
    detail: str = ""

    def __str__(self) -> str:
        stamp = f" stamp {self.stamp:#x}" if self.stamp else ""
        return (f"w{self.wid} {self.tenant}/{self.name}={self.value.decode()} ({self.concern} via {self.node} at "
                f"{self.sent_at:.3f}s: {self.outcome}{stamp})")


@dataclass
class Read:
    """One read of a variable on the client's node and what it returned."""

    rid: int
    node: str
    tenant: str
    service: str
    name: str
    sent_at: float
    outcome: str = PENDING  # NOT_SENT, PENDING, READ, UNKNOWN or "error:<code>"
    value: bytes | None = None  # None: the variable does not exist there
    stamp: int = 0
    answered_at: float | None = None
    detail: str = ""

    def __str__(self) -> str:
        got = f" {self.value.decode()} stamp {self.stamp:#x}" if self.value is not None else ""
        return f"r{self.rid} {self.tenant}/{self.name} (via {self.node} at {self.sent_at:.3f}s: {self.outcome}{got})"


class ScriptClient:
    """A client of `tenant` connected to `node`, that sends writes when asked."""

    def __init__(self, net: ClientNetwork, node: str, tenant: str, key: str, peer: str) -> None:
        self.net = net
        self.node = node
        self.tenant = tenant
        self.key = key
        self.peer = peer
        self.name = f"{tenant}@{node}"
        self.conn: SimConnection | None = None
        self.phase = "idle"  # idle, connecting, login, ready
        self.dials = 0
        self.logins = 0
        self._rid = 0
        self._login_rid = 0
        self._pending: dict[int, Write | Read] = {}
        self._last_sent = 0.0
        self.foreign: list[tuple[float, str]] = []  # events about another tenant (must stay empty)

    @property
    def ready(self) -> bool:
        return self.phase == "ready"

    @property
    def now(self) -> float:
        return self.net.cluster.now

    def start(self) -> None:
        self._dial()
        self.net.cluster.sched.after(BEAT, self._beat)

    # ---- requests

    def write(self, w: Write) -> None:
        """Send `w` now if the session works; otherwise it is `not_sent`."""
        if not self.ready:
            w.outcome, w.answered_at = NOT_SENT, self.now
            return
        msg = SetVariables(w.tenant, w.service, (NamedValue(w.name, w.value),), w.concern)
        self._pending[self._send(msg)] = w

    def read(self, r: Read) -> None:
        """Read `r`'s variable now if the session works; otherwise it is `not_sent`."""
        if not self.ready:
            r.outcome, r.answered_at = NOT_SENT, self.now
            return
        self._pending[self._send(GetVariables(r.tenant, r.service, (r.name,)))] = r

    def _send(self, msg: Message) -> int:
        assert self.conn is not None
        self._rid += 1
        self._last_sent = self.now
        self.conn.send(self._rid, msg)
        return self._rid

    def _beat(self, _: Any) -> None:
        self.net.cluster.sched.after(BEAT, self._beat)
        if self.ready and self.now - self._last_sent >= BEAT / 2:
            self._send(Heartbeat(self.now))

    def _dial(self, _: Any = None) -> None:
        if self.conn is not None:
            return
        self.dials += 1
        self.phase = "connecting"
        self.conn = self.net.connect(self, self.node, f"{self.name}.{self.dials}", self.peer)

    # ---- the connection (sim.client_net.ClientEnd)

    def on_open(self, conn: SimConnection) -> None:
        if conn is self.conn:
            self.phase = "login"
            self._login_rid = self._send(Authenticate(self.tenant, "api_key", self.key))

    def on_closed(self, conn: SimConnection, reason: str) -> None:
        if conn is not self.conn:
            return
        self.conn, self.phase = None, "idle"
        for rid in sorted(self._pending):  # in flight: applied or not, nobody will say
            self._answer(self._pending[rid], UNKNOWN, detail=f"connection {reason}")
        self._pending.clear()
        self.net.cluster.sched.after(RETRY, self._dial)

    def on_message(self, conn: SimConnection, request_id: int, msg: Message) -> None:
        if conn is not self.conn:
            return
        if request_id == self._login_rid:
            self._login_rid = 0
            if type(msg) is AuthenticationResponse:
                self.phase = "ready"
                self.logins += 1
                self.net.record(self.name, "c:auth", (self.node, self.tenant))
            else:  # should not happen: try again from scratch
                self.net.record(self.name, "c:login_failed", (self.node, getattr(msg, "code", type(msg).__name__)))
                conn.close()
                self.on_closed(conn, "login refused")
            return
        tenant = getattr(msg, "tenant", self.tenant)
        w = self._pending.pop(request_id, None)
        if tenant != self.tenant and not (isinstance(w, Write) and w.intrusion):
            self.foreign.append((self.now, f"{type(msg).__name__} of tenant {tenant!r}"))
        if w is None:
            return  # a heartbeat's answer, or an event: no variable is subscribed
        if isinstance(w, Read):
            self._read(w, msg)
        elif type(msg) is VariablesUpdated and msg.versions:
            self._answer(w, ACKED, stamp=msg.versions[0].stamp)
        elif type(msg) is Error:
            outcome = {UNAVAILABLE: REFUSED, OUTCOME_UNKNOWN: UNKNOWN}.get(msg.code, f"error:{msg.code}")
            self._answer(w, outcome, detail=msg.detail)
        else:
            self._answer(w, f"error:{type(msg).__name__}")

    def _read(self, r: Read, msg: Message) -> None:
        r.answered_at = self.now
        if type(msg) is VariablesData:
            r.outcome = READ
            for v in msg.variables:
                if v.name == r.name:
                    r.value, r.stamp = v.value, v.stamp
        else:
            r.outcome, r.detail = f"error:{getattr(msg, 'code', type(msg).__name__)}", getattr(msg, "detail", "")
        self.net.record(self.name, "c:read", (r.rid, r.name, r.outcome, r.stamp))

    def _answer(self, w: Write | Read, outcome: str, *, stamp: int = 0, detail: str = "") -> None:
        if isinstance(w, Read):  # its connection dropped
            w.outcome, w.detail, w.answered_at = outcome, detail, self.now
            return
        w.outcome, w.stamp, w.detail, w.answered_at = outcome, stamp, detail, self.now
        self.net.record(self.name, "c:write", (w.wid, w.name, w.concern, outcome, stamp))

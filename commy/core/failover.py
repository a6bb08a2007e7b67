"""The failover manager: the record of every node failure and client migration this node saw.

The hub reports each client that moved -- asked to by a drain, or resumed here after its own node
failed -- as `MigrationRecorded`; the heartbeat monitor's `PeerStateChanged` tells when a peer went
DOWN and came back. The manager keeps the most recent `limit` of each as plain records (for
`commy status`, the metrics and the simulator's checkers) and counts outcomes. It decides nothing:
placement, resumption and drains act on their own; this is their logbook.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from commy.core.actor import Actor, Context, handles
from commy.messages import Envelope, MigrationRecorded, PeerStateChanged

FAILOVER = "failover"


@dataclass(frozen=True, slots=True)
class NodeFailure:
    node: str
    down_at: float
    up_at: float | None = None


class FailoverManager(Actor):
    def __init__(self, ctx: Context, limit: int = 10_000) -> None:
        super().__init__(ctx)
        self.migrations: deque[MigrationRecorded] = deque(maxlen=limit)
        self.failures: deque[NodeFailure] = deque(maxlen=limit)
        self.outcomes: Counter[str] = Counter()

    @handles(MigrationRecorded)
    def _migration(self, msg: MigrationRecorded, env: Envelope) -> None:
        self.migrations.append(msg)
        self.outcomes[msg.outcome] += 1
        self.ctx.log.info("migration", session=msg.session_id, client=msg.client_id, source=msg.from_node,
                          target=msg.to_node, reason=msg.reason, outcome=msg.outcome)

    @handles(PeerStateChanged)
    def _peer(self, msg: PeerStateChanged, env: Envelope) -> None:
        if msg.new == "down":
            self.failures.append(NodeFailure(msg.peer, msg.at))
            self.ctx.log.warning("node_failed", peer=msg.peer, at=msg.at)
        elif msg.old == "down" and msg.new == "healthy":
            for i in range(len(self.failures) - 1, -1, -1):
                failure = self.failures[i]
                if failure.node == msg.peer and failure.up_at is None:
                    self.failures[i] = NodeFailure(failure.node, failure.down_at, msg.at)
                    break

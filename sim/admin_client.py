"""A simulated server admin: the client machinery of `sim.clients` with a script of requests.

It logs in on the server tenant (`""`) of one node with the admin key and sends each scripted
request (`at(t, msg)`) at its first tick after `t`, one at a time. Each step keeps the time and
the reply it got; a request lost with its connection is sent again on the next connection (the
admin requests scripted here, revocations, are idempotent), an `Error` reply ends the step. Every
answered step is a `c:admin` trace row (request, node, reply type), which the revocation checker
reads as the moment the revocation took effect on that node.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from commy.messages import Error, Message
from sim.client_net import ClientNetwork, SimConnection
from sim.clients import ClientSpec, Pending, SimClient


@dataclass
class AdminStep:
    at: float
    msg: Message
    done_at: float | None = None
    reply: Message | None = None


class AdminClient(SimClient):
    """A server admin: logs in on the server tenant (spec.tenant "") and sends scripted requests,
    one at a time, each at the first tick after its time; a request lost with its connection is
    sent again on the next one (revocations are idempotent)."""

    def __init__(self, spec: ClientSpec, net: ClientNetwork, rng: random.Random, peer: str) -> None:
        super().__init__(spec, net, rng, peer)
        self.steps: list[AdminStep] = []
        self._by_rid: dict[int, AdminStep] = {}

    def at(self, t: float, msg: Message) -> AdminStep:
        step = AdminStep(t, msg)
        self.steps.append(step)
        return step

    def on_open(self, conn: SimConnection) -> None:
        self.token = ""  # an admin logs in again rather than resuming: it follows no variables
        super().on_open(conn)

    def _tick(self, arg: Any) -> None:
        super()._tick(arg)
        if self.phase != "ready" or self._pending:
            return
        for step in self.steps:
            if step.reply is None and self.now >= step.at:
                self._by_rid[self.send(step.msg)] = step
                return

    def _lost(self, reason: str) -> None:
        self._by_rid.clear()
        super()._lost(reason)

    def _reply(self, pending: Pending, rid: int, msg: Message) -> None:
        step = self._by_rid.pop(rid, None)
        if step is None:
            super()._reply(pending, rid, msg)
            return
        step.done_at, step.reply = self.now, msg
        self.record("c:admin", (type(step.msg).__name__, self.node, type(msg).__name__))

    def _error(self, pending: Pending, rid: int, err: Error) -> None:
        step = self._by_rid.pop(rid, None)
        if step is None:
            super()._error(pending, rid, err)
            return
        step.done_at, step.reply = self.now, err  # not retried: the checkers see it failed
        self.record("c:admin", (type(step.msg).__name__, self.node, f"Error:{err.code}"))

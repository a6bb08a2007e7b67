"""`PeerDirectory`: tells the peer transport where the members announced by membership listen.

The membership actor publishes `MemberUp(member)` for every member it learns of (a seed from the
configuration, a node that joined, one that came back as a new incarnation, perhaps at a new
address). This runtime actor turns each into `transport.add_peer(node_id, (host, port))`, which
dials the peer if it is not connected; `add_peer` is idempotent, so hearing of a member twice
costs nothing. A member that leaves keeps its address: a new incarnation will announce itself
again, and until then the transport's backoff keeps redialing cheap.
"""

from __future__ import annotations

from typing import Protocol

from commy.core.actor import Actor, Context, handles
from commy.messages import Envelope, MemberUp

PEER_DIRECTORY = "peer_directory"


class PeerAddresses(Protocol):
    """What the directory needs from a transport (`TcpTransport` has it)."""

    def add_peer(self, name: str, addr: tuple[str, int]) -> None: ...


class PeerDirectory(Actor):
    def __init__(self, ctx: Context, transport: PeerAddresses) -> None:
        super().__init__(ctx)
        self.transport = transport

    @handles(MemberUp)
    def on_member_up(self, msg: MemberUp, env: Envelope) -> None:
        member = msg.member
        if member.node_id == self.ctx.address.node:
            return
        self.transport.add_peer(member.node_id, (member.peer_host, member.peer_port))
        self.ctx.log.debug("peer_address", peer=member.node_id, host=member.peer_host, port=member.peer_port,
                           incarnation=member.incarnation)

"""Simulated client connections: a WebSocket between a simulated client and a node, as bytes.

A `SimConnection` does what the runtime's gateway does for one socket, on virtual time. The client
sends a request as the SDK would (the client codec's binary frame); one latency later the bytes
are decoded by the gateway's strict codec and delivered to the node's hub as an envelope from
`client:<conn_id>` whose msg_id is the request id. The node answers by sending to that address:
the host routes it here (`SimHost.clients`), it is encoded by the gateway's codec and decoded by
the SDK's one latency later. So every message a simulated client exchanges goes through the real
client protocol on the way, and each direction is FIFO like a TCP stream.

Connecting takes one latency to reach the node (it hears `ClientConnected`, as from the gateway)
and one more for the client to learn the socket is open. A node that is down refuses it. The
connection lives on one incarnation of the node: a crash resets it (the client hears `closed`
one latency later, like a reset), a paused node holds what arrives (`SimHost.run`), and
`CloseClient` from the hub sends its `Error` first, then closes -- the node hears
`ClientDisconnected` once, whoever closed. Randomness (latencies) comes from the stream the
network is built with; every connection event is recorded in the trace under the client's name.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from commy.client_codec import client_codec, server_codec
from commy.core.clients import CLIENTS
from commy.errors import RemoteProtocolError
from commy.messages import (
    CLIENT_NODE_PREFIX,
    Address,
    ClientConnected,
    ClientDisconnected,
    CloseClient,
    Envelope,
    Error,
    Message,
    client_address,
    new_envelope,
)

if TYPE_CHECKING:
    from sim.cluster import SimCluster
    from sim.host import SimHost

CONNECTING, OPEN, CLOSED = "connecting", "open", "closed"


class ClientEnd(Protocol):
    """What a connection reports to its client."""

    name: str

    def on_open(self, conn: SimConnection) -> None: ...
    def on_message(self, conn: SimConnection, request_id: int, msg: Message) -> None: ...
    def on_closed(self, conn: SimConnection, reason: str) -> None:
        """The connection is over (`refused`: it never opened)."""
        ...


class ClientNetwork:
    """Opens client connections to a cluster's nodes; one latency distribution for all of them."""

    def __init__(self, cluster: SimCluster, rng: random.Random, *, latency: float = 0.001,
                 jitter: float = 0.0005) -> None:
        if not (0 < latency - jitter and jitter >= 0 and math.isfinite(latency)):
            raise ValueError(f"client links need 0 < latency - jitter, got latency {latency} jitter {jitter}")
        self.cluster = cluster
        self.rng = rng
        self.latency, self.jitter = latency, jitter
        self.to_server = client_codec()  # the SDK's codec: encodes requests, decodes server messages
        self.at_server = server_codec()  # the gateway's: decodes requests, encodes replies and events
        self.connections: dict[str, SimConnection] = {}
        self.sent = 0
        self.received = 0

    def delay(self) -> float:
        return self.latency + self.jitter * (2.0 * self.rng.random() - 1.0)

    def connect(self, client: ClientEnd, node_id: str, conn_id: str, peer: str) -> SimConnection:
        """Dial `node_id`; the client hears `on_open` or `on_closed(conn, "refused")`."""
        if conn_id in self.connections:
            raise ValueError(f"connection id {conn_id!r} used twice")
        conn = SimConnection(self, client, node_id, conn_id, peer)
        self.connections[conn_id] = conn
        self.record(client.name, "c:connect", (node_id, conn_id))
        self.after(self.delay(), conn._syn)
        return conn

    # ---- plumbing shared by the connections

    def after(self, delay: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        self.cluster.sched.after(delay, fn, arg)

    def record(self, who: str, event: str, detail: Any) -> None:
        self.cluster.trace.record(self.cluster.now, who, "client", event, detail)


class SimConnection:
    """One client connection to one incarnation of a node."""

    def __init__(self, net: ClientNetwork, client: ClientEnd, node_id: str, conn_id: str, peer: str) -> None:
        self.net = net
        self.client = client
        self.node_id = node_id
        self.conn_id = conn_id
        self.peer = peer
        self.key = CLIENT_NODE_PREFIX + conn_id
        self.address = client_address(conn_id)
        self.state = CONNECTING
        self.host: SimHost | None = None
        self.server_closed = False  # the node has heard ClientDisconnected (or died)
        self._up_last = -math.inf  # FIFO clamps, per direction
        self._down_last = -math.inf

    def __repr__(self) -> str:
        return f"<SimConnection {self.conn_id} {self.client.name}->{self.node_id} {self.state}>"

    # ---- opening

    def _syn(self, _: Any) -> None:
        host = self.net.cluster.hosts[self.node_id]
        if self.state is CLOSED:
            return  # the client gave up before the dial arrived
        if not host.alive:
            self.net.after(self.net.delay(), self._refused)
            return
        self.host = host
        host.clients[self.key] = self
        host.run(host.node.publish, ClientConnected(self.conn_id, False, self.peer))
        self.net.after(self.net.delay(), self._opened)

    def _refused(self, _: Any) -> None:
        if self.state is CLOSED:
            return
        self.state = CLOSED
        self.net.record(self.client.name, "c:refused", (self.node_id, self.conn_id))
        self.client.on_closed(self, "refused")

    def _opened(self, _: Any) -> None:
        if self.state is not CONNECTING:
            return  # reset or closed meanwhile: the client already heard
        self.state = OPEN
        self.net.record(self.client.name, "c:open", (self.node_id, self.conn_id))
        self.client.on_open(self)

    # ---- client -> server

    def send(self, request_id: int, msg: Message) -> None:
        if self.state is not OPEN:
            raise RuntimeError(f"{self!r}: send on a connection that is not open")
        data = self.net.to_server.encode_binary(request_id, msg)
        self.net.sent += 1
        self._up_last = when = max(self.net.cluster.sched.now + self.net.delay(), self._up_last)
        self.net.cluster.sched.at(when, self._at_server, data)

    def _at_server(self, data: bytes) -> None:
        host = self.host
        if host is None or self.server_closed or not host.alive:
            return  # the server side is gone: bytes in flight are lost
        host.run(self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        host = self.host
        if host is None or self.server_closed or not host.alive:
            return
        try:
            request_id, msg = self.net.at_server.decode_binary(data)
        except RemoteProtocolError as exc:  # as the gateway: answer with an Error, keep the connection
            self._to_client(getattr(exc, "request_id", 0), Error(exc.code, exc.detail))
            return
        now = self.net.cluster.sched.now
        host.node.deliver(new_envelope(request_id, None, self.address, Address(self.node_id, CLIENTS), now, msg))

    # ---- server -> client (the host routes envelopes for `client:<conn_id>` here)

    def from_server(self, env: Envelope) -> None:
        if self.server_closed:
            return
        body = env.body
        request_id = env.request_id or 0
        if type(body) is CloseClient:
            if body.code:
                self._to_client(request_id, Error(body.code, body.detail))
            self._server_close("closed_by_server")
            return
        self._to_client(request_id, body)

    def _to_client(self, request_id: int, body: Message) -> None:
        data = self.net.at_server.encode_binary(request_id, body)
        self._down_last = when = max(self.net.cluster.sched.now + self.net.delay(), self._down_last)
        self.net.cluster.sched.at(when, self._at_client, data)

    def _at_client(self, data: bytes) -> None:
        if self.state is not OPEN:
            return
        request_id, msg = self.net.to_server.decode_binary(data)
        self.net.received += 1
        self.client.on_message(self, request_id, msg)

    def _server_close(self, reason: str) -> None:
        """The node closed the connection: it hears ClientDisconnected now, the client after the
        frames already on their way."""
        self._forget(reason)
        when = max(self.net.cluster.sched.now + self.net.delay(), self._down_last)
        self.net.cluster.sched.at(when, self._closed_at_client, reason)

    def _forget(self, reason: str) -> None:
        host = self.host
        if host is None or self.server_closed:
            return
        self.server_closed = True
        host.clients.pop(self.key, None)
        if host.alive:
            self.net.after(0.0, lambda _: host.run(host.node.publish, ClientDisconnected(self.conn_id, reason)))

    def _closed_at_client(self, reason: str) -> None:
        if self.state is CLOSED:
            return
        self.state = CLOSED
        self.net.record(self.client.name, "c:closed", (self.node_id, self.conn_id, reason))
        self.client.on_closed(self, reason)

    def server_crashed(self) -> None:
        """The node died: its end is gone at once; the client hears a reset one latency later."""
        self.server_closed = True
        if self.host is not None:
            self.host.clients.pop(self.key, None)
        self.net.after(self.net.delay(), self._closed_at_client, "reset")

    # ---- the client closes

    def close(self) -> None:
        """Close from the client's side (it gave up on this server): the node hears it one latency later."""
        if self.state is CLOSED:
            return
        self.state = CLOSED
        self.net.record(self.client.name, "c:close", (self.node_id, self.conn_id))
        when = max(self.net.cluster.sched.now + self.net.delay(), self._up_last)
        self.net.cluster.sched.at(when, lambda _: self._forget("closed"))

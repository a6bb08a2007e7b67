"""Simulated client connections: routing of `client:` envelopes, the client codec on the way,
FIFO per direction, and what crashes, pauses and closes on either side look like."""

from __future__ import annotations

import random

import pytest

from commy.core.actor import Actor, Context, handles
from commy.core.clients import CLIENTS
from commy.core.node import Node
from commy.errors import RemoteProtocolError
from commy.messages import (
    ClientConnected,
    ClientDisconnected,
    CloseClient,
    Envelope,
    Error,
    Heartbeat,
    HeartbeatAck,
    ListTenants,
    Message,
)
from sim.client_net import CLOSED, OPEN, ClientNetwork, SimConnection
from sim.cluster import SimCluster


class EchoHub(Actor):
    """Stands for the client hub: answers heartbeats, closes on ListTenants, sends a request type
    back for `Heartbeat(-1)`, and records connections."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.events: list[Message] = []

    @handles(ClientConnected, ClientDisconnected)
    def _conn(self, msg: Message, env: Envelope) -> None:
        self.events.append(msg)

    @handles(Heartbeat)
    def _beat(self, msg: Heartbeat, env: Envelope) -> None:
        if msg.sent_at < 0:
            self.ctx.reply(env, Heartbeat(0.0))  # not something a server may send to a client
        else:
            self.ctx.reply(env, HeartbeatAck(msg.sent_at, self.ctx.now()))

    @handles(ListTenants)
    def _close(self, msg: ListTenants, env: Envelope) -> None:
        self.ctx.send(env.sender, CloseClient("forbidden", "go away"))


class Client:
    def __init__(self) -> None:
        self.name = "c1"
        self.opened = 0
        self.closed: list[str] = []
        self.got: list[tuple[int, Message]] = []

    def on_open(self, conn: SimConnection) -> None:
        self.opened += 1

    def on_message(self, conn: SimConnection, request_id: int, msg: Message) -> None:
        self.got.append((request_id, msg))

    def on_closed(self, conn: SimConnection, reason: str) -> None:
        self.closed.append(reason)


def setup(seed: int = 1) -> tuple[SimCluster, ClientNetwork, Client]:
    def build(node: Node) -> None:
        node.spawn(CLIENTS, EchoHub)

    cluster = SimCluster(seed, ["n1", "n2"], build)
    return cluster, ClientNetwork(cluster, random.Random(seed)), Client()


def hub(cluster: SimCluster, node: str = "n1") -> EchoHub:
    actor = cluster.node(node).actors[CLIENTS]
    assert isinstance(actor, EchoHub)
    return actor


def test_requests_reach_the_hub_and_replies_come_back_in_order() -> None:
    cluster, net, client = setup()
    conn = net.connect(client, "n1", "k1", "10.1.0.1:40000")
    cluster.run_for(0.01)
    assert conn.state == OPEN and client.opened == 1
    assert hub(cluster).events == [ClientConnected("k1", False, "10.1.0.1:40000")]
    assert cluster.hosts["n1"].clients == {"client:k1": conn}
    for i in range(1, 21):
        conn.send(i, Heartbeat(float(i)))
    cluster.run_for(0.01)
    assert [rid for rid, _ in client.got] == list(range(1, 21))
    assert all(type(m) is HeartbeatAck and m.sent_at == rid for rid, m in client.got)


def test_a_down_node_refuses_the_connection() -> None:
    cluster, net, client = setup()
    cluster.crash("n1")
    conn = net.connect(client, "n1", "k1", "p")
    cluster.run_for(0.01)
    assert conn.state == CLOSED and client.closed == ["refused"] and client.opened == 0


def test_a_crash_resets_the_connection_one_latency_later() -> None:
    cluster, net, client = setup()
    conn = net.connect(client, "n1", "k1", "p")
    cluster.run_for(0.01)
    conn.send(1, Heartbeat(1.0))
    cluster.crash("n1")  # the request in flight is lost with the node
    assert client.closed == [] and cluster.hosts["n1"].clients == {}
    cluster.run_for(0.01)
    assert client.closed == ["reset"] and client.got == []
    cluster.restart("n1")
    cluster.run_for(0.01)
    assert hub(cluster).events == []  # the new incarnation never heard of the old connection


def test_a_paused_node_holds_requests_until_it_resumes() -> None:
    cluster, net, client = setup()
    conn = net.connect(client, "n1", "k1", "p")
    cluster.run_for(0.01)
    cluster.pause("n1")
    conn.send(1, Heartbeat(1.0))
    cluster.run_for(1.0)
    assert client.got == []
    cluster.resume("n1")
    cluster.run_for(0.01)
    assert [rid for rid, _ in client.got] == [1]


def test_close_client_sends_the_error_then_closes_and_the_node_hears_it_once() -> None:
    cluster, net, client = setup()
    conn = net.connect(client, "n1", "k1", "p")
    cluster.run_for(0.01)
    conn.send(7, ListTenants())
    cluster.run_for(0.01)
    assert client.got == [(0, Error("forbidden", "go away"))]  # an event: the hub drops, it does not reply
    assert client.closed == ["closed_by_server"] and conn.state == CLOSED
    assert hub(cluster).events[1:] == [ClientDisconnected("k1", "closed_by_server")]
    assert cluster.hosts["n1"].clients == {}


def test_the_client_closing_tells_the_node() -> None:
    cluster, net, client = setup()
    conn = net.connect(client, "n1", "k1", "p")
    cluster.run_for(0.01)
    conn.close()
    cluster.run_for(0.01)
    assert hub(cluster).events[1:] == [ClientDisconnected("k1", "closed")]
    assert client.closed == []  # it knows: it closed
    with pytest.raises(RuntimeError):
        conn.send(1, Heartbeat(1.0))


def test_both_codecs_run_on_the_way() -> None:
    cluster, net, client = setup()
    conn = net.connect(client, "n1", "k1", "p")
    cluster.run_for(0.01)
    conn.send(1, Heartbeat(-1.0))  # the hub answers with a request type: the SDK's decoder refuses it
    with pytest.raises(RemoteProtocolError):
        cluster.run_for(0.01)
    assert net.sent == 1


def test_an_envelope_for_an_unknown_client_is_dropped_as_unroutable() -> None:
    cluster, net, client = setup()
    conn = net.connect(client, "n1", "k1", "p")
    cluster.run_for(0.01)
    conn.close()
    cluster.run_for(0.01)
    dropped = cluster.network.dropped
    node = cluster.node("n1")
    node.send(node.actors[CLIENTS].ctx.address, conn.address, HeartbeatAck(0.0, 0.0), 3)
    assert cluster.network.dropped == dropped + 1 and client.got == []


def test_same_seed_same_latencies() -> None:
    def arrivals(seed: int) -> list[float]:
        cluster, net, client = setup(seed)
        conn = net.connect(client, "n2", "k1", "p")
        cluster.run_for(0.01)
        times = []
        for i in range(1, 6):
            conn.send(i, Heartbeat(float(i)))
            cluster.run_until_condition(lambda n=i: len(client.got) == n, 1.0)
            times.append(cluster.now)
        return times

    assert arrivals(3) == arrivals(3) != arrivals(4)

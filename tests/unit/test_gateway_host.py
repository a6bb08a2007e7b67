"""`AsyncioHost` routing: client addresses go to the gateway, other nodes to the peer transport."""

from __future__ import annotations

import asyncio

from commy.messages import Address, Envelope, Heartbeat, client_address
from commy.runtime.asyncio_host import AsyncioHost


class _Sink:
    def __init__(self) -> None:
        self.got: list[Envelope] = []

    def transmit(self, env: Envelope) -> None:
        self.got.append(env)


def _env(to: Address) -> Envelope:
    return Envelope(1, None, Address("n", "a"), to, 0.0, Heartbeat(0.0))


def test_envelopes_are_routed_by_receiver_and_counted_when_nothing_carries_them() -> None:
    loop = asyncio.new_event_loop()
    try:
        host = AsyncioHost(loop)
        to_client, to_peer = _env(client_address("0123456789abcdef")), _env(Address("other", "x"))
        host.transmit(to_client)
        host.transmit(to_peer)
        assert host.dropped == 2
        peers, clients = _Sink(), _Sink()
        host.attach(peers)
        host.transmit(to_peer)
        assert (peers.got, host.dropped) == ([to_peer], 2)
        host.attach_clients(clients)
        host.transmit(to_client)
        host.transmit(to_peer)
        assert (clients.got, peers.got) == ([to_client], [to_peer, to_peer])
        only_clients = AsyncioHost(loop, clients=_Sink())
        only_clients.transmit(to_peer)
        assert only_clients.dropped == 1
    finally:
        loop.close()

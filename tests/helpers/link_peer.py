"""A hand-driven peer for transport tests: a `PeerLink` run over an asyncio stream pair, so a test
can play a node (dialing or accepting) that completes the cluster-secret handshake and then
misbehaves at the socket level (stalls, answers late, goes silent)."""

from __future__ import annotations

import asyncio
import os

from commy.link import LinkState, PeerLink
from commy.messages import Envelope

SECRET = b"transport tests' cluster secret!"


def link_as(node: str, peer: str | None, secret: bytes = SECRET) -> PeerLink:
    """A dialing link (`peer` given) or an accepting one (`peer=None`) for `node`."""
    return PeerLink(node, peer, secret=secret, entropy=os.urandom)


async def handshake(link: PeerLink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    timeout: float = 3.0) -> list[Envelope]:
    """Run `link`'s handshake over the stream; returns any envelopes read along with its end."""
    got: list[Envelope] = []
    writer.write(link.data_to_send())
    while link.state is not LinkState.OPEN:
        data = await asyncio.wait_for(reader.read(65536), timeout)
        if not data or link.closed:
            raise ConnectionError(f"handshake failed: {link.failure}")
        got += link.receive_data(data)
        writer.write(link.data_to_send())
    return got

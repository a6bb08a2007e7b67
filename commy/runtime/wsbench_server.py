"""The server the WebSocket benchmarks measure, and how they set it up.

`bench_server(hub)` runs a real gateway and node on the caller's loop. With `hub=True`: the real
client hub and service files of `start_server` in a temporary folder, with its bootstrap admin
key (`writer_key` then creates the tenant and a key allowed to write there). With `hub=False`: a
stand-in actor registered as `clients` that answers `SetVariables` with `VariablesUpdated` and
does nothing else, so only the gateway, codec and node are measured. Every benchmark writes the
same request: one 64-byte value (`set_request`).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect

from commy.client_codec import ClientCodec, client_codec
from commy.core.actor import Actor, handles
from commy.core.catalog_records import KdfParams
from commy.core.node import Node
from commy.messages import (
    ApiKeyCreated,
    Authenticate,
    CreateApiKey,
    CreateTenant,
    Envelope,
    Error,
    Message,
    NamedValue,
    SetVariables,
    VariablesUpdated,
    VariableVersion,
)
from commy.runtime.asyncio_host import AsyncioHost
from commy.runtime.gateway import Gateway, GatewayConfig

LOOPBACK = "127.0.0.1"
TIMEOUT = 120.0
VALUE = bytes(64)
TENANT, SERVICE, VARIABLE = "bench", "svc", "v"


def set_request() -> SetVariables:
    """The request every benchmark writes: one 64-byte value."""
    return SetVariables(TENANT, SERVICE, (NamedValue(VARIABLE, VALUE),), "")


class StandInHub(Actor):
    """Answers SetVariables like the hub would (a version per variable), and nothing else."""

    version = 0

    @handles(SetVariables)
    def _set(self, msg: SetVariables, env: Envelope) -> None:
        self.version += 1
        self.ctx.reply(env, VariablesUpdated(msg.tenant, msg.service,
                                             tuple(VariableVersion(v.name, self.version) for v in msg.variables)))


@dataclass
class BenchServer:
    """A running server to measure: its URL, node and gateway."""

    url: str
    node: Node
    gateway: Gateway
    admin_key: str | None  # the bootstrap key with the real hub; None with the stand-in


@asynccontextmanager
async def bench_server(hub: bool, config: GatewayConfig | None = None) -> AsyncIterator[BenchServer]:
    if hub:
        from commy.runtime.server import start_server

        with tempfile.TemporaryDirectory(prefix="commy-wsbench-") as folder:
            srv = await start_server(folder, (LOOPBACK, 0), gateway=config, kdf=KdfParams(n=16, r=1, p=1))
            try:
                yield BenchServer(srv.url, srv.node, srv.gateway, srv.bootstrap_key)
            finally:
                await srv.close()
        return
    loop = asyncio.get_running_loop()
    host = AsyncioHost(loop)
    node = Node("bench", host, 1)
    node.spawn("clients", StandInHub)
    gateway = Gateway(node, (LOOPBACK, 0), config, loop=loop)
    host.attach_clients(gateway)
    await gateway.start()
    try:
        yield BenchServer(gateway.url, node, gateway, None)
    finally:
        await gateway.close()
        node.stop()


async def setup_call(ws: ClientConnection, codec: ClientCodec, request_id: int, msg: Message) -> Message:
    """One request and its reply, for setting a benchmark up; an error reply raises."""
    await ws.send(codec.encode_binary(request_id, msg))
    rid, reply = codec.decode_binary(await ws.recv(decode=False))
    if rid != request_id or isinstance(reply, Error):
        raise RuntimeError(f"benchmark setup: {type(msg).__name__} got {reply!r}")
    return reply


async def writer_key(bench: BenchServer, scopes: tuple[str, ...] = ("write",)) -> str | None:
    """With the real hub: create the tenant and a key allowed to write there (None: no auth)."""
    if bench.admin_key is None:
        return None
    codec = client_codec()
    async with connect(bench.url, compression=None) as ws:
        await setup_call(ws, codec, 1, Authenticate("", "api_key", bench.admin_key))
        await setup_call(ws, codec, 2, CreateTenant(TENANT))
        created = await setup_call(ws, codec, 3, CreateApiKey("bench-client", False, TENANT, scopes))
        assert isinstance(created, ApiKeyCreated)
        return created.key

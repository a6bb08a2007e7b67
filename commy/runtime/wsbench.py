"""WebSocket benchmarks: the gateway against a bare websockets server, all on the caller's loop.

Ceilings (bare websockets, nothing else on the path):
- `measure_bare_echo(n)`: round trips/s of a websockets client sending a message the size of our
  `SetVariables` frame and awaiting its echo from a bare websockets echo server.
- `measure_bare_one_way(n)`: messages/s the same client sends to a bare server that only counts them.

Ours, through a real gateway and node (`hub=True`, the default: the real client hub and service
files of `start_server` in a temporary folder, with an authenticated session; `hub=False`: a
stand-in actor registered as `clients` that answers `SetVariables` with `VariablesUpdated`, so only
the gateway, codec and node are measured):
- `measure_set_round_trips(n)`: one `SetVariables` at a time, each awaited (round trips/s).
- `measure_pipelined_sets(n)`: n `SetVariables` sent back to back while a reader task collects the
  n replies; the clock stops at the last reply (sets/s).
  Both use a minimal stand-in client on `websockets.asyncio.client.connect`, as the ceilings do.
- `measure_fanout_p99(clients)`: `clients` connections receive one `VariableChanged` (64-byte value)
  per round; the latency of a connection is from the moment the change is sent (stand-in: the
  node sends it to every connection; hub: a writer's `SetVariables` leaves the writer) to the
  moment its frame is read. Returns the p99 over all connections and rounds, in seconds. The
  receivers are minimal asyncio protocols (handshake, then a timestamp per frame read), so the
  figure is the server's fan-out, not a thousand client stacks sharing its loop. With the hub they
  are all one client, logged in with the token of the writer's key login (the hub issues a client
  only so many tokens a minute).

The server under test is `wsbench_server`'s; the fan-out receivers are `RawClient`s (`raw_ws_client`).
"""

from __future__ import annotations

import asyncio
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from commy.client_codec import client_codec
from commy.messages import (
    Address,
    Authenticate,
    AuthenticationResponse,
    Subscribe,
    VariableChanged,
    VariablesUpdated,
    client_address,
)
from commy.runtime.gateway import GatewayConfig
from commy.runtime.raw_ws_client import RawClient
from commy.runtime.wsbench_server import (
    LOOPBACK,
    SERVICE,
    TENANT,
    TIMEOUT,
    VALUE,
    VARIABLE,
    BenchServer,
    bench_server,
    set_request,
    setup_call,
    writer_key,
)

_BENCH = Address("bench", "bench")


# --------------------------------------------------------------------------- ceilings


async def measure_bare_echo(n: int) -> float:
    """Round trips/s through a bare websockets echo server (the ceiling for set round trips)."""
    payload = client_codec().encode_binary(1, set_request())

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, LOOPBACK, 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://{LOOPBACK}:{port}", compression=None) as ws:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for _ in range(n):
                await ws.send(payload)
                await ws.recv()
            return n / (loop.time() - start)


async def measure_bare_one_way(n: int) -> float:
    """Messages/s from a websockets client to a bare server that counts them (pipelined ceiling)."""
    payload = client_codec().encode_binary(1, set_request())
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()

    async def count(ws: ServerConnection) -> None:
        left = n
        async for _ in ws:
            left -= 1
            if left == 0:
                done.set_result(loop.time())

    async with serve(count, LOOPBACK, 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://{LOOPBACK}:{port}", compression=None) as ws:
            start = loop.time()
            for _ in range(n):
                await ws.send(payload)
            end = await asyncio.wait_for(done, TIMEOUT)
            return n / (end - start)


# --------------------------------------------------------------------------- set round trips


async def measure_set_round_trips(n: int, *, hub: bool = True) -> float:
    """Awaited SetVariables round trips/s over one WebSocket through the gateway."""
    codec = client_codec()
    async with bench_server(hub) as bench:
        key = await writer_key(bench)
        async with connect(bench.url, compression=None) as ws:
            if key is not None:
                await setup_call(ws, codec, 1, Authenticate(TENANT, "api_key", key))
            encode, decode = codec.encode_binary, codec.decode_binary
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(2, n + 2):
                await ws.send(encode(i, set_request()))
                decode(await ws.recv(decode=False))
            return n / (loop.time() - start)


async def measure_pipelined_sets(n: int, *, hub: bool = True) -> float:
    """SetVariables/s sent back to back over one WebSocket, until the last reply is read.

    Like the one-way ceiling, the client sends bytes prepared before the clock starts (n frames,
    each its own request id) and only collects the replies while timed; they are decoded and
    checked after the clock stops. So the client's own codec work is outside both figures, and
    the server's whole path -- decode, checks, the write, the reply -- is inside ours.
    """
    codec = client_codec()
    async with bench_server(hub) as bench:
        key = await writer_key(bench)
        async with connect(bench.url, compression=None, max_queue=None) as ws:
            if key is not None:
                await setup_call(ws, codec, 1, Authenticate(TENANT, "api_key", key))
            frames = [codec.encode_binary(i, set_request()) for i in range(2, n + 2)]
            replies: list[bytes] = []

            async def read_all() -> None:
                recv, keep = ws.recv, replies.append
                for _ in range(n):
                    keep(await recv(decode=False))

            loop = asyncio.get_running_loop()
            reader = loop.create_task(read_all())
            send = ws.send
            start = loop.time()
            for frame in frames:
                await send(frame)
            await asyncio.wait_for(reader, TIMEOUT)
            elapsed = loop.time() - start
            for i, data in enumerate(replies, start=2):
                request_id, reply = codec.decode_binary(data)
                if request_id != i or not isinstance(reply, VariablesUpdated):
                    raise RuntimeError(f"pipelined sets: reply {i} was {reply!r}")
            return n / elapsed


# --------------------------------------------------------------------------- fan-out



async def _open_raw(bench: BenchServer, count: int) -> list[RawClient]:
    loop = asyncio.get_running_loop()
    host, port = bench.gateway.listen_address or (LOOPBACK, 0)
    clients: list[RawClient] = []
    for start in range(0, count, 64):  # in slices: the listen backlog is finite
        batch = [RawClient(loop, f"{host}:{port}") for _ in range(min(64, count - start))]
        await asyncio.gather(*(loop.create_connection(lambda c=c: c, host, port) for c in batch))  # type: ignore[misc]
        await asyncio.wait_for(asyncio.gather(*(c.opened for c in batch)), 30.0)
        clients += batch
    return clients


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def measure_fanout_p99(clients: int = 1000, rounds: int = 20, *, hub: bool = True) -> float:
    """p99 seconds from one change being sent to each of `clients` connections reading it."""
    loop = asyncio.get_running_loop()
    codec = client_codec()
    config = GatewayConfig(max_connections=max(clients + 16, 10_000))
    async with bench_server(hub, config) as bench:
        key = await writer_key(bench)
        receivers = await _open_raw(bench, clients)
        writer: RawClient | None = None
        try:
            deadline = loop.time() + 30.0
            while len(bench.gateway.conns) < clients and loop.time() < deadline:
                await asyncio.sleep(0.01)
            if key is not None:
                writer = (await _open_raw(bench, 1))[0]
                login = await writer.call(codec, 1, Authenticate(TENANT, "api_key", key))
                assert isinstance(login, AuthenticationResponse)
                await writer.call(codec, 2, set_request())  # creates the service
                for c in receivers:  # one client on many connections: its token, not a new one each
                    await c.call(codec, 1, Authenticate(TENANT, "token", login.token))
                    await c.call(codec, 2, Subscribe(TENANT, SERVICE, (VARIABLE,)))
            targets = [] if writer is not None else [client_address(c) for c in bench.gateway.connection_ids()]
            latencies: list[float] = []
            send = bench.node.send
            for r in range(rounds):
                marks = [len(c.arrivals) for c in receivers]
                start = time.perf_counter()
                if writer is not None:
                    writer.send(codec.encode_binary(r + 3, set_request()))
                else:
                    change = VariableChanged(TENANT, SERVICE, VARIABLE, VALUE, r + 1, "bench-writer")
                    for to in targets:
                        send(_BENCH, to, change, None)
                deadline = loop.time() + 10.0
                while any(len(c.arrivals) <= m for c, m in zip(receivers, marks, strict=True)):
                    if loop.time() > deadline:
                        raise TimeoutError("fan-out: not every client got the change within 10 s")
                    await asyncio.sleep(0.001)
                latencies += [c.arrivals[m] - start for c, m in zip(receivers, marks, strict=True)]
                await asyncio.sleep(0.01)
            return _p99(latencies)
        finally:
            for c in receivers:
                c.close()
            if writer is not None:
                writer.close()


async def measure_all(n: int = 20_000, fanout: int = 1000, *, hub: bool = True) -> dict[str, float]:
    """Every figure once, in one run: the ceilings, ours and the ratios (for a quick look)."""
    echo = await measure_bare_echo(n)
    sets = await measure_set_round_trips(n, hub=hub)
    one_way = await measure_bare_one_way(n)
    pipelined = await measure_pipelined_sets(n, hub=hub)
    p99 = await measure_fanout_p99(fanout, hub=hub)
    return {"bare_echo_rt_s": echo, "set_rt_s": sets, "set_ratio": sets / echo,
            "bare_one_way_s": one_way, "pipelined_sets_s": pipelined, "pipelined_ratio": pipelined / one_way,
            "fanout_p99_ms": p99 * 1000}

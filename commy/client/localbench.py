"""Benchmarks of the SDK's local fast path: what an application on the server's machine pays.

A real server runs in-process on a temporary data folder; an `AsyncClient` authenticates, maps a
service (`MapService` over the WebSocket, then the file itself) and the timed loops call
`Service.read_local` / `Service.write_local` on a 64-byte variable -- the SDK's own entry points,
so the numbers include its dispatch, not only the store's. Each row alternates with its raw
ceiling measured in the same run (`commy.store.storebench`: a bare mmap seqlock with no name, no
lookup and no lock) and reports median microseconds per operation.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from commy.store.storebench import PAYLOAD, _medians, _Raw, _row

if TYPE_CHECKING:
    from commy.bench import Row
    from commy.client.local import Service


async def _mapped(folder: Path) -> tuple[object, object, Service]:
    from commy.client.aio import AsyncClient
    from commy.core.catalog_records import KdfParams
    from commy.runtime.server import start_server

    server = await start_server(folder / "data", ("127.0.0.1", 0), kdf=KdfParams(n=2, r=1, p=1), heartbeat=None)
    assert server.bootstrap_key is not None
    client = await AsyncClient.connect(server.url, heartbeat=0)
    await client.authenticate("", api_key=server.bootstrap_key)
    await client.create_tenant("bench")
    await client.authenticate("bench", api_key=server.bootstrap_key)
    await client.create_service("bench", "local")
    svc = client.service("bench", "local", local=True)
    await svc.set("v", PAYLOAD)
    if not await svc.map():
        raise RuntimeError("the benchmark client could not map its service")
    return server, client, svc


def _run(measure: Callable[[Service, _Raw], tuple[float, float]]) -> tuple[float, float]:
    async def main() -> tuple[float, float]:
        with tempfile.TemporaryDirectory(prefix="commy-bench-") as d:
            server, client, svc = await _mapped(Path(d))
            raw = _Raw(Path(d))
            try:
                return measure(svc, raw)  # synchronous on purpose: the local path never awaits
            finally:
                raw.close()
                await client.close()  # type: ignore[attr-defined]
                await server.close()  # type: ignore[attr-defined]

    from commy.runtime.loop import run

    return run(main())


def bench_sdk_local_read(repeats: int, n: int) -> Row:
    def measure(svc: Service, raw: _Raw) -> tuple[float, float]:
        read_local = svc.read_local

        def ours() -> float:
            t = time.perf_counter()
            for _ in range(n):
                read_local("v")
            return (time.perf_counter() - t) / n * 1e6

        def ceiling() -> float:
            return raw.write_read_us(n)

        value, ceil = _medians([ours, ceiling], repeats)
        return value, ceil

    value, ceil = _run(measure)
    ratio = value / ceil
    return _row("local mapped read 64 B via the SDK", value, "µs", ceil, ratio,
                "<= 1 µs and <= 5x raw seqlock w+r", value <= 1.0 and ratio <= 5.0)


def bench_sdk_local_write(repeats: int, n: int) -> Row:
    def measure(svc: Service, raw: _Raw) -> tuple[float, float]:
        write_local = svc.write_local

        def ours() -> float:
            t = time.perf_counter()
            for _ in range(n):
                write_local("v", PAYLOAD)
            return (time.perf_counter() - t) / n * 1e6

        def ceiling() -> float:
            return raw.write_us(n)

        value, ceil = _medians([ours, ceiling], repeats)
        return value, ceil

    value, ceil = _run(measure)
    return _row("local mapped write 64 B via the SDK", value, "µs", ceil, value / ceil,
                "<= 5 µs (original: 35.3 µs)", value <= 5.0)

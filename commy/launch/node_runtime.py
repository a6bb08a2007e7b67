"""One cluster node on its own asyncio loop, in a background thread of the calling process.

The node actor's process is a thespian actor: its main thread belongs to thespian, which calls
`receiveMessage` for each control message. The node itself (TCP peer transport, WebSocket
gateway, its actors) runs here, on a loop in a daemon thread, exactly as `commy serve --config`
runs it; the actor only starts it, asks it for a snapshot and stops it, each time through
`asyncio.run_coroutine_threadsafe` so nothing of the node is touched off its loop. The node's log
records go, one JSON line each, to `node.log` in its data folder; on the node's first start, the
bootstrap admin key (which `commy serve` prints) goes to `admin.key` there, mode 0600.

If the process dies (SIGKILL), the node dies with it: the kernel frees its ports and its data
folder lock, and the restarted node opens the same folder with a new incarnation and catches up
with its peers before it stamps a write.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import IO, TypeVar

from commy.config import ClusterConfig
from commy.config_read import format_address
from commy.runtime.cluster_node import start_cluster_node
from commy.runtime.node_status import NodeSnapshot, snapshot
from commy.runtime.server import RunningServer
from commy.runtime.standalone import json_log_sink

LOG_FILE = "node.log"
ADMIN_KEY_FILE = "admin.key"  # the bootstrap admin key of the node's first start, readable by its owner only
T = TypeVar("T")


class NodeRuntime:
    def __init__(self, config: ClusterConfig, node_id: str) -> None:
        self.config = config
        self.node_id = node_id
        self.srv: RunningServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._log: IO[str] | None = None
        self._thread = threading.Thread(target=self._run, name=f"commy-node-{node_id}", daemon=True)

    @property
    def url(self) -> str:
        return self.config.node(self.node_id).url

    @property
    def peer(self) -> str:
        return format_address(self.config.node(self.node_id).peer)

    def start(self, timeout: float) -> None:
        """Start the node and wait until it serves; RuntimeError says why it did not."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"node {self.node_id} did not start within {timeout:g} s")
        if self._error is not None:
            raise RuntimeError(f"node {self.node_id} did not start: {self._error}") from self._error

    def status(self, timeout: float = 2.0) -> NodeSnapshot:
        srv = self.srv
        if srv is None:
            raise RuntimeError(f"node {self.node_id} is not running")

        async def read() -> NodeSnapshot:
            return snapshot(srv)

        return self._call(read, timeout).result(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """Close the node cleanly (it announces its leave, flushes its files) and end the thread."""
        if self.loop is not None and self._stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _call(self, fn: Callable[[], Awaitable[T]], timeout: float) -> Future[T]:
        if self.loop is None:
            raise RuntimeError(f"node {self.node_id} is not running")
        return asyncio.run_coroutine_threadsafe(_awaited(fn), self.loop)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = self._error or exc
        finally:
            self._ready.set()
            if self._log is not None:
                self._log.close()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        folder = Path(self.config.node(self.node_id).data)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._log = open(folder / LOG_FILE, "a", encoding="utf-8")
        self.srv = await start_cluster_node(self.config, self.node_id, log_sink=json_log_sink(self._log))
        if self.srv.bootstrap_key is not None:  # `commy serve` prints it; a launched node keeps it in a file
            key_file = folder / ADMIN_KEY_FILE
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # a file left from before keeps its mode through O_CREAT
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.srv.bootstrap_key + "\n")
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.srv.close()


async def _awaited(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()

"""A server in a background thread, for notebooks, scripts and tests that are not asyncio programs.

`EmbeddedServer.start()` starts a fresh event loop (uvloop when installed) on a daemon thread, runs
`commy.runtime.server.start_server` on it and waits until the server listens; with no `data`
folder it makes a temporary one and removes it at the end. `url` and `bootstrap_key` are what a
client needs (`commy.client.Client.connect(server.url)`), and any keyword of `start_server` can be
passed through. `stop()` (or leaving a `with` block) closes the server the way Ctrl-C does --
clients closed, files flushed, catalog saved -- then cancels what is left on the loop, stops it,
joins the thread and closes the loop: no thread, socket or temporary folder is left behind.
Calling `stop()` twice is harmless.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from commy.runtime.loop import new_event_loop
from commy.runtime.server import RunningServer, start_server

THREAD_NAME = "commy-embedded-server"


class EmbeddedServer:
    """One commy server on its own loop thread (see the module docstring)."""

    def __init__(self, server: RunningServer, loop: asyncio.AbstractEventLoop, thread: threading.Thread,
                 temporary: Path | None) -> None:
        self.server = server
        self._loop = loop
        self._thread = thread
        self._temporary = temporary
        self._lock = threading.Lock()
        self.stopped = False

    @classmethod
    def start(cls, data: str | Path | None = None, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0,
              **options: Any) -> EmbeddedServer:
        """Start a server listening on `host:port` (port 0: a free one) with data in `data` (None: a
        temporary folder); `options` go to `start_server`. Raises what `start_server` raises."""
        temporary = Path(tempfile.mkdtemp(prefix="commy-embedded-")) if data is None else None
        folder = Path(data) if data is not None else temporary
        assert folder is not None
        loop = new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=THREAD_NAME, daemon=True)
        thread.start()
        try:
            future = asyncio.run_coroutine_threadsafe(start_server(folder, (host, port), **options), loop)
            server = future.result(timeout)
        except BaseException:
            _stop_loop(loop, thread)
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)
            raise
        return cls(server, loop, thread, temporary)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def bootstrap_key(self) -> str | None:
        """The server admin's API key, on a first start (None when the data folder had a catalog)."""
        return self.server.bootstrap_key

    @property
    def data(self) -> Path:
        return self.server.data

    @property
    def running(self) -> bool:
        return not self.stopped and self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Close the server cleanly, then stop and join its loop thread (see the module docstring)."""
        with self._lock:
            if self.stopped:
                return
            self.stopped = True
        try:
            asyncio.run_coroutine_threadsafe(self.server.close(), self._loop).result(timeout)
        finally:
            _stop_loop(self._loop, self._thread, timeout)
            if self._temporary is not None:
                shutil.rmtree(self._temporary, ignore_errors=True)

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedServer({self.url}, data={self.data}, {'stopped' if self.stopped else 'running'})"


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread, timeout: float = 30.0) -> None:
    """Cancel the tasks left on `loop`, stop it, join its thread, close it."""

    async def drain() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await loop.shutdown_asyncgens()

    if loop.is_running():
        try:
            asyncio.run_coroutine_threadsafe(drain(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
    if not loop.is_running():
        loop.close()

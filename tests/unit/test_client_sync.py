"""The blocking Client against a fake server on its own thread: same API, subscriptions as
iterators and callbacks, mapped reads without the loop, and a clean close."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import pytest

from commy.client import Client, PermissionRevokedError, UnauthenticatedError, VariableChanged
from commy.messages import MapService, PermissionRevoked
from commy.store.service_file import ServiceFile
from tests.helpers.fake_server import ThreadedFakeServer


def commy_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("commy-client")]


def test_blocking_client_sessions_values_and_clean_close() -> None:
    with ThreadedFakeServer() as srv:
        client = Client.connect(srv.url, text=True)
        with pytest.raises(UnauthenticatedError):
            client.service("acme", "svc").get("x")
        session = client.authenticate("acme", api_key="key-alice")
        assert session.client_id == "alice" and client.session("acme") == session
        svc = client.service("acme", "svc")
        assert svc.set_int("n", 41) == 1 and svc.get_int("n") == 41
        assert svc.set_str("s", "ok") == 1 and svc.get_str("s") == "ok"
        assert svc.set_many({"a": b"1", "b": b"2"}) == {"a": 1, "b": 1}
        assert set(svc.get_many()) == {"n", "s", "a", "b"}
        assert svc.get_entry("a").version == 1  # type: ignore[union-attr]
        assert not svc.is_local and not svc.map()
        assert client.refresh("acme").token != session.token
        client.logout("acme")
        assert client.session("acme") is None
        assert commy_threads()
        client.close()
        client.close()
        assert commy_threads() == []


def test_blocking_iterator_and_callbacks_that_call_the_client() -> None:
    with ThreadedFakeServer() as srv, Client.connect(srv.url) as client:
        client.authenticate("acme", api_key="key-alice")
        svc = client.service("acme", "svc")
        svc.set("a", b"0")
        with svc.subscribe(["a"], initial=True) as sub:
            assert sub.get(2).value == b"0"  # type: ignore[union-attr]
            srv.call(lambda f: f.change("acme", "svc", "a", b"1"))
            assert next(sub).value == b"1"
            with pytest.raises(TimeoutError):
                sub.get(0.05)
        assert sub.ended and sub.get(1) is None
        seen: list[bytes] = []
        ends: list[object] = []
        done, ended = threading.Event(), threading.Event()

        def on_change(change: VariableChanged) -> None:
            seen.append(svc.get(change.name) or b"")  # a blocking call from a callback is fine
            if len(seen) == 3:
                done.set()

        def on_end(error: object) -> None:
            ends.append(error)
            ended.set()
        svc.on_change(on_change, on_end=on_end)
        for i in range(3):
            svc.set("b", str(i).encode())
        assert done.wait(5)
        assert len(seen) == 3 and seen[-1] == b"2"
        srv.call(lambda f: f.push(PermissionRevoked("acme", "permission revoked")))
        assert ended.wait(5)
        assert isinstance(ends[0], PermissionRevokedError)
        assert client.session("acme") is None


def test_mapped_reads_and_writes_happen_in_the_callers_thread(tmp_path: Path) -> None:
    path = tmp_path / "svc.commy"
    ServiceFile.create(path).close()
    with ThreadedFakeServer() as srv, Client.connect(srv.url) as client:
        srv.fake.map_path = str(path)
        client.authenticate("acme", api_key="key-alice")
        svc = client.service("acme", "svc")
        assert svc.map() and svc.is_local
        assert svc.set_float("f", 2.5) == 1
        loop_blocked, release = threading.Event(), threading.Event()

        def block() -> None:
            loop_blocked.set()
            release.wait(10)
        client._loop.call_soon_threadsafe(block)
        assert loop_blocked.wait(5)
        results: list[object] = []

        def mapped_ops() -> None:  # none of these may need the (now blocked) event loop
            results.extend([svc.get_float("f"), svc.read_local("f"), svc.write_local("g", b"x"), svc.get("g"),
                            svc.set("g", b"y")])
        worker = threading.Thread(target=mapped_ops)
        worker.start()
        worker.join(5)
        release.set()
        assert not worker.is_alive()
        assert results == [2.5, struct.pack("<d", 2.5), 1, b"x", 2]
        assert len(srv.fake.requests(MapService)) == 1


def test_a_blocking_call_from_the_loop_thread_is_refused() -> None:
    with ThreadedFakeServer() as srv, Client.connect(srv.url) as client:
        import asyncio

        async def from_loop() -> str:
            try:
                client.list_tenants()
            except RuntimeError as exc:
                return str(exc)
            return "no error"
        assert "deadlock" in asyncio.run_coroutine_threadsafe(from_loop(), client._loop).result(5)

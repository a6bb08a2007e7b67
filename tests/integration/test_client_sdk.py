"""The client SDK against the real embedded server (`start_server`, in-process, a tmp data folder):
administration with the bootstrap key, remote and mapped reads and writes, subscriptions, typed
values, fallback to remote, logout, revocation with file rotation, a server restart, text frames,
the blocking client, `commy admin`, and TLS with a development certificate."""

from __future__ import annotations

import argparse
import asyncio
import ssl
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from commy.client import (
    AsyncClient,
    Client,
    ForbiddenError,
    NotLocalError,
    PermissionRevokedError,
    UnauthenticatedError,
)
from commy.client.admin_cli import add_admin_parser
from commy.runtime.server import RunningServer, start_server
from tests.helpers.aio import until
from tests.helpers.fake_server import arun

pytestmark = pytest.mark.integration
T, S = "acme", "prices"


@dataclass
class Setup:
    server: RunningServer
    admin: AsyncClient
    keys: dict[str, str]  # client id -> API key
    key_ids: dict[str, str]


@asynccontextmanager
async def served(data: Path, port: int = 0, **clients: tuple[str, ...]) -> AsyncIterator[Setup]:
    """A server with tenant acme, service prices, and an API key per client with the given scopes."""
    server = await start_server(data, ("127.0.0.1", port))
    admin = await AsyncClient.connect(server.url)
    try:
        assert server.bootstrap_key is not None
        await admin.authenticate("", api_key=server.bootstrap_key)
        await admin.create_tenant(T)
        await admin.create_service(T, S)  # opens the admin's session on acme with the same key
        keys, key_ids = {}, {}
        for client_id, scopes in clients.items():
            key_ids[client_id], keys[client_id] = await admin.create_api_key(client_id, tenant=T, scopes=scopes)
        yield Setup(server, admin, keys, key_ids)
    finally:
        await admin.close()
        await server.close()


async def login(setup: Setup, client_id: str, **kwargs: Any) -> AsyncClient:
    client = await AsyncClient.connect(setup.server.url, **kwargs)
    await client.authenticate(T, api_key=setup.keys[client_id])
    return client


def test_admin_remote_values_subscriptions_and_typed_helpers(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, alice=("write",), bob=("read",)) as setup:
            assert T in await setup.admin.list_tenants()
            assert await setup.admin.list_services(T) == [S]
            alice = await login(setup, "alice")
            bob = await login(setup, "bob", text=True)
            writer = alice.service(T, S, local=False)
            watcher = bob.service(T, S, local=False)
            sub = await watcher.subscribe(["price", "name"]).start()
            assert await writer.set_float("price", 1.0841) == 1
            assert await writer.set_str("name", "EUR/USD") == 1
            await writer.set_int("ignored", 1)  # not subscribed
            first, second = await sub.get(5), await sub.get(5)
            assert first is not None and second is not None
            assert (first.name, first.version, first.changed_by) == ("price", 1, "alice")
            assert second.value == b"EUR/USD"
            assert await watcher.get_float("price") == 1.0841
            await writer.set_object("obj", {"bid": [1, 2]})
            assert await watcher.get_object("obj") == {"bid": [1, 2]}
            assert set(await watcher.get_many()) == {"price", "name", "ignored", "obj"}
            with pytest.raises(ForbiddenError):
                await watcher.set("price", b"x")  # bob may only read
            assert await watcher.check("read") and not await watcher.check("write")
            await bob.logout(T)
            assert await sub.get(5) is None  # ended normally
            with pytest.raises(UnauthenticatedError):
                await watcher.get("price")
            await alice.close()
            await bob.close()
    arun(main(), 60)


def test_local_mapping_reads_and_writes_and_a_remote_subscriber_sees_local_writes(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, alice=("write",), bob=("read",)) as setup:
            alice = await login(setup, "alice")
            bob = await login(setup, "bob")
            local = alice.service(T, S)  # local=None: mapped, since we are on the server's machine
            remote = bob.service(T, S, local=False)
            sub = await remote.subscribe().start()
            assert await local.set_int("counter", 1) == 1
            assert local.is_local
            assert local.write_local("counter", (2).to_bytes(8, "little", signed=True)) == 2
            # the server polls mapped files: writes between two polls reach subscribers as the last one
            change = await sub.get(5)
            while change is not None and change.version < 2:
                change = await sub.get(5)
            assert change is not None and (change.name, change.version, change.changed_by) == ("counter", 2, "alice")
            assert await remote.get_int("counter") == 2
            await setup.admin.service(T, S, local=False).set("from_remote", b"r")
            assert local.read_local("from_remote") == b"r"  # a remote write, read from the mapped file
            assert (await local.get_entry("from_remote")).version == 1  # type: ignore[union-attr]
            required = bob.service(T, S, local=True)
            assert await required.get("counter") == (2).to_bytes(8, "little", signed=True) and required.is_local
            await alice.close()
            await bob.close()
    arun(main(), 60)


def test_refused_mapping_falls_back_to_remote(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, blind=("variable:write",), bob=("read",)) as setup:
            blind = await login(setup, "blind")  # may write but not read: the server refuses to map
            bob = await login(setup, "bob")
            sub = await bob.service(T, S, local=False).subscribe().start()
            svc = blind.service(T, S)
            assert await svc.set("x", b"1") == 1 and not svc.is_local
            assert (await sub.get(5)).value == b"1"  # type: ignore[union-attr]
            with pytest.raises(ForbiddenError):
                await blind.service(T, S, local=True).get("x")
            with pytest.raises(NotLocalError):
                svc.read_local("x")
            await blind.close()
            await bob.close()
    arun(main(), 60)


def test_revocation_ends_sessions_and_rotates_the_file_under_other_local_clients(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, alice=("write",), bob=("write",)) as setup:
            alice = await login(setup, "alice")
            bob = await login(setup, "bob")
            mine, theirs = alice.service(T, S), bob.service(T, S)
            await mine.set("v", b"1")
            await theirs.set("v", b"2")
            assert mine.is_local and theirs.is_local
            old_path = theirs.mapping.path  # type: ignore[union-attr]
            sub = await mine.subscribe().start()
            await setup.admin.revoke(T, "alice")
            with pytest.raises(PermissionRevokedError):
                await sub.get(5)
            assert alice.session(T) is None and not mine.is_local
            with pytest.raises(PermissionRevokedError):
                mine.read_local("v")
            assert await until(lambda: theirs.mapping is not None and theirs.mapping.path != old_path, 5)
            assert theirs.read_local("v") == b"2"
            watcher = await setup.admin.service(T, S, local=False).subscribe().start()
            theirs.write_local("v", b"3")  # bob's writes into the new file are still seen
            assert (await watcher.get(5)).value == b"3"  # type: ignore[union-attr]
            await alice.close()
            await bob.close()
    arun(main(), 60)


def test_api_key_revocation_and_token_refresh(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, alice=("write",)) as setup:
            alice = await login(setup, "alice")
            old = alice.session(T)
            new = await alice.refresh(T)
            assert old is not None and new.token != old.token
            other = await AsyncClient.connect(setup.server.url)
            with pytest.raises(UnauthenticatedError):
                await other.authenticate(T, token=old.token)  # the old token was revoked
            assert (await other.authenticate(T, token=new.token)).client_id == "alice"
            sub = await alice.service(T, S, local=False).subscribe().start()
            await setup.admin.revoke_api_key(setup.key_ids["alice"])
            with pytest.raises(PermissionRevokedError):
                await sub.get(5)
            await alice.close()
            await other.close()
    arun(main(), 60)


def test_a_server_restart_is_survived_with_the_changes_missed_meanwhile(tmp_path: Path) -> None:
    async def main() -> None:
        setup_ctx = served(tmp_path, alice=("write",))
        setup = await setup_ctx.__aenter__()
        port = int(setup.server.url.rsplit(":", 1)[1])
        alice = await login(setup, "alice", backoff=(0.02, 0.2))
        svc = alice.service(T, S, local=False)
        await svc.set("a", b"1")
        sub = await svc.subscribe().start()
        await setup_ctx.__aexit__(None, None, None)  # the server goes away
        assert await until(lambda: not alice.connection.connected, 5)
        server = await start_server(tmp_path, ("127.0.0.1", port))  # same data: same keys and token key
        try:
            offline = await AsyncClient.connect(server.url)
            await offline.authenticate(T, api_key=setup.keys["alice"])
            await offline.service(T, S, local=False).set("a", b"2")  # possibly before alice is back
            change = await sub.get(10)
            assert change is not None and (change.name, change.value) == ("a", b"2")
            assert await svc.get("a") == b"2" and alice.connection.connects >= 2
            await offline.close()
            await alice.close()
        finally:
            await server.close()
    arun(main(), 60)


def test_blocking_client_and_admin_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ready, stop = threading.Event(), threading.Event()
    box: dict[str, Any] = {}

    def serve() -> None:
        async def main() -> None:
            async with served(tmp_path) as setup:
                box["url"], box["key"] = setup.server.url, setup.server.bootstrap_key
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.01)
        asyncio.run(main())
    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert ready.wait(30)
        parser = argparse.ArgumentParser(prog="commy")
        add_admin_parser(parser.add_subparsers(dest="command"))

        def admin(*argv: str) -> int:
            args = parser.parse_args(["admin", "--url", box["url"], "--key", box["key"], *argv])
            return int(args.func(args))
        assert admin("create-key", "carol", "--tenant", T, "--scope", "write") == 0
        carol_key = capsys.readouterr().out.strip()
        assert admin("create-service", T, "extra") == 0 and admin("services", T) == 0
        assert capsys.readouterr().out.split()[-2:] == ["extra", S]
        assert admin("create-tenant", T) == 1  # exists already: the server's error, exit 1
        assert "commy admin create-tenant: bad_request: tenant 'acme' already exists" in capsys.readouterr().err
        with Client.connect(box["url"]) as carol:
            carol.authenticate(T, api_key=carol_key)
            svc = carol.service(T, S)
            with svc.subscribe(["n"]) as changes:
                assert svc.set_int("n", 5) == 1 and svc.is_local
                assert changes.get(5).value == (5).to_bytes(8, "little")  # type: ignore[union-attr]
    finally:
        stop.set()
        thread.join(30)


def test_tls_with_a_development_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("cryptography")
    from commy.runtime.serve import write_dev_certificate
    from commy.runtime.server import server_ssl_context

    cert, key = write_dev_certificate(tmp_path / "certs")

    async def main() -> None:
        server = await start_server(tmp_path / "data", ("127.0.0.1", 0), ssl=server_ssl_context(cert, key))
        try:
            assert server.url.startswith("wss://") and server.bootstrap_key
            trust = ssl.create_default_context(cafile=str(cert))
            async with AsyncClient.connect(server.url, ssl=trust) as client:
                await client.authenticate("", api_key=server.bootstrap_key)
                await client.create_tenant(T)
            parser = argparse.ArgumentParser(prog="commy")
            add_admin_parser(parser.add_subparsers(dest="command"))
            args = parser.parse_args(["admin", "--url", server.url, "--key", server.bootstrap_key,
                                      "--cafile", str(cert), "tenants"])
            assert await asyncio.to_thread(args.func, args) == 0  # the command runs its own loop
            untrusted = parser.parse_args(["admin", "--url", server.url, "--key", server.bootstrap_key, "tenants"])
            assert await asyncio.to_thread(untrusted.func, untrusted) == 1
        finally:
            await server.close()
    arun(main(), 60)
    out = capsys.readouterr()
    assert out.out.split() == [T] and "could not connect" in out.err

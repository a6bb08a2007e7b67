"""Local mapping with a real service file handed out by a fake server: fast paths, fallback,
FileMigration, revocation, and a service that only exists after a remote write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from commy.client import (
    AsyncClient,
    ForbiddenError,
    NotFoundError,
    NotLocalError,
    PermissionRevokedError,
)
from commy.messages import Error, FileMigration, GetVariables, MapService, MigrationAck, PermissionRevoked, SetVariables
from commy.store.service_file import ServiceFile
from tests.helpers.aio import until
from tests.helpers.fake_server import FakeServer, arun


async def client_of(srv: FakeServer, **kwargs: Any) -> AsyncClient:
    client = await AsyncClient.connect(srv.url, **kwargs)
    await client.authenticate("acme", api_key="key-alice")
    return client


def test_a_mapped_service_reads_and_writes_the_file_directly(tmp_path: Path) -> None:
    path = tmp_path / "svc.commy"
    server_side = ServiceFile.create(path)
    server_side.write("a", b"from the server")

    async def main() -> None:
        async with FakeServer() as srv:
            srv.map_path, srv.map_writer = str(path), 5
            client = await client_of(srv)
            svc = client.service("acme", "svc")
            assert not svc.is_local
            with pytest.raises(NotLocalError, match="not mapped"):
                svc.read_local("a")
            assert await svc.get("a") == b"from the server"
            assert svc.is_local and svc.mapping is not None and svc.mapping.writer == 5
            assert await svc.set_int("n", 7) == 1
            assert svc.read_local("n") == (7).to_bytes(8, "little")
            assert svc.write_local("n", b"\x08" + bytes(7)) == 2
            assert await svc.get_int("n") == 8
            entry = server_side.read("n")
            assert entry is not None and (entry.version, entry.writer) == (2, 5)
            many = await svc.get_many()
            assert set(many) == {"a", "n"} and many["n"].changed_by == "alice" and many["a"].changed_by == ""
            assert await svc.set("r", b"1", concern="replicated") == 1  # not a local concern: via the server
            assert srv.requests(SetVariables) and srv.requests(GetVariables) == []
            assert len(srv.requests(MapService)) == 1
            await client.close()
            with pytest.raises(NotLocalError):
                svc.read_local("a")
    arun(main())
    server_side.close()


def test_refused_mapping_falls_back_to_remote_or_raises_when_required() -> None:
    async def main() -> None:
        async with FakeServer() as srv:
            client = await client_of(srv)
            auto = client.service("acme", "svc")
            assert await auto.set("x", b"1") == 1 and not auto.is_local
            assert await auto.get("x") == b"1"
            assert len(srv.requests(MapService)) == 1  # refused once, not asked again
            required = client.service("acme", "svc", local=True)
            with pytest.raises(ForbiddenError, match="own machine"):
                await required.get("x")
            never = client.service("acme", "other", local=False)
            await never.set("y", b"2")
            assert not await never.map() and len(srv.requests(MapService)) == 1
            await client.close()
    arun(main())


def test_a_service_that_is_not_found_is_mapped_after_a_write_creates_it(tmp_path: Path) -> None:
    path = tmp_path / "svc.commy"
    ServiceFile.create(path).close()

    async def main() -> None:
        async with FakeServer() as srv:
            created: list[bool] = []

            def map_service(conn: Any, msg: MapService) -> Any:
                if not created:
                    return Error("not_found", "service 'svc' not found")
                from commy.messages import ServiceMapped
                return ServiceMapped(msg.tenant, msg.service, str(path), 2)
            srv.handlers[MapService] = map_service
            client = await client_of(srv)
            svc = client.service("acme", "svc")
            assert await svc.get("x") is None and not svc.is_local
            with pytest.raises(NotFoundError):
                await client.service("acme", "svc", local=True).map()
            created.append(True)
            await svc.set("x", b"1")  # remote: the write that creates the service
            assert await svc.get("y") is None and svc.is_local
            await client.close()
    arun(main())


def test_file_migration_swaps_the_file_and_acknowledges(tmp_path: Path) -> None:
    old, new = tmp_path / "old.commy", tmp_path / "new.commy"
    with ServiceFile.create(old) as f:
        f.write("v", b"old")

    async def main() -> None:
        async with FakeServer() as srv:
            srv.map_path = str(old)
            client = await client_of(srv)
            svc = client.service("acme", "svc", local=True)
            assert await svc.get("v") == b"old"
            old_file = svc.mapping.file  # type: ignore[union-attr]
            with ServiceFile.open(old) as f:
                f.copy_to(new)
            with ServiceFile.open(new) as f:
                f.write("v", b"new")
            await srv.push(FileMigration("acme", "svc", str(new)))
            assert await until(lambda: bool(srv.requests(MigrationAck)), 5)
            assert srv.requests(MigrationAck) == [MigrationAck("acme", "svc", str(new))]
            assert svc.read_local("v") == b"new" and svc.mapping.path == str(new)  # type: ignore[union-attr]
            assert "closed" in repr(old_file)
            await client.close()
    arun(main())


def test_revocation_closes_the_mapping(tmp_path: Path) -> None:
    path = tmp_path / "svc.commy"
    ServiceFile.create(path).close()

    async def main() -> None:
        async with FakeServer() as srv:
            srv.map_path = str(path)
            client = await client_of(srv)
            svc = client.service("acme", "svc")
            await svc.set("v", b"1")
            assert svc.is_local
            mapping = svc.mapping
            await srv.push(PermissionRevoked("acme", "permission revoked"))
            assert await until(lambda: not svc.is_local, 5)
            with pytest.raises(PermissionRevokedError):
                svc.read_local("v")
            with pytest.raises(PermissionRevokedError):
                mapping.read("v")  # type: ignore[union-attr]  # a handle kept from before
            await client.close()
    arun(main())


def test_reconnecting_asks_for_the_mapping_again_and_follows_a_new_writer_slot(tmp_path: Path) -> None:
    path = tmp_path / "svc.commy"
    ServiceFile.create(path).close()

    async def main() -> None:
        async with FakeServer() as srv:
            srv.map_path, srv.map_writer = str(path), 3
            client = await client_of(srv, backoff=(0.01, 0.05))
            svc = client.service("acme", "svc")
            await svc.set("v", b"1")
            srv.map_writer = 4
            await srv.drop_all()
            assert await until(lambda: len(srv.requests(MapService)) == 2 and client.connection.connected, 5)
            assert svc.mapping.writer == 4  # type: ignore[union-attr]
            assert svc.write_local("v", b"2") == 2
            with ServiceFile.open(path) as f:
                assert f.read("v").writer == 4  # type: ignore[union-attr]
            await client.close()
    arun(main())

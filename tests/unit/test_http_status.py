"""/status and /metrics of a real server under load and trouble: the status document is built at most
once a second, the store is read at most once a second for both, a corrupt tenant index costs that
tenant only (logged once), long lists say they were cut, subscriptions are counted in one walk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import commy.runtime.node_status as node_status
from commy.client import AsyncClient
from commy.core.subscriptions import SubscriptionIndex
from commy.runtime.http_endpoints import Endpoints
from commy.runtime.loop import run
from commy.runtime.server import RunningServer, start_server
from tests.unit.test_http_endpoints import fetch, port_of
from tests.unit.test_http_metrics import parse, value

Record = tuple[str, str, dict[str, Any]]


def endpoints_of(srv: RunningServer) -> Endpoints:
    route = srv.gateway.http_routes["/status"]
    owner = getattr(route, "__self__", None)
    assert isinstance(owner, Endpoints)
    return owner


async def status(srv: RunningServer) -> dict[str, Any]:
    code, _, body = await fetch(port_of(srv), "/status")
    assert code == 200, body
    doc: dict[str, Any] = json.loads(body)
    return doc


async def admin_of(srv: RunningServer) -> AsyncClient:
    admin = await AsyncClient.connect(srv.url)
    assert srv.bootstrap_key is not None
    await admin.authenticate("", api_key=srv.bootstrap_key)
    return admin


def test_the_status_document_is_built_at_most_once_per_ttl(tmp_path: Path) -> None:
    async def main() -> None:
        srv = await start_server(tmp_path / "data", ("127.0.0.1", 0))
        endpoints = endpoints_of(srv)
        try:
            endpoints.status_ttl = 3600.0
            first = await status(srv)
            async with AsyncClient.connect(srv.url):  # a change the cached document does not show yet
                again = await status(srv)
                assert again == first and again["client_count"] == 0
                endpoints.status_ttl = 0.0
                fresh = await status(srv)
                assert fresh["client_count"] == 1 and fresh["time"] >= first["time"]
        finally:
            await srv.close()

    run(main())


def test_the_store_is_read_once_per_ttl_for_status_and_metrics(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        srv = await start_server(tmp_path / "data", ("127.0.0.1", 0))
        endpoints = endpoints_of(srv)
        endpoints.status_ttl = 0.0
        scans: list[int] = []
        tenants = srv.store.tenants

        def counted() -> list[str]:
            scans.append(1)
            return tenants()

        monkeypatch.setattr(srv.store, "tenants", counted)
        now = [100.0]
        endpoints.held.clock = lambda: now[0]
        try:
            async with await admin_of(srv) as admin:
                await admin.create_tenant("acme")
                await admin.create_service("acme", "sensors")
            for _ in range(3):
                await status(srv)
                assert (await fetch(port_of(srv), "/metrics"))[0] == 200
            assert len(scans) == 1  # six answers, one look at the disk
            now[0] += 1.0
            doc = await status(srv)
            assert len(scans) == 2 and doc["services"][0]["holders"] == ["server"]
        finally:
            await srv.close()

    run(main())


def test_a_corrupt_tenant_index_costs_that_tenant_only(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def make() -> None:
        srv = await start_server(data, ("127.0.0.1", 0))
        try:
            async with await admin_of(srv) as admin:
                for tenant, service in (("acme", "sensors"), ("beta", "orders")):
                    await admin.create_tenant(tenant)
                    await admin.create_service(tenant, service)
        finally:
            await srv.close()

    run(make())
    index = next(data.rglob("beta/index.json"))
    index.write_text("{ not json")
    records: list[Record] = []

    async def main() -> tuple[str, dict[str, Any]]:
        srv = await start_server(data, ("127.0.0.1", 0), log_sink=lambda node, actor, level, event, fields:
                                 records.append((level, event, dict(fields))))
        endpoints = endpoints_of(srv)
        endpoints.held.ttl = 0.0  # every answer reads the store again: the failure is still logged once
        endpoints.status_ttl = 0.0
        try:
            for _ in range(3):
                code, _, body = await fetch(port_of(srv), "/metrics")
                assert code == 200, body
            assert endpoints.held.reads >= 3
            return body.decode(), await status(srv)
        finally:
            await srv.close()

    text, doc = run(main())
    _, samples = parse(text)
    assert value(samples, "commy_services_held") == 1
    assert value(samples, "commy_tenant_indexes_unreadable") == 1
    assert doc["unreadable_tenants"] == 1
    rows = {(s["tenant"], s["service"]): s["holders"] for s in doc["services"]}
    assert rows == {("acme", "sensors"): ["server"], ("beta", "orders"): []}
    logged = [(level, f) for level, event, f in records if event == "tenant_index_unreadable"]
    assert len(logged) == 1 and logged[0][0] == "warning" and logged[0][1]["tenant"] == "beta"
    assert not any(event == "endpoint_failed" for _, event, _ in records)


def test_long_lists_are_cut_and_say_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_status, "MAX_ROWS", 2)

    async def main() -> dict[str, Any]:
        srv = await start_server(tmp_path / "data", ("127.0.0.1", 0))
        try:
            async with await admin_of(srv) as admin:
                for tenant in ("t1", "t2", "t3"):
                    await admin.create_tenant(tenant)
                    await admin.create_service(tenant, "s")
                async with AsyncClient.connect(srv.url), AsyncClient.connect(srv.url):
                    return await status(srv)
        finally:
            await srv.close()

    doc = run(main())
    assert doc["totals"] == {"tenants": 3, "services": 3, "clients": 3}
    assert doc["truncated"] == {"tenants": True, "services": True, "clients": True}
    assert len(doc["tenants"]) == len(doc["services"]) == len(doc["clients"]) == 2


def test_short_lists_are_whole(tmp_path: Path) -> None:
    async def main() -> dict[str, Any]:
        srv = await start_server(tmp_path / "data", ("127.0.0.1", 0))
        try:
            async with await admin_of(srv) as admin:
                await admin.create_tenant("acme")
                await admin.create_service("acme", "sensors")
                return await status(srv)
        finally:
            await srv.close()

    doc = run(main())
    assert doc["totals"] == {"tenants": 1, "services": 1, "clients": 1}
    assert doc["truncated"] == {"tenants": False, "services": False, "clients": False}


def test_subscriptions_are_counted_without_asking_each_connection(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    names_of = SubscriptionIndex.names_of

    def per_connection_walk(self: SubscriptionIndex, conn_id: str) -> int:
        asked.append(conn_id)
        return names_of(self, conn_id)

    async def main() -> dict[str, Any]:
        srv = await start_server(tmp_path / "data", ("127.0.0.1", 0))
        try:
            async with await admin_of(srv) as admin:
                await admin.create_tenant("acme")
                for service in ("a", "b"):
                    await admin.create_service("acme", service)
                await admin.authenticate("acme", api_key=srv.bootstrap_key or "")
                async with admin.service("acme", "a", local=False).subscribe(["x", "y"]), \
                        admin.service("acme", "b", local=False).subscribe(), AsyncClient.connect(srv.url):
                    monkeypatch.setattr(SubscriptionIndex, "names_of", per_connection_walk)
                    return await status(srv)
        finally:
            await srv.close()

    doc = run(main())
    assert sorted(c["subscriptions"] for c in doc["clients"]) == [0, 3]  # two names and a whole service; none
    assert asked == [], "/status walked the subscriptions once per connection"

"""Who may read a real node's endpoints: the Host a request names (DNS rebinding, 421), a bearer
token (401), a client that is not on loopback (403), and what a route that raises answers (500).

Every request goes over a real socket to a server started in the test's loop (`fetch`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import commy.runtime.http_endpoints as http_endpoints
import commy.runtime.http_guard as http_guard
from commy.client import AsyncClient
from commy.config import load_cluster_config
from commy.config_hosts import HttpConfig
from commy.runtime.cluster_node import start_cluster_node
from commy.runtime.http_endpoints import FORBIDDEN, MISDIRECTED, UNAUTHORIZED
from commy.runtime.http_guard import bearer_ok, host_allowed
from commy.runtime.local_cluster import write_cluster_files
from commy.runtime.loop import run
from commy.runtime.server import start_server
from tests.unit.test_http_endpoints import fetch, port_of

TOKEN = "tok_0123456789abcdefABCDEF-._~+/=="
PATHS = ("/", "/health", "/metrics", "/status")


# --------------------------------------------------------------------------- Host: DNS rebinding


@pytest.mark.parametrize(("host", "expected"), [
    ("127.0.0.1", True),
    ("127.0.0.1:8765", True),
    ("127.9.8.7:1", True),
    ("localhost", True),
    ("LocalHost:8765", True),
    ("[::1]", True),
    ("[::1]:8765", True),
    ("node1.internal:8101", True),  # the listen address as configured
    ("10.0.0.5", True),  # ... and as bound
    ("evil.example.com", False),
    ("evil.example.com:8765", False),
    ("127.0.0.1.evil.example", False),
    ("localhost.evil.example", False),
    ("10.0.0.6:8101", False),
    ("::1", False),  # an IPv6 literal in Host is bracketed
    ("[127.0.0.1]", False),
    ("127.0.0.1:http", False),
    ("[::1", False),
    ("", False),
    (None, False),
])
def test_which_hosts_name_this_machine(host: str | None, expected: bool) -> None:
    assert host_allowed(host, ["node1.internal", "10.0.0.5"]) is expected


def test_a_request_for_another_host_is_refused_even_from_loopback(tmp_path: Path) -> None:
    async def main() -> None:
        srv = await start_server(tmp_path / "data", ("127.0.0.1", 0))
        port = port_of(srv)
        try:
            for path in PATHS:  # a rebound name: the browser is local, the Host is not
                status, _, body = await fetch(port, path, {"Host": f"evil.example.com:{port}"})
                assert (status, body) == (421, MISDIRECTED.encode()), path
            for host in ("127.0.0.1.evil.example", "evil.example.com", None):
                assert (await fetch(port, "/status", {"Host": host}))[0] == 421, host
            for host in (f"localhost:{port}", "LOCALHOST", f"127.0.0.2:{port}", f"[::1]:{port}", "127.0.0.1"):
                status, _, body = await fetch(port, "/status", {"Host": host})
                assert status == 200 and json.loads(body)["node"] == "server", host
            async with AsyncClient.connect(srv.url) as client:  # WebSocket clients are not concerned
                assert srv.bootstrap_key is not None
                await client.authenticate("", api_key=srv.bootstrap_key)
        finally:
            await srv.close()

    run(main())


def test_a_public_node_answers_any_host(tmp_path: Path) -> None:
    async def main() -> None:
        srv = await start_server(tmp_path / "data", ("127.0.0.1", 0), http=HttpConfig(public=True))
        try:
            assert (await fetch(port_of(srv), "/status", {"Host": "status.example.com"}))[0] == 200
        finally:
            await srv.close()

    run(main())


# --------------------------------------------------------------------------- a bearer token


def test_bearer_header_forms() -> None:
    assert bearer_ok([], None) and bearer_ok(["Basic x"], None)  # no token: nothing asked
    assert bearer_ok([f"Bearer {TOKEN}"], TOKEN) and bearer_ok([f"bearer  {TOKEN} "], TOKEN)
    for given in ([], [TOKEN], [f"Basic {TOKEN}"], [f"Bearer {TOKEN}x"], [f"Bearer {TOKEN[:-1]}"],
                  [f"Bearer {TOKEN}", f"Bearer {TOKEN}"]):
        assert not bearer_ok(given, TOKEN), given


def test_with_a_token_status_and_metrics_need_it(tmp_path: Path) -> None:
    async def main() -> None:
        srv = await start_server(tmp_path / "data", ("127.0.0.1", 0), http=HttpConfig(token=TOKEN))
        port = port_of(srv)
        try:
            for path in ("/status", "/metrics"):
                for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}):
                    status, fields, body = await fetch(port, path, dict(headers))
                    assert (status, body) == (401, UNAUTHORIZED.encode()), (path, headers)
                    assert fields["www-authenticate"] == 'Bearer realm="commy"'
                    assert TOKEN.encode() not in body
                status, _, body = await fetch(port, path, {"Authorization": f"Bearer {TOKEN}"})
                assert status == 200 and b"server" in body, path
            assert (await fetch(port, "/health"))[0] == 200  # open: load balancers ask without a token
            status, _, page = await fetch(port, "/")  # the page holds no data; its polls send the token
            assert status == 200 and b"#token=" in page and b"Authorization" in page
            assert TOKEN.encode() not in page
        finally:
            await srv.close()

    run(main())


def test_a_cluster_node_reads_its_token_file(tmp_path: Path) -> None:
    path = write_cluster_files(tmp_path, ["n1"], replication_factor=1)
    token_file = tmp_path / "http.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    path.write_text(path.read_text() + '\n[http]\ntoken_file = "http.token"\n')
    config = load_cluster_config(path)

    async def main() -> None:
        srv = await start_cluster_node(config, "n1")
        try:
            assert (await fetch(port_of(srv), "/status"))[0] == 401
            status, _, body = await fetch(port_of(srv), "/status", {"Authorization": f"Bearer {TOKEN}"})
            assert status == 200 and json.loads(body)["node"] == "n1"
        finally:
            await srv.close()

    run(main())


# --------------------------------------------------------------------------- 403 and 500, for real


def test_a_client_not_on_loopback_gets_403(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The test can only connect from this machine: the address check is told that the real peer
    # address the gateway hands it is not loopback, and everything else runs as it would.
    seen: list[str] = []

    def remote(host: str) -> bool:
        seen.append(host)
        return False

    monkeypatch.setattr(http_guard, "is_loopback", remote)

    async def main() -> None:
        srv = await start_server(tmp_path / "data", ("127.0.0.1", 0))
        try:
            for path in PATHS:
                status, fields, body = await fetch(port_of(srv), path)
                assert (status, body) == (403, FORBIDDEN.encode()), path
                assert fields["cache-control"] == "no-store"
            async with AsyncClient.connect(srv.url) as client:  # a WebSocket client still gets in
                assert srv.bootstrap_key is not None
                await client.authenticate("", api_key=srv.bootstrap_key)
        finally:
            await srv.close()

    run(main())
    assert seen and set(seen) == {"127.0.0.1"}


def test_a_route_that_raises_answers_500_logs_and_the_node_goes_on(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    records: list[tuple[str, str, dict[str, Any]]] = []

    def broken(*_: object) -> dict[str, Any]:
        raise RuntimeError("the status broke")

    monkeypatch.setattr(http_endpoints, "status_document", broken)

    async def main() -> None:
        srv = await start_server(tmp_path / "data", ("127.0.0.1", 0),
                                 log_sink=lambda node, actor, level, event, fields: records.append(
                                     (level, event, dict(fields))))
        try:
            status, _, body = await fetch(port_of(srv), "/status")
            assert (status, body) == (500, b"commy: internal error\n")
            assert (await fetch(port_of(srv), "/health"))[0] == 200
            assert (await fetch(port_of(srv), "/metrics"))[0] == 200
        finally:
            await srv.close()

    run(main())
    failed = [f for level, event, f in records if event == "endpoint_failed"]
    assert len(failed) == 1 and failed[0]["path"] == "/status" and "the status broke" in failed[0]["error"]
    assert [level for level, event, _ in records if event == "endpoint_failed"] == ["error"]

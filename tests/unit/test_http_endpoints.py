"""The HTTP endpoints of a real in-process server on loopback: /health, /status, the page, the
exposure rule, and the states that make /health answer 503 (joining, draining).

Requests are plain HTTP/1.1 over a real socket (`fetch`); clients are the SDK's. A cluster node
here is `start_cluster_node` on a generated configuration, in the test's own loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from pathlib import Path

import pytest

from commy.client import AsyncClient, CommyClientError
from commy.config import load_cluster_config
from commy.config_hosts import HttpConfig
from commy.runtime.cluster_node import start_cluster_node
from commy.runtime.http_endpoints import FORBIDDEN, allowed, page_csp, status_page
from commy.runtime.local_cluster import write_cluster_files
from commy.runtime.loop import run
from commy.runtime.server import RunningServer, start_server
from tests.helpers.aio import until

Reply = tuple[int, dict[str, str], bytes]


async def fetch(port: int, path: str, headers: dict[str, str | None] | None = None) -> Reply:
    """GET `path` from 127.0.0.1:`port`: (status, headers with lower-case names, body). `headers`
    may replace the Host header (`127.0.0.1:PORT`) or, with None, leave it out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = {"Host": f"127.0.0.1:{port}", "Connection": "close", **(headers or {})}
    lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in sent.items() if v is not None), "", ""]
    writer.write("\r\n".join(lines).encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in fields.items()}, body


def port_of(srv: RunningServer) -> int:
    assert srv.gateway.listen_address is not None
    return srv.gateway.listen_address[1]


# --------------------------------------------------------------------------- the exposure rule


@pytest.mark.parametrize(("host", "config", "expected"), [
    ("127.0.0.1", HttpConfig(), True),
    ("127.3.4.5", HttpConfig(), True),
    ("::1", HttpConfig(), True),
    ("::ffff:127.0.0.1", HttpConfig(), True),
    ("10.1.2.3", HttpConfig(), False),
    ("192.168.1.20", HttpConfig(), False),
    ("2001:db8::1", HttpConfig(), False),
    ("", HttpConfig(), False),  # unknown peer: refused
    ("10.1.2.3", HttpConfig(public=True), True),
    ("127.0.0.1", HttpConfig(enabled=False), False),
    ("10.1.2.3", HttpConfig(enabled=False, public=True), False),
])
def test_only_loopback_clients_unless_public(host: str, config: HttpConfig, expected: bool) -> None:
    assert allowed(host, config) is expected


def test_the_page_policy_allows_exactly_its_own_inline_script_and_style() -> None:
    page = status_page()
    text = page.decode()
    csp = page_csp(page)
    script = re.search(r"<script>(.*?)</script>", text, flags=re.S)
    assert script is not None and "fetch(\"/status\"" in script.group(1)
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "innerHTML" not in text  # text goes in through textContent only


# --------------------------------------------------------------------------- a single server


def test_health_status_and_page_of_a_single_server(tmp_path: Path) -> None:
    async def main() -> None:
        srv = await start_server(tmp_path / "data", ("127.0.0.1", 0))
        port = port_of(srv)
        try:
            assert srv.bootstrap_key is not None
            async with AsyncClient.connect(srv.url) as admin:  # a WebSocket on "/" still gets through
                await admin.authenticate("", api_key=srv.bootstrap_key)
                await admin.create_tenant("acme")
                await admin.create_service("acme", "sensors")
                _, key = await admin.create_api_key("alice", tenant="acme", scopes=["write"])
                async with AsyncClient.connect(srv.url) as alice:
                    session = await alice.authenticate("acme", api_key=key)
                    sensors = alice.service("acme", "sensors", local=False)
                    await sensors.set("temperature", b"21")
                    async with sensors.subscribe(["temperature"]):
                        status, headers, body = await fetch(port, "/health")
                        assert (status, json.loads(body)) == (200, {"node": "server", "state": "serving"})
                        assert headers["content-type"] == "application/json"
                        assert headers["cache-control"] == "no-store"

                        status, headers, body = await fetch(port, "/status?pretty=no")  # a query is ignored
                        assert status == 200
                        doc = json.loads(body)
                        assert doc["node"] == "server" and doc["state"] == "serving" and doc["client_count"] == 2
                        assert doc["membership"][0]["node"] == "server" and doc["membership"][0]["self"]
                        on_acme = sum(1 for c in doc["clients"] for x in c["sessions"] if x["tenant"] == "acme")
                        assert doc["tenants"] == [{"tenant": "acme", "services": 1, "sessions": on_acme}]
                        assert doc["services"] == [{"tenant": "acme", "service": "sensors", "holders": ["server"],
                                                    "replicas": ["server"], "lag_ms": None}]
                        rows = [c for c in doc["clients"] if any(s["client"] == "alice" for s in c["sessions"])]
                        assert len(rows) == 1 and rows[0]["local"] and rows[0]["subscriptions"] == 1
                        assert rows[0]["sessions"] == [{"tenant": "acme", "client": "alice", "state": "active"}]

                        status, headers, page = await fetch(port, "/")
                        assert status == 200 and headers["content-type"].startswith("text/html")
                        assert headers["content-security-policy"] == page_csp(page)
                        assert headers["x-frame-options"] == "DENY" and b"<title>commy node status</title>" in page

                        # Nothing secret anywhere: keys, their ids, the token, the data folder.
                        bodies = body + page + (await fetch(port, "/metrics"))[2]
                        secrets = [srv.bootstrap_key, key, key.split("_")[1], session.token, session.session_id,
                                   str(tmp_path), str(srv.data)]
                        for secret in secrets:
                            assert secret.encode() not in bodies, f"an endpoint shows {secret!r}"
        finally:
            await srv.close()

    run(main())


def test_disabled_endpoints_leave_the_bare_gateway_answers(tmp_path: Path) -> None:
    async def main() -> None:
        srv = await start_server(tmp_path / "data", ("127.0.0.1", 0), http=HttpConfig(enabled=False))
        try:
            port = port_of(srv)
            assert (await fetch(port, "/"))[0] == 426
            for path in ("/health", "/metrics", "/status"):
                assert (await fetch(port, path))[0] == 404
        finally:
            await srv.close()

    run(main())


def test_forbidden_text_names_the_setting() -> None:
    assert "[http] public = true" in FORBIDDEN


# --------------------------------------------------------------------------- 503: joining, draining


def test_a_node_catching_up_with_its_peers_is_joining_then_serving(tmp_path: Path) -> None:
    # A two-node cluster with only n1 started: its clock waits three anti-entropy rounds for n2's
    # digest, refusing writes, and /health says so; then it gives up waiting and serves.
    path = write_cluster_files(tmp_path, ["n1", "n2"], replication_factor=1)
    path.write_text(path.read_text() + "\n[timeouts]\nanti_entropy = 1.5\n")
    config = load_cluster_config(path)

    async def main() -> None:
        srv = await start_cluster_node(config, "n1")
        try:
            status, _, body = await fetch(port_of(srv), "/health")
            assert (status, json.loads(body)) == (503, {"node": "n1", "state": "joining"})
            doc = json.loads((await fetch(port_of(srv), "/status"))[2])
            assert doc["state"] == "joining"
            assert [(m["node"], m["self"]) for m in doc["membership"]] == [("n1", True), ("n2", False)]

            async def serving() -> bool:
                return (await fetch(port_of(srv), "/health"))[0] == 200

            deadline = asyncio.get_running_loop().time() + 30
            while not await serving():
                assert asyncio.get_running_loop().time() < deadline, "still joining after 30 s"
                await asyncio.sleep(0.1)
        finally:
            await srv.close()

    run(main())


def test_a_draining_node_answers_503(tmp_path: Path) -> None:
    config = load_cluster_config(write_cluster_files(tmp_path, ["n1", "n2"], replication_factor=1))

    async def main() -> None:
        n1 = await start_cluster_node(config, "n1")
        n2 = await start_cluster_node(config, "n2")
        try:
            async def both_serving() -> bool:
                return [(await fetch(port_of(s), "/health"))[0] for s in (n1, n2)] == [200, 200]

            deadline = asyncio.get_running_loop().time() + 30
            while not await both_serving():
                assert asyncio.get_running_loop().time() < deadline, "the two nodes never both served"
                await asyncio.sleep(0.1)
            assert n1.bootstrap_key is not None
            async with AsyncClient.connect(n1.url) as admin:
                await admin.authenticate("", api_key=n1.bootstrap_key)
                await admin.drain("n2")
            assert await until(lambda: n2.node.stopped is False and _health_state(n2) == "draining", 15)
            status, _, body = await fetch(port_of(n2), "/health")
            assert (status, json.loads(body)) == (503, {"node": "n2", "state": "draining"})
            assert (await fetch(port_of(n1), "/health"))[0] == 200
        except CommyClientError as exc:
            pytest.fail(f"the drain was refused: {exc}")
        finally:
            await n2.close()
            await n1.close()

    run(main())


def _health_state(srv: RunningServer) -> str:
    from commy.runtime.node_status import health

    return health(srv)

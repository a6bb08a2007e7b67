"""Operating a cluster, on real `commy serve` processes: /health, /metrics and /status of three nodes
on loopback, what they show of clients, services, replication and a killed node, that they show no
secret, and the log events an operator looks for.

The cluster is `LocalCluster`'s (through `process_guard`): a tenant with two services, a writer
and a reader on different nodes, a forbidden request, a revocation, then n3 killed with SIGKILL.
Every wait is a bounded poll; nothing asserts on timing. The helpers here (`http_get`,
`set_up_clients`) also serve the status page test in `test_observability_browser.py`.

A second test runs a single `commy serve` on a pseudo-terminal: its log lines are then readable
text (coloured levels), `--log-level debug` shows debug records, and the endpoints answer too.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from commy.client import AsyncClient, ForbiddenError
from commy.runtime.metrics import METRICS
from tests.helpers.cluster_procs import LocalCluster, ProcessGuard, process_guard, wait_for  # noqa: F401

pytestmark = pytest.mark.integration

TENANT, SERVICES = "acme", ("sensors", "orders")
ANSI = re.compile(r"\033\[[0-9;]*m")


def http_url(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://", 1)


def http_get(ws_url: str, path: str) -> tuple[int, bytes]:
    """GET `path` from the node whose client URL is `ws_url`: (status, body), 503s included."""
    try:
        with urllib.request.urlopen(http_url(ws_url) + path, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def status_of(ws_url: str) -> dict[str, Any]:
    code, body = http_get(ws_url, "/status")
    assert code == 200, (code, body[:300])
    document: dict[str, Any] = json.loads(body)
    return document


def fresh_status(ws_url: str, since: float, timeout: float = 10) -> dict[str, Any]:
    """/status built at `since` (Unix time) or later: a node serves the document it built for a
    second, so one fetched right after a change may predate it."""
    deadline = time.monotonic() + timeout
    while True:
        doc = status_of(ws_url)
        if doc["time"] >= since:
            return doc
        assert time.monotonic() < deadline, f"{ws_url} kept serving a /status from {doc['time']} (< {since})"
        time.sleep(0.1)


def states(ws_url: str) -> dict[str, str]:
    return {m["node"]: m["state"] for m in status_of(ws_url)["membership"]}


def metric_samples(ws_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    code, body = http_get(ws_url, "/metrics")
    assert code == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass
class Clients:
    """The long-lived clients of the scenario, and the credentials the endpoints must not show."""

    writer: AsyncClient  # alice on n1
    reader: AsyncClient  # bob on n2, subscribed to sensors/v0
    other_writer: AsyncClient  # alice again, on n2
    secrets: list[str]

    async def write_round(self, i: int) -> None:
        """One write from each writer: n1 writes sensors, n2 writes orders (each replicates to the other)."""
        await self.writer.service(TENANT, SERVICES[0], local=False).set("v0", str(i).encode())
        await self.other_writer.service(TENANT, SERVICES[1], local=False).set("v1", str(i).encode())

    async def close(self) -> None:
        for client in (self.writer, self.reader, self.other_writer):
            await client.close()


async def set_up_clients(cluster: LocalCluster, *, writes: int = 20) -> Clients:
    """Tenant `acme` with two services; `alice` writes on n1 (replicated) and also connects to n2,
    `bob` reads and subscribes on n2. Returns them connected, with every credential seen."""
    urls = cluster.urls
    async with AsyncClient.connect(urls[0]) as admin:
        admin_session = await admin.authenticate("", api_key=cluster.admin_key)
        await admin.create_tenant(TENANT)
        for service in SERVICES:
            await admin.create_service(TENANT, service)
        alice_id, alice_key = await admin.create_api_key("alice", tenant=TENANT, scopes=["write"])
        bob_id, bob_key = await admin.create_api_key("bob", tenant=TENANT, scopes=["read"])
    writer = await AsyncClient.connect(urls[0], timeout=10.0)
    reader = await AsyncClient.connect(urls[1], timeout=10.0)
    other_writer = await AsyncClient.connect(urls[1], timeout=10.0)
    alice = await writer.authenticate(TENANT, api_key=alice_key)
    deadline = time.monotonic() + 20
    while True:  # the catalog (bob's key) reaches n2 by replication
        try:
            bob = await reader.authenticate(TENANT, api_key=bob_key)
            alice_on_n2 = await other_writer.authenticate(TENANT, api_key=alice_key)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    for i in range(writes):
        for service in SERVICES:
            await writer.service(TENANT, service, local=False).set(f"v{i % 3}", str(i).encode(), concern="replicated")
    await reader.service(TENANT, SERVICES[0], local=False).subscribe(["v0"]).start()  # ends with the client
    secrets = [cluster.admin_key, alice_key, bob_key, alice_id, bob_id, cluster.admin_key.split("_")[1],
               admin_session.token, alice.token, bob.token, alice_on_n2.token, alice.session_id, bob.session_id]
    return Clients(writer, reader, other_writer, secrets)


def secret_values(cluster: LocalCluster) -> list[str]:
    """What the cluster's files hold that no endpoint may show: the cluster secret, every path."""
    folder = cluster.folder.resolve()
    return [(cluster.folder / "secret").read_text().strip(), str(folder), str(folder / "data"),
            str(cluster.config.resolve())]


def test_health_metrics_and_status_of_a_three_node_cluster(process_guard: ProcessGuard) -> None:  # noqa: F811
    cluster = process_guard.cluster(3)
    cluster.start()
    n1, n2, _ = cluster.urls
    assert cluster.wait_until(cluster.all_healthy, 30), "the three nodes never saw each other healthy"
    for url in cluster.urls:
        assert wait_for(lambda u=url: http_get(u, "/health") == (200, b'{"node":"%s","state":"serving"}'
                                                                  % status_of(u)["node"].encode()), 30)

    async def scenario() -> None:
        clients = await set_up_clients(cluster)
        try:
            await check_status_and_metrics(cluster, clients)
            await check_forbidden_and_revoked(cluster, clients)
        finally:
            await clients.close()

    asyncio.run(scenario())

    # n3 dies without a word: n1 and n2 see it DOWN, say so in /status, /metrics and their logs,
    # and go on serving.
    cluster.nodes["n3"].signal(signal.SIGKILL)
    for url in (n1, n2):
        assert wait_for(lambda u=url: states(u).get("n3") == "down", 30), states(url)
        samples = metric_samples(url)
        assert sample(samples, "commy_peer_state", peer="n3", state="down") == 1
        assert sample(samples, "commy_peer_state", peer="n3", state="healthy") == 0
        assert sample(samples, "commy_node_failures_total") >= 1
        assert http_get(url, "/health")[0] == 200
    for node in ("n1", "n2"):
        records = cluster.nodes[node].records()
        downs = [r for r in records if r.get("event") == "peer_state" and r.get("peer") == "n3" and r["new"] == "down"]
        assert downs and downs[-1]["actor"] == "heartbeat" and downs[-1]["old"] in ("healthy", "suspected")
        assert any(r.get("event") == "node_failed" and r.get("peer") == "n3" for r in records)
    assert cluster.close() == [], "a node had to be killed at the end"


async def check_status_and_metrics(cluster: LocalCluster, clients: Clients) -> None:
    n1, n2, _ = cluster.urls
    since = time.time()
    doc = fresh_status(n1, since)
    assert doc["node"] == "n1" and doc["state"] == "serving"
    assert [(m["node"], m["state"]) for m in doc["membership"]] == [("n1", "serving"), ("n2", "healthy"),
                                                                    ("n3", "healthy")]
    assert all(m["url"] == cluster.nodes[m["node"]].url for m in doc["membership"])
    assert {m["index"] for m in doc["membership"]} == {1, 2, 3}
    assert doc["tenants"][0]["tenant"] == TENANT and doc["tenants"][0]["services"] == 2
    rows = {(s["tenant"], s["service"]): s for s in doc["services"]}
    assert set(rows) == {(TENANT, s) for s in SERVICES}
    for row in rows.values():
        assert len(row["replicas"]) == 2 and set(row["replicas"]) <= {"n1", "n2", "n3"}
        assert "n1" in row["holders"]  # n1 has a client writing it
    assert any(s["client"] == "alice" and s["tenant"] == TENANT for c in doc["clients"] for s in c["sessions"])
    # The other replica of a service n1 writes receives the writes: its /status shows their lag.
    sensors = rows[(TENANT, SERVICES[0])]
    other = next(n for n in sensors["holders"] + sensors["replicas"] if n != "n1")
    other_url = cluster.nodes[other].url
    assert wait_for(lambda: any(s["lag_ms"] is not None and s["lag_ms"] >= 0 for s in status_of(other_url)["services"]
                                if s["service"] == SERVICES[0]), 15)
    assert status_of(other_url)["replication_lag_p99_ms"] >= 0
    on_n2 = fresh_status(n2, since)
    assert any(s["client"] == "bob" for c in on_n2["clients"] for s in c["sessions"])
    assert any(c["subscriptions"] == 1 for c in on_n2["clients"])

    _, body = http_get(n1, "/metrics")
    families = {f.name + "_total" if f.type == "counter" else f.name
                for f in text_string_to_metric_families(body.decode())}
    assert families == set(METRICS)
    samples = metric_samples(n1)
    assert sample(samples, "commy_node_state", state="serving") == 1
    assert sample(samples, "commy_clients_connected") >= 1
    assert sample(samples, "commy_sessions", tenant=TENANT) >= 1
    for protocol in ("client", "peer"):
        for name in ("commy_messages_received_total", "commy_messages_sent_total", "commy_bytes_received_total",
                     "commy_bytes_sent_total"):
            assert sample(samples, name, protocol=protocol) > 0, (name, protocol)
    for peer in ("n2", "n3"):
        assert sample(samples, "commy_peer_state", peer=peer, state="healthy") == 1
        assert sample(samples, "commy_heartbeat_rtt_seconds_count", peer=peer) > 0
    assert sample(samples, "commy_replication_operations_total", operation="writes_streamed") > 0


async def check_forbidden_and_revoked(cluster: LocalCluster, clients: Clients) -> None:
    n1, n2, n3 = cluster.urls
    with pytest.raises(ForbiddenError):
        await clients.writer.create_tenant("not-allowed")
    assert sample(metric_samples(n1), "commy_errors_sent_total", protocol="client", code="forbidden") == 1
    async with AsyncClient.connect(n1) as admin:
        await admin.authenticate(TENANT, api_key=cluster.admin_key)
        await admin.revoke(TENANT, "bob")
    # bob is on n2: the revocation reaches it with the catalog and ends his session there.
    assert wait_for(lambda: any(r.get("event") == "session_revoked" and r.get("client") == "bob"
                                and r.get("tenant") == TENANT for r in cluster.nodes["n2"].records()), 20)
    assert wait_for(lambda: sample(metric_samples(n2), "commy_sessions_revoked_total") >= 1, 10)
    # Nothing secret on any endpoint of any node.
    forbidden = clients.secrets + secret_values(cluster)
    for url in (n1, n2, n3):
        shown = b"".join(http_get(url, path)[1] for path in ("/", "/health", "/status", "/metrics"))
        for secret in forbidden:
            assert secret and secret.encode() not in shown, f"{url} shows {secret!r}"


# --------------------------------------------------------------------------- a terminal


class Terminal:
    """The master side of a pseudo-terminal a child writes to, read line by line (ANSI codes kept)."""

    def __init__(self, master: int, proc: subprocess.Popen[bytes]) -> None:
        self.master = master
        self.proc = proc
        self.lines: list[str] = []  # every complete line read so far
        self.checked = 0  # lines already matched against a pattern
        self.partial = ""

    def _read(self) -> bool:
        """Read what is there (waiting up to 0.1 s); False once the child closed the terminal."""
        ready, _, _ = select.select([self.master], [], [], 0.1)
        if not ready:
            return self.proc.poll() is None
        try:
            chunk = os.read(self.master, 65536).decode("utf-8", "replace")
        except OSError:  # EIO: the child exited and the terminal is closed
            return False
        *complete, self.partial = (self.partial + chunk.replace("\r\n", "\n")).split("\n")
        self.lines += complete
        return True

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str] | None:
        """The first line not matched before that matches `pattern` (ANSI codes ignored)."""
        deadline = time.monotonic() + timeout
        while True:
            while self.checked < len(self.lines):
                found = pattern.search(ANSI.sub("", self.lines[self.checked]))
                self.checked += 1
                if found:
                    return found
            if time.monotonic() > deadline or not self._read():
                return None


def test_serve_on_a_terminal_logs_readable_lines(tmp_path: Path, process_guard: ProcessGuard) -> None:  # noqa: F811
    master, slave = os.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    proc = subprocess.Popen([sys.executable, "-m", "commy.cli", "serve", "--data", str(tmp_path / "data"),
                             "--listen", "127.0.0.1:0", "--log-level", "debug"],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=tmp_path)
    os.close(slave)
    process_guard.watch(proc.pid, "commy serve on a terminal")
    term = Terminal(master, proc)
    seen = term.lines
    try:
        url = term.wait_for_line(re.compile(r"^(ws://127\.0\.0\.1:\d+)$"), 30)
        assert url is not None, "\n".join(seen)
        ready = term.wait_for_line(re.compile(r"^\d\d:\d\d:\d\d\.\d{3} INFO +server server ready url=ws://"), 30)
        assert ready is not None, "\n".join(seen)
        assert http_get(url.group(1), "/health") == (200, b'{"node":"server","state":"serving"}')
        assert b"<title>commy node status</title>" in http_get(url.group(1), "/")[1]
        proc.send_signal(signal.SIGTERM)
        stopped = term.wait_for_line(re.compile(r" INFO +server server stopped$"), 30)
        assert stopped is not None, "\n".join(seen)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    plain = [ANSI.sub("", line) for line in seen]
    assert any(re.match(r"^\d\d:\d\d:\d\d\.\d{3} DEBUG +server gateway listening url=ws://", line) for line in plain)
    assert any("\033[" in line for line in seen), "no coloured level on a terminal"
    assert not any(line.lstrip().startswith("{") for line in plain), "JSON lines on a terminal"

"""Cluster-secret authentication over real TCP, and `commy node`'s secret: a node with another
secret never gets a link (either way round) while nodes sharing the secret do; `commy node`
refuses to start without a secret, from a file or the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from commy.cli import main
from commy.errors import UNAUTHENTICATED
from commy.messages import LinkUp
from commy.runtime.loop import run
from commy.runtime.standalone import MIN_SECRET, SECRET_ENV, load_cluster_secret, start_node
from commy.runtime.tcp import TcpConfig
from tests.conformance.harness import PROBE, Probe
from tests.helpers.aio import probe, until
from tests.helpers.link_peer import SECRET

LOOPBACK = "127.0.0.1"
OTHER = b"another cluster's secret, 32 b.."


def test_a_node_with_another_secret_gets_no_link_in_either_direction() -> None:
    async def main() -> None:
        config = TcpConfig(backoff_initial=0.02, backoff_cap=0.05)
        a = await start_node("a", (LOOPBACK, 0), secret=SECRET, heartbeat=None, actors={PROBE: Probe}, tcp=config)
        b = await start_node("b", (LOOPBACK, 0), secret=SECRET, heartbeat=None, actors={PROBE: Probe}, tcp=config)
        x = await start_node("x", (LOOPBACK, 0), {"a": a.address}, secret=OTHER, heartbeat=None,
                             actors={PROBE: Probe}, tcp=config)
        try:
            a.transport.add_peer("b", b.address)
            a.transport.add_peer("x", x.address)  # a dials x too: x is an impostor acceptor to a
            assert await until(lambda: a.transport.connection_count("b") == 1, 3.0)  # the secret's holders link
            # x dials a and a dials x, several times each (backoff 20-50 ms), and every try fails.
            assert await until(lambda: a.transport.stats.violations >= 3 and x.transport.stats.violations >= 3, 3.0)
            assert not any(isinstance(m, LinkUp) and m.peer == "x" for m in probe(a).link_events)
            assert not any(isinstance(m, LinkUp) for m in probe(x).link_events)
            assert a.transport.connection_count("x") == 0 and x.transport.connection_count("a") == 0
            assert a.transport.peers["x"].up is False
        finally:
            for node in (x, b, a):
                await node.close()

    run(main())


def test_both_ends_log_why() -> None:
    events: list[tuple[str, str, dict[str, object]]] = []

    def sink(node: str, actor: str, level: str, event: str, fields: dict[str, object]) -> None:
        events.append((node, event, fields))

    def logged(node: str, event: str) -> bool:
        return any(n == node and e == event and f["code"] == UNAUTHENTICATED for n, e, f in events)

    async def main() -> None:
        a = await start_node("a", (LOOPBACK, 0), secret=SECRET, heartbeat=None, log_sink=sink)
        x = await start_node("x", (LOOPBACK, 0), {"a": a.address}, secret=OTHER, heartbeat=None, log_sink=sink)
        try:
            # x finds a's proof wrong (a violation, from where x stands); a hears x refuse it.
            assert await until(lambda: logged("x", "link_violation") and logged("a", "link_refused"), 3.0)
        finally:
            await x.close()
            await a.close()

    run(main())


def test_the_secret_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"x" * MIN_SECRET + b"\n")
    assert load_cluster_secret(str(path), {SECRET_ENV: "ignored when a file is given"}) == b"x" * MIN_SECRET
    assert load_cluster_secret(None, {SECRET_ENV: "y" * MIN_SECRET}) == b"y" * MIN_SECRET
    with pytest.raises(ValueError, match="no cluster secret: give --secret-file PATH or set COMMY_CLUSTER_SECRET"):
        load_cluster_secret(None, {})
    with pytest.raises(ValueError, match="too short: 3 bytes"):
        load_cluster_secret(None, {SECRET_ENV: "abc"})
    with pytest.raises(ValueError, match="cannot read the cluster secret file"):
        load_cluster_secret(str(tmp_path / "missing"), {})


def test_commy_node_refuses_to_start_without_a_secret(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    assert main(["node", "--id", "n1", "--listen", "127.0.0.1:0"]) == 2
    assert "commy node: no cluster secret" in capsys.readouterr().err

"""`commy launch | status | stop` without a running cluster: errors, exit codes, the status table."""

from __future__ import annotations

from pathlib import Path

import pytest

from commy.cli import main
from commy.launch.cli import format_status
from commy.launch.control import LaunchStatus, NodeRow
from commy.runtime.local_cluster import write_cluster_files


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_cluster_files(tmp_path, ["n1", "n2"], hosts={"h1": ["n1"], "h2": ["n2"]})


def test_a_bad_configuration_is_named_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text('[cluster]\nname = "x"\nsecret_env = "NOPE_NOT_SET"\n')
    for command in ("launch", "status", "stop"):
        assert main([command, str(bad)]) == 2
        assert f"commy {command}: error: {bad}" in capsys.readouterr().err


def test_an_unknown_host_is_refused(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["launch", str(config), "--host", "h9"]) == 2
    assert 'no host "h9" (the hosts are h1, h2)' in capsys.readouterr().err


def test_launch_starts_only_this_machines_hosts(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = config.with_name("elsewhere.toml")  # 192.0.2.0/24 is TEST-NET-1: never this machine's
    elsewhere.write_text(config.read_text().replace('address = "127.0.0.1"', 'address = "192.0.2.1"', 1))
    assert main(["launch", str(elsewhere)]) == 1
    captured = capsys.readouterr()
    assert "host h1 (192.0.2.1) is another machine: run `commy launch" in captured.out
    assert "the leader host h1 (192.0.2.1) is not this machine" in captured.err
    assert "actor system on" not in captured.out  # nothing was started


def test_status_and_stop_with_nothing_running(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(config)]) == 1
    assert "no actor system runs on 127.0.0.1:" in capsys.readouterr().err
    assert main(["stop", str(config)]) == 0  # nothing to stop is not an error
    out = capsys.readouterr().out
    assert "host h1: no actor system was running" in out and "host h2: no actor system was running" in out


def test_the_status_table() -> None:
    s = LaunchStatus("r", "demo", (
        NodeRow("n1", "h1", "ready", 2, 41, "ws://127.0.0.1:1", "127.0.0.1:2", 12.4, 3, 1, 0.5,
                (("n2", "down"), ("n3", "healthy")), "its process ended"),
        NodeRow("n2", "h2", "waiting")), (("h1", True), ("h2", False)))
    lines = format_status(s).splitlines()
    assert lines[0] == "cluster demo: host h1 up, host h2 not registered"
    assert lines[1].split() == ["node", "host", "state", "pid", "url", "uptime", "restarts", "clients", "services",
                                "lag", "p99", "peers", "not", "healthy"]
    assert lines[2].split() == ["n1", "h1", "ready", "41", "ws://127.0.0.1:1", "12s", "2", "3", "1", "0.5", "ms",
                                "n2", "down"]
    assert lines[3].split() == ["n2", "h2", "waiting", "-", "-", "0s", "0", "-", "-", "-", "?"]
    assert lines[4] == "  n1: last failure: its process ended"

"""The hosts and launch settings of the cluster configuration (`commy launch`): defaults, a full
file, every rule naming its file and key, and the shipped examples."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from commy.cli import main
from commy.config import (
    ClusterConfig,
    ConfigError,
    HostConfig,
    LaunchConfig,
    NodeConfig,
    describe,
    load_cluster_config,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRET = "s3cret-0123456789-abcdef"

HEAD = """
[cluster]
name = "test"
secret_env = "COMMY_CLUSTER_SECRET"
"""
NODES = """
[[nodes]]
id = "n1"
peer = "127.0.0.1:7101"
listen = "127.0.0.1:8101"
data = "data/n1"

[[nodes]]
id = "n2"
peer = "127.0.0.1:7102"
listen = "127.0.0.1:8102"
data = "data/n2"
"""
HOSTS = """
[launch]
restart_min = 0.25
restart_max = 8
ready_timeout = 20.5

[[hosts]]
name = "h1"
address = "10.0.0.1"
admin_port = 1950

[[hosts]]
name = "h2"
"""
FULL = HEAD + HOSTS + NODES.replace('id = "n2"', 'id = "n2"\nhost = "h2"')


@pytest.fixture(autouse=True)
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMMY_CLUSTER_SECRET", SECRET)


def load(folder: Path, text: str) -> ClusterConfig:
    path = folder / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    return load_cluster_config(path)


def problems(folder: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(folder, text)
    assert all(p.startswith(f"{folder / 'cluster.toml'}: ") for p in info.value.problems), info.value
    return str(info.value)


def edit(old: str, new: str, text: str = FULL) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def node(node_id: str, port: int, host: str = "") -> NodeConfig:
    return NodeConfig(node_id, port - 7100, ("127.0.0.1", port), ("127.0.0.1", port + 1000), Path(node_id), host=host)


def cluster(*nodes: NodeConfig, **kw: Any) -> ClusterConfig:
    return ClusterConfig("x", SECRET.encode(), nodes, replication_factor=1, **kw)


# --------------------------------------------------------------------------- defaults and a full file


def test_without_hosts_every_node_runs_on_one_local_host(tmp_path: Path) -> None:
    c = load(tmp_path, HEAD + NODES)
    assert c.hosts == (HostConfig("local", "127.0.0.1", 1900),) and c.leader == c.hosts[0]
    assert [n.host for n in c.nodes] == ["local", "local"] and c.nodes_on("local") == c.nodes
    assert c.launch == LaunchConfig(0.5, 30.0, 60.0, 20.0)
    assert "host local (leader): address 127.0.0.1, admin port 1900, nodes n1, n2" in describe(c)


def test_configs_built_in_code_get_the_default_host() -> None:
    c = cluster(node("n1", 7101), node("n2", 7102, "local"))
    assert [n.host for n in c.nodes] == ["local", "local"] and c.host("local").admin_port == 1900
    two = cluster(node("n1", 7101), node("n2", 7102, "b"), hosts=(HostConfig("a"), HostConfig("b", admin_port=1901)))
    assert two.nodes_on("a") == (two.nodes[0],) and two.leader.name == "a"
    with pytest.raises(ConfigError, match=r'<config>: no host "zz" \(the hosts are a, b\)'):
        two.host("zz")
    with pytest.raises(ConfigError, match='no host "zz"'):
        two.nodes_on("zz")


def test_a_full_file_reads_back(tmp_path: Path) -> None:
    c = load(tmp_path, FULL)
    assert c.launch == LaunchConfig(restart_min=0.25, restart_max=8.0, ready_timeout=20.5)
    assert c.hosts == (HostConfig("h1", "10.0.0.1", 1950), HostConfig("h2", "127.0.0.1", 1901))  # 1900 + position
    assert c.leader.name == "h1" and c.host("h2").admin_port == 1901
    assert [n.host for n in c.nodes] == ["h1", "h2"]  # no `host`: the first host
    assert [n.id for n in c.nodes_on("h1")] == ["n1"] and [n.id for n in c.nodes_on("h2")] == ["n2"]
    summary = describe(c)
    for part in ("host h1 (leader): address 10.0.0.1, admin port 1950, nodes n1",
                 "host h2: address 127.0.0.1, admin port 1901, nodes n2",
                 "launch: restart a dead node after 0.25 s (doubling, at most 8 s), wait 20.5 s"):
        assert part in summary, summary


def test_host_names_and_addresses_that_are_fine(tmp_path: Path) -> None:
    for address in ("127.0.0.5", "db-1.example.org", "localhost"):
        assert load(tmp_path, edit('"10.0.0.1"', f'"{address}"')).leader.address == address


def test_ipv6_host_addresses_are_refused_by_name(tmp_path: Path) -> None:
    for address in ("::1", "fe80::1"):
        message = problems(tmp_path, edit('"10.0.0.1"', f'"{address}"'))
        assert "hosts[0].address" in message and "IPv4 only" in message, message


# --------------------------------------------------------------------------- every error names its key

BROKEN = [
    ('name = "h2"', 'name = "h1"', 'hosts[1].name: "h1" is also the name of hosts[0]'),
    ('name = "h2"', 'name = "h 2"', "hosts[1].name: expected letters"),
    ('name = "h2"', 'address = "127.0.0.2"', "hosts[1].name: required key missing"),
    ('address = "10.0.0.1"', 'address = "0.0.0.0"', 'hosts[0].address: "0.0.0.0" is a wildcard'),
    ('address = "10.0.0.1"', 'address = "::"', 'hosts[0].address: "::" is a wildcard'),
    ('address = "10.0.0.1"', 'address = "*"', 'hosts[0].address: "*" is a wildcard'),
    ('address = "10.0.0.1"', 'address = "10.0.0.1:80"', "hosts[0].address: expected an IPv4 address or a host name"),
    ('address = "10.0.0.1"', 'address = "10.0.1"', "hosts[0].address: expected an IPv4 address or a host name"),
    ('address = "10.0.0.1"', 'address = ""', "hosts[0].address: expected an IPv4 address or a host name"),
    ('address = "10.0.0.1"', "address = 10", "hosts[0].address: expected a non-empty string"),
    ("admin_port = 1950", "admin_port = 0", "hosts[0].admin_port: must be between 1 and 65535, got 0"),
    ("admin_port = 1950", "admin_port = 65536", "hosts[0].admin_port: must be between 1 and 65535"),
    ("admin_port = 1950", 'admin_port = "1950"', "hosts[0].admin_port: expected a whole number"),
    ('address = "10.0.0.1"\nadmin_port = 1950', 'address = "127.0.0.1"\nadmin_port = 1901',
     "hosts[1].admin_port: 127.0.0.1:1901 is also the admin port of hosts[0]"),
    ("admin_port = 1950", "admin_prot = 1950", 'hosts[0].admin_prot: unknown key (did you mean "admin_port"?)'),
    ('name = "h2"', 'name = "h2"\nadmin_port = 8102', "hosts[1].admin_port: 127.0.0.1:8102 is also used by "
                                                     "nodes[1].listen"),
    ('name = "h2"', 'name = "h2"\naddress = "127.000.0.1"', "hosts[1].address: expected an IPv4 address"),
    ('host = "h2"', 'host = "h3"', 'nodes[1].host: no host is named "h3" (the hosts are h1, h2)'),
    ('host = "h2"', 'host = ""', "nodes[1].host: expected a non-empty string"),
    ('host = "h2"', 'host = "h/2"', "nodes[1].host: expected letters"),
    ('host = "h2"', 'hots = "h2"', 'nodes[1].hots: unknown key (did you mean "host"?)'),
    ("restart_max = 8", "restart_max = 0.1", "launch.restart_max: must be at least restart_min (0.25), got 0.1"),
    ("restart_min = 0.25", "restart_min = 0", "launch.restart_min: must be a finite number of seconds > 0"),
    ("ready_timeout = 20.5", "ready_timeout = inf", "launch.ready_timeout: must be a finite number of seconds > 0"),
    ("ready_timeout = 20.5", 'ready_timeout = "1m"', "launch.ready_timeout: expected a number of seconds"),
    ("ready_timeout = 20.5", "ready_timout = 1", 'launch.ready_timout: unknown key (did you mean "ready_timeout"?)'),
    ("[[hosts]]\nname = \"h1\"", "[[host]]\nname = \"h1\"", 'host: unknown key (did you mean "hosts"?)'),
]


@pytest.mark.parametrize(("old", "new", "expected"), BROKEN, ids=[b[2][:48] for b in BROKEN])
def test_each_error_names_its_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert expected in problems(tmp_path, edit(old, new))


@pytest.mark.parametrize(("top", "expected"), [
    ("launch = 3\n", "launch: expected a table ([launch]), got 3"),
    ("hosts = 3\n", "hosts: expected an array of tables ([[hosts]]), got 3"),
    ("hosts = [1]\n", "hosts[0]: expected a table, got 1"),
])
def test_launch_and_hosts_must_be_tables(tmp_path: Path, top: str, expected: str) -> None:
    assert expected in problems(tmp_path, top + HEAD + NODES)


def test_a_node_host_needs_hosts_when_none_are_given(tmp_path: Path) -> None:
    message = problems(tmp_path, HEAD + NODES.replace('id = "n2"', 'id = "n2"\nhost = "h2"'))
    assert 'nodes[1].host: no host is named "h2" (the hosts are local, the default when no [[hosts]]' in message


def test_the_default_admin_port_must_not_be_a_node_port(tmp_path: Path) -> None:
    message = problems(tmp_path, HEAD + NODES.replace('"127.0.0.1:8102"', '"127.0.0.1:1900"'))
    assert "hosts[0].admin_port: 127.0.0.1:1900 is also used by nodes[1].listen" in message


def test_a_wildcard_node_port_clashes_only_on_its_own_host() -> None:
    wild = NodeConfig("n1", 1, ("10.0.0.1", 7101), ("0.0.0.0", 1900), Path("n1"), host="a")
    other = (HostConfig("a", "10.0.0.1", 1950), HostConfig("b", "10.0.0.2"))
    assert cluster(wild, hosts=other).nodes_on("a") == (wild,)  # 1900 on b is another machine
    with pytest.raises(ConfigError, match=r"hosts\[0\]\.admin_port: 10\.0\.0\.1:1900 is also used by nodes\[0\]"):
        cluster(wild, hosts=(HostConfig("a", "10.0.0.1"),))


def test_rules_hold_for_configs_built_in_code() -> None:
    with pytest.raises(ConfigError) as info:
        cluster(node("n1", 7101, "b"), hosts=(HostConfig("a", "0.0.0.0"), HostConfig("a", "127.0.0.1", 0)),
                launch=LaunchConfig(restart_min=2, restart_max=1, ready_timeout=float("nan"), orphan_timeout=2))
    for part in ('<config>: hosts[0].address: "0.0.0.0" is a wildcard', "hosts[1].name: \"a\" is also the name",
                 "hosts[1].admin_port: must be between 1 and 65535", 'nodes[0].host: no host is named "b"',
                 "launch.ready_timeout: must be a finite", "launch.restart_max: must be at least restart_min (2)",
                 "launch.orphan_timeout: must be at least 5 s"):
        assert part in str(info.value), info.value


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = edit("restart_min = 0.25", "restart_min = -1", edit('name = "h2"', 'name = "h2"\nadmin_port = 0'))
    message = problems(tmp_path, edit('peer = "127.0.0.1:7101"', 'peer = "nope"', text))
    assert all(key in message for key in ("launch.restart_min", "hosts[1].admin_port", "nodes[0].peer"))


# --------------------------------------------------------------------------- the shipped examples


def test_the_two_host_example(capsys: pytest.CaptureFixture[str]) -> None:
    c = load_cluster_config(EXAMPLES / "3-node-2-hosts.toml")
    assert c.hosts == (HostConfig("h1", "127.0.0.1", 1910), HostConfig("h2", "127.0.0.1", 1911))
    assert [n.id for n in c.nodes_on("h1")] == ["n1", "n2"] and [n.id for n in c.nodes_on("h2")] == ["n3"]
    one = load_cluster_config(EXAMPLES / "3-node.toml")
    assert {n.peer for n in c.nodes}.isdisjoint({n.peer for n in one.nodes})  # side by side
    assert {n.listen for n in c.nodes}.isdisjoint({n.listen for n in one.nodes})
    assert {n.data for n in c.nodes}.isdisjoint({n.data for n in one.nodes})
    assert main(["config", "check", str(EXAMPLES / "3-node-2-hosts.toml")]) == 0
    assert "host h2: address 127.0.0.1, admin port 1911, nodes n3" in capsys.readouterr().out


def test_the_one_host_examples_use_the_defaults(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "5-node.toml", tmp_path / "5-node.toml")
    (tmp_path / "cluster.secret").write_text(SECRET)
    (tmp_path / "cluster.secret").chmod(0o600)
    for c in (load_cluster_config(EXAMPLES / "3-node.toml"), load_cluster_config(tmp_path / "5-node.toml")):
        assert c.hosts == (HostConfig("local"),) and c.launch == LaunchConfig()
        assert c.nodes_on("local") == c.nodes

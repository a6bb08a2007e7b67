"""The cluster configuration file: the shipped examples load, every broken key is named, secrets stay
secret, YAML works (and says clearly when PyYAML is missing)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

import pytest

from commy.config import ClusterConfig, ConfigError, NodeConfig, describe, load_cluster_config
from commy.core.heartbeat import HeartbeatConfig
from commy.messages import MemberInfo

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRET = "s3cret-0123456789-abcdef"
ENV = "COMMY_TEST_SECRET"

BASE = f"""
[cluster]
name = "test"
secret_env = "{ENV}"
replication_factor = 2
seeds = ["n1", "n2"]

[heartbeat]
interval = 0.3
suspect_after = 2
down_after = 5

[timeouts]
write = 2.0

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

[[nodes]]
id = "n3"
peer = "127.0.0.1:7103"
listen = "127.0.0.1:8103"
data = "data/n3"
"""

NODE_N3 = 'id = "n3"\npeer = "127.0.0.1:7103"'


@pytest.fixture(autouse=True)
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, SECRET)
    monkeypatch.setenv("COMMY_CLUSTER_SECRET", SECRET)


def write(folder: Path, text: str, name: str = "cluster.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def problems(folder: Path, text: str, name: str = "cluster.toml") -> str:
    with pytest.raises(ConfigError) as info:
        load_cluster_config(write(folder, text, name))
    message = str(info.value)
    assert all(line.startswith(f"{folder / name}: ") for line in info.value.problems), message
    assert SECRET not in message
    return message


def secret_file(folder: Path, content: str = SECRET + "\n", mode: int = 0o600) -> Path:
    path = folder / "cluster.secret"
    path.write_text(content, encoding="utf-8")
    path.chmod(mode)
    return path


# --------------------------------------------------------------------------- loading


def test_the_3_node_example_loads() -> None:
    c = load_cluster_config(EXAMPLES / "3-node.toml")
    assert [n.id for n in c.nodes] == ["n1", "n2", "n3"] and [n.index for n in c.nodes] == [1, 2, 3]
    assert c.secret == SECRET.encode() and c.secret_source == "environment variable COMMY_CLUSTER_SECRET"
    assert c.node("n2").peer == ("127.0.0.1", 7102) and c.node("n2").listen == ("127.0.0.1", 8102)
    assert c.node("n3").url == "ws://127.0.0.1:8103" and c.node("n1").data == EXAMPLES / "data" / "n1"
    assert (c.replication_factor, c.write_concern, c.conflict, c.seeds) == (2, "local", "lww", ("n1", "n2"))
    assert c.heartbeat == HeartbeatConfig() and c.tls is None


def test_the_5_node_example_loads_with_a_secret_file(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "5-node.toml", tmp_path / "5-node.toml")
    secret_file(tmp_path, f"  {SECRET}\n\n")
    c = load_cluster_config(tmp_path / "5-node.toml")
    assert len(c.nodes) == 5 and c.secret == SECRET.encode()  # whitespace around it trimmed
    assert c.secret_source == f"file {tmp_path / 'cluster.secret'}"
    assert c.node("n5").data == tmp_path / "data" / "n5" and c.node("n5").peer == ("127.0.0.1", 7105)
    assert not (EXAMPLES / "cluster.secret").exists(), "never ship a secret"


def test_defaults_and_helpers(tmp_path: Path) -> None:
    c = load_cluster_config(write(tmp_path, edit('seeds = ["n1", "n2"]\n', "")))
    assert c.seeds == ("n1", "n2", "n3")  # every node by default
    assert c.member_info("n2", 7) == MemberInfo("n2", 2, "127.0.0.1", 7102, "ws://127.0.0.1:8102", 7)
    assert [m.node_id for m in c.seed_members()] == ["n1", "n2", "n3"]
    assert c.timeouts.write == 2.0 and c.timeouts.client_heartbeat == 60.0 and c.priorities == {}
    with pytest.raises(ConfigError, match='no node "n9"'):
        c.node("n9")


def test_one_node_defaults_to_one_copy(tmp_path: Path) -> None:
    one = BASE.split("[[nodes]]")[0] + "[[nodes]]" + BASE.split("[[nodes]]")[1]
    text = edit("replication_factor = 2\n", "", edit('seeds = ["n1", "n2"]', 'seeds = ["n1"]', one))
    assert load_cluster_config(write(tmp_path, text)).replication_factor == 1


def test_explicit_index_priority_url_and_tls(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    text = edit(NODE_N3, f'{NODE_N3}\nindex = 200\npriority = 5', BASE + '[tls]\ncert = "c.pem"\nkey = "k.pem"\n')
    text = edit('listen = "127.0.0.1:8101"', 'listen = "0.0.0.0:8101"', text)
    c = load_cluster_config(write(tmp_path, text))
    assert c.tls is not None and c.tls.cert == tmp_path / "c.pem"
    assert c.node("n3").index == 200 and c.priorities == {200: 5}
    assert c.node("n1").url == "wss://127.0.0.1:8101"  # a wildcard listen: clients go to the peer host
    assert c.node("n2").url == "wss://127.0.0.1:8102"
    text = edit(NODE_N3, f'{NODE_N3}\nurl = "wss://n3.example:443"', text)
    assert load_cluster_config(write(tmp_path, text)).node("n3").url == "wss://n3.example:443"


def test_ipv6_addresses(tmp_path: Path) -> None:
    c = load_cluster_config(write(tmp_path, edit('listen = "127.0.0.1:8101"', 'listen = "[::1]:8101"')))
    assert c.node("n1").listen == ("::1", 8101) and c.node("n1").url == "ws://[::1]:8101"


# --------------------------------------------------------------------------- every error names its key

BROKEN = [
    # (old, new, expected in the message)
    ('peer = "127.0.0.1:7103"', 'peer = "nope"', 'nodes[2].peer: expected "HOST:PORT"'),
    ('peer = "127.0.0.1:7103"', 'peer = "nope"', 'got "nope"'),
    ('peer = "127.0.0.1:7101"', 'peer = "127.0.0.1:0"', "nodes[0].peer: expected"),
    ('peer = "127.0.0.1:7101"', 'peer = "::1:7101"', "nodes[0].peer: expected"),
    ('listen = "127.0.0.1:8101"', 'listen = "127.0.0.1:70000"', "nodes[0].listen: expected"),
    ('listen = "127.0.0.1:8101"', "listen = 8101", "nodes[0].listen: expected"),
    ('peer = "127.0.0.1:7101"', 'peer = "0.0.0.0:7101"', "nodes[0].peer: 0.0.0.0 is not an address"),
    ("replication_factor = 2", "replication_factr = 2", 'cluster.replication_factr: unknown key (did you mean '
                                                        '"replication_factor"?)'),
    ("[timeouts]", "[timeout]", "timeout: unknown key"),
    ("[heartbeat]", "[heartbeat]\nintervall = 1", "heartbeat.intervall: unknown key"),
    ('data = "data/n2"', 'data = "data/n2"\nprio = 1', "nodes[1].prio: unknown key"),
    ('id = "n2"', 'id = "n1"', 'nodes[1].id: "n1" is also the id of nodes[0]'),
    ('id = "n2"', 'id = "n 2"', "nodes[1].id: expected letters"),
    ('id = "n2"', "id = 2", "nodes[1].id: expected a non-empty string"),
    (NODE_N3, f"{NODE_N3}\nindex = 1", "nodes[2].index: 1 is also the index of nodes[0]"),
    (NODE_N3, f"{NODE_N3}\nindex = 0", "nodes[2].index: must be between 1 and 255"),
    (NODE_N3, f"{NODE_N3}\nindex = 256", "nodes[2].index: must be between 1 and 255"),
    (NODE_N3, f"{NODE_N3}\npriority = 1.5", "nodes[2].priority: expected a whole number"),
    (NODE_N3, f'{NODE_N3}\nurl = "http://x:1"', "nodes[2].url: expected"),
    ('peer = "127.0.0.1:7102"', 'peer = "127.0.0.1:7101"', "nodes[1].peer: 127.0.0.1:7101 is also used by "
                                                          "nodes[0].peer"),
    ('listen = "127.0.0.1:8102"', 'listen = "127.0.0.1:7102"', "nodes[1].listen: 127.0.0.1:7102 is also used by "
                                                              "nodes[1].peer"),
    ('listen = "127.0.0.1:8103"', 'listen = "0.0.0.0:7101"', "nodes[2].listen: 0.0.0.0:7101 is also used by "
                                                            "nodes[0].peer"),
    ('data = "data/n2"', 'data = "data/n1"', "nodes[1].data:"),
    ('data = "data/n2"\n', "", "nodes[1].data: required key missing"),
    ('seeds = ["n1", "n2"]', 'seeds = ["n1", "n7"]', 'cluster.seeds[1]: no node has the id "n7"'),
    ('seeds = ["n1", "n2"]', 'seeds = ["n1", "n1"]', 'cluster.seeds[1]: "n1" is listed twice'),
    ('seeds = ["n1", "n2"]', 'seeds = "n1"', "cluster.seeds: expected a list of strings"),
    ("replication_factor = 2", "replication_factor = 4", "cluster.replication_factor: must be between 1 and the "
                                                         "number of nodes (3), got 4"),
    ("replication_factor = 2", "replication_factor = 0", "cluster.replication_factor: must be at least 1"),
    ("replication_factor = 2", 'replication_factor = "2"', "cluster.replication_factor: expected a whole number"),
    ("replication_factor = 2", 'write_concern = "all"', "cluster.write_concern: expected one of local, "
                                                        'replicated, quorum, got "all"'),
    ("replication_factor = 2", 'conflict = "newest"', "cluster.conflict: expected one of lww, priority, merge"),
    ('name = "test"\n', "", "cluster.name: required key missing"),
    ('name = "test"', 'name = ""', "cluster.name: expected a non-empty string"),
    ("interval = 0.3", "interval = 0", "heartbeat.interval: must be a finite number of seconds > 0"),
    ("interval = 0.3", "interval = -1", "heartbeat.interval: must be a finite number of seconds > 0"),
    ("interval = 0.3", "interval = nan", "heartbeat.interval: must be a finite number"),
    ("interval = 0.3", "interval = inf", "heartbeat.interval: must be a finite number"),
    ("interval = 0.3", "interval = true", "heartbeat.interval: expected a number of seconds"),
    ("interval = 0.3", 'interval = "fast"', "heartbeat.interval: expected a number of seconds"),
    ("suspect_after = 2", "suspect_after = 6", "heartbeat.suspect_after: must be at most down_after (5)"),
    ("down_after = 5", "down_after = 0", "heartbeat.down_after: must be at least 1"),
    ("write = 2.0", "write = 0", "timeouts.write: must be a finite number of seconds > 0"),
    ("write = 2.0", "transfer = -inf", "timeouts.transfer: must be a finite number"),
    ("write = 2.0", "client_heartbeat = nan", "timeouts.client_heartbeat: must be a finite number"),
    ("write = 2.0", 'anti_entropy = "1s"', "timeouts.anti_entropy: expected a number of seconds"),
    ("[timeouts]", "[tls]\ncert = 'missing.pem'\n[timeouts]", "tls.cert: no such file"),
    ("[timeouts]", "[tls]\ncert = 'missing.pem'\n[timeouts]", "tls.key: required key missing"),
    (f'secret_env = "{ENV}"', 'secret_env = "COMMY_UNSET_VARIABLE"', "cluster.secret_env: the environment "
                                                                     "variable COMMY_UNSET_VARIABLE is not set"),
    (f'secret_env = "{ENV}"', f'secret_env = "{ENV}"\nsecret_file = "x"', "cluster: give the cluster secret as "
                                                                          'secret_file = "PATH" or secret_env'),
    (f'secret_env = "{ENV}"\n', "", "(one is required)"),
    (f'secret_env = "{ENV}"', 'secret_file = "absent.secret"', "cluster.secret_file: cannot read"),
    ("[cluster]", "cluster = 3\n[old]", "cluster: expected a table ([cluster]), got 3"),
]


@pytest.mark.parametrize(("old", "new", "expected"), BROKEN, ids=[b[2][:40] for b in BROKEN])
def test_each_error_names_its_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert expected in problems(tmp_path, edit(old, new))


@pytest.mark.parametrize(("text", "expected"), [
    ("[cluster]\nname = 1\n", "cluster.name: expected a non-empty string"),
    (f'[cluster]\nname = "x"\nsecret_env = "{ENV}"\nnodes = 1\n', "cluster.nodes: unknown key"),
    (f'[cluster]\nname = "x"\nsecret_env = "{ENV}"\n', "nodes: at least one [[nodes]] entry is needed"),
    (f'nodes = {{id = "n1"}}\n[cluster]\nname = "x"\nsecret_env = "{ENV}"\n', "nodes: expected an array of tables"),
    (f'nodes = [1]\n[cluster]\nname = "x"\nsecret_env = "{ENV}"\n', "nodes[0]: expected a table, got 1"),
    ("[cluster\n", "not valid TOML"),
])
def test_whole_file_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in problems(tmp_path, text)


def test_a_key_that_is_not_a_table_is_reported_once(tmp_path: Path) -> None:
    message = problems(tmp_path, edit("[cluster]", "cluster = 3\n[old]"))
    assert [line.split(": ")[1] for line in message.splitlines()] == ["cluster", "old"]


def test_unknown_keys_list_the_known_ones(tmp_path: Path) -> None:
    message = problems(tmp_path, edit("replication_factor = 2", "replicas = 2"))
    assert "the keys here are: conflict, name, replication_factor, secret_env, secret_file, seeds" in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = edit("interval = 0.3", "interval = 0", edit('peer = "127.0.0.1:7103"', 'peer = "nope"'))
    message = problems(tmp_path, edit("write = 2.0", "wirte = 2.0", text))
    assert all(key in message for key in ("heartbeat.interval", "nodes[2].peer", "timeouts.wirte"))


def test_the_file_must_exist_and_be_toml_or_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.toml: cannot read the file"):
        load_cluster_config(tmp_path / "nowhere.toml")
    assert "expected a .toml file" in problems(tmp_path, BASE, "cluster.ini")


def test_configs_built_in_code_are_checked_too() -> None:
    node = NodeConfig("n1", 1, ("127.0.0.1", 7101), ("127.0.0.1", 8101), Path("d"))
    assert node.url == "ws://127.0.0.1:8101"
    assert ClusterConfig("x", SECRET.encode(), (node,), replication_factor=1).seeds == ("n1",)
    with pytest.raises(ConfigError, match=r"<config>: cluster\.replication_factor: must be between 1 and"):
        ClusterConfig("x", SECRET.encode(), (node,))
    with pytest.raises(ConfigError, match=r"cluster\.secret: at least 16 bytes"):
        ClusterConfig("x", b"short", (node,), replication_factor=1)


# --------------------------------------------------------------------------- the secret


def test_the_secret_is_never_shown(tmp_path: Path) -> None:
    c = load_cluster_config(write(tmp_path, BASE))
    for text in (repr(c), str(c), describe(c)):
        assert SECRET not in text and "secret=" not in text
    assert "environment variable COMMY_TEST_SECRET" in describe(c)


def test_describe_lists_the_nodes_and_settings(tmp_path: Path) -> None:
    summary = describe(load_cluster_config(write(tmp_path, BASE)))
    for part in ("3 nodes", "replication_factor 2", "write_concern local", "seeds: n1, n2",
                 "node n3 (index 3): peer 127.0.0.1:7103, clients ws://127.0.0.1:8103"):
        assert part in summary, summary


def test_a_short_secret_is_refused_without_showing_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "  tooshort-secret  ")
    message = problems(tmp_path, BASE)
    assert "cluster.secret_env: the environment variable COMMY_TEST_SECRET holds 15 characters" in message
    assert "tooshort" not in message
    secret_file(tmp_path, "tooshort-secret\n")
    message = problems(tmp_path, edit(f'secret_env = "{ENV}"', 'secret_file = "cluster.secret"'))
    assert "cluster.secret_file:" in message and "holds 15 bytes" in message and "tooshort" not in message


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_secret_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = secret_file(tmp_path, mode=mode)
    message = problems(tmp_path, edit(f'secret_env = "{ENV}"', 'secret_file = "cluster.secret"'))
    assert f"cluster.secret_file: {path} is open to other users" in message and f"chmod 600 {path}" in message


def test_a_secret_file_path_is_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    secret_file(tmp_path / "keys")
    text = edit(f'secret_env = "{ENV}"', 'secret_file = "keys/cluster.secret"')
    assert load_cluster_config(write(tmp_path, text)).secret == SECRET.encode()


# --------------------------------------------------------------------------- YAML

YAML = f"""
cluster:
  name: test
  secret_env: {ENV}
  replication_factor: 2
  seeds: [n1, n2]
heartbeat: {{interval: 0.3, suspect_after: 2, down_after: 5}}
timeouts: {{write: 2.0}}
nodes:
  - {{id: n1, peer: "127.0.0.1:7101", listen: "127.0.0.1:8101", data: data/n1}}
  - {{id: n2, peer: "127.0.0.1:7102", listen: "127.0.0.1:8102", data: data/n2}}
  - {{id: n3, peer: "127.0.0.1:7103", listen: "127.0.0.1:8103", data: data/n3}}
"""


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_reads_like_toml(tmp_path: Path, suffix: str) -> None:
    from_toml = load_cluster_config(write(tmp_path, BASE))
    from_yaml = load_cluster_config(write(tmp_path, YAML, "cluster" + suffix))
    assert dataclasses.replace(from_yaml, path=from_toml.path) == from_toml
    assert "nodes[1].peer: expected" in problems(tmp_path, YAML.replace('"127.0.0.1:7102"', "nope"), "c.yaml")
    assert "not valid YAML" in problems(tmp_path, "cluster: [", "c.yaml")
    assert "expected a mapping" in problems(tmp_path, "- 1\n", "c.yaml")


def test_yaml_without_pyyaml_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` now raises ImportError
    message = problems(tmp_path, YAML, "cluster.yaml")
    assert "reading YAML needs PyYAML (pip install pyyaml)" in message

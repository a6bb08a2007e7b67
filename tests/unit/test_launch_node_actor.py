"""The node actor's start failures, in an in-process thespian system (`simpleSystemBase`): a
configuration no retry mends is `permanent`, a port in use is not."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from thespian.actors import ActorSystem

from commy.config import load_cluster_config
from commy.launch.control import NodeFailed, StartNode
from commy.launch.node_actor import NodeActor
from commy.launch.systems import CAP_HOST
from commy.runtime.local_cluster import write_cluster_files


@pytest.fixture
def asys() -> Iterator[Any]:
    system = ActorSystem("simpleSystemBase", {CAP_HOST: "local"}, transientUnique=True)
    yield system
    system.shutdown()


def start(asys: Any, msg: StartNode) -> Any:
    actor = asys.createActor(NodeActor, targetActorRequirements={"host": "local"})
    return asys.ask(actor, msg, 30)


def test_a_wrong_configuration_fails_for_good(asys: Any, tmp_path: Path) -> None:
    config = write_cluster_files(tmp_path, ["n1", "n2"], name="mine")
    other = start(asys, StartNode("n1", 1, "theirs", str(config)))
    assert other == NodeFailed("n1", 1, f"this host's configuration ({config}) is cluster 'mine', not 'theirs'",
                               permanent=True)
    unknown = start(asys, StartNode("n9", 2, "mine", str(config)))
    assert isinstance(unknown, NodeFailed) and unknown.permanent and "has no node 'n9'" in unknown.detail
    broken = start(asys, StartNode("n1", 3, "mine", str(tmp_path / "missing.toml")))
    assert isinstance(broken, NodeFailed) and broken.permanent and "missing.toml" in broken.detail


def test_a_port_in_use_is_worth_a_retry(asys: Any, tmp_path: Path) -> None:
    config = write_cluster_files(tmp_path, ["n1", "n2"], name="mine")
    host, port = load_cluster_config(config).node("n1").listen
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((host, port))
        squatter.listen()
        failed = start(asys, StartNode("n1", 1, "mine", str(config)))
    assert isinstance(failed, NodeFailed) and not failed.permanent, failed

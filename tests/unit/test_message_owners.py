"""Every registered message has an owner: an actor that handles it, the link protocol itself, the
WebSocket gateway (`CloseClient`), or -- for what a server sends to clients -- the client SDK.

Messages defined for later protocols (replication, membership join, migration) have no actor yet.
They are listed here by name, and the test fails both when a message is unowned and unlisted and
when a listed message gains an owner, so the list only ever shrinks and stays true.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import commy.client
import commy.core
import commy.runtime
from commy.core.actor import Actor
from commy.messages import (
    CLIENT_REPLIES,
    REGISTRY,
    CloseClient,
    Error,
    JoinProof,
    MetadataExchange,
    MetadataExchangeAck,
)

# commy.link.PeerLink consumes the handshake (the cluster-secret proofs) and link-level errors
OWNED_BY_THE_LINK = {MetadataExchange, MetadataExchangeAck, JoinProof, Error}
OWNED_BY_THE_GATEWAY = {CloseClient}  # the gateway acts on it instead of sending it to the client
NOT_YET_OWNED = {
    # link events published with no subscriber yet (the heartbeat and membership watch peers instead)
    "LinkUp", "LinkDown",
}


def actor_classes() -> list[type[Actor]]:
    for package in (commy.core, commy.runtime):
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)
    found: list[type[Actor]] = []
    todo = list(Actor.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("commy."):
            found.append(cls)
        todo += cls.__subclasses__()
    return found


def sdk_source() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in Path(commy.client.__path__[0]).glob("*.py"))


SDK_NOT_YET: set[str] = set()  # server-to-client messages the SDK does not handle yet


def test_the_client_sdk_handles_every_message_a_server_sends_to_clients() -> None:
    source = sdk_source()
    missing = {cls.__name__ for cls in CLIENT_REPLIES if cls.__name__ not in source}
    assert missing - SDK_NOT_YET == set(), "the SDK never names (so never handles) these"
    assert SDK_NOT_YET - missing == set(), "the SDK handles these now: remove them from SDK_NOT_YET"


def test_every_message_has_an_owner_or_is_listed_as_pending() -> None:
    handled = ({tp for cls in actor_classes() for tp in cls.HANDLERS} | OWNED_BY_THE_LINK | OWNED_BY_THE_GATEWAY
               | set(CLIENT_REPLIES))
    unowned = {cls.__name__ for cls in REGISTRY.values() if cls not in handled}
    assert unowned - NOT_YET_OWNED == set(), "messages nobody handles"
    assert NOT_YET_OWNED - unowned == set(), "these gained an owner: remove them from NOT_YET_OWNED"

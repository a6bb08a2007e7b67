"""Helpers for tests that run real nodes on an asyncio loop: bounded waits and probe access."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from commy.runtime.standalone import RunningNode
from tests.conformance.harness import PROBE, Probe


async def until(check: Callable[[], bool], timeout: float) -> bool:
    """Poll `check` until it holds or `timeout` real seconds pass; returns whether it held."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.002)
    return True


def probe(r: RunningNode) -> Probe:
    return cast(Probe, r.node.actors[PROBE])

"""The event loop every runtime uses: uvloop when it is installed, the stock asyncio loop otherwise.

uvloop is an optional speed-up (the `[fast]` extra); nothing in commy depends on its presence, so
`new_event_loop()` quietly falls back. `prefer_uvloop=False` forces the stock loop, which the
benchmark uses to report both figures and tests may use to check both paths.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def new_event_loop(prefer_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    """A fresh loop (not set as the current one: callers own it and close it)."""
    if prefer_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], *, prefer_uvloop: bool = True) -> T:
    """Run `main` to completion on a new loop, then cancel leftovers and close the loop."""
    with asyncio.Runner(loop_factory=lambda: new_event_loop(prefer_uvloop)) as runner:
        return runner.run(main)

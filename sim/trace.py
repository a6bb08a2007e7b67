"""The run's trace: every event as `(time, node, actor, event, detail)`, folded into a SHA-256.

Recording must stay cheap -- it runs for every delivered message -- so an event is a tuple
appended to a buffer, with no string formatting; every `CHUNK` events the buffer is packed with
msgpack (C code, in one call) and folded into the hash. Chunks always hold exactly `CHUNK` events,
and reading `hash` packs the partial chunk into a *copy* of the hash state, so the digest depends
only on the events, never on when anyone looked. Time is seconds since the start of the run.

Hot paths append a compact entry of their own -- still one per event -- and build the full row
only when someone listens: a message arriving from the network is `(virtual time, wire bytes)`
(`sim.network`), a timer or local message is a flat tuple (the node observer in `sim.cluster`).
Full rows are kept only when asked (`keep`, capped), and listeners -- checkers, the timeline --
get rows as they happen, either every row or only the event names they subscribe to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

Row = tuple[float, str, str, str, Any]
"""(seconds since start, node, actor, event, detail)"""

Listener = Callable[[Row], None]

CHUNK = 4096


def row_dict(row: Row) -> dict[str, Any]:
    t, node, actor, event, detail = row
    return {"time": t, "node": node, "actor": actor, "event": event, "detail": detail}


class Trace:
    """Hash of every event, plus optional capped rows and listeners."""

    def __init__(self, keep: int = 0) -> None:
        self.keep = keep
        self.rows: list[Row] = []
        self.buf: list[tuple[Any, ...]] = []
        """Events not yet folded into the hash; hot paths append here, then call `flush` at CHUNK."""
        self._folded = 0
        self._sha = hashlib.sha256()
        # `default=repr`: log fields may hold any object; its repr is deterministic for ours.
        self._pack = msgpack.Packer(use_bin_type=True, default=repr).pack
        self._all: list[Listener] = []
        self._by_event: dict[str, list[Listener]] = {}
        self.active = False
        """True when anything beyond the hash wants rows (listeners or kept rows)."""
        self._refresh()

    def _refresh(self) -> None:
        self.active = bool(self._all or self._by_event or self.keep)

    def subscribe(self, fn: Listener, events: Iterable[str] | None = None) -> None:
        """Call `fn(row)` for every row, or only for rows whose event is in `events`."""
        if events is None:
            self._all.append(fn)
        else:
            for ev in events:
                self._by_event.setdefault(ev, []).append(fn)
        self._refresh()

    def record(self, t: float, node: str, actor: str, event: str, detail: Any = None) -> None:
        row = (t, node, actor, event, detail)
        buf = self.buf
        buf.append(row)
        if len(buf) >= CHUNK:
            self.flush()
        if self.active:
            self.emit(row)

    def emit(self, row: Row) -> None:
        if len(self.rows) < self.keep:
            self.rows.append(row)
        for fn in self._all:
            fn(row)
        fns = self._by_event.get(row[3])
        if fns:
            for fn in fns:
                fn(row)

    def flush(self) -> None:
        """Fold a full chunk into the hash (callers: only when `len(buf) >= CHUNK`)."""
        self._sha.update(self._pack(self.buf))
        self._folded += len(self.buf)
        self.buf.clear()

    @property
    def count(self) -> int:
        """Events recorded so far."""
        return self._folded + len(self.buf)

    @property
    def hash(self) -> str:
        """Hex SHA-256 of every event recorded so far (reading it changes nothing)."""
        sha = self._sha.copy()
        if self.buf:
            sha.update(self._pack(self.buf))
        return sha.hexdigest()

    def export(self) -> list[dict[str, Any]]:
        """The kept rows as plain dicts (empty unless the trace was created with `keep`)."""
        return [row_dict(r) for r in self.rows]

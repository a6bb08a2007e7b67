"""The cluster's bookkeeping in a service file: the version vector, and stamping local clients' writes.

`Stamps` is the part of `ServiceFile` that replication uses; none of it is on the read or write
hot paths. The version vector lives in the header (see `layout.py`): one u64 per origin node
index, the newest stamp from that origin the file holds without a gap. It sits in the file, not in
the server's memory, so it survives restarts, is remapped with the file when it grows (header
offsets never move) and travels with every copy (rotation copies the whole file). `set_clock`
only raises a slot, with one aligned store and no OS lock: the server is the only writer of clocks
(local clients never touch them, and one server per data folder), so nothing can race it.

`set_stamp` gives an entry the stamp the server chose for it. A local client writing through its
own mapping leaves the stamp 0; the server notices the write (its version changed), ticks its
clock and stamps it -- but only if the entry is still at the version it saw, checked under the
entry's lock, so a newer write that landed meanwhile is never mislabelled with an older stamp.
The stamp changes inside the entry's seqlock (a reader sees the old stamp or the new, with the
same value) and no change counter moves: nothing a client can see changed.
"""

from __future__ import annotations

import threading
from itertools import compress
from typing import TYPE_CHECKING

from commy.errors import LocalProtocolError
from commy.store.growth import View
from commy.store.layout import (
    CLOCK_END,
    CLOCK_FIRST,
    E_SEQ,
    E_STAMP,
    E_VERSION,
    ENTRY_WORDS,
    H_GEN,
    MAX_ORIGIN,
    MAX_U64,
    entry_token,
)
from commy.store.locks import LOCK_EX, LOCK_UN, SETLKW, setlk
from commy.store.names import check_variable

__all__ = ["Stamps"]

_ORIGINS = range(MAX_ORIGIN + 1)


def _check_u64(what: str, v: object) -> int:
    if type(v) is not int or not 0 <= v <= MAX_U64:
        raise LocalProtocolError(f"{what} must be an int in 0..2**64-1, not {v!r}")
    return v


class Stamps:
    """Version vector and entry stamps of `ServiceFile`; see the module docstring."""

    __slots__ = ()
    # Owned and kept up to date by ServiceFile (declared here for the type checker).
    _fd: int
    _plock: threading.Lock
    _view: View
    _index: dict[str, int]
    _table_word: int

    if TYPE_CHECKING:  # ServiceFile's own methods
        def _check_open(self) -> None: ...
        def _refresh(self, header_held: bool = False) -> None: ...

    def clocks(self) -> dict[int, int]:
        """The service's version vector: origin index -> newest stamp held without a gap (zeros left out)."""
        with self._plock:
            self._check_open()
            slots = self._view[0][CLOCK_FIRST:CLOCK_END].tolist()
        # Most of the 256 slots are zero: let `compress` skip them in C (twice as fast as a loop).
        return {origin: slots[origin] for origin in compress(_ORIGINS, slots)}

    def set_clock(self, origin: int, stamp: int) -> None:
        """Raise origin's clock to `stamp`; a stamp at or below the current one changes nothing."""
        if type(origin) is not int or not 0 <= origin <= MAX_ORIGIN:
            raise LocalProtocolError(f"origin must be an int in 0..{MAX_ORIGIN}, not {origin!r}")
        _check_u64("stamp", stamp)
        with self._plock:
            self._check_open()
            q, k = self._view[0], CLOCK_FIRST + origin
            if stamp > q[k]:
                # One aligned u64 store, no OS lock: only the server writes clocks (one process -- the
                # data folder's lock sees to that -- and this lock for its threads); clients never do.
                q[k] = stamp

    def set_stamp(self, name: str, version: int, stamp: int) -> bool:
        """Stamp entry `name` with `stamp` if it is still at `version`; False if not (or no such entry)."""
        if type(name) is not str:
            check_variable(name)
        _check_u64("version", version)
        _check_u64("stamp", stamp)
        with self._plock:
            self._check_open()
            fd = self._fd
            while True:
                self._refresh()
                i = self._index.get(name)
                if i is None:
                    check_variable(name)  # a name that cannot exist is refused, not just absent
                    return False
                setlk(fd, SETLKW, entry_token(LOCK_EX, i))
                try:
                    q, _, _, _, gen = self._view
                    if q[H_GEN] != gen:
                        continue  # the table moved while we waited for the lock: remap, look again
                    base = self._table_word + i * ENTRY_WORDS
                    if q[base + E_VERSION] != version:
                        return False
                    s = q[base + E_SEQ]
                    s += 1 + (s & 1)
                    q[base + E_SEQ] = s
                    q[base + E_STAMP] = stamp
                    q[base + E_SEQ] = s + 1
                    return True
                finally:
                    setlk(fd, SETLKW, entry_token(LOCK_UN, i))

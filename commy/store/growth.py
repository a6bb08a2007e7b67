"""How a service file changes shape: new variables, values that outgrow their room, growth, table moves.

`Growth` is the part of `ServiceFile` that allocates; `ServiceFile.write` falls back to
`_write_slow` whenever its fast path (an in-place write into an existing variable's capacity,
under that variable's lock alone) does not apply. Everything here runs under the process lock and
the exclusive header lock, which is always taken before any entry lock, so locks are ordered
header then entries everywhere and no two writers can wait on each other in a cycle.

- A new variable: its value is copied into a fresh allocation and its entry filled in while
  nobody can see it; bumping the header's variable count publishes it.
- A value too big for its capacity: a new allocation (a power of two, at least 64 bytes); the
  offset and capacity change inside the seqlock together with the data. The old bytes are left
  as they are, so a reader racing the move fails its seq check instead of reading reused memory.
- No room left: the file grows to at least twice its size (`ftruncate`), the header records the
  new size and then bumps the generation; every mapping, ours included, remaps on seeing it.
- A full table: one twice as big is allocated, the entries are copied under every entry lock at
  once (a single byte-range lock to the end of the lock space), the header is pointed at it, the
  generation bumped, and the old entries' seqs are left odd for good.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from commy.errors import TOO_LARGE, RemoteProtocolError
from commy.store.layout import (
    E_CAPACITY,
    E_LENGTH,
    E_NAME_LEN,
    E_OFFSET,
    E_SEQ,
    E_STAMP,
    E_VERSION,
    E_WRITER,
    ENTRIES_EX,
    ENTRIES_UN,
    ENTRY_SIZE,
    ENTRY_WORDS,
    H_CAP,
    H_COUNT,
    H_DATA_END,
    H_GEN,
    H_SIZE,
    H_TABLE,
    HEADER_EX,
    HEADER_UN,
    MAX_TABLE,
    NAME_BYTES,
    StoreError,
    alloc_size,
    entry_token,
    page_round,
)
from commy.store.locks import LOCK_EX, LOCK_UN, SETLKW, setlk
from commy.store.names import check_variable

__all__ = ["Growth", "View"]

# (u64 view, mmap, read slots, write slots, generation): see ServiceFile.
View = tuple[Any, Any, dict[str, Any], dict[str, Any], int]


class Growth:
    """The allocating writes of `ServiceFile`; every method needs the process lock."""

    __slots__ = ()
    # Owned and kept up to date by ServiceFile (declared here for the type checker).
    path: Path
    _fd: int
    _view: View
    _index: dict[str, int]
    _count: int
    _cap: int
    _table_word: int
    _writer: int
    _counter: int

    if TYPE_CHECKING:  # ServiceFile's own methods, which these writes call
        def _check_open(self) -> None: ...
        def _corrupt(self, what: str) -> StoreError: ...
        def _remap(self) -> None: ...
        def _refresh(self, header_held: bool = False) -> None: ...
        def _reindex(self, count: int) -> None: ...

    def _write_slow(self, name: str, value: bytes, stamp: int) -> int:
        """Create the variable, or give it room, under the header lock. Needs the process lock."""
        self._check_open()
        fd = self._fd
        setlk(fd, SETLKW, HEADER_EX)
        try:
            self._refresh(header_held=True)
            i = self._index.get(name) if type(name) is str else None
            if i is None:
                check_variable(name)
                return self._create(name, value, stamp)
            setlk(fd, SETLKW, entry_token(LOCK_EX, i))
            try:
                base = self._table_word + i * ENTRY_WORDS
                room = None
                if len(value) > self._view[0][base + E_CAPACITY]:
                    capacity = alloc_size(len(value))
                    room = (self._alloc(capacity), capacity)
                return self._store(name, base, value, stamp, room)
            finally:
                setlk(fd, SETLKW, entry_token(LOCK_UN, i))
        finally:
            setlk(fd, SETLKW, HEADER_UN)

    def _store(self, name: str, base: int, value: bytes, stamp: int, room: tuple[int, int] | None) -> int:
        """The seqlock write of an existing entry, moving it to `room` (offset, capacity) if given."""
        q, mm = self._view[0], self._view[1]
        n = len(value)
        s = q[base + E_SEQ]
        s += 1 + (s & 1)
        q[base + E_SEQ] = s
        if room is not None:
            q[base + E_OFFSET], q[base + E_CAPACITY] = room
        o = q[base + E_OFFSET]
        try:
            if o + q[base + E_CAPACITY] > len(mm) or n > q[base + E_CAPACITY]:
                raise IndexError
            mm[o:o + n] = value
        except IndexError:
            q[base + E_SEQ] = s + 1
            raise self._corrupt(f"variable {name!r} lies outside the file") from None
        q[base + E_LENGTH] = n
        version: int = q[base + E_VERSION] + 1
        q[base + E_VERSION] = version
        q[base + E_WRITER] = self._writer
        q[base + E_STAMP] = stamp
        q[base + E_SEQ] = s + 1
        q[self._counter] += 1
        return version

    def _create(self, name: str, value: bytes, stamp: int) -> int:
        """Append a new entry holding `value`; publish it by bumping the count last. Header lock held."""
        if self._count >= self._cap:
            self._move_table()
        n = len(value)
        capacity = alloc_size(n)
        offset = self._alloc(capacity)
        q, mm = self._view[0], self._view[1]
        mm[offset:offset + n] = value
        raw = name.encode("utf-8")
        base = self._table_word + self._count * ENTRY_WORDS
        mm[base * 8:base * 8 + NAME_BYTES] = raw.ljust(NAME_BYTES, b"\0")
        for field, v in ((E_NAME_LEN, len(raw)), (E_OFFSET, offset), (E_CAPACITY, capacity), (E_LENGTH, n),
                         (E_VERSION, 1), (E_WRITER, self._writer), (E_STAMP, stamp)):
            q[base + field] = v
        q[base + E_SEQ] = 0
        q[H_COUNT] = self._count + 1
        q[self._counter] += 1
        self._reindex(self._count + 1)
        return 1

    def _alloc(self, nbytes: int) -> int:
        """Bump-allocate `nbytes` (a multiple of 64) from the data region, growing the file if needed."""
        q = self._view[0]
        end = q[H_DATA_END]
        if end + nbytes > q[H_SIZE]:
            self._grow(end + nbytes)
            q = self._view[0]
        q[H_DATA_END] = end + nbytes
        return int(end)

    def _grow(self, needed: int) -> None:
        q = self._view[0]
        size = page_round(max(2 * q[H_SIZE], needed, os.fstat(self._fd).st_size))
        os.ftruncate(self._fd, size)
        q[H_SIZE] = size
        q[H_GEN] += 1  # after the size: whoever sees the new generation can map the new size
        self._remap()

    def _move_table(self) -> None:
        """Copy the full table to one twice its size. Header lock held; takes every entry lock."""
        if self._cap * 2 > MAX_TABLE:
            raise RemoteProtocolError(f"a service holds at most {MAX_TABLE} variables", code=TOO_LARGE)
        fd = self._fd
        setlk(fd, SETLKW, ENTRIES_EX)
        try:
            count, new_cap = self._count, self._cap * 2
            new_at = self._alloc(new_cap * ENTRY_SIZE)
            q, mm = self._view[0], self._view[1]
            old_at = self._table_word * 8
            mm[new_at:new_at + count * ENTRY_SIZE] = mm[old_at:old_at + count * ENTRY_SIZE]
            q[H_TABLE] = new_at
            q[H_CAP] = new_cap
            q[H_GEN] += 1
            # Readers of the old table already fail on the new generation; seqs left odd for good are
            # a second line. Dying half way through is harmless: the header names the new table.
            for i in range(count):
                k = old_at // 8 + i * ENTRY_WORDS + E_SEQ
                s = q[k]
                q[k] = s + 1 + (s & 1)
            self._remap()
        finally:
            setlk(fd, SETLKW, ENTRIES_UN)


"""How a `ServiceFile` maps its file, indexes its variables and reads an entry consistently.

`FileView` is the part of `ServiceFile` that keeps its *view* -- one tuple (u64 view, mmap, read
slots, write slots, generation) swapped as a unit -- up to date. `_remap` maps the whole file
afresh and rebuilds the slots; `_refresh` catches up with other writers: a new generation (the
file grew or its table moved) means a remap, a bigger variable count means indexing the entries
published since (`_reindex`, which checks each name as it goes: a bad entry is a corrupt file).
Every map made is kept until `_drop_maps` at close: freeing one closes CPython's dup of the
descriptor, which with classic POSIX locks would drop the locks held at that moment.

The slow, consistent read of an entry (`_read_index`) is the seqlock retry loop of the module
docstring of `service_file.py`; after `RETRIES` failures it reads under a shared OS lock on the
entry, so no writer runs. Every method here needs the process lock.
"""

from __future__ import annotations

import mmap
import threading
from pathlib import Path

from commy.errors import LocalProtocolError
from commy.store.growth import View
from commy.store.layout import (
    E_CAPACITY,
    E_LENGTH,
    E_NAME_LEN,
    E_OFFSET,
    E_SEQ,
    E_STAMP,
    E_VERSION,
    E_WRITER,
    ENTRY_WORDS,
    H_CAP,
    H_COUNT,
    H_GEN,
    H_TABLE,
    HEADER_SH,
    HEADER_SIZE,
    HEADER_UN,
    NAME_BYTES,
    StoreError,
    check_header,
    entry_token,
)
from commy.store.locks import LOCK_EX, LOCK_SH, LOCK_UN, SETLKW, setlk
from commy.store.names import check_variable

__all__ = ["RETRIES", "FileView"]

RETRIES = 100


class FileView:
    """Mapping, indexing and consistent reads of `ServiceFile`; see the module docstring."""

    __slots__ = ("_cap", "_count", "_index", "_maps", "_names", "_table_word", "_view")
    _view: View
    _maps: list[mmap.mmap | memoryview]
    _names: list[str]
    _index: dict[str, int]
    _count: int
    _cap: int
    _table_word: int
    # Owned by ServiceFile (declared here for the type checker).
    path: Path
    _fd: int
    _plock: threading.Lock
    _closed: bool

    def _check_open(self) -> None:
        if self._closed:
            raise LocalProtocolError(f"service file {str(self.path)!r} is closed")

    def _corrupt(self, what: str) -> StoreError:
        return StoreError(f"{self.path}: corrupt service file: {what}")


    def _drop_maps(self) -> None:
        """Release every view, then close every map. Needs the process lock.

        Closing a map closes its dup of our descriptor, and closing descriptors (that one, or ours
        next) drops any classic POSIX lock this process holds on the file: safe only here, where
        the process lock says no ServiceFile of this file in this process holds one.
        """
        maps, self._maps = self._maps, []
        for m in maps:
            if isinstance(m, memoryview):
                try:
                    m.release()
                except BufferError:
                    pass
        for m in maps:
            if isinstance(m, mmap.mmap):
                try:
                    m.close()
                except BufferError:  # exported elsewhere still; the GC closes it later
                    pass

    def _remap(self) -> None:
        """Map the whole file afresh and rebuild the slots. Needs the process lock and a header lock."""
        try:
            mm = mmap.mmap(self._fd, 0)
        except (ValueError, OSError) as e:
            raise StoreError(f"{self.path}: not a commy service file (cannot map it: {e})") from None
        # Kept until close: freeing a map closes the dup of our descriptor that CPython's mmap
        # holds, and with classic POSIX locks that would drop every lock we hold right now.
        self._maps.append(mm)
        size = len(mm)
        check_header(mm[:HEADER_SIZE], size, self.path)
        if size % 8:
            raise StoreError(f"{self.path}: not a commy service file (size {size} is not a multiple of 8)")
        q = memoryview(mm).cast("Q")
        self._maps.append(q)
        self._table_word = q[H_TABLE] // 8
        self._cap = q[H_CAP]
        self._names, self._index, self._count = [], {}, 0
        self._view = (q, mm, {}, {}, q[H_GEN])
        self._reindex(q[H_COUNT])

    def _refresh(self, header_held: bool = False) -> None:
        """Catch up with other writers: remap on a new generation, index variables created since."""
        q, gen = self._view[0], self._view[4]
        count = q[H_COUNT]
        if q[H_GEN] != gen:  # read after count: a moved table bumps it before any new entry lands
            if header_held:
                self._remap()
                return
            fd = self._fd
            setlk(fd, SETLKW, HEADER_SH)
            try:
                self._remap()
            finally:
                setlk(fd, SETLKW, HEADER_UN)
        elif count != self._count:
            self._reindex(count)

    def _reindex(self, count: int) -> None:
        """Add slots for entries self._count..count-1 (published, so their names are final)."""
        if count > self._cap:
            raise self._corrupt(f"{count} variables in a table of {self._cap}")
        q, mm, rslots, wslots, _ = self._view
        for i in range(self._count, count):
            base = self._table_word + i * ENTRY_WORDS
            nlen = q[base + E_NAME_LEN]
            if not 0 < nlen <= NAME_BYTES:
                raise self._corrupt(f"entry {i} has a name of {nlen} bytes")
            try:
                name = mm[base * 8:base * 8 + nlen].decode("utf-8")
            except UnicodeDecodeError:
                raise self._corrupt(f"entry {i} has a name that is not UTF-8") from None
            if name in self._index:
                raise self._corrupt(f"variable {name!r} appears twice")
            self._names.append(name)
            self._index[name] = i
            rslots[name] = (base + E_SEQ, base + E_OFFSET, base + E_LENGTH)
            wslots[name] = (base + E_SEQ, base + E_OFFSET, base + E_CAPACITY, base + E_LENGTH, base + E_VERSION,
                            base + E_WRITER, base + E_STAMP, entry_token(LOCK_EX, i), entry_token(LOCK_UN, i))
        self._count = count

    # ---- internals: reading ---------------------------------------------------------------------

    def _read_slow(self, name: str) -> tuple[bytes, int, int, int] | None:
        if type(name) is not str:
            check_variable(name)
        with self._plock:
            self._check_open()
            self._refresh()
            i = self._index.get(name)
            if i is None:
                check_variable(name)  # a name that cannot exist is refused, not just absent
                return None
            return self._read_index(i)

    def _read_index(self, i: int) -> tuple[bytes, int, int, int]:
        """(value, version, writer, stamp) of entry i, consistent. Needs the process lock."""
        for _ in range(RETRIES):
            q, mm, _, _, gen = self._view
            base = self._table_word + i * ENTRY_WORDS
            s = q[base + E_SEQ]
            if not s & 1:
                o, n = q[base + E_OFFSET], q[base + E_LENGTH]
                got = (mm[o:o + n], q[base + E_VERSION], q[base + E_WRITER], q[base + E_STAMP])
                if q[base + E_SEQ] == s and q[H_GEN] == gen:
                    return got
            if q[H_GEN] != gen:
                self._refresh()
        return self._read_index_locked(i)

    def _read_index_locked(self, i: int) -> tuple[bytes, int, int, int]:
        """The bounded retries failed: read under a shared lock on the entry, so no writer runs."""
        fd = self._fd
        while True:
            self._refresh()
            setlk(fd, SETLKW, entry_token(LOCK_SH, i))
            try:
                q, mm, _, _, gen = self._view
                if q[H_GEN] != gen:
                    continue  # the table may have moved while we waited; remap first
                base = self._table_word + i * ENTRY_WORDS
                o, n = q[base + E_OFFSET], q[base + E_LENGTH]
                # seq may be odd only if a writer died mid-write; what it left is all there is.
                return (mm[o:o + n], q[base + E_VERSION], q[base + E_WRITER], q[base + E_STAMP])
            finally:
                setlk(fd, SETLKW, entry_token(LOCK_UN, i))

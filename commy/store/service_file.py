"""One memory-mapped service file: lock-free seqlock reads, per-variable locked writes, growth.

The layout is in `layout.py`. Each `ServiceFile` maps the whole file and keeps a *view*: one tuple
(u64 view, mmap, read slots, write slots, generation) swapped as a unit, so a lock-free reader in
another thread never pairs a new map with old slot indexes. The slot dicts map a variable name
straight to the u64 indexes of its fields, computed once per generation, so the hot paths do a
dict lookup and a few `memoryview` item accesses and nothing else.

Reading: load seq (odd means a write is in flight), copy the bytes, reload seq and the header's
generation; accept only if seq was even and neither changed. After `RETRIES` failures the reader
takes a shared OS lock on the variable and reads with no writer running. Writing: exclusive OS
lock on the variable, seq to odd, data and fields, seq to even, bump this writer's change counter,
unlock. Every u64 goes through the u64 view: one 8-byte store, never `struct.pack_into`, which
zeroes the field before filling it in and so lets a racing reader accept a torn value.

Creating a variable, moving a value that outgrew its capacity, growing the file and moving a full
table all happen under the exclusive header lock (taken before any entry lock, never after, so
locks are always ordered header then entry). Growing bumps the generation after the new size is
in place; every other mapping notices the new generation on its next operation, remaps and
rebuilds its slots (`file_view.py`). Moving the table also holds every entry lock (one byte-range call) so no write
is half done while entries are copied. All OS locking and closing happens under the process lock
shared by every ServiceFile of this file in this process (see `locks.py`), and every map made is
kept until `close`: freeing one closes CPython's dup of the descriptor, which with classic POSIX
locks would silently drop the locks held at that moment.

Replication's bookkeeping -- the version vector in the header (`clocks`, `set_clock`) and stamping
entries that local clients wrote (`set_stamp`) -- is in `stamps.py`, off the hot paths.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from commy.errors import BAD_REQUEST, TOO_LARGE, LocalProtocolError, RemoteProtocolError
from commy.store.file_view import RETRIES, FileView
from commy.store.growth import Growth, View
from commy.store.layout import (
    COUNTER_END,
    COUNTER_FIRST,
    COUNTER_STEP,
    E_VERSION,
    ENTRIES_SH,
    ENTRIES_UN,
    ENTRY_SIZE,
    ENTRY_WORDS,
    H_GEN,
    H_SIZE,
    HEADER_SH,
    HEADER_SIZE,
    HEADER_UN,
    MAX_TABLE,
    MAX_U64,
    MAX_WRITERS,
    MIN_ALLOC,
    StoreError,
    initial_header,
    page_round,
)
from commy.store.locks import SETLKW, process_lock, release_process_lock, setlk
from commy.store.stamps import Stamps

__all__ = ["DEFAULT_MAX_VALUE", "RETRIES", "Entry", "ServiceFile", "StoreError"]

DEFAULT_MAX_VALUE = 16 << 20
_BINARY = getattr(os, "O_BINARY", 0)
# What a closed file's view looks like: a tiny header whose generation (0) never matches -1.
_CLOSED_VIEW: View = (
    memoryview(bytes(64)).cast("Q"), b"", {}, {}, -1)


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    value: bytes
    version: int
    writer: int
    stamp: int


def _as_bytes(value: object) -> bytes:
    try:
        return memoryview(value).tobytes()  # type: ignore[arg-type]
    except TypeError:
        raise RemoteProtocolError(f"value must be bytes-like, not {type(value).__name__}", code=BAD_REQUEST) from None


def _publish(tmp: Path, path: Path) -> None:
    """Give the finished file at `tmp` the name `path`, failing if `path` exists."""
    if hasattr(os, "link"):
        os.link(tmp, path)
        os.unlink(tmp)
    else:  # pragma: no cover - platforms without hard links; rename refuses to overwrite there
        os.rename(tmp, path)


def _write_new_file(path: Path, chunks: list[bytes | memoryview], size: int) -> None:
    """Create `path` (mode 0o600) of `size` bytes starting with `chunks`, durably and atomically."""
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _BINARY, 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # the umask may only remove bits; make the mode exact
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        os.ftruncate(fd, size)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    try:
        _publish(tmp, path)
    except BaseException:
        if tmp.exists():
            os.unlink(tmp)
        raise


class ServiceFile(Growth, Stamps, FileView):
    """A mapped service file; see the module docstring. Use `create` or `open`, then `close`."""

    MAX_WRITERS = MAX_WRITERS
    # The view and the index are FileView's slots.
    __slots__ = ("__weakref__", "_closed", "_counter", "_fd", "_max_value", "_plock", "_stat", "_writer", "path")

    # ---- construction ---------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, table_capacity: int = 256, data_size: int = 64 * 1024,
               max_value: int = DEFAULT_MAX_VALUE) -> ServiceFile:
        """Create a new, empty service file at `path` (which must not exist); open it as writer 0."""
        path = Path(path)
        if type(table_capacity) is not int or not 1 <= table_capacity <= MAX_TABLE:
            raise LocalProtocolError(f"table_capacity must be an int in 1..{MAX_TABLE}, not {table_capacity!r}")
        if type(data_size) is not int or data_size < 0:
            raise LocalProtocolError(f"data_size must be a non-negative int, not {data_size!r}")
        if type(max_value) is not int or max_value < 0:
            raise LocalProtocolError(f"max_value must be a non-negative int, not {max_value!r}")
        table_end = HEADER_SIZE + table_capacity * ENTRY_SIZE
        size = page_round(table_end + max(data_size, MIN_ALLOC))
        _write_new_file(path, [initial_header(size, table_capacity)], size)
        return cls.open(path, writer=0, max_value=max_value)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, writer: int = 0,
             max_value: int = DEFAULT_MAX_VALUE) -> ServiceFile:
        """Map an existing service file; `writer` is this handle's change-counter slot (0 = server)."""
        if type(writer) is not int or not 0 <= writer < MAX_WRITERS:
            raise LocalProtocolError(f"writer slot must be an int in 0..{MAX_WRITERS - 1}, not {writer!r}")
        if type(max_value) is not int or max_value < 0:
            raise LocalProtocolError(f"max_value must be a non-negative int, not {max_value!r}")
        return cls(Path(path), writer, max_value)

    def __init__(self, path: Path, writer: int, max_value: int) -> None:
        self.path = path
        self._writer = writer
        self._counter = COUNTER_FIRST + writer * COUNTER_STEP
        self._max_value = max_value
        self._closed = True
        self._view = _CLOSED_VIEW
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._count = self._cap = self._table_word = 0
        self._maps: list[mmap.mmap | memoryview] = []
        fd = os.open(path, os.O_RDWR | _BINARY)
        self._fd = fd
        self._stat = os.fstat(fd)
        self._plock = process_lock(self._stat)
        try:
            with self._plock:
                setlk(fd, SETLKW, HEADER_SH)
                try:
                    self._remap()
                finally:
                    setlk(fd, SETLKW, HEADER_UN)
        except BaseException:
            with self._plock:
                self._drop_maps()
                os.close(fd)
            release_process_lock(self._stat)
            raise
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"gen {self._view[4]}, {self._count} variables"
        return f"<ServiceFile {str(self.path)!r} writer {self._writer} {state}>"

    def __enter__(self) -> ServiceFile:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ---- the hot paths --------------------------------------------------------------------------

    def read_value(self, name: str) -> bytes | None:
        """The current value of `name`, or None if there is no such variable. Never blocks a writer."""
        q, mm, slots, _, gen = self._view
        try:
            t = slots.get(name)
        except TypeError:  # unhashable: let the slow path refuse it by name
            t = None
        if t is not None:
            seq, off, ln = t
            s = q[seq]
            o = q[off]
            v: bytes = mm[o:o + q[ln]]
            # The generation is checked after seq: a grown file bumps it before a moved value lands.
            if q[seq] == s and not s & 1 and q[H_GEN] == gen:
                return v
        got = self._read_slow(name)
        return None if got is None else got[0]

    def write(self, name: str, value: bytes, *, stamp: int = 0) -> int:
        """Set `name` to `value` (creating it on first write); return its new version."""
        if type(value) is not bytes:
            value = _as_bytes(value)
        n = len(value)
        if n > self._max_value or type(stamp) is not int or not 0 <= stamp <= MAX_U64:
            self._refuse(n, stamp)
        plock = self._plock
        plock.acquire()  # not `with`: this is the hottest path there is, and acquire/release is half the cost
        try:
            q, mm, _, wslots, gen = self._view
            t = wslots.get(name) if type(name) is str else None
            if t is not None:
                seq, off, cap, ln, ver, wr, st, lock, unlock = t
                fd = self._fd
                setlk(fd, SETLKW, lock)
                try:
                    if q[H_GEN] == gen and n <= q[cap]:
                        s = q[seq]
                        s += 1 + (s & 1)  # odd; a crashed writer may have left it odd already
                        q[seq] = s
                        o = q[off]
                        try:
                            mm[o:o + n] = value
                        except IndexError:
                            q[seq] = s + 1
                            raise self._corrupt(f"variable {name!r} lies outside the file") from None
                        q[ln] = n
                        v: int = q[ver] + 1
                        q[ver] = v
                        q[wr] = self._writer
                        q[st] = stamp
                        q[seq] = s + 1
                        q[self._counter] += 1
                        return v
                finally:
                    setlk(fd, SETLKW, unlock)
            return self._write_slow(name, value, stamp)
        finally:
            plock.release()

    def change_mark(self) -> int:
        """A number that differs after any completed write by anyone (the sum of all writer counters)."""
        if self._closed:
            self._check_open()
        return sum(self._view[0][COUNTER_FIRST:COUNTER_END:COUNTER_STEP])

    # ---- the rest of the API --------------------------------------------------------------------

    @property
    def generation(self) -> int:
        self._check_open()
        gen: int = self._view[0][H_GEN]
        return gen

    @property
    def closed(self) -> bool:
        return self._closed

    def read(self, name: str) -> Entry | None:
        got = self._read_slow(name)
        if got is None:
            return None
        value, version, writer, stamp = got
        return Entry(name, value, version, writer, stamp)

    def names(self) -> list[str]:
        with self._plock:
            self._check_open()
            self._refresh()
            return list(self._names)

    def entries(self) -> list[Entry]:
        return self._scan(None)

    def changed_since(self, seen: dict[str, int]) -> list[Entry]:
        """Entries whose version differs from `seen[name]` (or are not in `seen`); record them in `seen`."""
        out = self._scan(seen)
        for e in out:
            seen[e.name] = e.version
        return out

    def copy_to(self, path: str | os.PathLike[str]) -> None:
        """Write a consistent copy (no write half done, none in between) to a new file at `path`."""
        with self._plock:
            self._check_open()
            fd = self._fd
            setlk(fd, SETLKW, HEADER_SH)
            try:
                setlk(fd, SETLKW, ENTRIES_SH)
                try:
                    self._refresh(header_held=True)
                    q, mm = self._view[0], self._view[1]
                    size = q[H_SIZE]
                    data = mm[:size]
                finally:
                    setlk(fd, SETLKW, ENTRIES_UN)
            finally:
                setlk(fd, SETLKW, HEADER_UN)
        _write_new_file(Path(path), [data], size)

    def flush(self) -> None:
        with self._plock:
            self._check_open()
            self._view[1].flush()

    def close(self) -> None:
        with self._plock:
            if self._closed:
                return
            self._closed = True
            self._view = _CLOSED_VIEW
            self._names, self._index = [], {}
            self._drop_maps()
            os.close(self._fd)
        release_process_lock(self._stat)

    # ---- internals -------------------------------------------------------------------------------

    def _refuse(self, n: int, stamp: object) -> None:
        if n > self._max_value:
            raise RemoteProtocolError(f"value of {n} bytes is over the limit of {self._max_value} bytes",
                                      code=TOO_LARGE)
        raise LocalProtocolError(f"stamp must be an int in 0..2**64-1, not {stamp!r}")

    def _scan(self, seen: dict[str, int] | None) -> list[Entry]:
        with self._plock:
            self._check_open()
            self._refresh()
            out = []
            for i, name in enumerate(self._names):
                if seen is not None:
                    base = self._table_word + i * ENTRY_WORDS
                    if seen.get(name) == self._view[0][base + E_VERSION]:
                        continue
                value, version, writer, stamp = self._read_index(i)
                out.append(Entry(name, value, version, writer, stamp))
        return out

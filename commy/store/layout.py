"""The binary layout of a service file (little-endian, every field an aligned u64).

    offset  size   header (HEADER_SIZE = 8192 bytes)
    0       8      magic b"COMMYSV1"
    8       8      layout version (1)
    16      8      file size in bytes (the file is never smaller; it only grows)
    24      8      generation: += 1 whenever the file grows or the table moves
    32      8      table offset
    40      8      table capacity (entries)
    48      8      variable count (entries 0..count-1 are in use; published last)
    56      8      data end: the bump allocator's next free byte
    64      8      entry size (128), 72: header size (8192), both checked on open
    80..2047       spare, zero
    2048    256x8  clocks: the service's version vector, the u64 at 2048 + 8*o holds the newest
                   stamp from origin node o (0..255) this file has without a gap; 0 = none. Each
                   only grows (`ServiceFile.set_clock`); a file from before clocks reads as empty
    4096    64x64  change counters: writer slot w owns the u64 at 4096 + 64*w (one cache line
                   each, so writers in different processes do not share a line)

    table entry (ENTRY_SIZE = 128 bytes), entry i at table offset + 128*i
    0       64     name, UTF-8, zero padded
    64      8      name length
    72      8      data offset        80  capacity         88  length
    96      8      version            104 seq (seqlock: odd while a write is in progress)
    112     8      writer slot        120 stamp

The data region follows the table; allocations are powers of two of at least 64 bytes taken from
`data end`, so every value and every table starts 64-byte aligned. Space is never reused while the
file lives: a value that outgrows its capacity moves to a new allocation and a table that fills up
moves to a new one twice its size, and the old bytes stay put, so a reader racing a move copies
stale bytes and then fails its seq check rather than reading someone else's data. When a table
moves, every old entry's seq is left odd for good, which sends late readers to their slow path,
where they see the new generation and remap.

Locks (see `locks.py`) live in a lock space past any real file size: byte LOCK_BASE guards the
header (creating variables, allocating, growing, moving the table) and byte LOCK_BASE + 1 + i
guards entry i. An entry keeps its index when the table moves, so its lock never moves with it.
"""

from __future__ import annotations

import os
from pathlib import Path

from commy.errors import CommyError
from commy.store.locks import LOCK_EX, LOCK_SH, LOCK_UN, Token, process_lock_for, token

MAGIC = b"COMMYSV1"
LAYOUT_VERSION = 1
HEADER_SIZE = 8192
ENTRY_SIZE = 128
NAME_BYTES = 64
MAX_WRITERS = 64
MIN_ALLOC = 64
PAGE = 4096
COUNTERS_AT = 4096
COUNTER_STRIDE = 64
MAX_TABLE = 1 << 24
MAX_U64 = (1 << 64) - 1

# Header fields as indexes into the file viewed as u64s (`memoryview(mm).cast("Q")`).
H_VERSION, H_SIZE, H_GEN, H_TABLE, H_CAP, H_COUNT, H_DATA_END, H_ENTRY_SIZE, H_HEADER_SIZE = range(1, 10)
COUNTER_FIRST = COUNTERS_AT // 8
COUNTER_STEP = COUNTER_STRIDE // 8
COUNTER_END = COUNTER_FIRST + MAX_WRITERS * COUNTER_STEP
# The version vector: one u64 per origin node index (a stamp's low byte), ending where the counters start.
CLOCKS_AT = 2048
MAX_ORIGIN = 255
CLOCK_FIRST = CLOCKS_AT // 8
CLOCK_END = CLOCK_FIRST + MAX_ORIGIN + 1

# Entry fields as u64 offsets from the entry's first u64.
E_NAME_LEN, E_OFFSET, E_CAPACITY, E_LENGTH, E_VERSION, E_SEQ, E_WRITER, E_STAMP = range(8, 16)
ENTRY_WORDS = ENTRY_SIZE // 8

LOCK_BASE = 1 << 40
HEADER_LOCK = LOCK_BASE


def entry_lock(index: int) -> int:
    """The lock-space byte of entry `index`."""
    return LOCK_BASE + 1 + index


ENTRIES_LOCK = entry_lock(0)

# Lock requests, built once (see locks.py); length 0 covers every entry, present and future.
HEADER_SH, HEADER_EX, HEADER_UN = (token(m, HEADER_LOCK, 1) for m in (LOCK_SH, LOCK_EX, LOCK_UN))
ENTRIES_SH, ENTRIES_EX, ENTRIES_UN = (token(m, ENTRIES_LOCK, 0) for m in (LOCK_SH, LOCK_EX, LOCK_UN))


def entry_token(mode: int, index: int) -> Token:
    return token(mode, entry_lock(index), 1)


class StoreError(CommyError):
    """A service file or index is corrupt, foreign or from another layout version."""


def alloc_size(n: int) -> int:
    """Capacity for a value of n bytes: a power of two, at least MIN_ALLOC."""
    return max(MIN_ALLOC, 1 << (n - 1).bit_length()) if n > 0 else MIN_ALLOC


def page_round(n: int) -> int:
    return -(-n // PAGE) * PAGE


def initial_header(size: int, table_capacity: int) -> bytes:
    """The first HEADER_SIZE bytes of a new file of `size` bytes."""
    header = bytearray(HEADER_SIZE)
    words = memoryview(header).cast("Q")
    header[:8] = MAGIC
    words[H_VERSION] = LAYOUT_VERSION
    words[H_SIZE] = size
    words[H_GEN] = 1
    words[H_TABLE] = HEADER_SIZE
    words[H_CAP] = table_capacity
    words[H_COUNT] = 0
    words[H_DATA_END] = HEADER_SIZE + table_capacity * ENTRY_SIZE
    words[H_ENTRY_SIZE] = ENTRY_SIZE
    words[H_HEADER_SIZE] = HEADER_SIZE
    words.release()
    return bytes(header)


def check_header(header: bytes | memoryview, actual_size: int, path: Path) -> None:
    """Raise StoreError unless `header` (at least HEADER_SIZE bytes) describes a sane file."""
    if actual_size < HEADER_SIZE or len(header) < HEADER_SIZE:
        raise StoreError(f"{path}: not a commy service file ({actual_size} bytes, too short)")
    if bytes(header[:8]) != MAGIC:
        raise StoreError(f"{path}: not a commy service file (bad magic {bytes(header[:8])!r})")
    words = memoryview(bytes(header[:HEADER_SIZE])).cast("Q")
    try:
        version, size, table, cap, count, data_end = (words[H_VERSION], words[H_SIZE], words[H_TABLE],
                                                      words[H_CAP], words[H_COUNT], words[H_DATA_END])
        if version != LAYOUT_VERSION:
            raise StoreError(f"{path}: layout version {version}, this commy reads {LAYOUT_VERSION}")
        if words[H_ENTRY_SIZE] != ENTRY_SIZE or words[H_HEADER_SIZE] != HEADER_SIZE:
            raise StoreError(f"{path}: corrupt header (entry or header size)")
        problems = [
            (size > actual_size, f"records size {size} but the file has {actual_size} bytes"),
            (size < HEADER_SIZE, f"records size {size}"),
            (not 0 < cap <= MAX_TABLE, f"table capacity {cap}"),
            (count > cap, f"{count} variables in a table of {cap}"),
            (table < HEADER_SIZE or table % MIN_ALLOC or table + cap * ENTRY_SIZE > size,
             f"table at {table} (capacity {cap}) outside the file"),
            (not table + cap * ENTRY_SIZE <= data_end <= size, f"data end {data_end}"),
        ]
        for bad, what in problems:
            if bad:
                raise StoreError(f"{path}: corrupt header: {what}")
    finally:
        words.release()


def read_change_mark(path: Path) -> tuple[int, int, int]:
    """(change mark, size, mtime_ns) of a service file, read without mapping or locking it."""
    # Closing a descriptor drops every POSIX lock this process holds on the file, so do it
    # under the process lock that any ServiceFile on the same file holds while it has locks.
    with process_lock_for(path):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            st = os.fstat(fd)
            header = os.read(fd, HEADER_SIZE)
        finally:
            os.close(fd)
    check_header(header, st.st_size, path)
    words = memoryview(header).cast("Q")
    mark = sum(words[COUNTER_FIRST:COUNTER_END:COUNTER_STEP])
    words.release()
    return mark, st.st_size, st.st_mtime_ns

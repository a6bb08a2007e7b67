"""Chunked snapshot transfer: both ends of a FileTransferRequest / FileTransferChunk exchange.

When a sync answer would be too big for one message, the requester fetches a snapshot instead. The
sender encodes the whole service (a `SyncServiceResponse` with every entry and its version vector)
once, keeps the bytes under the transfer id for a while (`SnapshotCache`, so a resume sends the
same bytes), and sends them in chunks, each with the SHA-256 of its data and of the whole.

The receiver (`IncomingTransfer`) keeps chunks strictly in order. A chunk it already has is
ignored; one whose data does not match its hash (or whose totals disagree with the first chunk's)
is discarded and the rest asked for again from the first missing index; one that skips ahead
(an earlier chunk was lost) is discarded too, and the resend is asked for once -- the chunks still
in flight behind it would otherwise each ask again. When the last chunk is in, the whole is checked
against its hash: a mismatch throws everything away and starts over from chunk 0, so a bad
checksum is retried and never applied. The actor drives the timers and counts the retries.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from commy.core.actor import TimerId
from commy.messages import FileTransferChunk

MAX_CHUNK = 8 << 20  # a requested chunk size above this is refused (frames are 16 MiB at most)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def chunk_count(size: int, chunk_size: int) -> int:
    return max(1, -(-size // chunk_size))  # an empty snapshot still goes as one (empty) chunk


def make_chunks(transfer_id: str, data: bytes, chunk_size: int, from_chunk: int) -> Iterator[FileTransferChunk]:
    """The chunks of `data` from index `from_chunk` to the end."""
    total = chunk_count(len(data), chunk_size)
    whole = sha256(data)
    view = memoryview(data)
    for i in range(from_chunk, total):
        part = bytes(view[i * chunk_size:(i + 1) * chunk_size])
        yield FileTransferChunk(transfer_id, i, total, part, sha256(part), whole)


class SnapshotCache:
    """Encoded snapshots by transfer id, each kept `ttl` seconds after it was last asked for."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._items: dict[str, tuple[bytes, float]] = {}

    def get(self, transfer_id: str, now: float) -> bytes | None:
        item = self._items.get(transfer_id)
        if item is None or item[1] <= now:
            return None
        self._items[transfer_id] = (item[0], now + self.ttl)
        return item[0]

    def put(self, transfer_id: str, data: bytes, now: float) -> None:
        self._items[transfer_id] = (data, now + self.ttl)

    def prune(self, now: float) -> None:
        for tid in [t for t, (_, until) in self._items.items() if until <= now]:
            del self._items[tid]

    def __len__(self) -> int:
        return len(self._items)


class Step(enum.Enum):
    """What a received chunk means for the transfer."""

    IGNORE = "ignore"  # a chunk we have, or one behind a resend already asked for
    PROGRESS = "progress"  # the next chunk, good
    BAD = "bad"  # its data does not match its hash (or its totals are inconsistent): ask again
    RESEND = "resend"  # it skipped ahead: an earlier chunk was lost; ask from the first missing
    CORRUPT = "corrupt"  # all chunks in, the whole does not match: start again from 0
    COMPLETE = "complete"  # all chunks in and the whole matches: `data` is the snapshot


@dataclass
class IncomingTransfer:
    """The receiving end of one snapshot transfer."""

    transfer_id: str
    peer: str
    tenant: str
    service: str
    chunks: list[bytes] = field(default_factory=list)
    total: int | None = None
    whole: bytes | None = None
    asked_from: int = -1  # the index the last resend started at (-1: none yet)
    retries: int = 0  # requests since the last progress
    timer: TimerId | None = None

    @property
    def first_missing(self) -> int:
        return len(self.chunks)

    def accept(self, chunk: FileTransferChunk) -> Step:
        nxt = len(self.chunks)
        if chunk.index < nxt or (chunk.index > nxt and self.asked_from == nxt):
            return Step.IGNORE  # had it; or it follows a lost chunk whose resend is already asked for
        consistent = (chunk.total >= 1 and chunk.index < chunk.total
                      and (self.total is None or (chunk.total == self.total and chunk.whole_sha256 == self.whole)))
        if not consistent or sha256(chunk.data) != chunk.sha256:
            return Step.BAD
        if chunk.index > nxt:
            return Step.RESEND
        self.total, self.whole = chunk.total, chunk.whole_sha256
        self.chunks.append(chunk.data)
        if len(self.chunks) < chunk.total:
            return Step.PROGRESS
        return Step.COMPLETE if sha256(self.data) == self.whole else Step.CORRUPT

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    def ask_from(self) -> int:
        """The index to request from now (the first missing chunk), remembered."""
        self.asked_from = len(self.chunks)
        return self.asked_from

    def restart(self) -> None:
        """Forget every chunk (the whole did not match): the next request starts at 0."""
        self.chunks.clear()
        self.total = self.whole = None

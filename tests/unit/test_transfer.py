"""Chunked snapshot transfer: the receiving state machine alone, then two replicators end to end
with chunks corrupted, dropped or forged on the way."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from commy.core.transfer import IncomingTransfer, SnapshotCache, Step, chunk_count, make_chunks, sha256
from commy.messages import FileTransferChunk, FileTransferRequest, Message
from tests.helpers.fake_context import Sent
from tests.helpers.replicas import Mesh, S, T, stamp

DATA = bytes(range(256)) * 10  # 2,560 bytes: 3 chunks of 1,000


def chunks(data: bytes = DATA) -> list[FileTransferChunk]:
    return list(make_chunks("t1", data, 1000, 0))


def incoming() -> IncomingTransfer:
    return IncomingTransfer("t1", "n2", T, S)


def test_chunks_cover_the_data_and_resume_anywhere() -> None:
    cs = chunks()
    assert [c.index for c in cs] == [0, 1, 2] and {c.total for c in cs} == {3}
    assert b"".join(c.data for c in cs) == DATA and all(c.whole_sha256 == sha256(DATA) for c in cs)
    assert [c.index for c in make_chunks("t1", DATA, 1000, 2)] == [2]
    assert chunk_count(0, 1000) == 1 and len(list(make_chunks("t1", b"", 1000, 0))) == 1


def test_chunks_in_order_complete_the_transfer() -> None:
    tr = incoming()
    assert [tr.accept(c) for c in chunks()] == [Step.PROGRESS, Step.PROGRESS, Step.COMPLETE]
    assert tr.data == DATA


def test_a_duplicate_is_ignored_and_a_bad_checksum_refused() -> None:
    tr = incoming()
    c0, c1, _ = chunks()
    assert tr.accept(c0) is Step.PROGRESS and tr.accept(c0) is Step.IGNORE
    assert tr.accept(dataclasses.replace(c1, data=b"x" + c1.data[1:])) is Step.BAD
    assert tr.accept(dataclasses.replace(c1, total=4)) is Step.BAD and tr.first_missing == 1


def test_a_skip_asks_for_a_resend_once() -> None:
    tr = incoming()
    c0, c1, c2 = chunks(DATA + DATA)[:3]
    tr.accept(c0)
    assert tr.accept(c2) is Step.RESEND and tr.ask_from() == 1
    assert tr.accept(dataclasses.replace(c2, index=3)) is Step.IGNORE  # behind the resend asked for
    assert tr.accept(c1) is Step.PROGRESS


def test_a_whole_that_does_not_match_means_starting_over() -> None:
    tr = incoming()
    forged = [dataclasses.replace(c, whole_sha256=sha256(b"other")) for c in chunks()]
    assert [tr.accept(c) for c in forged][-1] is Step.CORRUPT
    tr.restart()
    assert tr.first_missing == 0 and tr.total is None


def test_the_cache_keeps_a_snapshot_while_it_is_asked_for() -> None:
    cache = SnapshotCache(ttl=30.0)
    cache.put("t1", b"snap", now=0.0)
    assert cache.get("t1", 20.0) == b"snap" and cache.get("t1", 45.0) == b"snap"  # each get extends it
    assert cache.get("t1", 80.0) is None
    cache.prune(80.0)
    assert len(cache) == 0


# ---- end to end: n2 holds a service too big for one sync answer, n1 fetches it


def big_mesh() -> Mesh:
    mesh = Mesh(2, kw={"max_sync_bytes": 100, "chunk_size": 1000, "transfer_timeout": 1.0, "transfer_retries": 3})
    h = mesh.stores["n2"].open(T, S, create=True)
    for i in range(5):
        h.write(f"v{i}", bytes([i]) * 700, stamp=stamp(i + 1, 2))
    h.set_clock(2, stamp(5, 2))
    mesh.ctxs["n2"].advance(1000)  # n2's digest
    return mesh


def requests(mesh: Mesh) -> list[int]:
    return [s.msg.from_chunk for _, s in mesh.carried if isinstance(s.msg, FileTransferRequest)]


def tamper_once(index: int, change: dict[str, Any]) -> Callable[[str, Sent], Message | None]:
    """Change (or, with no change, drop) chunk `index` the first time it goes by."""
    done: list[int] = []

    def tamper(node: str, s: Sent) -> Message | None:
        msg = s.msg
        if isinstance(msg, FileTransferChunk) and msg.index == index and not done:
            done.append(1)
            return dataclasses.replace(msg, **change) if change else None
        return msg
    return tamper


def test_a_big_service_arrives_as_a_snapshot() -> None:
    mesh = big_mesh()
    mesh.pump()
    assert mesh.view("n1") == mesh.view("n2") and len(mesh.view("n1")[0]) == 5
    assert mesh.reps["n1"].stats["transfers"] == 1 and requests(mesh) == [0]


def test_a_corrupt_chunk_is_asked_again_and_never_applied() -> None:
    mesh = big_mesh()
    mesh.pump(tamper_once(1, {"data": b"garbage"}))
    assert mesh.reps["n1"].stats["bad_chunks"] == 1 and requests(mesh) == [0, 1]
    assert mesh.view("n1") == mesh.view("n2")


def test_a_chunk_that_is_always_corrupt_is_never_applied() -> None:
    mesh = big_mesh()

    def always(node: str, s: Sent) -> Message | None:
        msg = s.msg
        return dataclasses.replace(msg, data=b"bad") if isinstance(msg, FileTransferChunk) and msg.index == 1 else msg

    mesh.pump(always)
    rep = mesh.reps["n1"]
    assert rep.stats["bad_chunks"] == 4 and requests(mesh) == [0, 1, 1, 1]  # three retries, then it gives up
    assert not rep.incoming and not mesh.stores["n1"].exists(T, S)


def test_a_dropped_chunk_is_resumed_from_the_first_missing_one() -> None:
    mesh = big_mesh()
    mesh.pump(tamper_once(1, {}))
    assert requests(mesh) == [0, 1] and mesh.view("n1") == mesh.view("n2")


def test_a_lost_last_chunk_is_resumed_after_the_timeout() -> None:
    mesh = big_mesh()
    last: list[int] = []

    def drop_last(node: str, s: Sent) -> Message | None:
        msg = s.msg
        if isinstance(msg, FileTransferChunk) and msg.index == msg.total - 1 and not last:
            last.append(msg.index)
            return None
        return msg

    mesh.pump(drop_last)
    assert last and not mesh.stores["n1"].exists(T, S)
    mesh.advance(1.0)
    assert requests(mesh) == [0, last[0]] and mesh.view("n1") == mesh.view("n2")


def test_a_whole_mismatch_starts_again_from_zero() -> None:
    mesh = big_mesh()
    forged = b"\0" * 1000
    mesh.pump(tamper_once(0, {"data": forged, "sha256": sha256(forged)}))  # each chunk checks, the whole does not
    assert requests(mesh) == [0, 0] and mesh.reps["n1"].stats["bad_chunks"] == 1
    assert mesh.view("n1") == mesh.view("n2")

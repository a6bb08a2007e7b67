"""Properties: replicas converge (values and version vectors) under every conflict rule.

Three origins each make a chain of writes to a few variables. Two replicas receive every write in
any order, some more than once; or one receives all of them and the other only some, then pulls
the rest with one sync. Either way both end with the same entries and the same clocks.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from commy.core.replica_state import clocks_to
from commy.core.replication import REPLICATOR, Replicator
from commy.messages import Address, Replicate, SyncServiceRequest, SyncServiceResponse, WriteRecord
from tests.helpers import sweep_size
from tests.helpers.fake_context import deliver
from tests.helpers.replicas import S, T, rec, solo, stamp


def union(a: bytes, b: bytes) -> bytes:
    return bytes(sorted(set(a) | set(b)))


RULES: dict[str, dict[str, Any]] = {
    "lww": {},
    "priority": {"conflict": "priority", "priorities": {1: 5, 3: 2}},
    "merge": {"conflict": "merge", "merge": union},
}

raw_writes = st.lists(st.tuples(st.integers(1, 3), st.sampled_from("abc"), st.binary(max_size=3), st.integers(0, 20)),
                      min_size=1, max_size=14)


def chains(raw: list[tuple[int, str, bytes, int]]) -> list[WriteRecord]:
    """Each origin's writes, stamped in increasing order and chained by `prev`."""
    out: list[WriteRecord] = []
    for origin in (1, 2, 3):
        prev = 0
        mine = sorted((ms, i) for i, (o, *_rest, ms) in enumerate(raw) if o == origin)
        for logical, (ms, i) in enumerate(mine):
            _, name, value, _ = raw[i]
            s = stamp(ms, origin, logical)
            out.append(rec(name, value, s, prev))
            prev = s
    return out


def replica(rule: str, node: str, index: int) -> Replicator:
    return solo(node, index, peers=(), **RULES[rule])[0]


def feed(rep: Replicator, writes: list[WriteRecord]) -> None:
    for w in writes:
        deliver(rep, Replicate(T, S, (w,), ()), Address(f"o{w.stamp & 0xFF}", REPLICATOR))


def view(rep: Replicator) -> tuple[dict[str, tuple[bytes, int]], dict[int, int]]:
    if not rep.store.exists(T, S):
        return {}, {}
    h = rep.store.open(T, S)
    return {e.name: (e.value, e.stamp) for e in h.entries()}, h.clocks()


@settings(max_examples=sweep_size(60, 500), deadline=None)
@given(rule=st.sampled_from(sorted(RULES)), raw=raw_writes, data=st.data())
def test_any_order_with_duplicates_converges(rule: str, raw: list[tuple[int, str, bytes, int]],
                                             data: st.DataObject) -> None:
    writes = chains(raw)
    views = []
    for node, index in (("r1", 10), ("r2", 11)):
        extra = data.draw(st.lists(st.sampled_from(writes), max_size=5))
        order = data.draw(st.permutations(writes + extra))
        rep = replica(rule, node, index)
        feed(rep, order)
        views.append(view(rep))
    assert views[0] == views[1]
    newest: dict[int, int] = {}
    for w in writes:
        newest[w.stamp & 0xFF] = max(newest.get(w.stamp & 0xFF, 0), w.stamp)
    assert views[0][1] == newest


@settings(max_examples=sweep_size(60, 500), deadline=None)
@given(rule=st.sampled_from(sorted(RULES)), raw=raw_writes, data=st.data())
def test_a_replica_with_some_writes_catches_up_with_one_sync(rule: str, raw: list[tuple[int, str, bytes, int]],
                                                             data: st.DataObject) -> None:
    writes = chains(raw)
    full, partial = replica(rule, "r1", 10), replica(rule, "r2", 11)
    feed(full, writes)
    feed(partial, data.draw(st.permutations(data.draw(st.lists(st.sampled_from(writes))))))
    theirs = view(partial)[1]
    full.ctx.sent.clear()  # type: ignore[attr-defined]
    deliver(full, SyncServiceRequest(T, S, clocks_to(theirs)), Address("r2", REPLICATOR), msg_id=5)
    [answer] = full.ctx.sent  # type: ignore[attr-defined]
    assert isinstance(answer.msg, SyncServiceResponse) and not answer.msg.transfer
    deliver(partial, answer.msg, Address("r1", REPLICATOR))
    assert view(partial) == view(full)

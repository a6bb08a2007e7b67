"""Rendezvous placement: deterministic, order-free, clipped, minimal movement, even spread."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commy.core.placement import rendezvous, replicas, score
from commy.errors import LocalProtocolError

NODES = st.lists(st.text("abcdefgh123", min_size=1, max_size=6), min_size=1, max_size=8, unique=True)
NAMES = st.text("abcxyz-_.0", min_size=1, max_size=10)
FIVE = ["n1", "n2", "n3", "n4", "n5"]


def test_score_is_blake2b_of_the_three_names() -> None:
    digest = hashlib.blake2b(b"t\0s\0n1", digest_size=8).digest()
    assert score("t", "s", "n1") == int.from_bytes(digest, "big")
    assert score("t", "s", "n1") != score("t", "s\0n", "1")  # NUL separates: no shifting names across


@given(NAMES, NAMES, NODES, st.integers(0, 10), st.randoms(use_true_random=False))
def test_deterministic_order_free_and_clipped(tenant: str, service: str, nodes: list[str], k: int,
                                             rnd: object) -> None:
    got = rendezvous(tenant, service, nodes, k)
    shuffled = list(nodes)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert rendezvous(tenant, service, shuffled + shuffled[:2], k) == got  # duplicates count once
    assert rendezvous(tenant, service, iter(nodes), k) == got  # any iterable
    assert len(got) == min(k, len(nodes)) and len(set(got)) == len(got) and set(got) <= set(nodes)
    scores = [score(tenant, service, n) for n in got]
    assert scores == sorted(scores, reverse=True)  # best first
    # The k best are a prefix of the k+1 best: growing the replication factor only adds nodes.
    assert rendezvous(tenant, service, nodes, k + 1)[:k] == got


@given(NAMES, NAMES, NODES, st.integers(1, 4), st.data())
def test_a_member_leaving_moves_only_what_it_held(tenant: str, service: str, nodes: list[str], k: int,
                                                  data: st.DataObject) -> None:
    gone = data.draw(st.sampled_from(nodes))
    before = rendezvous(tenant, service, nodes, k)
    after = rendezvous(tenant, service, [n for n in nodes if n != gone], k)
    if gone in before:
        assert set(before) - {gone} <= set(after)  # the survivors keep their places
    else:
        assert after == before


def test_a_member_leaving_moves_only_its_services_over_a_sample() -> None:
    services = [f"svc-{i}" for i in range(1000)]
    before = {s: rendezvous("t", s, FIVE, 2) for s in services}
    after = {s: rendezvous("t", s, FIVE[:-1], 2) for s in services}
    moved = [s for s in services if set(before[s]) != set(after[s])]
    assert moved and all("n5" in before[s] for s in moved)
    assert all(len(set(before[s]) & set(after[s])) == 1 for s in moved)  # one copy stays put


@pytest.mark.parametrize("k", [1, 2])
def test_spreads_evenly_over_five_nodes(k: int) -> None:
    counts = Counter(n for i in range(1000) for n in rendezvous("tenant", f"svc-{i}", FIVE, k))
    share = 1000 * k / len(FIVE)
    assert set(counts) == set(FIVE)
    assert all(abs(c - share) <= 0.25 * share for c in counts.values()), counts


def test_ties_go_to_the_smaller_node_id(monkeypatch: pytest.MonkeyPatch) -> None:
    import commy.core.placement as placement

    monkeypatch.setattr(placement, "score", lambda tenant, service, node: 42)
    assert rendezvous("t", "s", ["c", "a", "b"], 2) == ["a", "b"]


def test_edge_cases_and_bad_k() -> None:
    assert rendezvous("t", "s", [], 3) == []
    assert rendezvous("t", "s", FIVE, 0) == []
    for k in (-1, 1.5, "2", None):
        with pytest.raises(LocalProtocolError):
            rendezvous("t", "s", FIVE, k)  # type: ignore[arg-type]


@given(NAMES, NAMES, NODES, st.integers(0, 4), st.lists(st.text("xyz9", min_size=1, max_size=3), max_size=4))
def test_replicas_are_the_choice_plus_client_holders_sorted(tenant: str, service: str, live: list[str], rf: int,
                                                            clients: list[str]) -> None:
    got = replicas(tenant, service, live, rf, clients)
    assert got == sorted(set(rendezvous(tenant, service, live, rf)) | set(clients))
    assert replicas(tenant, service, reversed(live), rf, reversed(clients)) == got


def test_replicas_defaults_and_overlap() -> None:
    chosen = rendezvous("t", "s", FIVE, 2)
    assert replicas("t", "s", FIVE, 2) == sorted(chosen)
    assert replicas("t", "s", FIVE, 2, [chosen[0], "elsewhere"]) == sorted({*chosen, "elsewhere"})

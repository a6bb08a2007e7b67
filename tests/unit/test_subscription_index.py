"""The hub's subscription index: fan-out lookups and the per-connection views status and session sync read."""

from __future__ import annotations

from commy.core.subscriptions import ALL, SubscriptionIndex


def index() -> SubscriptionIndex:
    subs = SubscriptionIndex()
    subs.add("c1", "acme", "orders", ("a", "b"))
    subs.add("c1", "acme", "stock", ())
    subs.add("c2", "acme", "orders", ("b",))
    subs.add("c2", "beta", "orders", ())
    return subs


def test_subscribers_of_one_change_in_subscription_order() -> None:
    subs = index()
    assert subs.subscribers("acme", "orders", "b") == ["c1", "c2"]
    assert subs.subscribers("acme", "orders", "a") == ["c1"]
    assert subs.subscribers("acme", "stock", "anything") == ["c1"]
    assert subs.subscribers("beta", "stock", "x") == []


def test_per_connection_views_agree_with_names_of() -> None:
    subs = index()
    assert subs.names_by_conn() == {c: subs.names_of(c) for c in ("c1", "c2")} == {"c1": 3, "c2": 2}
    assert subs.of_conn("c1") == [("acme", "orders", frozenset({"a", "b"})), ("acme", "stock", ALL)]
    subs.drop_conn("c1", tenant="acme")
    assert subs.of_conn("c1") == [] and subs.names_by_conn() == {"c2": 2}

"""Who is subscribed to what: an index from (tenant, service) to connections and their names.

Per service, each subscribed connection has either a set of variable names or `ALL` (the whole
service, variables created later included). A change to one variable asks `subscribers(tenant,
service, name)` once and gets the connections to notify in subscription order, so fan-out is one
dict walk. Connections and tenants can be dropped wholesale when a client leaves or loses access.
"""

from __future__ import annotations

ALL: frozenset[str] = frozenset()
"""Marks a whole-service subscription (an empty name list on the wire)."""

Key = tuple[str, str]


class SubscriptionIndex:
    def __init__(self) -> None:
        # (tenant, service) -> conn_id -> names (or None for the whole service)
        self._by_service: dict[Key, dict[str, set[str] | None]] = {}

    def add(self, conn_id: str, tenant: str, service: str, names: tuple[str, ...]) -> None:
        subs = self._by_service.setdefault((tenant, service), {})
        if not names:
            subs[conn_id] = None
            return
        current = subs.get(conn_id, set())
        if current is not None:  # a whole-service subscription already covers any names
            current.update(names)
            subs[conn_id] = current

    def remove(self, conn_id: str, tenant: str, service: str, names: tuple[str, ...]) -> None:
        subs = self._by_service.get((tenant, service))
        if subs is None or conn_id not in subs:
            return
        current = subs[conn_id]
        if not names or current is None:
            # Dropping names from a whole-service subscription would need an exclusion list;
            # the protocol keeps it simple: unsubscribing names from it ends it.
            del subs[conn_id]
        else:
            current.difference_update(names)
            if not current:
                del subs[conn_id]
        if not subs:
            del self._by_service[(tenant, service)]

    def subscribers(self, tenant: str, service: str, name: str) -> list[str]:
        subs = self._by_service.get((tenant, service))
        if not subs:
            return []
        return [conn for conn, names in subs.items() if names is None or name in names]

    def names_of(self, conn_id: str) -> int:
        """How many names `conn_id` is subscribed to (a whole service counts as one)."""
        return sum(1 if (names := subs[conn_id]) is None else len(names)
                   for subs in self._by_service.values() if conn_id in subs)

    def names_by_conn(self) -> dict[str, int]:
        """`names_of` for every subscribed connection, in one walk of the index."""
        counts: dict[str, int] = {}
        for subs in self._by_service.values():
            for conn_id, names in subs.items():
                counts[conn_id] = counts.get(conn_id, 0) + (1 if names is None else len(names))
        return counts

    def of_conn(self, conn_id: str) -> list[tuple[str, str, frozenset[str]]]:
        """`conn_id`'s subscriptions as (tenant, service, names), sorted; `ALL` for a whole service."""
        return sorted((t, s, ALL if (names := subs[conn_id]) is None else frozenset(names))
                      for (t, s), subs in self._by_service.items() if conn_id in subs)

    def is_subscribed(self, conn_id: str, tenant: str, service: str) -> bool:
        return conn_id in self._by_service.get((tenant, service), {})

    def drop_conn(self, conn_id: str, tenant: str | None = None) -> None:
        """Forget `conn_id`'s subscriptions (on one tenant, or everywhere)."""
        for key in [k for k, subs in self._by_service.items() if conn_id in subs and tenant in (None, k[0])]:
            self.remove(conn_id, key[0], key[1], ())

    def drop_service(self, tenant: str, service: str) -> None:
        self._by_service.pop((tenant, service), None)

    def drop_tenant(self, tenant: str) -> None:
        for key in [k for k in self._by_service if k[0] == tenant]:
            del self._by_service[key]

    def count(self) -> int:
        return sum(len(subs) for subs in self._by_service.values())

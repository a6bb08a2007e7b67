"""What a node's store holds, as the endpoints see it: read from disk at most once a second.

`/status` (every service's holders) and `/metrics` (`commy_services_held`) both need the set of
(tenant, service) this node holds. The store answers that from disk -- a directory scan of its
tenants, and a read of each tenant index it has not loaded yet (a tenant without one is looked for
again at every call) -- under its lock. `HeldServices.get()` asks the store at most once per `ttl`
seconds and serves the set it kept in between, so scrapes and open status pages cost no disk reads.

A tenant whose index cannot be read (a corrupt `index.json`, a permission problem) is left out
rather than failing the whole answer: `unreadable` names those of the last read (their count is the
`commy_tenant_indexes_unreadable` metric), and each is logged once (`tenant_index_unreadable`,
warning) until it reads fine again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from commy.errors import CommyError

if TYPE_CHECKING:
    from commy.runtime.server import RunningServer

__all__ = ["TTL", "HeldServices"]

TTL = 1.0  # seconds a read of the store is served for
Key = tuple[str, str]


class HeldServices:
    """The (tenant, service) pairs `srv`'s store holds (see the module docstring)."""

    def __init__(self, srv: RunningServer, ttl: float = TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.srv = srv
        self.ttl = ttl
        self.clock = clock
        self.unreadable: dict[str, str] = {}  # tenant -> why, as of the last read
        self.reads = 0  # reads of the store so far
        self._held: frozenset[Key] = frozenset()
        self._read_at: float | None = None
        self._logged: set[str] = set()  # tenants whose failure was logged and has not cleared since

    def get(self) -> frozenset[Key]:
        now = self.clock()
        if self._read_at is None or now - self._read_at >= self.ttl:
            self._held = self._read()
            self._read_at = now
        return self._held

    def _read(self) -> frozenset[Key]:
        self.reads += 1
        store = self.srv.store
        held: set[Key] = set()
        unreadable: dict[str, str] = {}
        try:
            tenants = store.tenants()
        except (CommyError, OSError) as exc:  # the tenants folder itself: nothing held can be told
            tenants, unreadable["*"] = [], repr(exc)[:300]
        for tenant in tenants:
            try:
                held.update((tenant, service) for service in store.services(tenant))
            except (CommyError, OSError, UnicodeError) as exc:  # a corrupt or unreadable index: this tenant only
                unreadable[tenant] = repr(exc)[:300]
        for tenant, why in unreadable.items():
            if tenant not in self._logged:
                self._logged.add(tenant)
                self.srv.node.log_sink(self.srv.node.node_id, "http", "warning", "tenant_index_unreadable",
                                       {"tenant": tenant, "error": why})
        self._logged &= set(unreadable)
        self.unreadable = unreadable
        return frozenset(held)

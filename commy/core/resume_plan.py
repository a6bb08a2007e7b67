"""What a `Resume` asks for, merged with the session's record: tenants, subscriptions, missed changes.

A resuming client names, in `last_seen`, each service it follows and the version and stamp of the
last change it saw of each variable there. The names it lists are the variables it is subscribed
to; a name `""` (`WHOLE`, never a valid variable name) means it follows the whole service, new
variables included; a service listed with no names at all is only compared, not subscribed
(older clients send that). The session's record (`commy.core.session_sync`), when the node has
one, adds the tenants and subscriptions the session had on its last node: a subscription made just
before a crash may not have reached the record, and the client's own word covers it.

`ResumeRequest.read` validates the request (names, counts) before anything else happens;
`Follow.merge_record` adds the record; `missed` compares the services' current entries with what
the client saw. Stamps order writes cluster-wide, so they decide when both sides have one;
versions count per server and only decide for unstamped entries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from commy.core.store_api import StoredEntry
from commy.errors import BAD_REQUEST, RemoteProtocolError
from commy.messages import Resume, SubscriptionRecord, VariableChanged, VariableVersion
from commy.store.names import check_service, check_tenant, check_variable

WHOLE = ""
"""In `last_seen`: a `VariableVersion` with this name says the client follows the whole service."""

MAX_SESSION_ID = 128
Key = tuple[str, str]


@dataclass
class Follow:
    """Per (tenant, service): the names followed (None: the whole service; empty: none, compare only)."""

    names: dict[Key, set[str] | None] = field(default_factory=dict)

    def add(self, key: Key, names: Iterable[str] | None) -> None:
        current = self.names.setdefault(key, set())
        if names is None or current is None:
            self.names[key] = None
        else:
            current.update(names)

    def subscriptions(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(tenant, service, names) to put in the subscription index: `()` is the whole service."""
        return [(t, s, () if names is None else tuple(sorted(names)))
                for (t, s), names in sorted(self.names.items()) if names is None or names]

    def count(self) -> int:
        """Subscribed names, a whole service counting as one (as `SubscriptionIndex.names_of`)."""
        return sum(1 if names is None else len(names) for names in self.names.values())

    def merge_record(self, subs: Iterable[SubscriptionRecord], allowed: Callable[[str, str], bool]) -> None:
        for sub in subs:
            if allowed(sub.tenant, sub.service):
                self.add((sub.tenant, sub.service), sub.names or None)


@dataclass
class ResumeRequest:
    """A validated `Resume`: the tenants it names, what it follows and what it saw."""

    tenants: list[str]
    follow: Follow
    seen: dict[Key, dict[str, VariableVersion]]

    @classmethod
    def read(cls, msg: Resume, max_names: int) -> ResumeRequest:
        if len(msg.session_id) > MAX_SESSION_ID:
            raise RemoteProtocolError(f"session id longer than {MAX_SESSION_ID} characters", BAD_REQUEST)
        if len(msg.last_seen) > max_names:
            raise RemoteProtocolError(f"too many services: {len(msg.last_seen)} > {max_names}", BAD_REQUEST)
        tenants: dict[str, None] = {}
        follow = Follow()
        seen: dict[Key, dict[str, VariableVersion]] = {}
        for sv in msg.last_seen:
            check_tenant(sv.tenant)
            check_service(sv.service)
            if len(sv.versions) > max_names + 1:
                raise RemoteProtocolError(f"too many names in {sv.service!r}: {len(sv.versions)} > {max_names}",
                                          BAD_REQUEST)
            key = (sv.tenant, sv.service)
            tenants[sv.tenant] = None
            names = [v.name for v in sv.versions]
            for name in names:
                if name != WHOLE:
                    check_variable(name)
            follow.add(key, None if WHOLE in names else names)
            seen.setdefault(key, {}).update((v.name, v) for v in sv.versions if v.name != WHOLE)
        return cls(list(tenants), follow, seen)


def missed_in(tenant: str, service: str, entries: Iterable[StoredEntry], names: set[str] | None,
              seen: dict[str, VariableVersion], writers: Mapping[tuple[str, str, str], str]) -> list[VariableChanged]:
    """The entries of one service a client following `names` (None or empty: all) has not seen;
    `writers` is the hub's last writer by (tenant, service, name)."""
    return [VariableChanged(tenant, service, e.name, e.value, e.version, writers.get((tenant, service, e.name), ""),
                            e.stamp)
            for e in entries if (not names or e.name in names) and is_missed(e.version, e.stamp, seen.get(e.name))]


def is_missed(version: int, stamp: int, seen: VariableVersion | None) -> bool:
    """Did a resuming client miss this value? Stamps order writes cluster-wide, so they decide when
    the client reports one (it may come from another server, whose versions count differently)."""
    if seen is None:
        return True
    if seen.stamp and stamp:
        return stamp > seen.stamp
    return version > seen.version


def in_stamp_order(changes: list[VariableChanged]) -> tuple[VariableChanged, ...]:
    return tuple(sorted(changes, key=lambda c: (c.stamp, c.tenant, c.service, c.name)))

"""Which nodes hold a service: rendezvous (highest random weight) hashing over the live members.

Every node scores each member for a (tenant, service) with a hash of the three names and keeps the
`k` highest scores, so all nodes that see the same members agree without talking, the order the
members arrive in does not matter, and a member leaving moves only the services it held (every
other member's score for a service is unchanged, so the survivors keep their places). The score
is the first 8 bytes of BLAKE2b over `tenant NUL service NUL node`, big-endian; NUL cannot occur in
validated names, so two different triples never hash the same text. Ties (astronomically rare)
go to the smaller node id, which keeps the result a pure function of the set.

`replicas` adds the nodes that have clients on the service: they hold a copy whatever the hash says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from commy.errors import LocalProtocolError

__all__ = ["rendezvous", "replicas", "score"]


def score(tenant: str, service: str, node: str) -> int:
    """The weight of `node` for the service: higher wins."""
    digest = hashlib.blake2b(f"{tenant}\0{service}\0{node}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous(tenant: str, service: str, members: Iterable[str], k: int) -> list[str]:
    """The (at most) `k` members with the highest scores, best first; duplicates count once."""
    if type(k) is not int or k < 0:
        raise LocalProtocolError(f"k must be a non-negative int, not {k!r}")
    ranked = sorted(set(members), key=lambda node: (-score(tenant, service, node), node))
    return ranked[:k]


def replicas(tenant: str, service: str, live: Iterable[str], replication_factor: int,
             with_clients: Iterable[str] = ()) -> list[str]:
    """The nodes that should hold the service: its rendezvous choice plus those with clients, sorted."""
    return sorted(set(rendezvous(tenant, service, live, replication_factor)).union(with_clients))

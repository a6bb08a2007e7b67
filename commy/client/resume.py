"""Resuming a session after a reconnect: what the client reports, and what it does with the answer.

`resume(client, tenant, session, subs)` sends `Resume(session id, token, last_seen)` on the new
connection before anything else. `last_seen` is built from the subscriptions themselves: per
service they follow, each variable's last change delivered (version and stamp) -- the oldest
among the subscriptions following it, so none of them can miss a change -- with `(name, 0, 0)`
for a variable one of them has not delivered yet, and a name `""` (`WHOLE`, never a valid
variable name) when one follows the whole service. The server restores the session under the same
id with its subscriptions and answers with the changes missed, in stamp order; each subscription
takes those newer than what it delivered, then the events it held meanwhile. Values the client
read or wrote itself are deliberately not reported as seen: a subscription that has not delivered
a change must get it, even if another part of the program already knows the value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from commy.client.types import CommyClientError, ConnectionLostError, RequestTimeoutError, Session, Subscription
from commy.messages import Resume, ResumeResponse, ServiceVersions, VariableChanged, VariableVersion

if TYPE_CHECKING:
    from commy.client.session_client import SessionClient

log = logging.getLogger("commy.client")

WHOLE = ""
"""In a `Resume`'s last_seen, a variable name that says: the whole service is followed."""


async def resume(client: SessionClient, tenant: str, session: Session, subs: list[Subscription]) -> bool:
    """`Resume` the session on `tenant` with what `subs` have seen; on success deliver what they
    missed (in stamp order, each only if newer than what it delivered) and return True. A
    refusal (an old server, a revoked token, a tenant no longer readable) returns False: the
    caller falls back to logging in again and resubscribing."""
    msg = Resume(session.session_id, session.token, last_seen(tenant, subs))
    try:
        reply = await client._conn.request(msg, restoring=True)
    except (ConnectionLostError, RequestTimeoutError):
        raise
    except CommyClientError as exc:
        log.info("commy client: resuming the session on %r refused (%s); logging in again", tenant, exc)
        return False
    if not isinstance(reply, ResumeResponse) or tenant not in reply.tenants:
        return False
    if reply.session_id and reply.session_id != session.session_id:
        client._sessions[tenant] = Session(session.tenant, reply.session_id, session.client_id, session.token,
                                         session.expires_at, session.permissions)
    missed: dict[tuple[str, str], list[VariableChanged]] = {}
    for change in reply.missed:
        missed.setdefault((change.tenant, change.service), []).append(change)
    for sub in subs:
        sub._release(missed.get((sub.tenant, sub.service), []))
    return True


def last_seen(tenant: str, subs: Iterable[Subscription]) -> tuple[ServiceVersions, ...]:
    """What a `Resume` reports for `tenant`: per service its subscriptions follow, each variable's
    last change delivered -- the oldest among the subscriptions that follow it, (name, 0, 0) if one
    of them has delivered nothing of it yet -- and `WHOLE` when one follows the whole service."""
    by_service: dict[str, list[Subscription]] = {}
    for sub in subs:
        if sub.tenant == tenant and not sub.ended:
            by_service.setdefault(sub.service, []).append(sub)
    out = []
    for service, group in sorted(by_service.items()):
        seen = [sub.seen() for sub in group]
        names = {n for sub, got in zip(group, seen, strict=True) for n in (sub.names or got)}
        versions = [VariableVersion(WHOLE, 0, 0)] if any(not sub.names for sub in group) else []
        for name in sorted(names):
            lasts = [got.get(name) for sub, got in zip(group, seen, strict=True) if sub.covers(name)]
            known = [v for v in lasts if v is not None]
            version, stamp = min(known, key=lambda v: (v[1], v[0])) if len(known) == len(lasts) else (0, 0)
            versions.append(VariableVersion(name, version, stamp))
        out.append(ServiceVersions(tenant, service, tuple(versions)))
    return tuple(out)

"""`EventClient`: subscriptions, the server's events and reconnection, on top of `SessionClient`.

Subscriptions (`Subscription`, in `commy.client.types`) receive the `VariableChanged` events routed
here by (tenant, service); the server is asked for the union of the names a service's
subscriptions need, and told when that shrinks.

Reconnection (`Connection.on_restore`, after a drop or a `ClientMigration`, on the same server or
the next of the URLs given): each session is resumed first -- `Resume(session id, its token, what
its subscriptions last delivered of each variable: version and stamp)` -- and the server, any node
of the cluster, reopens it under the same id with its subscriptions and answers with every
followed variable that changed since, in stamp order; each is delivered if newer than what the
subscription already delivered, then the events held meanwhile, so an iterator simply goes on and
never sees a change twice or out of stamp order. If the server refuses (an older server, a token
revoked meanwhile, a tenant no longer readable), the tenant is authenticated again with its token
(or, if that is refused, with the credential first given) and every subscription renewed and
compared with the state the server sends back (`SubscriptionAck.current`). Mapped services are
asked for again and follow a new path or writer slot. A tenant that cannot be re-authenticated
ends like a revocation: its subscriptions raise `PermissionRevokedError`.

Events: `PermissionRevoked` ends the tenant's session, closes its mappings and ends its
subscriptions with `PermissionRevokedError`; `FileMigration` remaps and acknowledges;
`ClientMigration` acknowledges and reconnects with the target URL first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from commy.client.resume import resume
from commy.client.session_client import SessionClient
from commy.client.types import (
    CommyClientError,
    ConnectionLostError,
    PermissionRevokedError,
    RequestTimeoutError,
    Session,
    Subscription,
)
from commy.messages import (
    ClientMigration,
    ClientMigrationAck,
    FileMigration,
    Message,
    MigrationAck,
    PermissionRevoked,
    Subscribe,
    SubscriptionAck,
    Unsubscribe,
    UnsubscribeAck,
    VariableChanged,
)

log = logging.getLogger("commy.client")


class EventClient(SessionClient):
    """Subscriptions, events and reconnection; the connection's callbacks are its methods."""

    # ---- subscriptions (called by Subscription)

    async def _subscribe(self, sub: Subscription) -> None:
        key = (sub.tenant, sub.service)
        sub._hold()
        self._subs.setdefault(key, []).append(sub)
        try:
            ack = await self._call(Subscribe(sub.tenant, sub.service, sub.names), SubscriptionAck, True)
        except BaseException:
            self._forget(sub)
            raise
        sub._catch_up(ack.current, first=True)

    def _forget(self, sub: Subscription) -> None:
        key = (sub.tenant, sub.service)
        subs = self._subs.get(key)
        if subs is not None and sub in subs:
            subs.remove(sub)
            if not subs:
                del self._subs[key]

    async def _unsubscribe(self, sub: Subscription) -> None:
        key = (sub.tenant, sub.service)
        before = _union(self._subs.get(key, []))
        self._forget(sub)
        rest = self._subs.get(key, [])
        after = _union(rest) if rest else frozenset()
        if after == before or sub.tenant not in self._sessions or not self._conn.connected:
            return
        t, s = key
        try:
            if after is not None and not after:
                await self._call(Unsubscribe(t, s, ()), UnsubscribeAck)
            elif before is None:  # the server ends a whole-service subscription whole: renew the rest
                await self._call(Unsubscribe(t, s, ()), UnsubscribeAck)
                assert after is not None
                for other in rest:
                    other._hold()
                ack = await self._call(Subscribe(t, s, tuple(sorted(after))), SubscriptionAck)
                for other in rest:
                    other._catch_up(ack.current)
            else:
                assert after is not None
                await self._call(Unsubscribe(t, s, tuple(sorted(before - after))), UnsubscribeAck)
        except CommyClientError as exc:
            log.debug("commy client: unsubscribing %s/%s: %s", t, s, exc)

    # ---- events and reconnection

    def _on_event(self, msg: Message) -> None:
        kind = type(msg)
        if kind is VariableChanged:
            subs = self._subs.get((msg.tenant, msg.service))  # type: ignore[attr-defined]
            if subs:
                for sub in subs:
                    sub._offer(msg)  # type: ignore[arg-type]
        elif kind is PermissionRevoked:
            assert isinstance(msg, PermissionRevoked)
            log.warning("commy client: access to tenant %r revoked: %s", msg.tenant, msg.reason)
            self._end_tenant(msg.tenant, PermissionRevokedError(detail=msg.reason, tenant=msg.tenant))
        elif kind is FileMigration:
            assert isinstance(msg, FileMigration)
            state = self._local.get((msg.tenant, msg.service))
            if state is not None:
                state.migrate(msg.path)
            self._spawn(self._conn.send_oneway(MigrationAck(msg.tenant, msg.service, msg.path)))
        elif kind is ClientMigration:
            assert isinstance(msg, ClientMigration)
            log.info("commy client: server asks us to move to %s (%s)", msg.target_url, msg.reason.value)
            self._spawn(self._conn.migrate(msg.target_url, ClientMigrationAck(msg.session_id, True, "")))

    def _on_lost(self, exc: ConnectionLostError) -> None:
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub._end(exc)
        for state in self._local.values():
            state.close(exc)

    async def _restore(self) -> None:
        """After a reconnect: resume each session (else log in again and resubscribe), then remap."""
        request = self._conn.request
        for tenant, session in list(self._sessions.items()):
            if self._sessions.get(tenant) is not session:
                continue  # ended (or replaced) while an earlier tenant was being restored
            subs = [x for (t, _), group in list(self._subs.items()) if t == tenant for x in group if x.active]
            for sub in subs:
                sub._hold()
            if await resume(self, tenant, session, subs):
                continue
            try:
                await self._reauthenticate(tenant, session)
            except (ConnectionLostError, RequestTimeoutError):
                raise
            except CommyClientError as exc:
                self._end_tenant(tenant, PermissionRevokedError(
                    detail=f"could not authenticate again after reconnecting: {exc}", tenant=tenant))
                continue
            await self._resubscribe(subs)
        await self._resubscribe([x for (t, _), group in list(self._subs.items()) if t not in self._sessions
                                 for x in group if x.active])
        for (t, _), state in list(self._local.items()):
            current = self._sessions.get(t)
            if current is not None:
                await state.restore(lambda m: request(m, restoring=True), current.client_id,
                                    current.allows("variable_write"))

    async def _resubscribe(self, subs: list[Subscription]) -> None:
        for sub in subs:
            if sub.ended:
                continue
            sub._hold()
            try:
                ack = await self._conn.request(Subscribe(sub.tenant, sub.service, sub.names), restoring=True)
            except (ConnectionLostError, RequestTimeoutError):
                raise
            except CommyClientError as exc:
                sub._end(exc)
                continue
            if isinstance(ack, SubscriptionAck):
                sub._catch_up(ack.current)

    async def _reauthenticate(self, tenant: str, session: Session) -> None:
        try:
            await self._authenticate(tenant, "token", session.token, restoring=True)
            return
        except (ConnectionLostError, RequestTimeoutError):
            raise
        except CommyClientError as exc:
            method, credential = self._credentials.get(tenant, ("token", session.token))
            if method == "token":
                raise
            log.info("commy client: token refused on %r (%s); using the original credential", tenant, exc)
        await self._authenticate(tenant, method, credential, restoring=True)


def _union(subs: Iterable[Subscription]) -> frozenset[str] | None:
    """The names a set of subscriptions needs from the server; None for the whole service."""
    names: set[str] = set()
    for sub in subs:
        if not sub.names:
            return None
        names.update(sub.names)
    return frozenset(names)

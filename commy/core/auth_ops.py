"""Sessions and tokens: Authenticate, Logout, RefreshToken, CheckPermission, Heartbeat, Resume.

`Authenticate(tenant, method, credential)` opens a session on one tenant. With an API key the key
is checked against its slow hash (the catalog caches keys it has verified); with a token, the
signature, expiry and revocation list; with `delegated`, the tenant's auth hook is asked through
the runtime's hook actor and the connection's later requests wait (in order) for the answer.
Failures count per key and per source address and lock them out for a while (`rate_limited`).
A session's token id starts with the id of the key that opened it, so revoking a key can end
its sessions and refuse its tokens without keeping a table of tokens.

`Resume(session_id, token, last_seen)` brings a client back -- after a drop, on this node or any
other of a cluster -- without a new login: the token is checked like a login's, the session's
record is fetched from the node's session sync (`commy.core.session_sync`; the connection waits,
parked, meanwhile), and every tenant, subscription and missed change the client's `last_seen`
and the record name is restored under the same session id, as far as the catalog still allows
(`commy.core.resume_plan` says how the two are merged).
"""

from __future__ import annotations

from commy.core.actor import handles
from commy.core.auth import TokenClaims
from commy.core.catalog_records import check_client_id, parse_key
from commy.core.failover import FAILOVER
from commy.core.hub_base import HubBase
from commy.core.permissions import Permission, parse_scopes, scope_names
from commy.core.resume_plan import Follow, ResumeRequest, in_stamp_order, missed_in
from commy.core.session_sync import session_sync_of, sessions_changed
from commy.core.sessions import ClientConn, Session, SessionState
from commy.errors import (
    BAD_REQUEST,
    FORBIDDEN,
    INTERNAL,
    NOT_FOUND,
    RATE_LIMITED,
    TOO_LARGE,
    UNAUTHENTICATED,
    RemoteProtocolError,
)
from commy.messages import (
    Address,
    Authenticate,
    AuthenticationResponse,
    CheckPermission,
    DelegatedAuthRequest,
    DelegatedAuthResult,
    Envelope,
    FindSession,
    Heartbeat,
    HeartbeatAck,
    Logout,
    LogoutResponse,
    MigrationRecorded,
    PermissionResponse,
    RefreshToken,
    Resume,
    ResumeResponse,
    SessionFound,
    SessionRecord,
    TokenRefreshResponse,
    VariableChanged,
)
from commy.messages.client import SERVER

FAILED = "authentication failed: unknown tenant or bad credentials"
FIND_TIMEOUT = 1.0  # a session sync answers at once; without one (a misconfigured node) resume anyway


def namespaced(tenant: str, client_id: str) -> str:
    """`client_id` inside `tenant`'s namespace (`tenant/id`): the identities a tenant vouches for
    (keys its admins make, users its auth hook names) cannot be another tenant's or the server's."""
    prefix = tenant + "/"
    return client_id if client_id.startswith(prefix) else check_client_id(prefix + client_id)
DELEGATED_KEY = "delegated"


class AuthOps(HubBase):
    REQUESTS = {Authenticate: "authenticate", Logout: "logout", RefreshToken: "refresh_token",
                CheckPermission: "check_permission", Heartbeat: "heartbeat", Resume: "resume"}

    # ---- Authenticate

    def authenticate(self, conn: ClientConn, msg: Authenticate, env: Envelope) -> None:
        tenant = msg.tenant
        if tenant != SERVER and not self.catalog.has_tenant(tenant):
            self._failed(conn, None, FAILED)
        if tenant not in conn.sessions and len(conn.sessions) >= self.config.max_sessions:
            raise RemoteProtocolError(f"at most {self.config.max_sessions} sessions per connection", BAD_REQUEST)
        self._check_lockout(conn, None)
        if msg.method == "api_key":
            parsed = parse_key(msg.credential)
            key_id = parsed[0] if parsed else None
            self._check_lockout(conn, key_id)
            rec = self.catalog.verify_api_key(msg.credential)
            if rec is None:
                self._failed(conn, key_id, FAILED)
                return
            self._succeeded(conn, key_id)
            token_id = f"{rec.key_id}-{self.ctx.new_id()[:16]}"
            token = self.issue_token(rec.client_id, token_id)
            self.open_session(conn, env, tenant, rec.client_id, rec.key_id, token_id, token,
                              self.ctx.now() + self.config.token_ttl)
        elif msg.method == "token":
            claims = self.verify_token(msg.credential)
            self.open_session(conn, env, tenant, claims.client_id, claims.token_id.split("-", 1)[0],
                              claims.token_id, msg.credential, claims.expires_at)
        elif msg.method == "delegated":
            self._ask_hook(conn, msg, env)
        else:
            raise RemoteProtocolError(f"unknown authentication method {msg.method[:40]!r} "
                                      "(api_key, token or delegated)", BAD_REQUEST)

    def issue_token(self, client_id: str, token_id: str) -> str:
        """A new token, unless the client had `tokens_per_minute` already: every token may end up
        in the revocation list, which is kept (and saved) until it expires."""
        now = self.ctx.now()
        until = self.token_limiter.locked_until(client_id, now)
        if until is not None:
            raise RemoteProtocolError(f"too many tokens for client {client_id!r}; retry in {until - now:.0f} s",
                                      RATE_LIMITED)
        self.token_limiter.failure(client_id, now)
        return self.signer.issue(client_id, token_id, now, self.config.token_ttl)

    def verify_token(self, token: str) -> TokenClaims:
        claims = self.signer.verify(token, self.ctx.now())  # raises unauthenticated / expired
        if self.catalog.token_revoked(claims.token_id):
            raise RemoteProtocolError("token revoked", UNAUTHENTICATED)
        key_id = claims.token_id.split("-", 1)[0]
        if key_id != DELEGATED_KEY and not self._key_live(claims.client_id, key_id):
            raise RemoteProtocolError("token revoked (its API key was revoked)", UNAUTHENTICATED)
        return claims

    def _key_live(self, client_id: str, key_id: str) -> bool:
        return any(k.key_id == key_id and not k.revoked for k in self.catalog.api_keys(client_id))

    def open_session(self, conn: ClientConn, env: Envelope, tenant: str, client_id: str, key_id: str,
                     token_id: str, token: str, expires_at: float) -> None:
        perms = self.permissions_of(client_id, tenant)
        if not perms:
            what = "server admin rights" if tenant == SERVER else f"access to tenant {tenant!r}"
            raise RemoteProtocolError(f"client {client_id!r} has no {what}", FORBIDDEN)
        old = conn.sessions.get(tenant)
        if old is not None and old.client_id != client_id:
            self.end_session(conn, tenant, SessionState.CLOSED, notify=None)  # another identity: start clean
        session = Session(tenant, self.ctx.new_id(), client_id, key_id, token_id, expires_at, perms, self.epoch)
        session.move(SessionState.ACTIVE)
        conn.sessions[tenant] = session
        self.ctx.log.info("session_opened", conn=conn.conn_id, tenant=tenant, client=client_id)
        self.ctx.reply(env, AuthenticationResponse(tenant, session.session_id, client_id, token, expires_at,
                                                   scope_names(perms)))
        sessions_changed(self, conn)

    def _check_lockout(self, conn: ClientConn, key_id: str | None) -> None:
        now = self.ctx.now()
        until = self.peer_lockout.locked_until(_source(conn), now)
        if until is None and key_id is not None:
            until = self.key_lockout.locked_until(key_id, now)
        if until is not None:
            raise RemoteProtocolError(f"too many failed logins; retry in {until - now:.0f} s", RATE_LIMITED)

    def _failed(self, conn: ClientConn, key_id: str | None, detail: str) -> None:
        now = self.ctx.now()
        self.peer_lockout.failure(_source(conn), now)
        if key_id is not None and self.key_lockout.failure(key_id, now):
            self.ctx.log.warning("login_locked_out", key_id=key_id, peer=conn.peer)
        raise RemoteProtocolError(detail, UNAUTHENTICATED)

    def _succeeded(self, conn: ClientConn, key_id: str | None) -> None:
        if key_id is not None:
            self.key_lockout.success(key_id)

    # ---- delegated authentication

    def _ask_hook(self, conn: ClientConn, msg: Authenticate, env: Envelope) -> None:
        hook = self.catalog.auth_hook(msg.tenant) if msg.tenant != SERVER else None
        if hook is None or self.auth_hooks is None:
            raise RemoteProtocolError(f"tenant {msg.tenant!r} does not delegate authentication", BAD_REQUEST)
        if len(msg.credential) > 4096:
            raise RemoteProtocolError("delegated credential longer than 4096 characters", BAD_REQUEST)
        ref = self.ctx.new_id()
        self.pending_auth[ref] = (conn.conn_id, env)
        self.park(conn)
        self.ctx.send(Address(self.ctx.address.node, self.auth_hooks),
                      DelegatedAuthRequest(ref, msg.tenant, hook, msg.credential))
        self.ctx.set_timer(self.config.delegated_timeout,
                           DelegatedAuthResult(ref, "", "the tenant's auth hook did not answer in time"))

    def finish_delegated(self, conn: ClientConn, request: Envelope, result: DelegatedAuthResult) -> None:
        tenant = request.body.tenant  # type: ignore[attr-defined]
        if not result.client_id:
            self._failed(conn, None, f"{FAILED}" + (f" ({result.detail[:200]})" if result.detail else ""))
        try:
            client_id = namespaced(tenant, check_client_id(result.client_id))
        except RemoteProtocolError:
            self.ctx.log.error("auth_hook_bad_answer", tenant=tenant, client=result.client_id[:80])
            raise RemoteProtocolError(FAILED, UNAUTHENTICATED) from None
        token_id = f"{DELEGATED_KEY}-{self.ctx.new_id()[:16]}"
        now = self.ctx.now()
        token = self.issue_token(client_id, token_id)
        self.open_session(conn, request, tenant, client_id, DELEGATED_KEY, token_id, token,
                          now + self.config.token_ttl)

    # ---- the rest of the session operations

    def logout(self, conn: ClientConn, msg: Logout, env: Envelope) -> None:
        session = self.session_for(conn, msg.tenant)
        self.catalog.revoke_token(session.token_id, session.expires_at, self.ctx.now())
        self.catalog_changed()
        self.end_session(conn, msg.tenant, SessionState.CLOSED, notify=None)
        ended = {session.session_id}
        for other in list(self.conns.values()):  # the token may have opened sessions elsewhere too
            for tenant, s in list(other.sessions.items()):
                if s.token_id == session.token_id:
                    ended.add(s.session_id)
                    self.end_session(other, tenant, SessionState.CLOSED, notify="logged out")
        self.ctx.log.info("logout", conn=conn.conn_id, tenant=msg.tenant, client=session.client_id)
        self.ctx.reply(env, LogoutResponse(msg.tenant))
        sessions_changed(self, conn, ended=sorted(ended))

    def refresh_token(self, conn: ClientConn, msg: RefreshToken, env: Envelope) -> None:
        claims = self.verify_token(msg.token)
        now = self.ctx.now()
        key_id = claims.token_id.split("-", 1)[0]
        token_id = f"{key_id}-{self.ctx.new_id()[:16]}"
        token = self.issue_token(claims.client_id, token_id)
        self.catalog.revoke_token(claims.token_id, claims.expires_at, now)
        self.catalog_changed()
        for session in conn.sessions.values():
            if session.token_id == claims.token_id:
                session.token_id, session.expires_at = token_id, now + self.config.token_ttl
        self.ctx.reply(env, TokenRefreshResponse(token, now + self.config.token_ttl))
        sessions_changed(self, conn)

    def check_permission(self, conn: ClientConn, msg: CheckPermission, env: Envelope) -> None:
        session = self.session_for(conn, msg.tenant)
        wanted = parse_scopes([msg.permission])
        self.ctx.reply(env, PermissionResponse(msg.tenant, msg.service, msg.permission,
                                               wanted <= session.permissions))

    def heartbeat(self, conn: ClientConn, msg: Heartbeat, env: Envelope) -> None:
        self.ctx.reply(env, HeartbeatAck(msg.sent_at, self.ctx.now()))

    # ---- Resume (a client back after a drop, or moved here: see `commy.core.resume_plan`)

    def resume(self, conn: ClientConn, msg: Resume, env: Envelope) -> None:
        """Check the token and the request, then (in a cluster with a session sync) ask it for the
        session's record; `finish_resume` restores what the two say."""
        self.verify_token(msg.token)
        ResumeRequest.read(msg, self.config.max_names)
        sync = session_sync_of(self)
        if sync is None or not msg.session_id:
            self.finish_resume(conn, env, None)
            return
        ref = self.ctx.new_id()
        self.pending_auth[ref] = (conn.conn_id, env)
        self.park(conn)  # later requests wait: they may act on the sessions this restores
        self.ctx.send(Address(self.ctx.address.node, sync), FindSession(ref, msg.session_id))
        self.ctx.set_timer(FIND_TIMEOUT, SessionFound(ref, (), False))  # no session sync: go on without

    @handles(SessionFound)
    def _session_found(self, msg: SessionFound, env: Envelope) -> None:
        pending = self.pending_auth.pop(msg.ref, None)
        if pending is None:
            return  # answered already (the timer after the answer), or the client left
        conn = self.conns.get(pending[0])
        if conn is None:
            return
        request = pending[1]
        try:
            self.finish_resume(conn, request, msg)
        except RemoteProtocolError as exc:
            self.refuse(conn, request, exc.code, exc.detail)
        except Exception:  # our bug: still answer, and let the requests behind it through
            self.refuse(conn, request, INTERNAL, "internal error handling Resume")
            raise
        finally:
            self.unpark(conn)

    def finish_resume(self, conn: ClientConn, env: Envelope, found: SessionFound | None) -> None:
        """Reopen the session on every tenant the client names (each must still be readable) and
        those its record names (kept if still allowed), restore the subscriptions both name, and
        reply with every change of them newer than what the client saw, in stamp order."""
        msg: Resume = env.body  # type: ignore[assignment]
        claims = self.verify_token(msg.token)  # again: it may have been revoked while we looked
        client = claims.client_id
        request = ResumeRequest.read(msg, self.config.max_names)
        record = found.records[0] if found is not None and found.records else None
        if found is not None and found.ended:
            raise RemoteProtocolError("the session ended (logged out): authenticate again", UNAUTHENTICATED)
        if record is not None and record.client_id != client:
            raise RemoteProtocolError(f"session {msg.session_id[:64]!r} is not client {client!r}'s", FORBIDDEN)
        perms = self._resume_tenants(conn, client, request, record)
        follow = self._resume_follow(conn, client, request, record, perms)
        missed = self._missed(follow, request)  # the last check: nothing has changed before it
        # With a session sync, an id it has no record of is not taken on trust: the client gets a fresh
        # one (the SDK adopts it), so nobody can take over another client's session record by its id.
        known = record is not None or found is None
        sid = msg.session_id if msg.session_id and known else self.ctx.new_id()
        key_id = claims.token_id.split("-", 1)[0]
        for tenant, held in sorted(perms.items()):
            old = conn.sessions.get(tenant)
            if old is not None and old.client_id != client:
                self.end_session(conn, tenant, SessionState.CLOSED, notify=None)  # another identity: start clean
            session = Session(tenant, sid, client, key_id, claims.token_id, claims.expires_at, held, self.epoch)
            session.move(SessionState.ACTIVE)
            conn.sessions[tenant] = session
        subscriptions = follow.subscriptions()
        for tenant, service, names in subscriptions:
            self.subs.add(conn.conn_id, tenant, service, names)
        tenants = tuple(sorted(perms))
        source = record.node if record is not None else ""
        self.ctx.log.info("session_resumed", conn=conn.conn_id, client=client, tenants=list(tenants),
                          subscriptions=len(subscriptions), missed=len(missed), source=source)
        self.ctx.reply(env, ResumeResponse(sid, tenants, missed))
        sessions_changed(self, conn)
        if self.cluster is not None and tenants:  # a client failing over (or moving) to this node: for the record
            self.ctx.send(Address(self.ctx.address.node, FAILOVER), MigrationRecorded(
                sid, client, source, self.ctx.address.node, "resume", "resumed", self.ctx.now()))

    def _resume_tenants(self, conn: ClientConn, client: str, request: ResumeRequest,
                        record: SessionRecord | None) -> dict[str, frozenset[Permission]]:
        """The tenants to reopen and the permissions the catalog gives `client` there now."""
        perms: dict[str, frozenset[Permission]] = {}
        for tenant in request.tenants:
            perms[tenant] = self.permissions_of(client, tenant)
            if Permission.VARIABLE_READ not in perms[tenant]:
                raise RemoteProtocolError(f"client {client!r} cannot read tenant {tenant!r}", FORBIDDEN)
        for tenant in record.tenants if record is not None else ():
            if tenant not in perms and (tenant == SERVER or self.catalog.has_tenant(tenant)):
                allowed = self.permissions_of(client, tenant)
                if allowed:  # what it may no longer do is simply not restored
                    perms[tenant] = allowed
        if len(set(conn.sessions) | set(perms)) > self.config.max_sessions:
            raise RemoteProtocolError(f"at most {self.config.max_sessions} sessions per connection", BAD_REQUEST)
        return perms

    def _resume_follow(self, conn: ClientConn, client: str, request: ResumeRequest, record: SessionRecord | None,
                       perms: dict[str, frozenset[Permission]]) -> Follow:
        """What to subscribe and compare: what the client names (all of it allowed, or refused) and
        what its record names (where still allowed and held here)."""
        follow = request.follow
        for (tenant, service), names in follow.names.items():
            if names and Permission.SUBSCRIBE not in perms[tenant]:
                raise RemoteProtocolError(f"client {client!r} may not subscribe on tenant {tenant!r}", FORBIDDEN)
            if not (self.catalog.has_service(tenant, service) and self.store.exists(tenant, service)):
                raise RemoteProtocolError(f"service {tenant}/{service} not found", NOT_FOUND)

        def restorable(tenant: str, service: str) -> bool:
            held = perms.get(tenant, frozenset())
            return (Permission.SUBSCRIBE in held and Permission.VARIABLE_READ in held
                    and self.catalog.has_service(tenant, service) and self.store.exists(tenant, service))
        if record is not None:
            follow.merge_record(record.subscriptions, restorable)
        if self.subs.names_of(conn.conn_id) + follow.count() > self.config.max_subscribed:
            raise RemoteProtocolError(f"at most {self.config.max_subscribed} subscribed names per connection",
                                      RATE_LIMITED)
        return follow

    def _missed(self, follow: Follow, request: ResumeRequest) -> tuple[VariableChanged, ...]:
        missed: list[VariableChanged] = []
        size, limit = 0, self.config.max_reply_bytes
        for (tenant, service), names in sorted(follow.names.items()):
            seen = request.seen.get((tenant, service), {})
            entries = self.store.open(tenant, service).entries()
            found = missed_in(tenant, service, entries, names, seen, self.last_writer)
            size += sum(len(c.value) for c in found)
            if size > limit:
                raise RemoteProtocolError(f"the changes missed exceed {limit} bytes: authenticate and subscribe "
                                          "again", TOO_LARGE)
            missed += found
        return in_stamp_order(missed)


def _source(conn: ClientConn) -> str:
    return "peer:" + conn.peer.rpartition(":")[0]


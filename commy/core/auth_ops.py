"""Sessions and tokens: Authenticate, Logout, RefreshToken, CheckPermission, Heartbeat, Resume.

`Authenticate(tenant, method, credential)` opens a session on one tenant. With an API key the key
is checked against its slow hash (the catalog caches keys it has verified); with a token, the
signature, expiry and revocation list; with `delegated`, the tenant's auth hook is asked through
the runtime's hook actor and the connection's later requests wait (in order) for the answer.
Failures count per key and per source address and lock them out for a while (`rate_limited`).
A session's token id starts with the id of the key that opened it, so revoking a key can end
its sessions and refuse its tokens without keeping a table of tokens.
"""

from __future__ import annotations

from commy.core.auth import TokenClaims
from commy.core.catalog_records import check_client_id, parse_key
from commy.core.failover import FAILOVER
from commy.core.hub_base import HubBase
from commy.core.permissions import Permission, parse_scopes, scope_names
from commy.core.sessions import ClientConn, Session, SessionState
from commy.errors import BAD_REQUEST, FORBIDDEN, NOT_FOUND, RATE_LIMITED, UNAUTHENTICATED, RemoteProtocolError
from commy.messages import (
    Address,
    Authenticate,
    AuthenticationResponse,
    CheckPermission,
    DelegatedAuthRequest,
    DelegatedAuthResult,
    Envelope,
    Heartbeat,
    HeartbeatAck,
    Logout,
    LogoutResponse,
    MigrationRecorded,
    PermissionResponse,
    RefreshToken,
    Resume,
    ResumeResponse,
    TokenRefreshResponse,
    VariableChanged,
    VariableVersion,
)
from commy.messages.client import SERVER

FAILED = "authentication failed: unknown tenant or bad credentials"


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
        for other in list(self.conns.values()):  # the token may have opened sessions elsewhere too
            for tenant, s in list(other.sessions.items()):
                if s.token_id == session.token_id:
                    self.end_session(other, tenant, SessionState.CLOSED, notify="logged out")
        self.ctx.log.info("logout", conn=conn.conn_id, tenant=msg.tenant, client=session.client_id)
        self.ctx.reply(env, LogoutResponse(msg.tenant))

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

    def check_permission(self, conn: ClientConn, msg: CheckPermission, env: Envelope) -> None:
        session = self.session_for(conn, msg.tenant)
        wanted = parse_scopes([msg.permission])
        self.ctx.reply(env, PermissionResponse(msg.tenant, msg.service, msg.permission,
                                               wanted <= session.permissions))

    def heartbeat(self, conn: ClientConn, msg: Heartbeat, env: Envelope) -> None:
        self.ctx.reply(env, HeartbeatAck(msg.sent_at, self.ctx.now()))

    def resume(self, conn: ClientConn, msg: Resume, env: Envelope) -> None:
        """Reopen sessions with a token on every tenant the client saw, and send what it missed."""
        claims = self.verify_token(msg.token)
        tenants = sorted({sv.tenant for sv in msg.last_seen})
        if len(tenants) > self.config.max_sessions:
            raise RemoteProtocolError(f"at most {self.config.max_sessions} tenants per resume", BAD_REQUEST)
        self.check_count("services", msg.last_seen)
        missed: list[VariableChanged] = []
        for sv in msg.last_seen:
            perms = self.permissions_of(claims.client_id, sv.tenant)
            if Permission.VARIABLE_READ not in perms:
                raise RemoteProtocolError(f"client {claims.client_id!r} cannot read tenant {sv.tenant!r}", FORBIDDEN)
            if not self.store.exists(sv.tenant, sv.service):
                raise RemoteProtocolError(f"service {sv.tenant}/{sv.service} not found", NOT_FOUND)
            seen = {v.name: v for v in sv.versions}
            for entry in self.store.open(sv.tenant, sv.service).entries():
                if _missed(entry.version, entry.stamp, seen.get(entry.name)):
                    writer = self.last_writer.get((sv.tenant, sv.service, entry.name), "")
                    missed.append(VariableChanged(sv.tenant, sv.service, entry.name, entry.value, entry.version,
                                                  writer, entry.stamp))
        for tenant in tenants:
            perms = self.permissions_of(claims.client_id, tenant)
            session = Session(tenant, msg.session_id or self.ctx.new_id(), claims.client_id,
                              claims.token_id.split("-", 1)[0], claims.token_id, claims.expires_at, perms, self.epoch)
            session.move(SessionState.ACTIVE)
            conn.sessions[tenant] = session
        self.ctx.reply(env, ResumeResponse(msg.session_id, tuple(tenants), tuple(missed)))
        if self.cluster is not None:  # a client failing over (or moving) to this node: for the record
            self.ctx.send(Address(self.ctx.address.node, FAILOVER), MigrationRecorded(
                msg.session_id, claims.client_id, "", self.ctx.address.node, "resume", "resumed", self.ctx.now()))


def _missed(version: int, stamp: int, seen: VariableVersion | None) -> bool:
    """Did a resuming client miss this value? Stamps order writes cluster-wide, so they decide when
    the client reports one (it may come from another server, whose versions count differently)."""
    if seen is None:
        return True
    if seen.stamp and stamp:
        return stamp > seen.stamp
    return version > seen.version


def _source(conn: ClientConn) -> str:
    return "peer:" + conn.peer.rpartition(":")[0]


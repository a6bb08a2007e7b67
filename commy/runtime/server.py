"""An embedded server: one node on one asyncio loop, with its data folder, clients and (optionally) peers.

`start_server(data, listen)` builds, in order: the `Node` on an `AsyncioHost`; the TCP peer
transport (only when `peer_listen` is given; a single server has none); the data folder (mode
0700) with the server's token key (`server.key`: 32 random bytes, created 0600 on first start), the
tenant catalog (`catalog.bin`) and the service files (`FileStore` under `store/`); the runtime
actors `catalog-store` (writes every `CatalogChanged` snapshot atomically: temporary file, fsync,
`os.replace`, fsync of the folder -- in the handler, so the reply to the change leaves after it is
on disk) and `auth-hooks` (runs the tenants' delegated-auth callbacks as asyncio tasks with a
timeout and answers with `DelegatedAuthResult`); the client hub (`clients`); and the WebSocket
gateway, which is attached to the host before it accepts anything, with the plain-HTTP endpoints
(`/health`, `/metrics`, `/status`, the status page; loopback only unless `http` says otherwise, see
`commy.runtime.http_endpoints`) registered on it before it listens.

What the metrics read is counted where it happens: every log record goes through `EventCounts`
(`RunningServer.events`) on its way to `log_sink`, and the peer transport encodes and decodes with
a `MeteredCodec` (`RunningServer.peer_wire`).

On first start (no catalog file) a bootstrap API key for the server admin `admin` is created,
saved with the catalog as soon as the server listens, and returned in `RunningServer.bootstrap_key`
(None on later starts). The folder is locked (`data/lock`) while a server uses it: a second server
on the same folder refuses to start. `RunningServer.close()` stops accepting, closes every client
(`server_closing`), flushes the service files, saves the catalog and stops the node and its
transport.
"""

from __future__ import annotations

import asyncio
import os
import ssl as ssl_module
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from commy.config_hosts import HttpConfig
from commy.core.actor import Actor, Context, handles
from commy.core.auth import TokenSigner
from commy.core.catalog import Catalog
from commy.core.catalog_records import KdfParams
from commy.core.heartbeat import HEARTBEAT, HeartbeatConfig, HeartbeatMonitor
from commy.core.members import MEMBERSHIP
from commy.core.node import LogSink, Node
from commy.messages import Address, CatalogChanged, DelegatedAuthRequest, DelegatedAuthResult, Envelope, Leave
from commy.runtime.asyncio_host import AsyncioHost, node_seed
from commy.runtime.gateway import Gateway, GatewayConfig
from commy.runtime.logs import EventCounts
from commy.runtime.tcp import TcpConfig, TcpTransport
from commy.runtime.wire_meter import MeteredCodec

if TYPE_CHECKING:  # imported when a server starts: a gateway alone needs neither the hub nor the store
    from commy.config import ClusterConfig
    from commy.core.hub_base import HubCluster, HubConfig
    from commy.store import FileStore

AuthHook = Callable[[str, str], Awaitable[str | None]]
"""(tenant, credential) -> the client id the hook vouches for, or None to refuse."""

CATALOG_FILE, KEY_FILE, STORE_DIR, LOCK_FILE = "catalog.bin", "server.key", "store", "lock"
CATALOG_STORE, AUTH_HOOKS = "catalog-store", "auth-hooks"
BOOTSTRAP_CLIENT = "admin"
KEY_BYTES = 32
LEAVE_FLUSH = 0.05


# --------------------------------------------------------------------------- files


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so a crash leaves the old file or the new one, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not possible on every platform
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class FolderLock:
    """Holds `data/lock` exclusively (POSIX `flock`) so two servers never share one data folder."""

    def __init__(self, folder: Path) -> None:
        self.fd: int | None = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        if sys.platform != "win32":
            import fcntl

            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.release()
                raise ValueError(f"another server is using the data folder {folder}") from None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None


def load_or_create_key(path: Path) -> bytes:
    """The server's token key: read it, or create 32 random bytes readable by the owner only."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) < KEY_BYTES:
            raise ValueError(f"{path}: a server key is at least {KEY_BYTES} bytes, found {len(key)}") from None
        return key
    key = os.urandom(KEY_BYTES)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(path.parent)
    return key


# --------------------------------------------------------------------------- runtime actors


class CatalogStore(Actor):
    """Writes each catalog snapshot the hub publishes to `path`, atomically, before anything else runs."""

    def __init__(self, ctx: Context, path: Path) -> None:
        super().__init__(ctx)
        self.path = path
        self.saved = 0
        self.failures = 0

    @handles(CatalogChanged)
    def _changed(self, msg: CatalogChanged, env: Envelope) -> None:
        try:
            write_atomic(self.path, msg.snapshot)
            self.saved += 1
        except OSError as exc:
            self.failures += 1
            self.ctx.log.error("catalog_save_failed", path=str(self.path), error=str(exc))


class AuthHookRunner(Actor):
    """Runs delegated-auth hooks (async callbacks by name) as tasks; answers each request once."""

    def __init__(self, ctx: Context, hooks: Mapping[str, AuthHook], timeout: float,
                 loop: asyncio.AbstractEventLoop, max_pending: int = 1024) -> None:
        super().__init__(ctx)
        self.hooks = dict(hooks)
        self.timeout = timeout
        self.loop = loop
        self.max_pending = max_pending
        self.tasks: set[asyncio.Task[None]] = set()
        self.running = True

    @handles(DelegatedAuthRequest)
    def _request(self, msg: DelegatedAuthRequest, env: Envelope) -> None:
        hook = self.hooks.get(msg.hook)
        if hook is None:
            self.ctx.reply(env, DelegatedAuthResult(msg.ref, "", f"no auth hook named {msg.hook[:64]!r}"))
        elif len(self.tasks) >= self.max_pending:
            self.ctx.reply(env, DelegatedAuthResult(msg.ref, "", "too many authentications pending"))
        else:
            task = self.loop.create_task(self._run(hook, msg, env))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(self, hook: AuthHook, msg: DelegatedAuthRequest, env: Envelope) -> None:
        client_id, detail = "", ""
        try:
            answer = await asyncio.wait_for(hook(msg.tenant, msg.credential), self.timeout)
        except TimeoutError:
            detail = f"auth hook timed out after {self.timeout:g} s"
        except Exception as exc:  # the application's callback: its failure is a refusal, not ours
            detail = "auth hook failed"
            self.ctx.log.warning("auth_hook_failed", hook=msg.hook, error=repr(exc)[:200])
        else:
            if isinstance(answer, str) and answer:
                client_id = answer
            else:
                detail = "refused by the auth hook"
        if self.running:
            self.ctx.reply(env, DelegatedAuthResult(msg.ref, client_id, detail))

    def stopped(self) -> None:
        self.running = False
        for task in self.tasks:
            task.cancel()


# --------------------------------------------------------------------------- the server


@dataclass
class RunningServer:
    node: Node
    host: AsyncioHost
    gateway: Gateway
    store: FileStore
    catalog: Catalog
    data: Path
    transport: TcpTransport | None = None
    bootstrap_key: str | None = None
    lock: FolderLock | None = field(default=None, repr=False)
    events: EventCounts | None = field(default=None, repr=False)  # log records by level and event
    peer_wire: MeteredCodec | None = field(default=None, repr=False)  # the peer protocol's counts
    started_at: float = 0.0  # the node's clock when it started
    _closed: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def closing(self) -> bool:
        """Whether `close` has begun (the endpoints then report the node as stopping)."""
        return self._closed

    async def close(self) -> None:
        """Clean shutdown: no new clients, every client closed, files flushed, catalog saved."""
        if self._closed:
            return
        self._closed = True
        try:
            if MEMBERSHIP in self.node.actors:  # a cluster member: peers mark it LEFT, not DOWN
                me = Address(self.node.node_id, MEMBERSHIP)
                self.node.send(me, me, Leave(), None)
                await asyncio.sleep(LEAVE_FLUSH)  # the announcements leave through the transport's buffers
            await self.gateway.close()
            self.store.flush_all()
            write_atomic(self.data / CATALOG_FILE, self.catalog.snapshot())
        finally:
            self.node.stop()
            self.store.close()
            if self.transport is not None:
                await self.transport.close()
            if self.lock is not None:
                self.lock.release()


def raise_open_file_limit() -> None:
    """Lift the soft limit on open files to the hard one: each open service holds two descriptors
    (the file and its mapping) and each client a socket, and 1,024 is soon reached."""
    if sys.platform == "win32":
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
        except (ValueError, OSError):
            pass  # a container may refuse: the per-tenant service quota still bounds the use


def _no_log(node: str, actor: str, level: str, event: str, fields: dict[str, object]) -> None:
    return None


async def start_server(
    data: str | os.PathLike[str],
    listen: tuple[str, int] = ("127.0.0.1", 8765),
    *,
    node_id: str = "server",
    ssl: ssl_module.SSLContext | None = None,
    gateway: GatewayConfig | None = None,
    hub: HubConfig | None = None,
    auth_hooks: Mapping[str, AuthHook] | None = None,
    auth_timeout: float | None = None,
    peer_listen: tuple[str, int] | None = None,
    peers: Mapping[str, tuple[str, int]] | None = None,
    tcp: TcpConfig | None = None,
    heartbeat: HeartbeatConfig | None = HeartbeatConfig(),
    kdf: KdfParams | None = None,
    honeypot: bool = False,
    seed: int | None = None,
    log_sink: LogSink | None = None,
    strict: bool = False,
    cluster: ClusterConfig | None = None,
    incarnation: int = 1,
    merge: Callable[[bytes, bytes], bytes] | None = None,
    http: HttpConfig | None = None,
) -> RunningServer:
    """Start one embedded server on the running loop (see the module docstring). With `cluster`
    (see `commy.runtime.cluster_node.start_cluster_node`) it is node `node_id` of that cluster:
    peer transport, heartbeat tuning and token key come from the configuration."""
    from commy.core.clients import CLIENTS, ClientHub
    from commy.core.hub_base import HubConfig
    from commy.runtime.http_endpoints import install_endpoints
    from commy.store import FileStore

    hub_config = hub or HubConfig()
    hook_timeout = auth_timeout if auth_timeout is not None else min(5.0, hub_config.delegated_timeout * 0.9)
    loop = asyncio.get_running_loop()
    folder = Path(data)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    raise_open_file_limit()
    lock = FolderLock(folder)
    host = AsyncioHost(loop)
    events = EventCounts()
    node = Node(node_id, host, node_seed(seed), log_sink=events.wrap(log_sink or _no_log), strict=strict)
    peer_wire: MeteredCodec | None = None
    transport: TcpTransport | None = None
    gw: Gateway | None = None
    store: FileStore | None = None
    try:
        key = load_or_create_key(folder / KEY_FILE)
        catalog_path = folder / CATALOG_FILE
        kdf_params = kdf or KdfParams()
        bootstrap: str | None = None
        if catalog_path.exists():
            catalog = Catalog.restore(catalog_path.read_bytes(), kdf=kdf_params)
        else:
            catalog = Catalog(kdf=kdf_params)
            _, bootstrap = catalog.create_api_key(BOOTSTRAP_CLIENT, server_admin=True, now=host.now(),
                                                  entropy=os.urandom)
        store = FileStore(folder / STORE_DIR, entropy=os.urandom, honeypot=honeypot)
        if cluster is not None:
            from commy.runtime.cluster_node import token_key

            key = token_key(cluster.secret)
            peer_listen, peers, heartbeat = cluster.node(node_id).peer, None, None
        if peer_listen is not None:
            secret = cluster.secret if cluster is not None else key  # a lone node's peers share its key file
            peer_wire = MeteredCodec(host.now)
            transport = TcpTransport(node, peer_listen, peers, tcp, secret=secret, loop=loop, codec=peer_wire)
            host.attach(transport)
            if heartbeat is not None:
                node.spawn(HEARTBEAT, lambda ctx: HeartbeatMonitor(ctx, list(peers or {}), heartbeat))
        gw = Gateway(node, listen, gateway, ssl=ssl, hub=CLIENTS, loop=loop)
        host.attach_clients(gw)
        node.spawn(CATALOG_STORE, lambda ctx: CatalogStore(ctx, catalog_path))
        hooks_name: str | None = None
        if auth_hooks:
            hooks_name = AUTH_HOOKS
            node.spawn(AUTH_HOOKS, lambda ctx: AuthHookRunner(ctx, auth_hooks, hook_timeout, loop))
        signer = TokenSigner(key)
        files = store
        member: HubCluster | None = None
        if cluster is not None:
            from commy.core.hlc import HybridClock
            from commy.runtime.cluster_node import hub_cluster, spawn_members

            me = cluster.member_info(node_id, incarnation)
            clock = HybridClock(me.index, host.now)
            spawn_members(node, cluster, me, store, clock, catalog, transport, merge)
            member = hub_cluster(cluster, clock)
        node.spawn(CLIENTS, lambda ctx: ClientHub(ctx, catalog=catalog, store=files, signer=signer,
                                                  entropy=os.urandom, config=hub_config, auth_hooks=hooks_name,
                                                  cluster=member))
        running = RunningServer(node, host, gw, store, catalog, folder, transport, bootstrap, lock, events=events,
                                peer_wire=peer_wire, started_at=host.now())
        install_endpoints(running, http or HttpConfig())
        if transport is not None:
            await transport.start()
        await gw.start()
        if bootstrap is not None:
            # Saved only once the server is up: a first start that fails (a busy port) leaves no
            # catalog behind, so the next start creates and shows a key again.
            write_atomic(catalog_path, catalog.snapshot())
    except BaseException:
        if gw is not None:
            await gw.close()
        node.stop()
        if store is not None:
            store.close()
        if transport is not None:
            await transport.close()
        lock.release()
        raise
    return running


def server_ssl_context(cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> ssl_module.SSLContext:
    """A TLS server context from a certificate chain and its private key (PEM files)."""
    ctx = ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl_module.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


__all__ = ["AuthHook", "AuthHookRunner", "CatalogStore", "RunningServer", "load_or_create_key",
           "server_ssl_context", "start_server", "write_atomic"]

"""Variables: get, set, subscribe, and local mapping of service files, with change fan-out.

Every change, whether a client's `SetVariables` or a local client's direct write into the mapped
file, ends in `broadcast`: one `VariableChanged` built once and sent to each connection
subscribed to that variable, in the order the changes happened. Writes through the server are
broadcast at once; direct writes are found by polling the mapped files every `local_poll` (1 ms by
default) -- a cheap read of the file's change mark, then a scan for versions that moved. The
writer slot recorded with each direct write says which local client made it; a write by a slot
whose client may not write is not broadcast but logged, and that client's mapping is rotated away.

`SetVariables` is the hot path, so it does each check once and nothing twice. The service's
handle comes from `open_services` (see `HubBase.served`): one dict hit stands for "the name is
valid, the service is in the catalog and this is its current file", and next to the handle sits
the set of variable names already written through it, so a known name is not validated again (a
new or unknown one is, before anything is written). The replies and events are built with the
messages' fast constructors, and a change nobody subscribes to is counted but never built.
"""

from __future__ import annotations

from commy.core.hub_base import CONCERNS, HubBase
from commy.core.permissions import Permission
from commy.core.session_sync import sessions_changed
from commy.core.sessions import ClientConn, Session, WriterSlots
from commy.core.store_api import ServiceHandle
from commy.errors import BAD_REQUEST, FORBIDDEN, NOT_FOUND, RATE_LIMITED, TOO_LARGE, UNAVAILABLE, RemoteProtocolError
from commy.messages import (
    Envelope,
    FileMigration,
    GetVariables,
    MapService,
    MigrationAck,
    ServiceMapped,
    ServiceUnmapped,
    SetVariables,
    Subscribe,
    SubscriptionAck,
    UnmapService,
    Unsubscribe,
    UnsubscribeAck,
    VariableChanged,
    VariablesData,
    VariablesUpdated,
    VariableValue,
    VariableVersion,
    WriteRecord,
    WritesMade,
    fast_constructor,
)
from commy.store.names import check_service, check_variable

_NO_NAMES: frozenset[str] = frozenset()
# Positional constructors without the frozen __init__'s per-field setattr (see fast_constructor).
_new_version = fast_constructor(VariableVersion)
_new_updated = fast_constructor(VariablesUpdated)
_new_changed = fast_constructor(VariableChanged)
_new_record = fast_constructor(WriteRecord)
_new_made = fast_constructor(WritesMade)


class VariableOps(HubBase):
    REQUESTS = {GetVariables: "get_variables", SetVariables: "set_variables", Subscribe: "subscribe",
                Unsubscribe: "unsubscribe", MapService: "map_service", UnmapService: "unmap_service",
                MigrationAck: "migration_ack"}

    def existing_service(self, tenant: str, service: str) -> None:
        check_service(service)
        if not self.catalog.has_service(tenant, service):
            raise RemoteProtocolError(f"service {service!r} not found in tenant {tenant!r}", NOT_FOUND)

    def _values(self, tenant: str, service: str, names: tuple[str, ...]) -> tuple[VariableValue, ...]:
        """The variables named (each once, however often named), refused as `too_large` past
        `max_reply_bytes`: a small request must not make a huge reply."""
        handle = self.store.open(tenant, service)
        entries = handle.entries() if not names else [e for n in dict.fromkeys(names) if (e := handle.read(n))]
        if sum(len(e.value) for e in entries) > self.config.max_reply_bytes:
            raise RemoteProtocolError(f"the reply would exceed {self.config.max_reply_bytes} bytes of values: "
                                      "ask for fewer variables", TOO_LARGE)
        writers = self.last_writer
        return tuple(VariableValue(e.name, e.value, e.version, writers.get((tenant, service, e.name), ""), e.stamp)
                     for e in entries)

    # ---- write concerns (a cluster's; see `commy.core.cluster_ops`)

    catching_up_since: float | None = None
    """When the node started, while its clock catches up with its peers' (cluster only): no stamps."""

    def refuse_catching_up(self, since: float) -> None:
        waited = max(0, round((self.ctx.now() - since) * 1000))
        raise RemoteProtocolError(f"this node started {waited} ms ago and is catching up with its peers: retry "
                                  "(nothing was written)", UNAVAILABLE)

    def concern_of(self, requested: str) -> str:
        if requested == "":
            return self.cluster.default_concern if self.cluster is not None else "local"
        if requested not in CONCERNS:
            raise RemoteProtocolError(f"unknown write concern {requested[:40]!r} (local, replicated, quorum)",
                                      BAD_REQUEST)
        return requested

    def check_available(self, concern: str) -> None:
        """Refuse (nothing written) a concern this node cannot meet with the peers it sees live."""
        cluster = self.cluster
        if cluster is None or concern == "local":
            return
        live = len(self.live_peers)
        if concern == "quorum":
            if (live + 1) * 2 <= cluster.cluster_size:
                raise RemoteProtocolError(
                    f"quorum write refused: this node reaches {live + 1} of {cluster.cluster_size} nodes, not a "
                    "majority (a minority side of a partition); nothing was written", UNAVAILABLE)
        else:
            need = min(cluster.replication_factor, cluster.cluster_size) - 1
            if live < need:
                raise RemoteProtocolError(
                    f"replicated write refused: it needs {need} other live replica(s), this node reaches {live}; "
                    "nothing was written", UNAVAILABLE)

    # ---- get / set

    def get_variables(self, conn: ClientConn, msg: GetVariables, env: Envelope) -> None:
        self.require(conn, msg.tenant, Permission.VARIABLE_READ)
        self.check_count("names", msg.names)
        self.existing_service(msg.tenant, msg.service)
        for name in msg.names:
            check_variable(name)
        self.ctx.reply(env, VariablesData(msg.tenant, msg.service, self._values(msg.tenant, msg.service, msg.names)))

    def set_variables(self, conn: ClientConn, msg: SetVariables, env: Envelope) -> None:
        tenant, service, variables = msg.tenant, msg.service, msg.variables
        session = self.require(conn, tenant, Permission.VARIABLE_WRITE)
        concern = msg.concern
        if concern != "local" or self.replicator is not None:
            if self.catching_up_since is not None:  # stamps made now could sort below older ones of this node
                self.refuse_catching_up(self.catching_up_since)
            concern = self.concern_of(concern)
            self.check_available(concern)  # refused before anything is written
        if len(variables) > self.config.max_names:
            self.check_count("variables", variables)
        key = (tenant, service)
        served = self.open_services.get(key) if type(service) is str else None
        known = served[1] if served is not None else _NO_NAMES
        max_value = self.config.max_value
        for nv in variables:  # every name and size before any write: a bad one refuses the whole request
            name = nv.name
            if type(name) is not str or name not in known:
                check_variable(name)
            if len(nv.value) > max_value:
                raise RemoteProtocolError(f"value of {name[:64]!r} is {len(nv.value)} bytes, over {max_value}",
                                          TOO_LARGE)
        if served is None:
            served = self.served(key, session)
        handle, known = served
        writer = session.client_id
        last_writer, seen, subscribers = self.last_writer, self.seen.get(key), self.subs.subscribers
        tick = self.clock.tick
        versions = []
        for nv in variables:
            name, value = nv.name, nv.value
            stamp = tick()
            version = handle.write(name, value, stamp=stamp)
            known.add(name)  # after the write: the set holds only names the file has
            versions.append(_new_version(name, version, stamp))
            last_writer[(tenant, service, name)] = writer
            if seen is not None:
                seen[name] = version  # our own write: the local poll must not announce it again
            self.stats["changes"] += 1
            targets = subscribers(tenant, service, name)
            if targets:  # nobody listening: nothing to build
                self.fan_out(_new_changed(tenant, service, name, value, version, writer, stamp), targets)
        reply = _new_updated(tenant, service, tuple(versions))
        if self.replicator is None:
            self.ctx.reply(env, reply)
            return
        records = tuple(_new_record(nv.name, nv.value, v.stamp, 0, writer)
                        for nv, v in zip(variables, versions, strict=True))
        if concern == "local":
            self.ctx.reply(env, reply)
            self.ctx.send(self.replicator, _new_made(tenant, service, records, concern, "", 0, None))
        else:  # the replicator answers once enough holders have it
            self.ctx.send(self.replicator, _new_made(tenant, service, records, concern, conn.conn_id, env.msg_id,
                                                      reply))

    def served(self, key: tuple[str, str], session: Session) -> tuple[ServiceHandle, set[str]]:
        """Check the service name, find the service (creating it if `session` may) and cache its handle."""
        tenant, service = key
        check_service(service)
        if not self.catalog.has_service(tenant, service):
            if Permission.SERVICE_CREATE not in session.permissions:
                raise RemoteProtocolError(f"service {service!r} not found in tenant {tenant!r} (and client "
                                          f"{session.client_id!r} may not create it)", NOT_FOUND)
            self.create_service(tenant, service)
        served = self.open_services[key] = (self.store.open(tenant, service), set())
        return served

    def create_service(self, tenant: str, service: str) -> None:
        if len(self.catalog.services(tenant)) >= self.config.max_services:
            raise RemoteProtocolError(f"tenant {tenant!r} has {self.config.max_services} services, its limit",
                                      RATE_LIMITED)
        self.store.open(tenant, service, create=True)  # the file first: if it fails, the catalog stays as it was
        self.catalog.create_service(tenant, service, self.ctx.now())
        self.catalog_changed()

    def broadcast(self, change: VariableChanged) -> None:
        self.stats["changes"] += 1
        targets = self.subs.subscribers(change.tenant, change.service, change.name)
        if targets:
            self.fan_out(change, targets)

    def fan_out(self, change: VariableChanged, conn_ids: list[str]) -> None:
        """Send one change, built once, to each of `conn_ids` still connected, in order."""
        conns, send = self.conns, self.ctx.send
        for conn_id in conn_ids:
            conn = conns.get(conn_id)
            if conn is not None:
                send(conn.address, change)

    # ---- subscriptions

    def subscribe(self, conn: ClientConn, msg: Subscribe, env: Envelope) -> None:
        self.require(conn, msg.tenant, Permission.SUBSCRIBE, Permission.VARIABLE_READ)  # events carry values
        self.check_count("names", msg.names)
        self.existing_service(msg.tenant, msg.service)
        for name in msg.names:
            check_variable(name)
        if self.subs.names_of(conn.conn_id) + len(msg.names) > self.config.max_subscribed:
            raise RemoteProtocolError(f"at most {self.config.max_subscribed} subscribed names per connection",
                                      RATE_LIMITED)
        self.subs.add(conn.conn_id, msg.tenant, msg.service, msg.names)
        current = self._values(msg.tenant, msg.service, msg.names)
        self.ctx.reply(env, SubscriptionAck(msg.tenant, msg.service, msg.names, current))
        sessions_changed(self, conn)

    def unsubscribe(self, conn: ClientConn, msg: Unsubscribe, env: Envelope) -> None:
        self.session_for(conn, msg.tenant)
        check_service(msg.service)
        self.check_count("names", msg.names)
        for name in msg.names:
            check_variable(name)
        self.subs.remove(conn.conn_id, msg.tenant, msg.service, msg.names)
        self.ctx.reply(env, UnsubscribeAck(msg.tenant, msg.service, msg.names))
        sessions_changed(self, conn)

    # ---- local mapping

    def map_service(self, conn: ClientConn, msg: MapService, env: Envelope) -> None:
        session = self.require(conn, msg.tenant, Permission.VARIABLE_READ)
        self.existing_service(msg.tenant, msg.service)
        if not conn.local:
            raise RemoteProtocolError("local mapping is only for clients on the server's own machine", FORBIDDEN)
        key = (msg.tenant, msg.service)
        slot = conn.mapped.get(key)
        if slot is None:
            slots = self.slots.get(key)
            if slots is None:
                slots = self.slots[key] = WriterSlots()
                handle = self.store.open(*key)
                self.marks[key] = handle.change_mark()
                self.seen[key] = {e.name: e.version for e in handle.entries()}
            slot = slots.claim(conn.conn_id, session.client_id)
            if slot is None:
                raise RemoteProtocolError(f"service {msg.service!r} is mapped by too many clients", RATE_LIMITED)
            conn.mapped[key] = slot
            self.path_holders.setdefault(key, set()).add(session.client_id)  # it knows the path from now on
            self.ensure_polling()
        path = str(self.store.path(*key))
        self.ctx.reply(env, ServiceMapped(msg.tenant, msg.service, path, slot))

    def unmap_service(self, conn: ClientConn, msg: UnmapService, env: Envelope) -> None:
        self.session_for(conn, msg.tenant)
        check_service(msg.service)
        self.poll_one((msg.tenant, msg.service))  # announce its last direct writes while we know the slot
        self.release_mapping(conn, (msg.tenant, msg.service))
        self.ctx.reply(env, ServiceUnmapped(msg.tenant, msg.service))

    def migration_ack(self, conn: ClientConn, msg: MigrationAck, env: Envelope) -> None:
        """A local client remapped a rotated file; acknowledgements get no reply."""
        self.ctx.log.info("file_migration_acked", conn=conn.conn_id, tenant=msg.tenant, service=msg.service)

    def poll_local_writes(self) -> None:
        for key in list(self.slots):
            self.poll_one(key)

    def poll_one(self, key: tuple[str, str]) -> None:
        slots, seen = self.slots.get(key), self.seen.get(key)
        if slots is None or seen is None or self.catching_up_since is not None:
            return  # (catching up: no stamps yet; the change mark stays, so the first poll after sees them)
        handle = self.store.open(*key)
        mark = handle.change_mark()
        if mark == self.marks.get(key):
            return
        self.marks[key] = mark
        tenant, service = key
        for entry in handle.changed_since(seen):
            client = slots.client_of(entry.writer, self.last_writer.get((tenant, service, entry.name), ""))
            owner = slots.owners.get(entry.writer)
            if owner is not None and not self._may_write(owner[0], tenant):
                self.ctx.log.error("unauthorized_local_write", tenant=tenant, service=service, variable=entry.name,
                                   client=client)
                self.unauthorized_writer(owner[0], key)
                continue
            stamp = self.clock.tick()
            if not handle.set_stamp(entry.name, entry.version, stamp):
                continue  # written again since: the next poll sees (and stamps) the newer value
            self.last_writer[(tenant, service, entry.name)] = client
            self.broadcast(VariableChanged(tenant, service, entry.name, entry.value, entry.version, client, stamp))
            if self.replicator is not None:
                self.ctx.send(self.replicator, WritesMade(tenant, service, (
                    WriteRecord(entry.name, entry.value, stamp, 0, client),), "local", "", 0, None))

    def _may_write(self, conn_id: str, tenant: str) -> bool:
        conn = self.conns.get(conn_id)
        session = conn.session(tenant) if conn is not None else None
        if session is None:
            return False
        return Permission.VARIABLE_WRITE in self.permissions_of(session.client_id, tenant)

    def unauthorized_writer(self, conn_id: str, key: tuple[str, str]) -> None:
        conn = self.conns.get(conn_id)
        if conn is not None:
            self.rotate_away(key, {conn_id})

    def rotate_away(self, key: tuple[str, str], banned: set[str]) -> None:
        """Move the service file to a new random name that the `banned` connections never learn.

        Their mappings end; every other local client mapping it gets `FileMigration` to remap and
        answers `MigrationAck`. The old file is deleted, or kept as a honeypot by the store.
        """
        self.poll_one(key)  # announce direct writes still pending in the old file first
        self.open_services.pop(key, None)  # its handle is about to be the old file's
        new_path = str(self.store.rotate(*key))
        self.stats["rotations"] += 1
        for conn_id in banned:
            conn = self.conns.get(conn_id)
            if conn is not None:
                self.release_mapping(conn, key)
        slots = self.slots.get(key)
        holders = slots.holders() if slots is not None else []
        # Only the mapping clients that stay learn the new path (with FileMigration).
        self.path_holders[key] = {client for _, client in slots.owners.values()} if slots is not None else set()
        if key in self.marks:
            self.marks[key] = self.store.open(*key).change_mark()
        self.ctx.log.warning("file_rotated", tenant=key[0], service=key[1], banned=len(banned), remapping=len(holders))
        for conn_id in holders:
            conn = self.conns.get(conn_id)
            if conn is not None:
                self.ctx.send(conn.address, FileMigration(key[0], key[1], new_path))

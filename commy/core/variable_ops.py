"""Variables: get, set, subscribe, and local mapping of service files, with change fan-out.

Every change, whether a client's `SetVariables` or a local client's direct write into the mapped
file, ends in `broadcast`: one `VariableChanged` built once and sent to each connection
subscribed to that variable, in the order the changes happened. Writes through the server are
broadcast at once; direct writes are found by polling the mapped files every `local_poll` (1 ms by
default) -- a cheap read of the file's change mark, then a scan for versions that moved. The
writer slot recorded with each direct write says which local client made it; a write by a slot
whose client may not write is not broadcast but logged, and that client's mapping is rotated away.
"""

from __future__ import annotations

from commy.core.hub_base import HubBase
from commy.core.permissions import Permission
from commy.core.sessions import ClientConn, WriterSlots
from commy.errors import BAD_REQUEST, FORBIDDEN, NOT_FOUND, RATE_LIMITED, RemoteProtocolError
from commy.messages import (
    ClientMigrationAck,
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
)
from commy.store.names import check_service, check_variable

CONCERNS = ("", "local", "replicated", "quorum")


class VariableOps(HubBase):
    REQUESTS = {GetVariables: "get_variables", SetVariables: "set_variables", Subscribe: "subscribe",
                Unsubscribe: "unsubscribe", MapService: "map_service", UnmapService: "unmap_service",
                MigrationAck: "migration_ack", ClientMigrationAck: "client_migration_ack"}

    def existing_service(self, tenant: str, service: str) -> None:
        check_service(service)
        if not self.catalog.has_service(tenant, service):
            raise RemoteProtocolError(f"service {service!r} not found in tenant {tenant!r}", NOT_FOUND)

    def _values(self, tenant: str, service: str, names: tuple[str, ...]) -> tuple[VariableValue, ...]:
        handle = self.store.open(tenant, service)
        entries = handle.entries() if not names else [e for n in names if (e := handle.read(n)) is not None]
        writers = self.last_writer
        return tuple(VariableValue(e.name, e.value, e.version, writers.get((tenant, service, e.name), ""))
                     for e in entries)

    # ---- get / set

    def get_variables(self, conn: ClientConn, msg: GetVariables, env: Envelope) -> None:
        self.require(conn, msg.tenant, Permission.VARIABLE_READ)
        self.check_count("names", msg.names)
        self.existing_service(msg.tenant, msg.service)
        for name in msg.names:
            check_variable(name)
        self.ctx.reply(env, VariablesData(msg.tenant, msg.service, self._values(msg.tenant, msg.service, msg.names)))

    def set_variables(self, conn: ClientConn, msg: SetVariables, env: Envelope) -> None:
        tenant, service = msg.tenant, msg.service
        session = self.require(conn, tenant, Permission.VARIABLE_WRITE)
        if msg.concern not in CONCERNS:
            raise RemoteProtocolError(f"unknown write concern {msg.concern[:40]!r} (local, replicated, quorum)",
                                      BAD_REQUEST)
        self.check_count("variables", msg.variables)
        for nv in msg.variables:
            check_variable(nv.name)
        if not self.catalog.has_service(tenant, service):
            check_service(service)
            if Permission.SERVICE_CREATE not in session.permissions:
                raise RemoteProtocolError(f"service {service!r} not found in tenant {tenant!r} (and client "
                                          f"{session.client_id!r} may not create it)", NOT_FOUND)
            self.create_service(tenant, service)
        handle = self.store.open(tenant, service)
        versions = []
        for nv in msg.variables:
            version = handle.write(nv.name, nv.value)
            versions.append(VariableVersion(nv.name, version))
            self.last_writer[(tenant, service, nv.name)] = session.client_id
            seen = self.seen.get((tenant, service))
            if seen is not None:
                seen[nv.name] = version  # our own write: the local poll must not announce it again
            self.broadcast(VariableChanged(tenant, service, nv.name, nv.value, version, session.client_id))
        self.ctx.reply(env, VariablesUpdated(tenant, service, tuple(versions)))

    def create_service(self, tenant: str, service: str) -> None:
        self.catalog.create_service(tenant, service, self.ctx.now())
        self.store.open(tenant, service, create=True)
        self.catalog_changed()

    def broadcast(self, change: VariableChanged) -> None:
        self.stats["changes"] += 1
        conns, send = self.conns, self.ctx.send
        for conn_id in self.subs.subscribers(change.tenant, change.service, change.name):
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
        self.subs.add(conn.conn_id, msg.tenant, msg.service, msg.names)
        current = self._values(msg.tenant, msg.service, msg.names)
        self.ctx.reply(env, SubscriptionAck(msg.tenant, msg.service, msg.names, current))

    def unsubscribe(self, conn: ClientConn, msg: Unsubscribe, env: Envelope) -> None:
        self.session_for(conn, msg.tenant)
        check_service(msg.service)
        self.check_count("names", msg.names)
        self.subs.remove(conn.conn_id, msg.tenant, msg.service, msg.names)
        self.ctx.reply(env, UnsubscribeAck(msg.tenant, msg.service, msg.names))

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
            self.ensure_polling()
        path = str(self.store.path(*key))
        self.ctx.reply(env, ServiceMapped(msg.tenant, msg.service, path, slot))

    def unmap_service(self, conn: ClientConn, msg: UnmapService, env: Envelope) -> None:
        self.session_for(conn, msg.tenant)
        self.poll_one((msg.tenant, msg.service))  # announce its last direct writes while we know the slot
        self.release_mapping(conn, (msg.tenant, msg.service))
        self.ctx.reply(env, ServiceUnmapped(msg.tenant, msg.service))

    def migration_ack(self, conn: ClientConn, msg: MigrationAck, env: Envelope) -> None:
        """A local client remapped a rotated file; acknowledgements get no reply."""
        self.ctx.log.info("file_migration_acked", conn=conn.conn_id, tenant=msg.tenant, service=msg.service)

    def client_migration_ack(self, conn: ClientConn, msg: ClientMigrationAck, env: Envelope) -> None:
        self.ctx.log.info("client_migration_acked", conn=conn.conn_id, session=msg.session_id,
                          accepted=msg.accepted)

    def poll_local_writes(self) -> None:
        for key in list(self.slots):
            self.poll_one(key)

    def poll_one(self, key: tuple[str, str]) -> None:
        slots, seen = self.slots.get(key), self.seen.get(key)
        if slots is None or seen is None:
            return
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
            self.last_writer[(tenant, service, entry.name)] = client
            self.broadcast(VariableChanged(tenant, service, entry.name, entry.value, entry.version, client))

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
        new_path = str(self.store.rotate(*key))
        self.stats["rotations"] += 1
        for conn_id in banned:
            conn = self.conns.get(conn_id)
            if conn is not None:
                self.release_mapping(conn, key)
        slots = self.slots.get(key)
        holders = slots.holders() if slots is not None else []
        if key in self.marks:
            self.marks[key] = self.store.open(*key).change_mark()
        self.ctx.log.warning("file_rotated", tenant=key[0], service=key[1], banned=len(banned), remapping=len(holders))
        for conn_id in holders:
            conn = self.conns.get(conn_id)
            if conn is not None:
                self.ctx.send(conn.address, FileMigration(key[0], key[1], new_path))

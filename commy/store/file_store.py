"""The server's store of service files: random file names, per-tenant folders and indexes, rotation.

    root/tenants/<tenant>/            mode 0o700, one folder per tenant
        index.json                    service -> file name, and the honeypots kept (see index.py)
        <32 random hex chars>.svc     one service file each (mode 0o600); names come from `entropy`

Only the server knows which random name holds which service, and the index is its memory of that:
it is rewritten atomically after every change, always after the file it names is in place and
before a file it no longer names is deleted, so a crash leaves at worst an orphan file, never an
index naming a file that was never written. Tenant and service names are validated by `names.py`,
and every path is resolved and checked to lie inside `root` before it is used (defence in depth
against a name check that is ever loosened, or a folder replaced by a symlink).

Rotation (revoking a client's access) copies the file consistently -- header included, so the
service's clocks (its version vector) and every entry's stamp come along -- to a new random name,
switches the index to it and then either deletes the old file or, with `honeypot=True`, keeps it and
records its change mark, size and mtime. `honeypot_alerts()` reports each honeypot touched since
(written through an old mapping, resized, modified or removed) once, then re-arms on what it saw.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from commy.errors import NOT_FOUND, LocalProtocolError, RemoteProtocolError
from commy.store.index import FILE_NAME, INDEX, Honeypot, TenantIndex, parse_index, write_index
from commy.store.layout import StoreError, read_change_mark
from commy.store.names import check_service, check_tenant
from commy.store.service_file import DEFAULT_MAX_VALUE, ServiceFile

__all__ = ["FileStore", "HoneypotAlert"]

_NAME_BYTES = 16
_TRIES = 8


@dataclass(frozen=True, slots=True)
class HoneypotAlert:
    tenant: str
    service: str
    path: Path
    detail: str


class FileStore:
    """Service files under `root`; the handles it opens write as writer slot 0 (the server)."""

    def __init__(self, root: str | os.PathLike[str], *, entropy: Callable[[int], bytes] = os.urandom,
                 honeypot: bool = False, table_capacity: int = 256, max_value: int = DEFAULT_MAX_VALUE) -> None:
        root = Path(root)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root = root.resolve()
        self._tenants_dir = self.root / "tenants"
        self._mkdir_private(self._tenants_dir)
        self._entropy = entropy
        self._honeypot = honeypot
        self._table_capacity = table_capacity
        self._max_value = max_value
        self._indexes: dict[str, TenantIndex] = {}
        self._open: dict[tuple[str, str], ServiceFile] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<FileStore {str(self.root)!r} {len(self._open)} open>"

    # ---- queries --------------------------------------------------------------------------------

    def exists(self, tenant: str, service: str) -> bool:
        check_service(service)
        with self._lock:
            return service in self._load(tenant).services

    def path(self, tenant: str, service: str) -> Path:
        """Where the service's file is, for a local client to map."""
        check_service(service)
        with self._lock:
            return self._file_path(tenant, self._file_name(tenant, service))

    def services(self, tenant: str) -> list[str]:
        with self._lock:
            return sorted(self._load(tenant).services)

    def tenants(self) -> list[str]:
        with self._lock:
            try:
                found = [e.name for e in os.scandir(self._tenants_dir) if e.is_dir(follow_symlinks=False)]
            except FileNotFoundError:
                return []
            return sorted(name for name in found if _valid_tenant(name))

    # ---- opening and removing -------------------------------------------------------------------

    def open(self, tenant: str, service: str, *, create: bool = False) -> ServiceFile:
        """The server's handle on the service's file (the same object every time until removed).

        An open handle is one dict hit: only names that passed validation ever become keys of
        `_open`, so a hit needs no second look at them (a dict read is atomic, so no lock either;
        the handle is closed only by remove/rotate/close, which callers order with their writes)."""
        try:
            sf = self._open.get((tenant, service))
        except TypeError:  # an unhashable name: refused by name below
            sf = None
        if sf is not None and not sf.closed:
            return sf
        key = (check_tenant(tenant), check_service(service))
        with self._lock:
            sf = self._open.get(key)
            if sf is not None and not sf.closed:
                return sf
            index = self._load(tenant)
            name = index.services.get(service)
            if name is None:
                if not create:
                    raise _not_found(tenant, service)
                sf = self._create(tenant, service, index)
            else:
                path = self._file_path(tenant, name)
                try:
                    sf = ServiceFile.open(path, writer=0, max_value=self._max_value)
                except FileNotFoundError:
                    raise StoreError(f"{self._index_path(tenant)}: service {service!r} is in {name}, "
                                     "which is missing") from None
            self._open[key] = sf
            return sf

    def remove(self, tenant: str, service: str) -> None:
        """Close the service's file, drop it from the index and delete it."""
        check_service(service)
        with self._lock:
            name = self._file_name(tenant, service)
            path = self._file_path(tenant, name)
            self._close_handle(tenant, service)
            index = self._load(tenant)
            del index.services[service]
            self._save(tenant, index)
            path.unlink(missing_ok=True)

    def remove_tenant(self, tenant: str) -> None:
        """Close and delete every file of the tenant, honeypots included, and its folder."""
        folder = self._tenant_dir(tenant)
        with self._lock:
            if not folder.is_dir():
                raise RemoteProtocolError(f"tenant {tenant!r} not found", code=NOT_FOUND)
            for t, s in [k for k in self._open if k[0] == tenant]:
                self._close_handle(t, s)
            self._indexes.pop(tenant, None)
            shutil.rmtree(folder)

    def rotate(self, tenant: str, service: str) -> Path:
        """Move the service to a new random file name (a consistent copy); return the new path."""
        with self._lock:
            old = self.open(tenant, service)
            index = self._load(tenant)
            old_name = index.services[service]
            folder = self._tenant_dir(tenant)
            new_name = self._new_file_name(folder)
            new_path = self._file_path(tenant, new_name)
            old.copy_to(new_path)
            try:
                new = ServiceFile.open(new_path, writer=0, max_value=self._max_value)
            except BaseException:
                new_path.unlink(missing_ok=True)
                raise
            # The copy carries the old file's counters, so its mark is the old file's at copy time.
            mark = new.change_mark()
            old_path = old.path
            old.close()
            self._open[(tenant, service)] = new
            index.services[service] = new_name
            if self._honeypot:
                st = os.stat(old_path)
                index.honeypots[old_name] = Honeypot(service, mark, st.st_size, st.st_mtime_ns)
            self._save(tenant, index)
            if not self._honeypot:
                old_path.unlink(missing_ok=True)
            return new_path

    def honeypot_alerts(self) -> list[HoneypotAlert]:
        """One alert per kept honeypot touched since rotation or since its last alert."""
        alerts: list[HoneypotAlert] = []
        with self._lock:
            for tenant in self.tenants():
                index = self._load(tenant)
                changed = False
                for name, pot in list(index.honeypots.items()):
                    path = self._file_path(tenant, name)
                    detail = self._inspect(path, index, name, pot)
                    if detail:
                        alerts.append(HoneypotAlert(tenant, pot.service, path, detail))
                        changed = True
                if changed:
                    self._save(tenant, index)
        return alerts

    def flush_all(self) -> None:
        with self._lock:
            for sf in self._open.values():
                if not sf.closed:
                    sf.flush()

    def close(self) -> None:
        with self._lock:
            for sf in self._open.values():
                sf.close()
            self._open.clear()

    def __enter__(self) -> FileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals ------------------------------------------------------------------------------

    def _inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise LocalProtocolError(f"store path {str(path)!r} resolves to {str(resolved)!r}, outside {self.root}")
        return resolved

    def _tenant_dir(self, tenant: str) -> Path:
        return self._inside(self._tenants_dir / check_tenant(tenant))

    def _index_path(self, tenant: str) -> Path:
        return self._inside(self._tenant_dir(tenant) / INDEX)

    def _file_path(self, tenant: str, name: str) -> Path:
        if not FILE_NAME.match(name):
            raise LocalProtocolError(f"not a service file name: {name!r}")
        return self._inside(self._tenant_dir(tenant) / name)

    def _file_name(self, tenant: str, service: str) -> str:
        name = self._load(tenant).services.get(service)
        if name is None:
            raise _not_found(tenant, service)
        return name

    @staticmethod
    def _mkdir_private(folder: Path) -> None:
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            return
        if hasattr(os, "chmod"):
            os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask

    def _new_file_name(self, folder: Path) -> str:
        for _ in range(_TRIES):
            raw = self._entropy(_NAME_BYTES)
            if not isinstance(raw, bytes) or len(raw) != _NAME_BYTES:
                raise LocalProtocolError(f"entropy({_NAME_BYTES}) returned {raw!r}")
            name = raw.hex() + ".svc"
            if not (folder / name).exists():
                return name
        raise LocalProtocolError(f"entropy source repeated itself {_TRIES} times")

    def _create(self, tenant: str, service: str, index: TenantIndex) -> ServiceFile:
        folder = self._tenant_dir(tenant)
        self._mkdir_private(folder)
        name = self._new_file_name(folder)
        path = self._file_path(tenant, name)
        sf = ServiceFile.create(path, table_capacity=self._table_capacity, max_value=self._max_value)
        index.services[service] = name
        try:
            self._save(tenant, index)
        except BaseException:
            del index.services[service]
            sf.close()
            path.unlink(missing_ok=True)
            raise
        return sf

    def _close_handle(self, tenant: str, service: str) -> None:
        sf = self._open.pop((tenant, service), None)
        if sf is not None:
            sf.close()

    def _inspect(self, path: Path, index: TenantIndex, name: str, pot: Honeypot) -> str:
        """What changed in one honeypot since its baseline ('' if nothing); re-arms on the new state."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            del index.honeypots[name]
            return "honeypot removed"
        try:
            mark: int | None = read_change_mark(path)[0]
        except (StoreError, OSError):
            mark = None
        details = []
        if mark != pot.mark:
            details.append("no longer a valid service file" if mark is None else
                           f"written since rotation (change mark {pot.mark} -> {mark})")
        if st.st_size != pot.size:
            details.append(f"size {pot.size} -> {st.st_size} bytes")
        if st.st_mtime_ns != pot.mtime_ns:
            details.append("modification time changed")
        pot.mark, pot.size, pot.mtime_ns = mark, st.st_size, st.st_mtime_ns
        return "; ".join(details)

    def _load(self, tenant: str) -> TenantIndex:
        check_tenant(tenant)
        cached = self._indexes.get(tenant)
        if cached is not None:
            return cached
        path = self._index_path(tenant)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return TenantIndex({}, {})  # not cached: the tenant may not exist yet
        except (OSError, UnicodeDecodeError) as e:
            raise StoreError(f"{path}: cannot read the index: {e}") from None
        index = parse_index(text, path)
        self._indexes[tenant] = index
        return index

    def _save(self, tenant: str, index: TenantIndex) -> None:
        folder = self._tenant_dir(tenant)
        self._mkdir_private(folder)
        write_index(self._index_path(tenant), index)
        self._indexes[tenant] = index


def _valid_tenant(name: str) -> bool:
    try:
        check_tenant(name)
    except RemoteProtocolError:
        return False
    return True


def _not_found(tenant: str, service: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"service {service!r} of tenant {tenant!r} not found", code=NOT_FOUND)

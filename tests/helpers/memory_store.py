"""An in-memory `ServiceStore` with the file store's behaviour, for hub tests with no files.

`write_as(slot, ...)` stands for a local client writing straight into the mapped file with its
writer slot; `rotate` records the old path as a honeypot so tests can see rotations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from commy.errors import NOT_FOUND, RemoteProtocolError


@dataclass(frozen=True)
class MemEntry:
    name: str
    value: bytes
    version: int
    writer: int
    stamp: int = 0


@dataclass(frozen=True)
class MemAlert:
    tenant: str
    service: str
    detail: str


class MemHandle:
    def __init__(self) -> None:
        self.vars: dict[str, MemEntry] = {}
        self.mark = 0

    def read(self, name: str) -> MemEntry | None:
        return self.vars.get(name)

    def write(self, name: str, value: bytes, *, stamp: int = 0) -> int:
        return self.write_as(0, name, value)

    def write_as(self, slot: int, name: str, value: bytes) -> int:
        old = self.vars.get(name)
        version = (old.version if old else 0) + 1
        self.vars[name] = MemEntry(name, bytes(value), version, slot)
        self.mark += 1
        return version

    def entries(self) -> list[MemEntry]:
        return list(self.vars.values())

    def change_mark(self) -> int:
        return self.mark

    def changed_since(self, seen: dict[str, int]) -> list[MemEntry]:
        out = [e for e in self.vars.values() if seen.get(e.name) != e.version]
        for e in out:
            seen[e.name] = e.version
        return out


class MemoryStore:
    def __init__(self) -> None:
        self.files: dict[tuple[str, str], MemHandle] = {}
        self.paths: dict[tuple[str, str], PurePosixPath] = {}
        self.rotated: list[tuple[str, str, PurePosixPath]] = []
        self.alerts: list[MemAlert] = []
        self._n = 0

    def _new_path(self, tenant: str) -> PurePosixPath:
        self._n += 1
        return PurePosixPath(f"/mem/{tenant}/{self._n:032x}.svc")

    def tenants(self) -> list[str]:
        return sorted({t for t, _ in self.files})

    def exists(self, tenant: str, service: str) -> bool:
        return (tenant, service) in self.files

    def open(self, tenant: str, service: str, *, create: bool = False) -> MemHandle:
        key = (tenant, service)
        if key not in self.files:
            if not create:
                raise RemoteProtocolError(f"service {service!r} not found", NOT_FOUND)
            self.files[key] = MemHandle()
            self.paths[key] = self._new_path(tenant)
        return self.files[key]

    def path(self, tenant: str, service: str) -> PurePosixPath:
        return self.paths[(tenant, service)]

    def remove(self, tenant: str, service: str) -> None:
        self.files.pop((tenant, service), None)
        self.paths.pop((tenant, service), None)

    def remove_tenant(self, tenant: str) -> None:
        for key in [k for k in self.files if k[0] == tenant]:
            self.remove(*key)

    def rotate(self, tenant: str, service: str) -> PurePosixPath:
        key = (tenant, service)
        self.rotated.append((tenant, service, self.paths[key]))
        self.paths[key] = self._new_path(tenant)
        return self.paths[key]

    def honeypot_alerts(self) -> list[MemAlert]:
        out, self.alerts = self.alerts, []
        return out

    def flush_all(self) -> None:
        return None

"""`MemoryStore`: the service store's behaviour with no files, for the simulator and unit tests.

It has the same shape as `FileStore` (see `commy.core.store_api`): per (tenant, service) a handle
with variables (value, version, writer slot, stamp), a change mark that moves on every write, and
the service's version vector (`clocks`, one stamp per origin index, values only grow). A simulated
node's "disk" is its `MemoryStore` object: the simulator keeps it across a crash and hands it to
the restarted node, exactly as a real node finds its data folder again.

Two test-only extras: `MemHandle.write_as(slot, ...)` stands for a local client writing straight
into the mapped file with its writer slot (unstamped, like a real mapped write), and `rotate`
records the old path in `rotated` so tests can see rotations.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from commy.errors import NOT_FOUND, LocalProtocolError, RemoteProtocolError

MAX_ORIGIN = 255
MAX_U64 = (1 << 64) - 1


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
    """One service's variables and version vector."""

    def __init__(self) -> None:
        self.vars: dict[str, MemEntry] = {}
        self.mark = 0
        self._clocks: dict[int, int] = {}

    def read(self, name: str) -> MemEntry | None:
        return self.vars.get(name)

    def write(self, name: str, value: bytes, *, stamp: int = 0) -> int:
        return self.write_as(0, name, value, stamp=stamp)

    def write_as(self, slot: int, name: str, value: bytes, *, stamp: int = 0) -> int:
        """Write as writer `slot` (0 = the server); returns the new version."""
        if type(stamp) is not int or not 0 <= stamp <= MAX_U64:
            raise LocalProtocolError(f"stamp must be an int in 0..2**64-1, not {stamp!r}")
        old = self.vars.get(name)
        version = (old.version if old else 0) + 1
        self.vars[name] = MemEntry(name, bytes(value), version, slot, stamp)
        self.mark += 1
        return version

    def set_stamp(self, name: str, version: int, stamp: int) -> bool:
        """Stamp `name` if it is still at `version` (a local client's write, stamped afterwards)."""
        entry = self.vars.get(name)
        if entry is None or entry.version != version:
            return False
        self.vars[name] = replace(entry, stamp=stamp)
        return True

    def clocks(self) -> dict[int, int]:
        """The version vector: origin index -> newest stamp held from it without a gap."""
        return dict(self._clocks)

    def set_clock(self, origin: int, stamp: int) -> None:
        """Raise the clock of `origin` to `stamp`; a smaller stamp is ignored (clocks only grow)."""
        if type(origin) is not int or not 0 <= origin <= MAX_ORIGIN:
            raise LocalProtocolError(f"origin must be an int in 0..{MAX_ORIGIN}, not {origin!r}")
        if type(stamp) is not int or not 0 <= stamp <= MAX_U64:
            raise LocalProtocolError(f"stamp must be an int in 0..2**64-1, not {stamp!r}")
        if stamp > self._clocks.get(origin, 0):
            self._clocks[origin] = stamp

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
    """Services by (tenant, service), each a `MemHandle`; paths are made up but unique."""

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

    def services(self, tenant: str) -> list[str]:
        return sorted(s for t, s in self.files if t == tenant)

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

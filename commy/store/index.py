"""A tenant's index file: which random file holds which service, and which honeypots are kept.

    {"format": "commy-store-index", "version": 1,
     "services": {service name: "<32 hex>.svc"},
     "honeypots": {"<32 hex>.svc": {"service": name, "mark": int | null, "size": int, "mtime_ns": int}}}

`write_index` replaces the file atomically: a temporary file in the same folder (mode 0o600),
fsync, `os.replace`, then an fsync of the folder so the rename itself survives a crash.
`parse_index` trusts nothing: every service name is validated as a client's would be, every file
name must be exactly 32 lowercase hex characters and `.svc` (so no path can be smuggled through
the index), no file may serve two services or be both a service and a honeypot; anything else is
a `StoreError` naming the index file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commy.errors import RemoteProtocolError
from commy.store.layout import StoreError
from commy.store.names import check_service

__all__ = ["FILE_NAME", "INDEX", "Honeypot", "TenantIndex", "parse_index", "write_index"]

INDEX = "index.json"
INDEX_FORMAT = "commy-store-index"
INDEX_VERSION = 1
FILE_NAME = re.compile(r"[0-9a-f]{32}\.svc\Z")


@dataclass(slots=True)
class Honeypot:
    service: str
    mark: int | None  # None once it no longer parses as a service file
    size: int
    mtime_ns: int


@dataclass(slots=True)
class TenantIndex:
    services: dict[str, str]
    honeypots: dict[str, Honeypot]


def write_index(path: Path, index: TenantIndex) -> None:
    doc = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "services": dict(sorted(index.services.items())),
           "honeypots": {name: {"service": p.service, "mark": p.mark, "size": p.size, "mtime_ns": p.mtime_ns}
                         for name, p in sorted(index.honeypots.items())}}
    data = json.dumps(doc, indent=1).encode("utf-8")
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=True) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":  # Windows has no directory handles to fsync; NTFS journals the rename
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_index(text: str, path: Path) -> TenantIndex:
    def bad(why: str) -> StoreError:
        return StoreError(f"{path}: corrupt index: {why}")

    try:
        doc: Any = json.loads(text)
    except ValueError as e:
        raise bad(f"not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
        raise bad("not a commy store index")
    if doc.get("version") != INDEX_VERSION:
        raise bad(f"version {doc.get('version')!r}, this commy reads {INDEX_VERSION}")
    services, pots = doc.get("services"), doc.get("honeypots", {})
    if not isinstance(services, dict) or not isinstance(pots, dict):
        raise bad("'services' and 'honeypots' must be objects")
    index = TenantIndex({}, {})
    for service, name in services.items():
        try:
            check_service(service)
        except RemoteProtocolError as e:
            raise bad(e.detail) from None
        if not isinstance(name, str) or not FILE_NAME.match(name):
            raise bad(f"service {service!r} has file name {name!r}")
        index.services[service] = name
    if len(set(index.services.values())) != len(index.services):
        raise bad("two services share one file")
    for name, rec in pots.items():
        if not FILE_NAME.match(name) or not isinstance(rec, dict) or name in index.services.values():
            raise bad(f"honeypot {name!r}")
        service, mark, size, mtime_ns = rec.get("service"), rec.get("mark"), rec.get("size"), rec.get("mtime_ns")
        if not (isinstance(service, str) and (mark is None or type(mark) is int)
                and type(size) is int and type(mtime_ns) is int):
            raise bad(f"honeypot {name!r} record {rec!r}")
        index.honeypots[name] = Honeypot(service, mark, size, mtime_ns)
    return index

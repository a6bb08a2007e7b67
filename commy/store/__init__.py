"""Service files: one memory-mapped file per (tenant, service), and the store the server keeps them in.

`ServiceFile` is the mapped file (seqlock reads, per-variable OS-locked writes, growth by remapping);
`FileStore` places those files under random names in per-tenant folders, indexes them, rotates
them and watches the honeypots rotation leaves behind; `names` validates what clients call things.

The names below are imported on first use, so `commy.store.names` -- pure validation, which the
sans-IO core uses -- can be imported without pulling in mmap, fcntl and threading.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from commy.store.file_store import FileStore, HoneypotAlert
    from commy.store.layout import StoreError
    from commy.store.names import MAX_NAME, check_service, check_tenant, check_variable
    from commy.store.service_file import Entry, ServiceFile

_WHERE = {"FileStore": "file_store", "HoneypotAlert": "file_store", "StoreError": "layout", "MAX_NAME": "names",
          "check_service": "names", "check_tenant": "names", "check_variable": "names", "Entry": "service_file",
          "ServiceFile": "service_file"}

__all__ = ["MAX_NAME", "Entry", "FileStore", "HoneypotAlert", "ServiceFile", "StoreError", "check_service",
           "check_tenant", "check_variable"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'commy.store' has no attribute {name!r}")
    return getattr(importlib.import_module(f"commy.store.{module}"), name)

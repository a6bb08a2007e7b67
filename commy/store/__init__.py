"""Service files: one memory-mapped file per (tenant, service), and the store the server keeps them in.

`ServiceFile` is the mapped file (seqlock reads, per-variable OS-locked writes, growth by remapping);
`FileStore` places those files under random names in per-tenant folders, indexes them, rotates
them and watches the honeypots rotation leaves behind; `names` validates what clients call things.
"""

from commy.store.file_store import FileStore, HoneypotAlert
from commy.store.layout import StoreError
from commy.store.names import MAX_NAME, check_service, check_tenant, check_variable
from commy.store.service_file import Entry, ServiceFile

__all__ = ["MAX_NAME", "Entry", "FileStore", "HoneypotAlert", "ServiceFile", "StoreError", "check_service",
           "check_tenant", "check_variable"]

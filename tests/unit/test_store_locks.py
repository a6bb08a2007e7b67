"""Lock plumbing: one process lock per file, and locks that survive a freed map's descriptor closing."""

from __future__ import annotations

import mmap
import os
import sys
from pathlib import Path

import pytest

from commy.store import ServiceFile, locks
from commy.store.layout import HEADER_EX, HEADER_UN


def test_service_files_of_one_file_share_one_process_lock(tmp_path: Path) -> None:
    a = ServiceFile.create(tmp_path / "a.svc")
    b = ServiceFile.open(tmp_path / "a.svc", writer=1)
    c = ServiceFile.create(tmp_path / "c.svc")
    assert a._plock is b._plock and a._plock is not c._plock
    key = (a._stat.st_dev, a._stat.st_ino)
    assert locks._registry[key].users == 2
    a.close()
    assert locks._registry[key].users == 1
    b.close()
    c.close()
    assert key not in locks._registry


@pytest.mark.skipif(not sys.platform.startswith("linux") or sys.maxsize <= 2**32, reason="OFD locks: 64-bit Linux")
def test_linux_uses_description_locks_that_a_freed_map_does_not_drop(tmp_path: Path) -> None:
    if os.environ.get("COMMY_STORE_LOCKS") == "posix":
        pytest.skip("classic locks were asked for")
    import fcntl

    assert locks.KIND == "ofd" and locks.SETLKW == fcntl.F_OFD_SETLKW
    path = tmp_path / "f"
    path.write_bytes(bytes(4096))
    fd, other = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        locks.setlk(fd, locks.SETLKW, HEADER_EX)
        mm = mmap.mmap(fd, 0)
        mm.close()  # closes CPython's dup of fd: a classic POSIX lock would be gone now
        with pytest.raises(BlockingIOError):
            fcntl.fcntl(other, fcntl.F_OFD_SETLK, HEADER_EX)  # another description is still kept out
        locks.setlk(fd, locks.SETLKW, HEADER_UN)
        fcntl.fcntl(other, fcntl.F_OFD_SETLK, HEADER_EX)
        fcntl.fcntl(other, fcntl.F_OFD_SETLK, HEADER_UN)
    finally:
        os.close(fd)
        os.close(other)

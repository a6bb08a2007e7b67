"""OS byte-range locks behind one small interface, and the per-file process locks.

`token(mode, start, length)` describes a lock request once (mode LOCK_SH, LOCK_EX or LOCK_UN;
length 0 means "to the end of the lock space"); `setlk(fd, SETLKW, token)` applies it, blocking.
Tokens are built ahead of time, so the write path pays one C call per lock and no wrapper:

- Linux (64-bit): open-file-description locks (`F_OFD_SETLKW`, the token is a packed
  `struct flock`). They belong to the open file, not to the process, so closing some *other*
  descriptor of the file -- which CPython's `mmap` does when a map is freed, since it keeps a dup
  of the descriptor -- does not drop them, and two ServiceFiles in one process do exclude each
  other.
- Other POSIX systems: classic record locks through `fcntl.lockf`. Those belong to the process
  and die with *any* descriptor of the file closing, so `ServiceFile` keeps every map it makes
  until it closes, and closes only under the process lock. `COMMY_STORE_LOCKS=posix` selects
  these on Linux too (the tests run both).
- Windows: `LockFileEx`/`UnlockFileEx` through ctypes on the descriptor's handle, shared or
  exclusive, blocking, on the same ranges (bytes past the end of the file are fine there too).
  Chosen by `sys.platform`; not exercised on the POSIX machines the tests run on.

Whatever the kind, every `ServiceFile` of one file in one process shares a `threading.Lock` (keyed
by device and inode) and holds it around every OS lock it takes and around closing: OS locks do
not make threads sharing one descriptor take turns, and classic locks do not even separate two
descriptors of one process.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Token = Any  # what `token` returns and `setlk` takes: opaque to callers

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import ctypes
    import msvcrt
    from ctypes import wintypes

    LOCK_UN, LOCK_SH, LOCK_EX = 8, 1, 2
    _EXCLUSIVE = 0x2
    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)

    class _Overlapped(ctypes.Structure):
        _fields_ = [("Internal", ctypes.c_size_t), ("InternalHigh", ctypes.c_size_t),
                    ("Offset", wintypes.DWORD), ("OffsetHigh", wintypes.DWORD), ("hEvent", wintypes.HANDLE)]

    _kernel32.LockFileEx.argtypes = [wintypes.HANDLE, wintypes.DWORD, wintypes.DWORD, wintypes.DWORD,
                                     wintypes.DWORD, ctypes.POINTER(_Overlapped)]
    _kernel32.LockFileEx.restype = wintypes.BOOL
    _kernel32.UnlockFileEx.argtypes = [wintypes.HANDLE, wintypes.DWORD, wintypes.DWORD, wintypes.DWORD,
                                       ctypes.POINTER(_Overlapped)]
    _kernel32.UnlockFileEx.restype = wintypes.BOOL

    def _win_lock(fd: int, cmd: int, length: int, start: int) -> None:
        if length == 0:
            length = (1 << 63) - start
        handle = msvcrt.get_osfhandle(fd)
        ov = _Overlapped(0, 0, start & 0xFFFFFFFF, start >> 32, None)
        low, high = length & 0xFFFFFFFF, length >> 32
        if cmd == LOCK_UN:
            ok = _kernel32.UnlockFileEx(handle, 0, low, high, ctypes.byref(ov))
        else:
            flags = _EXCLUSIVE if cmd == LOCK_EX else 0
            ok = _kernel32.LockFileEx(handle, flags, 0, low, high, ctypes.byref(ov))
        if not ok:
            err = ctypes.get_last_error()
            raise OSError(err, f"LockFileEx/UnlockFileEx failed on fd {fd} at {start}+{length}")

    def _tuple_token(mode: int, start: int, length: int) -> Token:
        return (mode, length, start)

    def _win_setlk(fd: int, _cmd: int, tok: Token) -> None:
        _win_lock(fd, *tok)

    KIND = "windows"
    SETLKW = 0
    token: Callable[[int, int, int], Token] = _tuple_token
    setlk: Callable[[int, int, Token], Any] = _win_setlk
else:
    import fcntl

    LOCK_UN, LOCK_SH, LOCK_EX = fcntl.LOCK_UN, fcntl.LOCK_SH, fcntl.LOCK_EX

    def _lockf_token(mode: int, start: int, length: int) -> Token:
        return (mode, length, start)

    def _lockf_setlk(fd: int, _cmd: int, tok: Token) -> None:
        fcntl.lockf(fd, *tok)

    _want = os.environ.get("COMMY_STORE_LOCKS", "")
    if (sys.platform.startswith("linux") and hasattr(fcntl, "F_OFD_SETLKW") and sys.maxsize > 2**32
            and _want != "posix"):
        _FLOCK = struct.Struct("hhqqi4x")  # short type, short whence, off_t start, off_t len, pid_t pid (0)
        _TYPES = {LOCK_SH: fcntl.F_RDLCK, LOCK_EX: fcntl.F_WRLCK, LOCK_UN: fcntl.F_UNLCK}

        def _ofd_token(mode: int, start: int, length: int) -> Token:
            return _FLOCK.pack(_TYPES[mode], os.SEEK_SET, start, length, 0)

        KIND = "ofd"
        SETLKW = fcntl.F_OFD_SETLKW
        token: Callable[[int, int, int], Token] = _ofd_token
        setlk: Callable[[int, int, Token], Any] = fcntl.fcntl
    else:
        KIND = "posix"
        SETLKW = 0
        token = _lockf_token
        setlk = _lockf_setlk

__all__ = ["KIND", "LOCK_EX", "LOCK_SH", "LOCK_UN", "SETLKW", "Token", "process_lock", "process_lock_for",
           "release_process_lock", "setlk", "token"]


class _Shared:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


_registry_guard = threading.Lock()
_registry: dict[tuple[int, int], _Shared] = {}  # (dev, ino) -> the lock its ServiceFiles share


def _key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def process_lock(st: os.stat_result) -> threading.Lock:
    """The process-wide lock of the file `st` describes; pair with `release_process_lock`."""
    with _registry_guard:
        shared = _registry.setdefault(_key(st), _Shared())
        shared.users += 1
        return shared.lock


def release_process_lock(st: os.stat_result) -> None:
    with _registry_guard:
        shared = _registry.get(_key(st))
        if shared is not None:
            shared.users -= 1
            if shared.users <= 0:
                del _registry[_key(st)]


@contextmanager
def process_lock_for(path: Path) -> Iterator[None]:
    """Hold the process lock of `path`'s file if some ServiceFile here has it open."""
    try:
        key = _key(os.stat(path))
    except OSError:
        yield
        return
    with _registry_guard:
        shared = _registry.get(key)
    if shared is None:
        yield
        return
    with shared.lock:
        yield

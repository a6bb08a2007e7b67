"""Validation of the names clients send: tenants, services and variables.

Tenant and service names become folder and index keys on the server, so they are held to a small
portable alphabet (`[A-Za-z0-9_.-]`, 1..64 characters, starting with a letter or digit, never a
Windows device name); that rules out `.`, `..`, separators, NUL and whitespace by construction.
Variable names only live inside a service file's table, so any UTF-8 text of 1..64 bytes without
control characters is accepted. Every refusal is a `RemoteProtocolError` with code `bad_request`
whose detail names the kind of name and the reason, and shows at most a short repr of the input.
"""

from __future__ import annotations

import re

from commy.errors import BAD_REQUEST, RemoteProtocolError

MAX_NAME = 64
_SHOWN = 40
_PATH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Windows resolves these (with any extension) to devices in every folder.
_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
                      | {f"COM{i}" for i in range(1, 10)} | {f"LPT{i}" for i in range(1, 10)})

__all__ = ["MAX_NAME", "check_service", "check_tenant", "check_variable"]


def _shown(name: str) -> str:
    return repr(name if len(name) <= _SHOWN else name[:_SHOWN] + "...")


def _refuse(kind: str, reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"{kind} name: {reason}", code=BAD_REQUEST)


def _check_path_name(kind: str, name: object) -> str:
    if not isinstance(name, str):
        raise _refuse(kind, f"must be a string, not {type(name).__name__}")
    if not name:
        raise _refuse(kind, "must not be empty")
    if len(name) > MAX_NAME:
        raise _refuse(kind, f"must be at most {MAX_NAME} characters")
    if name in (".", ".."):
        raise _refuse(kind, f"{name!r} is not allowed")
    if not _PATH_NAME.match(name):
        if not name[0].isascii() or not name[0].isalnum():
            raise _refuse(kind, f"must start with a letter or digit: {_shown(name)}")
        raise _refuse(kind, f"only letters, digits, '_', '.' and '-' are allowed: {_shown(name)}")
    if name.split(".")[0].upper() in _RESERVED:
        raise _refuse(kind, f"{_shown(name)} is a reserved device name")
    return name


def check_tenant(name: object) -> str:
    """Return `name` if it is a valid tenant name, else raise `RemoteProtocolError`."""
    return _check_path_name("tenant", name)


def check_service(name: object) -> str:
    """Return `name` if it is a valid service name, else raise `RemoteProtocolError`."""
    return _check_path_name("service", name)


def check_variable(name: object) -> str:
    """Return `name` if it is a valid variable name, else raise `RemoteProtocolError`."""
    kind = "variable"
    if not isinstance(name, str):
        raise _refuse(kind, f"must be a string, not {type(name).__name__}")
    if not name:
        raise _refuse(kind, "must not be empty")
    if len(name) > MAX_NAME:  # cheap bound before encoding a possibly huge string
        raise _refuse(kind, f"must be at most {MAX_NAME} bytes in UTF-8")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise _refuse(kind, f"must be valid UTF-8 (lone surrogate): {_shown(name)}") from None
    if size > MAX_NAME:
        raise _refuse(kind, f"must be at most {MAX_NAME} bytes in UTF-8")
    if _CONTROL.search(name):
        raise _refuse(kind, f"must not contain control characters: {_shown(name)}")
    return name

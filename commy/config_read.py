"""Typed reading of one configuration table, for `commy.config`.

A `Table` wraps one parsed table (a dict from TOML or YAML) and its key path (`nodes[2]`). Each
getter reads one key, checks its type and range, and on a bad value records a problem naming the
file and the full key path (`cluster.toml: nodes[2].peer: expected "HOST:PORT", got "nope"`) and
returns a placeholder, so reading goes on and the user sees every problem at once; the caller
raises after the whole file is read (`Problems.raise_if_any`). Every key a getter touches is
remembered, and `done()` reports the keys nobody read -- a typo must not pass silently -- with the
closest known key as a hint. `read_secret` loads the cluster secret without ever putting it in a
message.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, Final

from commy.errors import CommyError

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "*"})
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()


class ConfigError(CommyError, ValueError):
    """A configuration file is wrong. `problems` lists each one ("FILE: KEY: what is wrong")."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class Problems:
    """The problems found in one file so far."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(f"{self.where}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.items)


def show(value: Any) -> str:
    """A value as the user wrote it (TOML-ish), cut short."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, dict):
        text = "a table"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def node_id_problem(value: str) -> str | None:
    """Why `value` is not a valid node id or host name (None: it is)."""
    if NODE_ID.fullmatch(value):
        return None
    return (f"expected letters, digits, '-', '_' or '.' (at most 64, starting with a letter or digit), "
            f"got {show(value)}")


def format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> tuple[str, int] | None:
    """"HOST:PORT" or "[IPV6]:PORT" with a port 1-65535; None when it is not one."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
        if ":" in host:  # an IPv6 host must be bracketed, or the port is ambiguous
            return None
    if not sep or not host or any(ch.isspace() for ch in host) or not port.isdigit():
        return None
    return (host, int(port)) if 1 <= int(port) <= 65535 else None


class Table:
    """One table of the file being read; see the module docstring."""

    def __init__(self, data: Any, prefix: str, problems: Problems, *, base: Path, present: bool = True) -> None:
        self.data: dict[str, Any] = data if isinstance(data, dict) else {}
        self.prefix = prefix
        self.problems = problems
        self.base = base  # relative paths are read against the configuration file's folder
        self.present = present
        # A value that should be a table but is not was reported once; its keys are not.
        self.broken = data is not None and not isinstance(data, dict)
        self.read: set[str] = set()

    def key(self, key: str) -> str:
        if not key:
            return self.prefix
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, key: str, message: str) -> None:
        if self.broken:
            return
        self.problems.add(f"{self.key(key)}: {message}")

    def get(self, key: str, default: Any = REQUIRED) -> Any:
        """The raw value, or REQUIRED after recording that a required key is missing."""
        self.read.add(key)
        if key in self.data:
            return self.data[key]
        if default is REQUIRED:
            self.fail(key, "required key missing")
        return default

    def done(self) -> None:
        """Report every key of this table that no getter read."""
        for key in self.data:
            if key not in self.read:
                close = difflib.get_close_matches(str(key), sorted(self.read), n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                known = ", ".join(sorted(self.read)) or "none"
                self.fail(str(key), f"unknown key{hint}; the keys here are: {known}")

    # ------------------------------------------------------------------ nested tables

    def table(self, key: str) -> Table:
        value = self.get(key, None)
        if value is not None and not isinstance(value, dict):
            self.fail(key, f"expected a table ([{self.key(key)}]), got {show(value)}")
        return Table(value, self.key(key), self.problems, base=self.base, present=isinstance(value, dict))

    def tables(self, key: str) -> list[Table]:
        value = self.get(key, [])
        if not isinstance(value, list):
            self.fail(key, f"expected an array of tables ([[{self.key(key)}]]), got {show(value)}")
            return []
        out: list[Table] = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                self.fail(f"{key}[{i}]", f"expected a table, got {show(item)}")
                continue
            out.append(Table(item, f"{self.key(key)}[{i}]", self.problems, base=self.base))
        return out

    # ------------------------------------------------------------------ values

    def string(self, key: str, default: Any = REQUIRED) -> str:
        value = self.get(key, default)
        if value is REQUIRED:
            return ""
        if not isinstance(value, str) or (default is REQUIRED and not value.strip()):
            self.fail(key, f"expected a non-empty string, got {show(value)}")
            return ""
        return value

    def integer(self, key: str, default: int, *, low: int | None = None, high: int | None = None) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected a whole number, got {show(value)}")
            return default
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if low is not None and high is not None else (
                f"at least {low}" if low is not None else f"at most {high}")
            self.fail(key, f"must be {bounds}, got {value}")
            return default
        return value

    def seconds(self, key: str, default: float) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"expected a number of seconds, got {show(value)}")
            return default
        if not (math.isfinite(value) and value > 0):
            self.fail(key, f"must be a finite number of seconds > 0, got {show(value)}")
            return default
        return float(value)

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value = self.get(key, default)
        if value not in options:
            self.fail(key, f"expected one of {', '.join(options)}, got {show(value)}")
            return default
        return str(value)

    def strings(self, key: str, default: tuple[str, ...]) -> list[str]:
        value = self.get(key, default)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            self.fail(key, f'expected a list of strings (["n1", "n2"]), got {show(value)}')
            return list(default)
        return list(value)

    def node_id(self, key: str, default: Any = REQUIRED) -> str:
        """A name with the rules of a node id (node ids, host names); optional when given a default."""
        if default is not REQUIRED and key not in self.data:
            self.read.add(key)
            return str(default)
        value = self.string(key)
        problem = node_id_problem(value) if value else None
        if problem:
            self.fail(key, problem)
        return value

    def address(self, key: str) -> tuple[str, int]:
        value = self.get(key)
        if value is REQUIRED:
            return ("", 0)
        parsed = parse_address(value) if isinstance(value, str) else None
        if parsed is None:
            self.fail(key, f'expected "HOST:PORT" (port 1-65535; "[::1]:PORT" for IPv6), got {show(value)}')
            return ("", 0)
        return parsed

    def path(self, key: str) -> Path:
        value = self.string(key)
        if not value:
            return self.base
        path = Path(value).expanduser()
        return Path(os.path.normpath(path if path.is_absolute() else self.base / path))

    def existing_path(self, key: str) -> Path:
        path = self.path(key)
        if self.data.get(key) and not path.is_file():
            self.fail(key, f"no such file: {path}")
        return path


def read_secret(cluster: Table, min_bytes: int) -> tuple[bytes, str]:
    """The cluster secret from `secret_file` or `secret_env` (exactly one), and where it came from.
    Never puts the secret itself in a message."""
    has_file, has_env = "secret_file" in cluster.data, "secret_env" in cluster.data
    cluster.read.update({"secret_file", "secret_env"})  # both are known keys, whichever is used
    if has_file == has_env:
        which = "not both" if has_file else "one is required"
        cluster.fail("", f'give the cluster secret as secret_file = "PATH" or secret_env = "VARIABLE" ({which})')
        return b"", ""
    if has_env:
        name = cluster.string("secret_env")
        if not name:
            return b"", ""
        value = os.environ.get(name)
        if value is None:
            cluster.fail("secret_env", f"the environment variable {name} is not set")
            return b"", ""
        if len(value.strip()) < min_bytes:
            cluster.fail("secret_env", f"the environment variable {name} holds {len(value.strip())} characters "
                                       f"(after trimming whitespace); at least {min_bytes} are needed")
            return b"", ""
        return value.strip().encode(), f"environment variable {name}"
    if not cluster.string("secret_file"):
        return b"", ""
    path = cluster.path("secret_file")
    try:
        mode = path.stat().st_mode
        data = path.read_bytes().strip() if stat.S_ISREG(mode) else None
    except OSError as exc:
        cluster.fail("secret_file", f"cannot read {path}: {exc.strerror or exc}")
        return b"", ""
    if data is None:
        cluster.fail("secret_file", f"{path} is not a regular file")
        return b"", ""
    # Only the owner may read (or replace) the key every link trusts. Windows has no such mode bits.
    if os.name == "posix" and mode & 0o077:
        cluster.fail("secret_file", f"{path} is open to other users (mode {stat.S_IMODE(mode):o}); "
                                    f"run: chmod 600 {path}")
        return b"", ""
    if len(data) < min_bytes:
        cluster.fail("secret_file", f"{path} holds {len(data)} bytes (after trimming whitespace); at least "
                                    f"{min_bytes} are needed")
        return b"", ""
    return data, f"file {path}"

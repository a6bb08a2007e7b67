"""The hosts, launch and HTTP settings of the cluster configuration (`commy launch`, the endpoints).

`commy launch` runs one thespian actor system per machine ("host") and supervises the nodes placed
on it. Two optional parts of the cluster file describe that:

    [launch]                      how nodes are supervised (seconds, each finite and > 0)
    restart_min = 0.5             wait before the first restart of a node whose process died
    restart_max = 30.0            cap of the doubling backoff (at least restart_min)
    ready_timeout = 60.0          how long `commy launch` waits for every node to report ready
    orphan_timeout = 20.0         a node that heard nothing from its director for this long stops
                                  itself (the director was killed: nothing supervises it), >= 5

    [[hosts]]                     one per machine; the first is the leader (the thespian convention)
    name = "h1"                   required; the same rules as a node id
    address = "127.0.0.1"         the IPv4 address or host name its actor system binds to and is
                                  reached at (never a wildcard such as 0.0.0.0: the other hosts dial
                                  it; never IPv6: thespian's convention speaks IPv4 only)
    admin_port = 1900             the actor system's admin port (default 1900 + position)

and each `[[nodes]]` entry may name its `host` (default: the first host). Without `[[hosts]]` the
cluster has one host, "local" on 127.0.0.1 with admin port 1900, and every node runs there.

    [http]                        the plain-HTTP endpoints on each node's client port
    enabled = true                /health, /metrics, /status and the status page (false: none)
    public = false                answer clients on other machines too (false: loopback only, 403,
                                  and only requests whose Host names this machine, 421)
    token_file = "http.token"     optional: /status and /metrics (not /health, not the page itself)
                                  then need "Authorization: Bearer <the file's token>" (else 401);
                                  mode 0600 like the secret file, relative to the config file, at
                                  least 16 characters of A-Z a-z 0-9 - . _ ~ + / (then = padding)

`read_hosts` and `read_launch` type each value (the first pass of `commy.config`);
`host_problems` holds the rules between values, run by `ClusterConfig.__post_init__` (the second
pass), so a configuration built in code is checked the same way: unique host names, hosts that
exist, no two actor systems on one address and port, and no admin port on a node's port.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from commy.config_read import WILDCARD_HOSTS, Table, format_address, node_id_problem, show

if TYPE_CHECKING:
    from commy.config import ClusterConfig, NodeConfig

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_ADMIN_PORT",
    "DEFAULT_HOST",
    "HostConfig",
    "HttpConfig",
    "LaunchConfig",
    "address_problem",
    "describe_hosts",
    "host_problems",
    "is_wildcard",
    "read_hosts",
    "read_http",
    "read_launch",
    "read_token_file",
]

DEFAULT_HOST = "local"
DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_ADMIN_PORT = 1900
LAUNCH_KEYS = ("restart_min", "restart_max", "ready_timeout", "orphan_timeout")
ORPHAN_TIMEOUT_MIN = 5.0  # the director polls every 2 s: a shorter wait would stop healthy nodes
MIN_TOKEN = 16  # characters of an HTTP bearer token
TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750's b64token: fits a header and a URL fragment as is
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True, slots=True)
class HostConfig:
    """One machine of the cluster: the thespian actor system `commy launch` runs there."""

    name: str  # same charset/rules as node ids (config_read.NODE_ID)
    address: str = DEFAULT_ADDRESS  # the IP its actor system binds to and is reached at (THESPIAN_BASE_IPADDR)
    admin_port: int = DEFAULT_ADMIN_PORT  # the actor system's fixed admin port


@dataclass(frozen=True, slots=True)
class LaunchConfig:
    """How `commy launch` supervises nodes."""

    restart_min: float = 0.5  # seconds before the first restart of a node whose process died
    restart_max: float = 30.0  # cap of the doubling backoff
    ready_timeout: float = 60.0  # seconds `commy launch` waits for every node to report ready
    orphan_timeout: float = 20.0  # seconds without a word from the director after which a node stops itself


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The node's plain-HTTP endpoints (health, metrics, status, status page) on its client port."""

    enabled: bool = True  # False: the port answers WebSocket clients only
    public: bool = False  # False: only loopback clients (403) naming this machine in Host (421) get answers
    token: str | None = field(default=None, repr=False)  # set: /status and /metrics need it as a bearer token

    def __post_init__(self) -> None:
        if self.token is not None and (len(self.token) < MIN_TOKEN or not TOKEN.fullmatch(self.token)):
            raise ValueError(f"http.token: expected at least {MIN_TOKEN} characters of A-Z a-z 0-9 - . _ ~ + / "
                             "(then = padding)")


# --------------------------------------------------------------------------- single values


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def _is_host_name(text: str) -> bool:
    name = text[:-1] if text.endswith(".") else text  # a fully qualified name may end in "."
    labels = name.split(".")
    # An all-digit last label ("10.1.2") is a malformed IP, not a name.
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(lb) for lb in labels) and not labels[-1].isdigit()


def is_wildcard(address: str) -> bool:
    """An address that binds every interface ("0.0.0.0", "::", "*"): nobody can dial it."""
    ip = _ip(address)
    return address in WILDCARD_HOSTS or (ip is not None and ip.is_unspecified)


def address_problem(address: str) -> str | None:
    """Why nodes could not dial an actor system at `address` (None: they can)."""
    if is_wildcard(address):
        return (f"{show(address)} is a wildcard, not an address the other hosts can dial; "
                "give this machine's address")
    if _ip(address) is None and not _is_host_name(address):
        return f'expected an IPv4 address or a host name ("10.0.0.5", "db1.example"), got {show(address)}'
    if isinstance(_ip(address), ipaddress.IPv6Address):
        return (f"{show(address)} is an IPv6 address; thespian's convention speaks IPv4 only: give an IPv4 "
                "address or a host name")
    return None


def _same(address: str) -> str:
    """A key under which two spellings of one address are equal ("::1" and "0::1")."""
    ip = _ip(address)
    return ip.compressed if ip is not None else address.lower().rstrip(".")


# --------------------------------------------------------------------------- reading a file


def read_hosts(root: Table) -> tuple[HostConfig, ...]:
    """The `[[hosts]]` tables (empty when there are none: `ClusterConfig` adds the default host)."""
    hosts: list[HostConfig] = []
    for i, t in enumerate(root.tables("hosts")):
        name = t.node_id("name")
        address = t.string("address", DEFAULT_ADDRESS)
        admin_port = t.integer("admin_port", DEFAULT_ADMIN_PORT + i, low=1, high=65535)
        t.done()
        problem = address_problem(address) if isinstance(t.data.get("address", ""), str) else None
        if problem:
            t.fail("address", problem)
        hosts.append(HostConfig(name=name, address=address, admin_port=admin_port))
    return tuple(hosts)


def read_launch(root: Table) -> LaunchConfig:
    """The `[launch]` table (defaults when it is left out)."""
    t = root.table("launch")
    d = LaunchConfig()
    launch = LaunchConfig(restart_min=t.seconds("restart_min", d.restart_min),
                          restart_max=t.seconds("restart_max", d.restart_max),
                          ready_timeout=t.seconds("ready_timeout", d.ready_timeout),
                          orphan_timeout=t.seconds("orphan_timeout", d.orphan_timeout))
    t.done()
    return launch


def read_http(root: Table) -> HttpConfig:
    """The `[http]` table (defaults when it is left out)."""
    t = root.table("http")
    d = HttpConfig()
    enabled, public = _boolean(t, "enabled", d.enabled), _boolean(t, "public", d.public)
    token = _token(t) if "token_file" in t.data else None
    t.read.add("token_file")
    t.done()
    return HttpConfig(enabled=enabled, public=public, token=token)


def _token(t: Table) -> str | None:
    """The bearer token in the file `token_file` names (never shown in a message)."""
    if not t.string("token_file"):
        return None
    try:
        return read_token_file(t.path("token_file"))
    except ValueError as exc:
        t.fail("token_file", str(exc))
        return None


def read_token_file(path: Path) -> str:
    """The bearer token held in `path`, checked like the cluster secret's file: a regular file
    readable by its owner only, one token of at least MIN_TOKEN characters. ValueError says why not."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip() if stat.S_ISREG(mode) else None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if text is None:
        raise ValueError(f"{path} is not a regular file")
    if os.name == "posix" and mode & 0o077:
        raise ValueError(f"{path} is open to other users (mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}")
    if len(text) < MIN_TOKEN or not TOKEN.fullmatch(text):
        raise ValueError(f"{path} must hold one token of at least {MIN_TOKEN} characters of A-Z a-z 0-9 "
                         f"- . _ ~ + / (then = padding), got {len(text)} characters")
    return text


def _boolean(t: Table, key: str, default: bool) -> bool:
    value = t.get(key, default)
    if not isinstance(value, bool):
        t.fail(key, f"expected true or false, got {show(value)}")
        return default
    return value


# --------------------------------------------------------------------------- rules between values


def host_problems(hosts: tuple[HostConfig, ...], nodes: tuple[NodeConfig, ...],
                  launch: LaunchConfig) -> Iterator[str]:
    """The rules of hosts and launch settings ("key: message" each); node hosts already filled in."""
    first_name: dict[str, int] = {}
    admin: dict[tuple[str, int], int] = {}  # (address, admin port) -> host position
    for i, h in enumerate(hosts):
        key = f"hosts[{i}]"
        bad_name = node_id_problem(h.name)
        if bad_name:
            yield f"{key}.name: {bad_name}"
        elif h.name in first_name:
            yield f"{key}.name: {show(h.name)} is also the name of hosts[{first_name[h.name]}]"
        first_name.setdefault(h.name, i)
        bad_address = address_problem(h.address)
        if bad_address:
            yield f"{key}.address: {bad_address}"
        if not 1 <= h.admin_port <= 65535:
            yield f"{key}.admin_port: must be between 1 and 65535, got {h.admin_port}"
            continue
        place = (_same(h.address), h.admin_port)
        if place in admin:
            yield (f"{key}.admin_port: {format_address((h.address, h.admin_port))} is also the admin port of "
                   f"hosts[{admin[place]}] (two actor systems cannot share one)")
        admin.setdefault(place, i)
        clash = _node_port_clash(h, nodes)
        if clash:
            yield f"{key}.admin_port: {format_address((h.address, h.admin_port))} is also used by {clash}"
    known = ", ".join(h.name for h in hosts)
    if hosts == (HostConfig(DEFAULT_HOST),):
        known = f'{DEFAULT_HOST}, the default when no [[hosts]] are given'
    for j, n in enumerate(nodes):
        if n.host not in first_name:
            yield f"nodes[{j}].host: no host is named {show(n.host)} (the hosts are {known})"
    for key in LAUNCH_KEYS:
        value = getattr(launch, key)
        if not 0 < value < math.inf:  # also refuses NaN
            yield f"launch.{key}: must be a finite number of seconds > 0, got {value}"
    if launch.restart_max < launch.restart_min:
        yield f"launch.restart_max: must be at least restart_min ({launch.restart_min:g}), got {launch.restart_max:g}"
    if ORPHAN_TIMEOUT_MIN > launch.orphan_timeout:
        yield (f"launch.orphan_timeout: must be at least {ORPHAN_TIMEOUT_MIN:g} s (the director polls every 2 s), "
               f"got {launch.orphan_timeout:g}")


def _node_port_clash(h: HostConfig, nodes: tuple[NodeConfig, ...]) -> str:
    """The first node endpoint ("nodes[1].peer") on the admin port's address, or ""."""
    for j, n in enumerate(nodes):
        for what, (address, port) in (("peer", n.peer), ("listen", n.listen)):
            # A node bound to a wildcard takes the port on every address of its own machine.
            here = _same(address) == _same(h.address) or (is_wildcard(address) and n.host == h.name)
            if port == h.admin_port and here:
                return f"nodes[{j}].{what}"
    return ""


# --------------------------------------------------------------------------- a summary for people


def describe_hosts(config: ClusterConfig) -> list[str]:
    """The lines `describe` shows for the HTTP endpoints, the launch settings and each host."""
    la, http = config.launch, config.http
    exposure = "off" if not http.enabled else ("every client" if http.public else "loopback clients only")
    if http.enabled and http.token is not None:
        exposure += "; /status and /metrics need the bearer token of [http] token_file"
    lines = [f"  http endpoints (/health, /metrics, /status, /): {exposure}",
             f"  launch: restart a dead node after {la.restart_min:g} s (doubling, at most {la.restart_max:g} s), "
             f"wait {la.ready_timeout:g} s for every node to be ready, a node without its director stops after "
             f"{la.orphan_timeout:g} s"]
    for i, h in enumerate(config.hosts):
        leader = " (leader)" if i == 0 else ""
        on = ", ".join(n.id for n in config.nodes_on(h.name)) or "none"
        lines.append(f"  host {h.name}{leader}: address {h.address}, admin port {h.admin_port}, nodes {on}")
    return lines

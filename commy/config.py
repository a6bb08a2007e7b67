"""The cluster configuration file: one TOML file (YAML accepted when PyYAML is installed) per cluster.

`load_cluster_config(path)` reads the file in two passes. The first walks every table with a
`commy.config_read.Table`, which types and ranges each value, resolves paths against the file's
folder, reads the cluster secret (from a file or an environment variable) and remembers which keys
it read: a key nobody read is a typo and an error. The second pass is `ClusterConfig.__post_init__`
(so a configuration built in code, as the simulator does, is checked the same way): the rules
between values -- unique node ids, indexes and addresses, seeds that exist, a replication factor the
cluster can hold. Each pass collects every problem it finds before raising one `ConfigError`, so a
user fixes a file in one round; each problem names the file and the key path
(`cluster.toml: nodes[2].peer: ...`). The secret never appears in a repr, in `describe` or in an
error message.

The tables: `[cluster]` (name, secret, replication, concerns, seeds), `[heartbeat]`, `[timeouts]`,
`[tls]` (optional), `[http]` (optional: the health, metrics and status endpoints), one `[[nodes]]`
per server, and for `commy launch` the optional `[launch]` (restart backoff, ready timeout) and
`[[hosts]]` (one thespian actor system per machine: name, address, admin port; each node names its
`host`). Without `[[hosts]]` there is one host, "local"
on 127.0.0.1 with admin port 1900, running every node. The hosts and launch part -- its types,
reading and rules -- lives in `commy.config_hosts`, and so does `[http]`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from commy.config_hosts import (
    DEFAULT_HOST,
    HostConfig,
    HttpConfig,
    LaunchConfig,
    describe_hosts,
    host_problems,
    read_hosts,
    read_http,
    read_launch,
)
from commy.config_read import (
    WILDCARD_HOSTS,
    ConfigError,
    Problems,
    Table,
    format_address,
    read_secret,
    show,
)
from commy.core.heartbeat import HeartbeatConfig
from commy.core.replica_state import CONCERNS, RULES
from commy.messages.cluster import MemberInfo

__all__ = [
    "CONFLICT_RULES",
    "MIN_SECRET_BYTES",
    "WRITE_CONCERNS",
    "ClusterConfig",
    "ConfigError",
    "HostConfig",
    "HttpConfig",
    "LaunchConfig",
    "NodeConfig",
    "Timeouts",
    "TlsConfig",
    "describe",
    "load_cluster_config",
]

WRITE_CONCERNS = CONCERNS
CONFLICT_RULES = RULES
MIN_SECRET_BYTES = 16
MAX_INDEX = 255  # a stamp keeps the origin's index in its low byte


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds: a write concern's wait, the anti-entropy round, a stalled snapshot transfer, and
    how long a silent client keeps its session."""

    write: float = 2.0
    anti_entropy: float = 0.5
    transfer: float = 1.0
    client_heartbeat: float = 60.0


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Certificate chain and private key (PEM) the client gateway serves wss:// with."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """One server. `peer` is where the other nodes dial it (and where it listens for them);
    `listen` is where its clients connect; `url` is what clients are told to connect to; `host` is
    the name of the host (`[[hosts]]`) it runs on, "" in code meaning the first host."""

    id: str
    index: int
    peer: tuple[str, int]
    listen: tuple[str, int]
    data: Path
    priority: int = 0
    url: str = ""
    host: str = ""

    def __post_init__(self) -> None:
        if not self.url:
            object.__setattr__(self, "url", client_url(self.peer, self.listen, tls=False))


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """A whole cluster, validated. `secret` is the shared key links authenticate with (kept out of
    the repr); `secret_source` says where it came from; `path` is the file it was read from.
    `hosts` are the machines `commy launch` runs actor systems on (none given: one "local" host,
    127.0.0.1, admin port 1900); a node left without a host runs on the first one."""

    name: str
    secret: bytes = field(repr=False)
    nodes: tuple[NodeConfig, ...]
    replication_factor: int = 2
    write_concern: str = "local"
    conflict: str = "lww"
    seeds: tuple[str, ...] = ()  # empty: every node is a seed
    heartbeat: HeartbeatConfig = field(default_factory=HeartbeatConfig)
    timeouts: Timeouts = Timeouts()
    tls: TlsConfig | None = None
    hosts: tuple[HostConfig, ...] = ()
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    path: Path | None = None
    secret_source: str = ""

    def __post_init__(self) -> None:
        if not self.seeds:
            object.__setattr__(self, "seeds", tuple(n.id for n in self.nodes))
        object.__setattr__(self, "hosts", tuple(self.hosts) or (HostConfig(DEFAULT_HOST),))
        if any(not n.host for n in self.nodes):
            first = self.hosts[0].name
            object.__setattr__(self, "nodes", tuple(n if n.host else replace(n, host=first) for n in self.nodes))
        problems = [*_cross_problems(self), *host_problems(self.hosts, self.nodes, self.launch)]
        if problems:
            where = str(self.path) if self.path is not None else "<config>"
            raise ConfigError([f"{where}: {p}" for p in problems])

    def node(self, node_id: str) -> NodeConfig:
        for n in self.nodes:
            if n.id == node_id:
                return n
        known = ", ".join(n.id for n in self.nodes)
        raise ConfigError([f"{self.path or '<config>'}: no node {show(node_id)} (the nodes are {known})"])

    @property
    def leader(self) -> HostConfig:
        """The first host: the leader of the thespian convention the other hosts join."""
        return self.hosts[0]

    def host(self, name: str) -> HostConfig:
        for h in self.hosts:
            if h.name == name:
                return h
        known = ", ".join(h.name for h in self.hosts)
        raise ConfigError([f"{self.path or '<config>'}: no host {show(name)} (the hosts are {known})"])

    def nodes_on(self, host_name: str) -> tuple[NodeConfig, ...]:
        """The nodes that run on host `host_name` (in file order); ConfigError for an unknown host."""
        self.host(host_name)
        return tuple(n for n in self.nodes if n.host == host_name)

    def member_info(self, node_id: str, incarnation: int = 0) -> MemberInfo:
        n = self.node(node_id)
        return MemberInfo(n.id, n.index, n.peer[0], n.peer[1], n.url, incarnation)

    def seed_members(self) -> list[MemberInfo]:
        """The seeds as members to join through (incarnation 0: not known until they answer)."""
        return [self.member_info(s) for s in self.seeds]

    @property
    def priorities(self) -> dict[int, int]:
        """{node index: priority} for the "priority" conflict rule (nodes left at 0 omitted)."""
        return {n.index: n.priority for n in self.nodes if n.priority}


def client_url(peer: tuple[str, int], listen: tuple[str, int], *, tls: bool) -> str:
    # A wildcard listen address (0.0.0.0) is not one a client can dial: the peer host is the
    # address the other nodes reach this machine by, so clients are sent there.
    host = peer[0] if listen[0] in WILDCARD_HOSTS else listen[0]
    return f"{'wss' if tls else 'ws'}://{format_address((host, listen[1]))}"


def _cross_problems(c: ClusterConfig) -> Iterator[str]:
    """The rules between values ("key: message" each); the single values are typed already."""
    if len(c.secret) < MIN_SECRET_BYTES:
        yield f"cluster.secret: at least {MIN_SECRET_BYTES} bytes are needed, got {len(c.secret)}"
    if c.write_concern not in WRITE_CONCERNS:
        yield f"cluster.write_concern: expected one of {', '.join(WRITE_CONCERNS)}, got {show(c.write_concern)}"
    if c.conflict not in CONFLICT_RULES:
        yield f"cluster.conflict: expected one of {', '.join(CONFLICT_RULES)}, got {show(c.conflict)}"
    if not c.nodes:
        yield "nodes: at least one [[nodes]] entry is needed"
        return
    if not 1 <= c.replication_factor <= len(c.nodes):
        yield (f"cluster.replication_factor: must be between 1 and the number of nodes ({len(c.nodes)}), "
               f"got {c.replication_factor}")
    yield from _node_problems(c.nodes)
    ids = {n.id for n in c.nodes}
    seen: set[str] = set()
    for i, seed in enumerate(c.seeds):
        if seed not in ids:
            yield f"cluster.seeds[{i}]: no node has the id {show(seed)} (the nodes are {', '.join(sorted(ids))})"
        elif seed in seen:
            yield f"cluster.seeds[{i}]: {show(seed)} is listed twice"
        seen.add(seed)
    t = c.timeouts
    for key in ("write", "anti_entropy", "transfer", "client_heartbeat"):
        value = getattr(t, key)
        if not 0 < value < float("inf"):  # also refuses NaN
            yield f"timeouts.{key}: must be a finite number of seconds > 0, got {value}"


def _node_problems(nodes: tuple[NodeConfig, ...]) -> Iterator[str]:
    first_id: dict[str, int] = {}
    first_index: dict[int, int] = {}
    first_data: dict[tuple[str, Path], int] = {}
    endpoints: list[tuple[str, str, int, int]] = []  # (key, host, port, node position)
    for i, n in enumerate(nodes):
        if n.id in first_id:
            yield f"nodes[{i}].id: {show(n.id)} is also the id of nodes[{first_id[n.id]}]"
        first_id.setdefault(n.id, i)
        if not 1 <= n.index <= MAX_INDEX:
            yield f"nodes[{i}].index: must be between 1 and {MAX_INDEX}, got {n.index}"
        elif n.index in first_index:
            yield (f"nodes[{i}].index: {n.index} is also the index of nodes[{first_index[n.index]}] "
                   "(an index names a write's origin: each node needs its own)")
        first_index.setdefault(n.index, i)
        # Two nodes on one machine (same peer host) must not share a data folder.
        place = (n.peer[0], n.data)
        if place in first_data:
            yield f"nodes[{i}].data: {n.data} is also the data folder of nodes[{first_data[place]}] on the same host"
        first_data.setdefault(place, i)
        if n.peer[0] in WILDCARD_HOSTS:
            yield (f"nodes[{i}].peer: {n.peer[0]} is not an address other nodes can dial; give this "
                   "machine's address")
        endpoints += [(f"nodes[{i}].peer", n.peer[0], n.peer[1], i), (f"nodes[{i}].listen", *n.listen, i)]
    for k, (key, host, port, _) in enumerate(endpoints):
        for other, ohost, oport, _ in endpoints[:k]:
            clash = host == ohost or host in WILDCARD_HOSTS or ohost in WILDCARD_HOSTS
            if port == oport and clash:
                yield f"{key}: {format_address((host, port))} is also used by {other}"
                break


# --------------------------------------------------------------------------- reading a file


def load_cluster_config(path: str | Path) -> ClusterConfig:
    """Read and validate a cluster configuration; raises `ConfigError` naming the file and keys."""
    path = Path(path)
    where = str(path)
    raw = _parse(path, where)
    problems = Problems(where)
    root = Table(raw, "", problems, base=path.resolve().parent)
    cluster = root.table("cluster")
    name = cluster.string("name")
    secret, source = read_secret(cluster, MIN_SECRET_BYTES)
    rf_given = "replication_factor" in cluster.data
    replication_factor = cluster.integer("replication_factor", 2, low=1)
    write_concern = cluster.choice("write_concern", WRITE_CONCERNS, "local")
    conflict = cluster.choice("conflict", CONFLICT_RULES, "lww")
    seeds = cluster.strings("seeds", ())
    cluster.done()
    heartbeat = _heartbeat(root.table("heartbeat"))
    t = root.table("timeouts")
    timeouts = Timeouts(
        write=t.seconds("write", 2.0), anti_entropy=t.seconds("anti_entropy", 0.5),
        transfer=t.seconds("transfer", 1.0), client_heartbeat=t.seconds("client_heartbeat", 60.0))
    t.done()
    tls_table = root.table("tls")
    tls = _tls(tls_table) if tls_table.present else None  # no [tls]: clients use plain ws://
    nodes = tuple(_node(entry, i, tls is not None) for i, entry in enumerate(root.tables("nodes")))
    hosts = read_hosts(root)
    launch = read_launch(root)
    http = read_http(root)
    root.done()
    problems.raise_if_any()
    if not rf_given:  # the default 2, but a one-node cluster can only hold one copy
        replication_factor = min(2, max(1, len(nodes)))
    return ClusterConfig(
        name=name, secret=secret, nodes=nodes, replication_factor=replication_factor,
        write_concern=write_concern, conflict=conflict, seeds=tuple(seeds), heartbeat=heartbeat,
        timeouts=timeouts, tls=tls, hosts=hosts, launch=launch, http=http, path=path, secret_source=source)


def _parse(path: Path, where: str) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError([f"{where}: expected a .toml file (or .yaml/.yml with PyYAML installed)"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{where}: cannot read the file: {exc}"]) from None
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{where}: not valid TOML: {exc}"]) from None
    try:
        import yaml  # optional: only YAML files need it
    except ImportError:
        raise ConfigError([f"{where}: reading YAML needs PyYAML (pip install pyyaml); "
                           "or write the configuration as TOML"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{where}: not valid YAML: {exc}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{where}: expected a mapping of tables at the top, got {type(data).__name__}"])
    return data


def _heartbeat(t: Table) -> HeartbeatConfig:
    interval = t.seconds("interval", 0.3)
    suspect_after = t.integer("suspect_after", 2, low=1)
    down_after = t.integer("down_after", 5, low=1)
    t.done()
    if suspect_after > down_after:
        t.fail("suspect_after", f"must be at most down_after ({down_after}), got {suspect_after}")
        return HeartbeatConfig()
    try:
        return HeartbeatConfig(interval=interval, suspect_after=suspect_after, down_after=down_after)
    except ValueError as exc:  # a rule HeartbeatConfig has and this reader does not know yet
        t.fail("", str(exc))
        return HeartbeatConfig()


def _tls(t: Table) -> TlsConfig:
    cert = t.existing_path("cert")
    key = t.existing_path("key")
    t.done()
    return TlsConfig(cert=cert, key=key)


def _node(t: Table, position: int, tls: bool) -> NodeConfig:
    node_id = t.node_id("id")
    index = t.integer("index", position + 1, low=1, high=MAX_INDEX)
    peer = t.address("peer")
    listen = t.address("listen")
    data = t.path("data")
    priority = t.integer("priority", 0)
    url = t.string("url", "")
    host = t.node_id("host", "")  # "": the first host
    t.done()
    if url and not url.startswith(("ws://", "wss://")):
        t.fail("url", f'expected "ws://HOST:PORT" or "wss://HOST:PORT", got "{url}"')
    return NodeConfig(id=node_id, index=index, peer=peer, listen=listen, data=data, priority=priority,
                      url=url or client_url(peer, listen, tls=tls), host=host)


# --------------------------------------------------------------------------- a summary for people


def describe(config: ClusterConfig) -> str:
    """A short summary for `commy config check`: never the secret, only where it comes from."""
    c, hb, t = config, config.heartbeat, config.timeouts
    where = f" ({c.path})" if c.path is not None else ""
    lines = [
        f'cluster "{c.name}"{where}: {len(c.nodes)} nodes',
        f"  replication_factor {c.replication_factor}, write_concern {c.write_concern}, conflict {c.conflict}",
        f"  seeds: {', '.join(c.seeds)}",
        f"  heartbeat every {hb.interval:g} s, suspected after {hb.suspect_after} misses, "
        f"down after {hb.down_after}",
        f"  timeouts: write {t.write:g} s, anti_entropy {t.anti_entropy:g} s, transfer {t.transfer:g} s, "
        f"client_heartbeat {t.client_heartbeat:g} s",
        f"  tls: cert {c.tls.cert}, key {c.tls.key}" if c.tls else "  tls: off (clients use ws://)",
        f"  secret: {c.secret_source or 'given in code'} ({len(c.secret)} bytes)",
        *describe_hosts(c),
    ]
    for n in c.nodes:
        prio = f", priority {n.priority}" if n.priority else ""
        lines.append(f"  node {n.id} (index {n.index}): peer {format_address(n.peer)}, clients {n.url} "
                     f"(listen {format_address(n.listen)}), data {n.data}{prio}")
    return "\n".join(lines)

"""A node on its own: an asyncio host, a TCP transport and the node's actors, in one process.

`start_node` is the async API (tests and the benchmark run several nodes in one loop with it):
it builds the `Node` on an `AsyncioHost`, ties it to a `TcpTransport`, spawns the heartbeat
monitor (unless `heartbeat=None`) and any extra actors, and starts listening and dialing. The
transport exists before any actor starts, so nothing an actor sends in `started()` is lost.

Every peer link is authenticated with the cluster secret (`secret`, see `commy.link`). `commy node`
reads it from `--secret-file PATH` or the environment variable `COMMY_CLUSTER_SECRET`
(`load_cluster_secret`) and refuses to start without one.

`run_node_cli` is `commy node`: it parses the flags, writes every log record of info level or above
as one JSON line on stdout (flushed at once, so a supervisor reading a file sees it live), prints a
`ready` line once listening, and returns 0 after SIGTERM or SIGINT with everything closed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TextIO

from commy.core.actor import Actor, Context
from commy.core.heartbeat import HEARTBEAT, HeartbeatConfig, HeartbeatMonitor
from commy.core.node import LogSink, Node
from commy.runtime.asyncio_host import AsyncioHost, node_seed
from commy.runtime.loop import run
from commy.runtime.tcp import TcpConfig, TcpTransport

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
SECRET_ENV = "COMMY_CLUSTER_SECRET"
MIN_SECRET = 16  # bytes: shorter is guessable
_RESERVED = ("t", "node", "actor", "level", "event")


@dataclass
class RunningNode:
    node: Node
    transport: TcpTransport
    host: AsyncioHost

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport.listen_address is not None
        return self.transport.listen_address

    async def close(self) -> None:
        self.node.stop()
        await self.transport.close()


async def start_node(
    node_id: str,
    listen: tuple[str, int],
    peers: Mapping[str, tuple[str, int]] | None = None,
    *,
    secret: bytes,
    heartbeat: HeartbeatConfig | None = HeartbeatConfig(),
    actors: Mapping[str, Callable[[Context], Actor]] | None = None,
    seed: int | None = None,
    log_sink: LogSink | None = None,
    tcp: TcpConfig | None = None,
    strict: bool = False,
) -> RunningNode:
    """Start a node listening on `listen` (port 0 picks a free one) and dialing `peers`; every
    link is authenticated with the cluster `secret`."""
    loop = asyncio.get_running_loop()
    host = AsyncioHost(loop)
    node = Node(node_id, host, node_seed(seed), log_sink=log_sink or _no_log, strict=strict)
    peers = dict(peers or {})
    transport = TcpTransport(node, listen, peers, tcp, secret=secret, loop=loop)
    host.attach(transport)
    if heartbeat is not None:
        node.spawn(HEARTBEAT, lambda ctx: HeartbeatMonitor(ctx, list(peers), heartbeat))
    for name, factory in (actors or {}).items():
        node.spawn(name, factory)
    try:
        await transport.start()
    except BaseException:
        node.stop()
        await transport.close()
        raise
    return RunningNode(node, transport, host)


def _no_log(node: str, actor: str, level: str, event: str, fields: dict[str, object]) -> None:
    return None


def json_log_sink(stream: TextIO, min_level: str = "info") -> LogSink:
    """A sink writing each record as one JSON line: t, node, actor, level, event, then fields."""
    threshold = LEVELS[min_level]

    def sink(node: str, actor: str, level: str, event: str, fields: dict[str, object]) -> None:
        if LEVELS.get(level, 50) < threshold:
            return
        record: dict[str, object] = {"t": round(time.time(), 6), "node": node, "actor": actor, "level": level,
                                     "event": event}
        for key, value in fields.items():
            record["field_" + key if key in _RESERVED else key] = value
        stream.write(json.dumps(record, default=str) + "\n")
        stream.flush()

    return sink


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def parse_peers(items: list[str]) -> dict[str, tuple[str, int]]:
    peers: dict[str, tuple[str, int]] = {}
    for item in items:
        name, sep, addr = item.partition("=")
        if not sep or not name:
            raise ValueError(f"expected ID=HOST:PORT, got {item!r}")
        if name in peers:
            raise ValueError(f"peer {name!r} given twice")
        peers[name] = parse_address(addr)
    return peers


def load_cluster_secret(path: str | None, environ: Mapping[str, str]) -> bytes:
    """The cluster secret from the file at `path` (surrounding whitespace, such as the newline an
    editor adds, is ignored) or else from `environ[SECRET_ENV]`; ValueError says what is wrong."""
    if path is not None:
        try:
            with open(path, "rb") as f:
                secret = f.read().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the cluster secret file {path!r}: {exc.strerror or exc}") from None
        where = f"the secret file {path!r}"
    elif environ.get(SECRET_ENV):
        secret = environ[SECRET_ENV].strip().encode("utf-8")
        where = SECRET_ENV
    else:
        raise ValueError(f"no cluster secret: give --secret-file PATH or set {SECRET_ENV} "
                         "(the same secret on every node of the cluster)")
    if len(secret) < MIN_SECRET:
        raise ValueError(f"the cluster secret in {where} is too short: {len(secret)} bytes, need at least {MIN_SECRET}")
    return secret


def run_node_cli(args: argparse.Namespace) -> int:
    try:
        secret = load_cluster_secret(args.secret_file, os.environ)
        listen = parse_address(args.listen)
        peers = parse_peers(args.peer)
        if args.id in peers:
            raise ValueError(f"node {args.id!r} lists itself as a peer")
        defaults = HeartbeatConfig()
        config = HeartbeatConfig(
            interval=defaults.interval if args.interval is None else args.interval,
            suspect_after=defaults.suspect_after if args.suspect_after is None else args.suspect_after,
            down_after=defaults.down_after if args.down_after is None else args.down_after,
        )
    except ValueError as exc:
        print(f"commy node: {exc}", file=sys.stderr)
        return 2
    return run(_serve(args.id, listen, peers, config, args.seed, secret, sys.stdout))


async def _serve(node_id: str, listen: tuple[str, int], peers: dict[str, tuple[str, int]],
                 config: HeartbeatConfig, seed: int | None, secret: bytes, out: TextIO) -> int:
    sink = json_log_sink(out)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        running = await start_node(node_id, listen, peers, secret=secret, heartbeat=config, seed=seed,
                                   log_sink=sink)
    except OSError as exc:
        sink(node_id, "node", "error", "listen_failed", {"listen": f"{listen[0]}:{listen[1]}", "error": str(exc)})
        return 1
    host, port = running.address
    sink(node_id, "node", "info", "ready", {"listen": f"{host}:{port}", "peers": sorted(peers), "pid": os.getpid(),
                                            "interval": config.interval})
    await stop.wait()
    await running.close()
    sink(node_id, "node", "info", "stopped", {})
    return 0

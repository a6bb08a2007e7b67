"""`commy launch`, `commy status` and `commy stop`: the production launch from a shell.

`commy launch CONFIG` starts an actor system for every host of the configuration that is on this
machine (the leader first; the others are started on their machines with `--host`), creates the
director on the leader and waits until every node of those hosts reported ready, then prints one
line per node and exits 0 (1 if a node was not ready in `launch.ready_timeout`; the systems stay
up for `commy status` and `commy stop`). If the launch breaks off before the director answered
(an error, Ctrl-C), the systems it started are shut down again. With `--host NAME` it starts
that host alone, as on a second machine: a member host's nodes start once it registered with the
leader; the leader host launches the cluster and waits for its own nodes. `commy status CONFIG`
prints the director's view of every node (exit 0 when all are ready, 1 otherwise); `--json`
prints it as JSON. `commy stop CONFIG` closes every node cleanly, then shuts the actor systems of
this machine down and checks their ports closed; `--host NAME` shuts one host down. Every
request to the director carries a proof made with the cluster secret, so these commands need the
configuration's secret (its file or environment variable) as the nodes do.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from commy.config import ClusterConfig, ConfigError, HostConfig, load_cluster_config
from commy.launch.control import DIRECTOR_NAME, LaunchCluster, LaunchStatus, StatusRequest, StopCluster, proved
from commy.launch.node_runtime import ADMIN_KEY_FILE
from commy.launch.systems import (
    LaunchError,
    admin_listening,
    attach,
    is_local,
    local_address,
    request,
    shutdown_system,
    start_system,
)

ANSWER_MARGIN = 10.0  # seconds a command waits beyond the director's own deadline
STATUS_TIMEOUT = 10.0
STOP_WAIT = 30.0


def add_launch_parsers(sub: Any) -> None:
    launch = sub.add_parser("launch", help="start a cluster on thespian actor systems (one per host)")
    launch.add_argument("config", help="cluster configuration (TOML)")
    launch.add_argument("--host", default=None, help="start only this host's actor system (another machine)")
    launch.add_argument("--logs", default=None, metavar="DIR", help="thespian logs (default: logs/ by the config)")
    launch.set_defaults(func=run_launch)
    status = sub.add_parser("status", help="each node of a launched cluster: state, clients, services, lag")
    status.add_argument("config", help="cluster configuration (TOML)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=run_status)
    stop = sub.add_parser("stop", help="stop a launched cluster cleanly: no process left behind")
    stop.add_argument("config", help="cluster configuration (TOML)")
    stop.add_argument("--host", default=None, help="shut down only this host's actor system")
    stop.set_defaults(func=run_stop)


def _config(args: argparse.Namespace, command: str) -> ClusterConfig | None:
    try:
        config = load_cluster_config(args.config)
        if getattr(args, "host", None) is not None:
            config.host(args.host)
        return config
    except ConfigError as exc:
        print(f"commy {command}: error: {exc}", file=sys.stderr)
        return None


def _director(config: ClusterConfig) -> tuple[Any, Any]:
    from commy.launch.director import Director

    asys = attach(config.leader, via=local_address(config, prefer=config.leader))
    return asys, asys.createActor(Director, globalName=DIRECTOR_NAME)


def _request_id() -> str:
    return uuid.uuid4().hex


# --------------------------------------------------------------------------- launch


def run_launch(args: argparse.Namespace) -> int:
    config = _config(args, "launch")
    if config is None:
        return 2
    assert config.path is not None
    path = config.path.resolve()
    logs = Path(args.logs) if args.logs else path.parent / "logs"
    if args.host:
        hosts = [config.host(args.host)]
    else:
        hosts = [h for h in config.hosts if is_local(h.address)]
        for h in config.hosts:
            if h not in hosts:
                print(f"host {h.name} ({h.address}) is another machine: run `commy launch {args.config} --host "
                      f"{h.name}` there; its nodes start once it registered")
    if config.leader not in hosts and not args.host:
        print(f"commy launch: error: the leader host {config.leader.name} ({config.leader.address}) is not "
              f"this machine: launch there, or start this machine's host with --host", file=sys.stderr)
        return 1
    started: list[HostConfig] = []
    try:
        for host in hosts:
            start_system(path, host, logs)
            started.append(host)
            print(f"host {host.name}: actor system on {host.address}:{host.admin_port}", flush=True)
        if config.leader not in hosts:
            print(f"host {args.host} joins the leader {config.leader.name} at {config.leader.address}:"
                  f"{config.leader.admin_port}; its nodes start once it registered (see commy status)")
            return 0
        asys, director = _director(config)
        wait = tuple(h.name for h in hosts)
        launch = proved(config.secret, LaunchCluster(_request_id(), str(path), wait))
        answer = request(asys, director, launch, LaunchStatus, config.launch.ready_timeout + ANSWER_MARGIN)
    except BaseException as exc:  # an error, or Ctrl-C: leave nothing half-started behind
        what = str(exc) if isinstance(exc, LaunchError) else (type(exc).__name__ + (f": {exc}" if str(exc) else ""))
        print(f"commy launch: error: {what}; shutting down the actor systems it started", file=sys.stderr)
        _shutdown_quietly(started)
        if not isinstance(exc, Exception):
            raise
        return 1
    print(format_status(answer))
    for node in config.nodes:
        key_file = node.data / ADMIN_KEY_FILE
        if key_file.exists():
            print(f"admin key of {node.id}'s first start: in {key_file} (readable by you only)")
    if answer.error:
        print(f"commy launch: {answer.error}", file=sys.stderr)
        return 1
    return 0


def _shutdown_quietly(hosts: list[HostConfig]) -> None:
    for host in reversed(hosts):
        try:
            shutdown_system(host)
        except Exception as exc:  # keep going: the others must still stop
            print(f"commy launch: host {host.name}: {exc}; `commy stop` may finish the job", file=sys.stderr)


# --------------------------------------------------------------------------- status


def run_status(args: argparse.Namespace) -> int:
    config = _config(args, "status")
    if config is None:
        return 2
    try:
        asys, director = _director(config)
        answer = request(asys, director, proved(config.secret, StatusRequest(_request_id())), LaunchStatus,
                         STATUS_TIMEOUT)
    except LaunchError as exc:
        print(f"commy status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(answer), indent=2) if args.json else format_status(answer))
    if answer.error:
        print(f"commy status: {answer.error}", file=sys.stderr)
        return 1
    return 0 if answer.nodes and all(n.state == "ready" for n in answer.nodes) else 1


def format_status(s: LaunchStatus) -> str:
    director = f" (director pid {s.director_pid})" if s.director_pid else ""
    lines = [f"cluster {s.cluster or '?'}{director}: " + ", ".join(f"host {h} {'up' if up else 'not registered'}"
                                                         for h, up in s.hosts)]
    header = ("node", "host", "state", "pid", "url", "uptime", "restarts", "clients", "services", "lag p99",
              "peers not healthy")
    rows = [header]
    for n in s.nodes:
        unwell = ", ".join(f"{p} {st}" for p, st in n.peers if st != "healthy")
        rows.append((n.node_id, n.host, n.state, str(n.pid or "-"), n.url or "-", f"{n.uptime:.0f}s",
                     str(n.restarts), _num(n.clients), _num(n.services),
                     f"{n.lag_p99_ms:.1f} ms" if n.lag_p99_ms >= 0 else "-", unwell or ("-" if n.peers else "?")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines += [f"  {n.node_id}: last failure: {n.detail}" for n in s.nodes if n.detail]
    return "\n".join(lines)


def _num(value: int) -> str:
    return str(value) if value >= 0 else "-"


# --------------------------------------------------------------------------- stop


def run_stop(args: argparse.Namespace) -> int:
    config = _config(args, "stop")
    if config is None:
        return 2
    leader = config.leader
    stop_nodes = args.host is None or args.host == leader.name
    if stop_nodes and admin_listening(leader):
        try:  # best effort: the actor systems are shut down below whatever the director says
            asys, director = _director(config)
            answer = request(asys, director, proved(config.secret, StopCluster(_request_id())), LaunchStatus,
                             STOP_WAIT)
            print("nodes stopped" if not answer.error else f"commy stop: {answer.error}",
                  file=sys.stderr if answer.error else sys.stdout)
        except Exception as exc:  # thespian's own errors too: a stuck director must not keep the systems up
            print(f"commy stop: the director did not stop the nodes ({exc}); shutting the systems down",
                  file=sys.stderr)
    try:
        hosts = [config.host(args.host)] if args.host else [h for h in config.hosts if h is not leader] + [leader]
        for host in hosts:
            if not is_local(host.address):
                print(f"host {host.name} ({host.address}) is another machine: run `commy stop {args.config} "
                      f"--host {host.name}` there")
            elif shutdown_system(host):
                print(f"host {host.name}: actor system stopped")
            else:
                print(f"host {host.name}: no actor system was running")
    except LaunchError as exc:
        print(f"commy stop: error: {exc}", file=sys.stderr)
        return 1
    return 0

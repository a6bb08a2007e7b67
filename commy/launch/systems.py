"""The thespian actor systems of a launch: one per configured host, started, found and shut down here.

Each host runs a `multiprocTCPBase` system on its fixed admin port. The first host of the
configuration is the convention leader; the others are members that register with it (the
`Convention Address.IPv4` capability), and each carries the capability `commy_host = NAME` that
places node actors (`NodeActor.actorSystemCapabilityCheck`). Facts of thespian 4.0.1 this module
works around:

- Its sockets listen on every interface even with `THESPIAN_BASE_IPADDR` set (that variable only
  picks the address it advertises). `bind_to(address)` makes every socket of this process -- and of
  the admin and actor processes it forks -- listen on that address alone.
- Its admin daemonizes and inherits the starting process's open files: started straight from
  `commy launch`, a caller capturing that command's output would wait for the daemon forever. So
  a system is started by a short-lived child (`python -m commy.launch.systems HOST ...`) whose
  output goes to the host's log file, and `commy launch` itself holds no descriptor the daemon keeps.
- A client that names an admin port where no system runs starts a new system there, and one that
  names a port where a stale system runs silently attaches to it: every attach checks the port first.
- Without logging definitions (`logDefs=False`) `createActor` times out on a multiproc base, so the
  system logs to `thespian-HOST.log` in the logs folder (warnings and errors only).
- A member registers with its leader again every `CONVENTION_REREGISTRATION_PERIOD` (7 min 22 s
  by default), which is also how long a member that started before its leader waits to join, and
  the leader gives a member up after three missed registrations (22 min). Both periods are 5 s
  here: a member joins within 5 s of its leader, and a vanished host is noticed within 15 s.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from commy.config import ClusterConfig, HostConfig, load_cluster_config

SYSTEM_BASE = "multiprocTCPBase"
CAP_HOST = "commy_host"
CAP_LEADER = "commy_leader"
CONFIG_ENV = "COMMY_LAUNCH_CONFIG"  # the host's own copy of the configuration, read by its node actors
START_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 15.0

A = TypeVar("A")


class LaunchError(RuntimeError):
    """Something a user must act on (a port taken, a system not running); the message says what."""


# --------------------------------------------------------------------------- binding


def bind_to(address: str) -> None:
    """Make thespian's listening sockets in this process (and the processes it forks) bind `address`."""
    from thespian.system.transport import IPBase

    cls: Any = IPBase.IPActorAddress
    original = getattr(cls, "_commy_original_init", None) or cls.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if self.bindname[0] in ("", "0.0.0.0"):
            self.bindname = (address, self.bindname[1])

    cls._commy_original_init = original
    cls.__init__ = init


def system_env(host: HostConfig, logs: Path) -> dict[str, str]:
    return {
        "THESPIAN_BASE_IPADDR": host.address,
        "THESPLOG_FILE": str(logs / f"thespian-internal-{host.name}.log"),
        "THESPLOG_THRESHOLD": "WARNING",
        "THESPIAN_MAX_QUEUED_TRANSMITS": "40",  # a long send queue is scanned on every send
        "CONVENTION_RESTART_PERIOD": "0:5",
        "CONVENTION_REREGISTRATION_PERIOD": "0:5",
    }


def capabilities(config: ClusterConfig, host: HostConfig) -> dict[str, Any]:
    leader = config.leader
    return {
        "Admin Port": host.admin_port,
        "Convention Address.IPv4": (leader.address, leader.admin_port),
        CAP_HOST: host.name,
        CAP_LEADER: host.name == leader.name,
    }


def log_defs(logs: Path, host: HostConfig) -> dict[str, Any]:
    return {
        "version": 1,
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(logs / f"thespian-{host.name}.log"),
                              "level": logging.WARNING}},
        "root": {"handlers": ["file"], "level": logging.WARNING},
        "disable_existing_loggers": False,
    }


def admin_listening(host: HostConfig, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host.address, host.admin_port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- starting


def start_system(config_path: Path, host: HostConfig, logs: Path) -> None:
    """Start `host`'s actor system (from a child process, see the module notes) and wait for it."""
    if admin_listening(host):
        raise LaunchError(f"host {host.name}: something already listens on {host.address}:{host.admin_port} "
                          f"(a system left running? `commy stop {config_path}` first)")
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"launch-{host.name}.log", "ab") as out:
        child = subprocess.run(
            [sys.executable, "-m", "commy.launch.systems", str(config_path), host.name, str(logs)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=START_TIMEOUT, check=False)
    if child.returncode != 0 or not admin_listening(host):
        raise LaunchError(f"host {host.name}: its actor system did not start (see {logs / f'launch-{host.name}.log'})")


def _start_here(config_path: Path, host_name: str, logs: Path) -> None:
    """In the short-lived child: start the system (its admin daemonizes and outlives us)."""
    config = load_cluster_config(config_path)
    host = config.host(host_name)
    os.environ.update(system_env(host, logs))
    os.environ[CONFIG_ENV] = str(config_path.resolve())
    bind_to(host.address)
    from thespian.actors import ActorSystem

    ActorSystem(SYSTEM_BASE, capabilities(config, host), logDefs=log_defs(logs, host), transientUnique=True)


# --------------------------------------------------------------------------- attaching and stopping


def is_local(address: str) -> bool:
    """Whether `address` belongs to this machine (a socket can bind it)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False


def local_address(config: ClusterConfig, prefer: HostConfig | None = None) -> str | None:
    """The address a client on this machine should listen on: `prefer`'s when it is this machine's,
    else the first configured host's that is; None when none is (thespian then picks)."""
    for h in ([prefer] if prefer else []) + list(config.hosts):
        if is_local(h.address):
            return h.address
    return None


def attach(host: HostConfig, via: str | None = None) -> Any:
    """A client of `host`'s running system (never a new system: LaunchError if none runs there). The
    client listens for answers on `via` (an address of this machine; default `host`'s own)."""
    if not admin_listening(host):
        raise LaunchError(f"host {host.name}: no actor system runs on {host.address}:{host.admin_port}")
    here = via or host.address
    os.environ.setdefault("THESPIAN_BASE_IPADDR", here)
    bind_to(here)
    from thespian.actors import ActorSystem

    caps = {"Admin Port": host.admin_port, "Convention Address.IPv4": (host.address, host.admin_port)}
    return ActorSystem(SYSTEM_BASE, caps, transientUnique=True)


def shutdown_system(host: HostConfig) -> bool:
    """Shut `host`'s system down and wait for its admin port to close; False if none was running."""
    if not admin_listening(host):
        return False
    attach(host).shutdown()
    deadline = time.monotonic() + SHUTDOWN_TIMEOUT
    while admin_listening(host, timeout=0.2):
        if time.monotonic() > deadline:
            raise LaunchError(f"host {host.name}: the actor system on port {host.admin_port} did not stop")
        time.sleep(0.1)
    return True


def request(asys: Any, to: Any, msg: Any, answer: type[A], timeout: float,
            matches: Callable[[A], bool] | None = None) -> A:
    """Send `msg` and wait for the `answer` whose `request` repeats `msg.request` (thespian hands
    a client whatever arrives next, from any actor: stale answers are skipped)."""
    asys.tell(to, msg)
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        reply = asys.listen(timedelta(seconds=left))
        if reply is None:
            break
        if isinstance(reply, answer) and (matches(reply) if matches else getattr(reply, "request", None) ==
                                          getattr(msg, "request", None)):
            return reply
    raise LaunchError(f"no answer to {type(msg).__name__} within {timeout:g} s")


if __name__ == "__main__":  # python -m commy.launch.systems CONFIG HOST LOGS (see start_system)
    _start_here(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))

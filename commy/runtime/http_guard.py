"""Who may read a node's HTTP endpoints: the client's address, the Host it asked for, its token.

Three checks, in this order, each with its own answer (`http_endpoints` applies them):

- `allowed(remote, config)`: unless `[http] public = true`, only a loopback client (127.0.0.0/8,
  ::1, IPv4-mapped loopback) is answered; anyone else gets 403.
- `host_allowed(host, names)`: unless public, the request's `Host` must name this machine the way a
  local client does: a loopback IP literal (`127.x.y.z`, `[::1]`), `localhost`, or the address the
  node is configured to listen on (`names`), with or without a port; anything else gets 421. This
  stops DNS rebinding: a web page from `evil.example` whose name a hostile DNS server re-points at
  127.0.0.1 reaches the port from the user's own browser, which is a loopback client -- but its
  requests still say `Host: evil.example`.
- `bearer_ok(authorization, token)`: when `[http] token_file` is set, `/status` and `/metrics` need
  `Authorization: Bearer <token>` (compared in constant time), else 401; `/health` and the page
  itself (static, no data) need none.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable

from commy.config_hosts import HttpConfig
from commy.runtime.gateway_http import is_loopback

__all__ = ["allowed", "bearer_ok", "host_allowed"]


def allowed(remote_host: str, config: HttpConfig) -> bool:
    """Whether a client at `remote_host` may use the endpoints under `config`."""
    return config.enabled and (config.public or is_loopback(remote_host))


def _split_host(host: str) -> tuple[str, bool] | None:
    """(the name or address without its port, whether it was bracketed), None when malformed."""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        name, rest, bracketed = host[1:end], host[end + 1:], True
    else:
        name, sep, port = host.partition(":")
        rest, bracketed = sep + port, False
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return name, bracketed


def host_allowed(host: str | None, names: Iterable[str]) -> bool:
    """Whether a `Host` header value names this machine (see the module docstring); `names` are the
    node's listen addresses as configured and as bound."""
    if not host:
        return False
    split = _split_host(host.strip().lower())
    if split is None:
        return False
    name, bracketed = split
    if not name:
        return False
    if name == "localhost" or name in {n.lower().strip("[]") for n in names if n}:
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    return ip.version == (6 if bracketed else 4) and ip.is_loopback


def bearer_ok(authorization: list[str], token: str | None) -> bool:
    """Whether the request's `Authorization` headers carry `token` (always true without a token)."""
    if token is None:
        return True
    if len(authorization) != 1:
        return False
    scheme, _, given = authorization[0].strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())

"""Plain HTTP on the gateway's port, and the gateway's counters.

A request that is not a WebSocket upgrade never becomes a client: `plain_http` gives it to the
route registered for its path (`Gateway.add_http_route`; the query string is ignored), and answers
426 on `/` and 404 elsewhere when no route does. A route may also return None for an upgrade, which
then goes on to the handshake -- when the gateway has room for it (`request_handler`: 503 if not).

`GatewayStats` counts what the client protocol carried, for the metrics. Bytes in and out are
message payloads, the same way in both directions: the data of each WebSocket message as the
client sent it or as the gateway queued it, without the WebSocket framing (2 to 10 bytes a frame)
and before any permessage-deflate compression -- whether the gateway builds the frame itself or an
extension does.
"""

from __future__ import annotations

import http
import ipaddress
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

__all__ = ["GatewayStats", "HttpRoute", "is_loopback", "is_upgrade", "plain_http", "request_handler"]

HttpRoute = Callable[[ServerConnection, Request], Response | None]
"""(connection, request) -> a response, or None to go on with the WebSocket handshake."""


@dataclass
class GatewayStats:
    accepted: int = 0
    refused: int = 0  # over max_connections, or arriving while closing
    bad_frames: int = 0
    stalled: int = 0
    unroutable: int = 0  # envelopes for a connection that is gone
    encoded: int = 0  # bodies encoded (an event sent to many connections counts once per form)
    messages_in: int = 0
    bytes_in: int = 0  # payloads received (see the module docstring)
    messages_out: int = 0  # per connection: an event fanned out to many counts once for each
    bytes_out: int = 0  # payloads queued, never the framing (see the module docstring)
    errors: Counter[str] = field(default_factory=Counter)  # Error messages sent to clients, by code


def is_loopback(host: str) -> bool:
    """Whether `host` (an IP address as a socket reports it) is this machine: 127.0.0.0/8, ::1, mapped."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def is_upgrade(request: Request) -> bool:
    return "upgrade" in " ".join(request.headers.get_all("Connection")).lower()


def plain_http(ws: ServerConnection, request: Request, routes: Mapping[str, HttpRoute]) -> Response | None:
    """The answer to `request` (see the module docstring); None for a WebSocket handshake to go on."""
    path = request.path.split("?", 1)[0]
    route = routes.get(path)
    if route is not None:
        response = route(ws, request)
        if response is not None:
            return response
    if is_upgrade(request):
        return None
    if path == "/":
        return ws.respond(http.HTTPStatus.UPGRADE_REQUIRED, "commy: connect with a WebSocket client\n")
    return ws.respond(http.HTTPStatus.NOT_FOUND, "not found\n")


def request_handler(routes: Mapping[str, HttpRoute], admit: Callable[[], bool]) -> HttpRoute:
    """The gateway's `process_request`: `plain_http`, then 503 for a handshake `admit` has no room for."""

    def process_request(ws: ServerConnection, request: Request) -> Response | None:
        response = plain_http(ws, request, routes)
        if response is not None:
            return response
        if not admit():
            return ws.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "commy: too many connections\n")
        return None

    return process_request

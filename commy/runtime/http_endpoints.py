"""The plain-HTTP endpoints on a node's client port: health, metrics, status and the status page.

`install_endpoints(srv, config)` registers four routes with the gateway; each answers a plain GET
(any request that asks for a WebSocket upgrade goes on to the handshake untouched, so clients still
connect on `/`):

- `GET /health`: 200 with `{"node", "state": "serving"}`, or 503 with the state that keeps the
  node from serving ("joining", "draining", "stopping"; see `node_status.health`);
- `GET /metrics`: the Prometheus text format (`commy.runtime.metrics`);
- `GET /status`: the JSON of `node_status.status_document`;
- `GET /`: the status page (`status_page.html`, one static file polling `/status`).

Exposure (`http_guard`). With the default `HttpConfig` the routes answer loopback clients only
(403 for others) and only requests whose `Host` names this machine (421 for others: DNS
rebinding). `public = true` (`[http]` in the cluster file, `commy serve --http-public`) answers
everyone; `enabled = false` registers nothing, and the port then answers plain HTTP as a bare
gateway does (426 on `/`, 404 elsewhere). With a token (`[http] token_file`), `/status` and
`/metrics` answer 401 without `Authorization: Bearer <token>`; the page takes the token from its
URL fragment (`/#token=...`, never sent to the server by the browser) and sends it with each poll.
A reverse proxy on the node's own machine makes every request look local: expose these paths
through it only on purpose. The answers never hold a key, token, session id or file path, whoever
asks -- but `/status` and `/metrics` do name every tenant, service and signed-in client id, and
clients' addresses: see the README ("What they show").

The routes run inside the gateway's request processing on the node's loop, where the actors'
counters are read safely. Each answer is marked `no-store` and closes the connection; `/status`
serves the document it built for `STATUS_TTL` seconds (several open pages, one build a second), and
both it and `/metrics` read the store through one `HeldServices`. A route that raises answers 500
and logs `endpoint_failed`; the node goes on. The page is served with a Content-Security-Policy that
allows its own inline script and style (by hash) and fetches from this origin only.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import http
import json
import re
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from commy.config_hosts import HttpConfig
from commy.runtime.gateway_http import is_upgrade
from commy.runtime.http_guard import allowed, bearer_ok, host_allowed
from commy.runtime.metrics import CONTENT_TYPE, metrics_registry, render_metrics
from commy.runtime.node_status import SERVING, health, status_document
from commy.runtime.store_view import HeldServices

if TYPE_CHECKING:
    from commy.runtime.server import RunningServer

__all__ = ["PATHS", "STATUS_TTL", "Endpoints", "allowed", "install_endpoints", "page_csp", "status_page"]

PATHS = ("/", "/health", "/metrics", "/status")
PROTECTED = ("/metrics", "/status")  # the ones a token guards
STATUS_TTL = 1.0  # seconds a built /status document is served for
PAGE = "status_page.html"
JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
FORBIDDEN = "commy: this endpoint answers loopback clients only (set [http] public = true to change that)\n"
MISDIRECTED = ("commy: this endpoint answers requests for localhost, a loopback address or the node's listen "
               "address only (set [http] public = true to change that)\n")
UNAUTHORIZED = "commy: this endpoint needs Authorization: Bearer <the token of [http] token_file>\n"


def status_page() -> bytes:
    """The page as shipped in the package (read at each request: it is small, and editable live)."""
    return resources.files("commy.runtime").joinpath(PAGE).read_bytes()


def page_csp(page: bytes) -> str:
    """A Content-Security-Policy allowing exactly the page's inline scripts and styles."""
    text = page.decode("utf-8")

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", text, flags=re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'"
                        for b in bodies)

    return (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _response(status: int, body: bytes, content_type: str, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    code = http.HTTPStatus(status)
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(body))),
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        *extra,
    ])
    return Response(code.value, code.phrase, headers, body)


def _json(status: int, document: object) -> Response:
    return _response(status, json.dumps(document, separators=(",", ":")).encode("utf-8"), JSON_TYPE)


Handler = Callable[[], Response]


class Endpoints:
    """The routes of one server (see the module docstring)."""

    def __init__(self, srv: RunningServer, config: HttpConfig) -> None:
        self.srv = srv
        self.config = config
        self.held = HeldServices(srv)
        self.registry = metrics_registry(srv, self.held)
        self.handlers: dict[str, Handler] = {"/": self.page, "/health": self.health, "/metrics": self.metrics,
                                             "/status": self.status}
        self.status_ttl = STATUS_TTL
        self._status: tuple[float, bytes] | None = None  # (monotonic time built, the JSON)

    def _listen_names(self) -> list[str]:
        gw = self.srv.gateway
        return [gw.listen[0], *(gw.listen_address[:1] if gw.listen_address else ())]

    def route(self, ws: ServerConnection, request: Request) -> Response | None:
        if is_upgrade(request):
            return None  # a WebSocket client: the gateway's business
        peer = ws.remote_address
        if not allowed(str(peer[0]) if peer else "", self.config):
            return _response(403, FORBIDDEN.encode(), TEXT_TYPE)
        if not self.config.public and not host_allowed(_one(request, "Host"), self._listen_names()):
            return _response(421, MISDIRECTED.encode(), TEXT_TYPE)
        path = request.path.split("?", 1)[0]
        if path in PROTECTED and not bearer_ok(request.headers.get_all("Authorization"), self.config.token):
            return _response(401, UNAUTHORIZED.encode(), TEXT_TYPE, (("WWW-Authenticate", 'Bearer realm="commy"'),))
        try:
            return self.handlers[path]()
        except Exception as exc:  # our bug: the node goes on serving; the operator sees it in the log
            self.srv.node.log_sink(self.srv.node.node_id, "http", "error", "endpoint_failed",
                                   {"path": path, "error": repr(exc)[:200]})
            return _response(500, b"commy: internal error\n", TEXT_TYPE)

    def health(self) -> Response:
        state = health(self.srv)
        return _json(200 if state == SERVING else 503, {"node": self.srv.node.node_id, "state": state})

    def metrics(self) -> Response:
        return _response(200, render_metrics(self.registry), CONTENT_TYPE)

    def status(self) -> Response:
        now = time.monotonic()
        if self._status is None or now - self._status[0] >= self.status_ttl:
            body = json.dumps(status_document(self.srv, self.held), separators=(",", ":")).encode("utf-8")
            self._status = (now, body)
        return _response(200, self._status[1], JSON_TYPE)

    def page(self) -> Response:
        body = status_page()
        return _response(200, body, HTML_TYPE, (("Content-Security-Policy", page_csp(body)),
                                                ("X-Frame-Options", "DENY")))


def _one(request: Request, name: str) -> str | None:
    """The header's value when it is there exactly once, else None."""
    values = request.headers.get_all(name)
    return values[0] if len(values) == 1 else None


def install_endpoints(srv: RunningServer, config: HttpConfig) -> Endpoints | None:
    """Register the routes on `srv`'s gateway (none when `config.enabled` is false)."""
    if not config.enabled:
        return None
    endpoints = Endpoints(srv, config)
    for path in PATHS:
        srv.gateway.add_http_route(path, endpoints.route)
    return endpoints

"""`commy serve` (one embedded server in the foreground) and `commy certs` (a development TLS pair).

`commy serve` checks its flags (a bad one is named on stderr, exit 2), starts the server of
`commy.runtime.server` on the data folder, and prints on stdout, one flushed line each, the URL
clients connect to (`ws://HOST:PORT`, or `wss://` with `--cert/--key`) and, on the first start
only, `admin key: ck_...` -- the bootstrap key of the server admin, shown this once. Every log
record of `--log-level` (default info) or above follows: one JSON line each when stdout is not a
terminal, a readable line when it is (`--log-format json|text` insists; see `commy.runtime.logs`).
SIGINT or SIGTERM closes the server cleanly (clients closed, service files flushed, catalog saved)
and exits 0. The client port also answers `/health`, `/metrics`, `/status` and the status page, to
loopback clients only unless `--http-public` (or `[http]` in the cluster file) says otherwise.

`commy certs` writes a self-signed certificate (`cert.pem`) and its private key (`key.pem`, mode
0600) for `--host` plus localhost, 127.0.0.1 and ::1, valid for a year: enough for `commy serve
--cert cert.pem --key key.pem` on a development machine, with clients trusting `cert.pem`.
`add_serve_parser` and `add_certs_parser` plug both into the `commy` command line; `main` runs
them on their own (`python -m commy.runtime.serve serve ...`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from commy.config_hosts import HttpConfig, read_token_file
from commy.core.hub_base import HubConfig
from commy.runtime.gateway import GatewayConfig
from commy.runtime.logs import FORMATS, LEVELS, log_sink_for
from commy.runtime.loop import run
from commy.runtime.server import server_ssl_context, start_server
from commy.runtime.standalone import parse_address

if TYPE_CHECKING:
    from commy.config import ClusterConfig

DEFAULT_DATA = "./commy-data"
DEFAULT_LISTEN = "127.0.0.1:8765"
CERT_FILE, KEY_FILE = "cert.pem", "key.pem"


# --------------------------------------------------------------------------- argument types


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of bytes, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# --------------------------------------------------------------------------- commy serve


def add_serve_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve", help="run one server: WebSocket clients, a data folder, a printed admin key")
    p.add_argument("--data", default=DEFAULT_DATA, metavar="DIR", help=f"data folder (default {DEFAULT_DATA})")
    p.add_argument("--listen", default=DEFAULT_LISTEN, type=_address, metavar="HOST:PORT",
                   help=f"WebSocket address (default {DEFAULT_LISTEN}; port 0 picks a free one)")
    p.add_argument("--cert", default=None, metavar="FILE", help="TLS certificate chain (PEM); needs --key")
    p.add_argument("--key", default=None, metavar="FILE", help="TLS private key (PEM); needs --cert")
    p.add_argument("--max-frame", type=_positive_int, default=None, metavar="N",
                   help=f"largest client message in bytes (default {GatewayConfig().max_frame})")
    p.add_argument("--stall-timeout", type=_seconds, default=None, metavar="S",
                   help=f"drop a client whose messages have not drained for S seconds "
                        f"(default {GatewayConfig().stall_timeout:g})")
    p.add_argument("--heartbeat-timeout", type=_seconds, default=None, metavar="S",
                   help=f"drop a client silent for S seconds (default {HubConfig().heartbeat_timeout:g})")
    p.add_argument("--token-ttl", type=_seconds, default=None, metavar="S",
                   help=f"lifetime of issued tokens (default {HubConfig().token_ttl:g})")
    p.add_argument("--honeypot", action="store_true",
                   help="keep rotated service files as honeypots that log an alert when touched")
    p.add_argument("--seed", type=int, default=None, metavar="N",
                   help="seed the node's random stream (default: random)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="cluster configuration (TOML); the node's addresses, data folder and TLS come from it")
    p.add_argument("--node", default=None, metavar="ID", help="which node of --config this process runs")
    p.add_argument("--log-level", default="info", choices=tuple(LEVELS),
                   help="least severe log records shown (default info)")
    p.add_argument("--log-format", default="auto", choices=FORMATS,
                   help="log lines as json or readable text (default auto: text on a terminal, else json)")
    p.add_argument("--http-public", action="store_true",
                   help="answer /health, /metrics, /status and the status page for every client, not only "
                        "loopback ones (with --config: [http] public = true)")
    p.add_argument("--http-token-file", default=None, metavar="PATH",
                   help="a 0600 file holding a bearer token that /status and /metrics then require "
                        "(with --config: token_file in its [http] table)")
    p.set_defaults(func=run_serve_cli)
    return p


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if (args.cert is None) != (args.key is None):
        raise ValueError("--cert and --key go together: give both or neither")
    if args.cert is None:
        return None
    for flag, path in (("--cert", args.cert), ("--key", args.key)):
        if not Path(path).is_file():
            raise ValueError(f"{flag}: no such file: {path}")
    try:
        return server_ssl_context(args.cert, args.key)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"--cert/--key: cannot load the certificate and key: {exc}") from None


def run_serve_cli(args: argparse.Namespace) -> int:
    try:
        tls = _tls(args)
        gateway = GatewayConfig(**{k: v for k, v in (("max_frame", args.max_frame),
                                                      ("stall_timeout", args.stall_timeout)) if v is not None})
        hub = HubConfig(**{k: v for k, v in (("heartbeat_timeout", args.heartbeat_timeout),
                                             ("token_ttl", args.token_ttl)) if v is not None})
        data = Path(args.data)
        if data.exists() and not data.is_dir():
            raise ValueError(f"--data: not a folder: {data}")
        cluster = _cluster(args)
        token = _token(args.http_token_file)
        http = HttpConfig(public=args.http_public, token=token)
    except ValueError as exc:
        print(f"commy serve: error: {exc}", file=sys.stderr)
        return 2
    if cluster is not None:
        node = cluster.node(args.node)
        data, listen = node.data, node.listen
    else:
        listen = args.listen
    return run(serve(data, listen, tls=tls, gateway=gateway, hub=hub, honeypot=args.honeypot, seed=args.seed,
                     out=sys.stdout, cluster=cluster, node_id=args.node, log_level=args.log_level,
                     log_format=args.log_format, http=http))


def _token(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return read_token_file(Path(path))
    except ValueError as exc:
        raise ValueError(f"--http-token-file: {exc}") from None


def _cluster(args: argparse.Namespace) -> ClusterConfig | None:
    """The cluster configuration `--config` names (with `--node`), checked; None without it."""
    if args.config is None:
        if args.node is not None:
            raise ValueError("--node needs --config")
        return None
    if args.node is None:
        raise ValueError("--config needs --node ID: which of its nodes this process runs")
    if args.cert is not None:
        raise ValueError("--cert/--key: with --config, TLS comes from the configuration's [tls] table")
    from commy.config import load_cluster_config

    config = load_cluster_config(args.config)  # a ConfigError is a ValueError naming the file and key
    config.node(args.node)
    if config.conflict == "merge":
        raise ValueError(f"{args.config}: cluster.conflict: \"merge\" needs a merge function given in code "
                         "(commy.runtime.cluster_node.start_cluster_node(..., merge=fn)); commy serve cannot run it")
    if args.honeypot or args.data != DEFAULT_DATA or args.listen != parse_address(DEFAULT_LISTEN):
        raise ValueError("--data, --listen and --honeypot do not apply with --config: the node's data folder "
                         "and addresses come from the configuration")
    if args.http_public:
        raise ValueError("--http-public does not apply with --config: set public = true in its [http] table")
    if args.http_token_file:
        raise ValueError("--http-token-file does not apply with --config: set token_file in its [http] table")
    return config


async def serve(data: Path, listen: tuple[str, int], *, tls: ssl.SSLContext | None, gateway: GatewayConfig,
                hub: HubConfig | None = None, honeypot: bool = False, seed: int | None, out: TextIO,
                cluster: ClusterConfig | None = None, node_id: str | None = None, log_level: str = "info",
                log_format: str = "auto", http: HttpConfig | None = None) -> int:
    """Run until SIGINT or SIGTERM; returns the exit code. `http` applies without `cluster` (a
    cluster node's endpoints follow its configuration)."""
    sink = log_sink_for(out, log_level, log_format)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if cluster is not None and node_id is not None:
            from commy.runtime.cluster_node import start_cluster_node

            srv = await start_cluster_node(cluster, node_id, hub=hub, seed=seed, log_sink=sink, gateway=gateway)
        else:
            srv = await start_server(data, listen, ssl=tls, gateway=gateway, hub=hub, honeypot=honeypot, seed=seed,
                                     log_sink=sink, http=http)
    except OSError as exc:
        print(f"commy serve: cannot start on {listen[0]}:{listen[1]} with data in {data}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a damaged catalog or key file
        print(f"commy serve: cannot start with data in {data}: {exc}", file=sys.stderr)
        return 1
    out.write(srv.url + "\n")
    if srv.bootstrap_key is not None:
        out.write(f"admin key: {srv.bootstrap_key}\n")
    out.flush()
    sink(srv.node.node_id, "server", "info", "ready", {"url": srv.url, "data": str(data.resolve()),
                                                       "pid": os.getpid()})
    try:
        await stop.wait()
    finally:
        await srv.close()
    sink(srv.node.node_id, "server", "info", "stopped", {})
    return 0


# --------------------------------------------------------------------------- commy certs


def add_certs_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "certs", help="write a self-signed development certificate and key (cert.pem, key.pem)")
    p.add_argument("--out", default=".", metavar="DIR", help="folder to write into (default: here)")
    p.add_argument("--host", default="127.0.0.1", help="the name or address clients connect to (default 127.0.0.1)")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=run_certs_cli)
    return p


def run_certs_cli(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not args.host or any(c.isspace() for c in args.host):
        print(f"commy certs: error: --host: expected a host name or address, got {args.host!r}", file=sys.stderr)
        return 2
    existing = [p for p in (out / CERT_FILE, out / KEY_FILE) if p.exists()]
    if existing and not args.force:
        print(f"commy certs: error: {existing[0]} exists (use --force to replace it)", file=sys.stderr)
        return 1
    try:
        cert, key = write_dev_certificate(out, args.host)
    except OSError as exc:
        print(f"commy certs: error: --out: {exc}", file=sys.stderr)
        return 1
    print(f"certificate: {cert}")
    print(f"private key: {key}")
    return 0


def write_dev_certificate(out: str | os.PathLike[str], host: str = "127.0.0.1", *,
                          days: int = 365) -> tuple[Path, Path]:
    """Write `cert.pem` and `key.pem` (0600) into `out`: a self-signed EC P-256 pair for `host`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"commy development ({host})"[:64])])
    alt: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                   x509.IPAddress(ipaddress.ip_address("::1"))]
    try:
        ip = x509.IPAddress(ipaddress.ip_address(host))
        if ip not in alt:
            alt.append(ip)
    except ValueError:
        if host != "localhost":
            alt.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = folder / KEY_FILE, folder / CERT_FILE
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    key_path.unlink(missing_ok=True)  # a new file gets mode 0600; an old one might be readable by others
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


# --------------------------------------------------------------------------- on their own


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="commy")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(sub)
    add_certs_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

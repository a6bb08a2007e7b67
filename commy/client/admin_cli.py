"""`commy admin`: administer a running server over the client protocol.

    commy admin [--url URL] [--key KEY] [--cafile F] <op> ...

The key is a server admin's API key (`--key`, else the `COMMY_ADMIN_KEY` environment variable);
`commy serve` prints one on first start. A tenant admin's key works for the operations on its
tenant. The command connects once (no reconnection, no heartbeats), opens the server-wide session
and, for an operation on a tenant, a session there too with the same key, runs the operation and
prints its result. Exit status: 0 on success, 1 when the server refuses (its error code and
detail are printed) or cannot be reached, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
from typing import Any

from commy.client.aio import AsyncClient
from commy.client.types import CommyClientError, UnauthenticatedError
from commy.messages.client import SERVER

DEFAULT_URL = "ws://127.0.0.1:8765"
KEY_ENV, URL_ENV = "COMMY_ADMIN_KEY", "COMMY_URL"


def add_admin_parser(sub: Any) -> argparse.ArgumentParser:
    """Add `admin` to a `commy` subparsers object; the parsed args carry `func`."""
    p: argparse.ArgumentParser = sub.add_parser(
        "admin", help="administer a server: tenants, services, grants, API keys",
        description="Administer a commy server over its WebSocket client protocol.")
    p.add_argument("--url", default=os.environ.get(URL_ENV, DEFAULT_URL),
                   help=f"server URL (default: ${URL_ENV} or {DEFAULT_URL})")
    p.add_argument("--key", default=None, help=f"admin API key (default: ${KEY_ENV})")
    p.add_argument("--cafile", default=None, help="CA certificate(s) to verify a wss:// server with")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each reply (default 10)")
    ops = p.add_subparsers(dest="admin_op", required=True, metavar="OP")

    def op(name: str, help: str, *positional: str, nargs: dict[str, str] | None = None) -> argparse.ArgumentParser:
        o: argparse.ArgumentParser = ops.add_parser(name, help=help, description=help)
        for arg in positional:
            o.add_argument(arg.lower(), metavar=arg, nargs=(nargs or {}).get(arg))
        return o

    op("create-tenant", "create a tenant", "TENANT")
    op("delete-tenant", "delete a tenant, its services and grants", "TENANT")
    op("create-service", "create a service in a tenant", "TENANT", "SERVICE")
    op("delete-service", "delete a service", "TENANT", "SERVICE")
    op("grant", "grant scopes (read, write, admin, service:read, ...) on a tenant", "TENANT", "CLIENT", "SCOPE",
       nargs={"SCOPE": "+"})
    op("revoke", "revoke scopes on a tenant (none given: every permission)", "TENANT", "CLIENT", "SCOPE",
       nargs={"SCOPE": "*"})
    key = op("create-key", "create an API key for a client and print it (shown only once)", "CLIENT")
    key.add_argument("--server-admin", action="store_true", help="the key may administer the whole server")
    key.add_argument("--tenant", default="", help="also grant --scope on this tenant")
    key.add_argument("--scope", action="append", default=[], help="a scope to grant on --tenant (repeatable)")
    op("revoke-key", "revoke an API key (its sessions end at once)", "KEY_ID")
    op("tenants", "list the tenants")
    op("services", "list a tenant's services", "TENANT")
    op("auth-hook", "delegate a tenant's 'delegated' logins to the server's auth hook HOOK ('' stops it)", "TENANT",
       "HOOK")
    op("drain", "move every client off cluster node NODE to the others, then retire it from the cluster", "NODE")
    p.set_defaults(func=run_admin)
    return p


def run_admin(args: argparse.Namespace) -> int:
    """Run one parsed `commy admin` command; returns the exit status."""
    prog = f"commy admin {args.admin_op}"
    key = args.key or os.environ.get(KEY_ENV, "")
    if not key:
        print(f"{prog}: error: no admin key: give --key or set {KEY_ENV}", file=sys.stderr)
        return 2
    if args.admin_op == "create-key" and args.scope and not args.tenant:
        print(f"{prog}: error: --scope needs --tenant", file=sys.stderr)
        return 2
    context = None
    if args.cafile:
        try:
            context = ssl.create_default_context(cafile=args.cafile)
        except (OSError, ssl.SSLError) as exc:
            print(f"{prog}: error: cannot use --cafile {args.cafile}: {exc}", file=sys.stderr)
            return 2
    try:
        for line in asyncio.run(_run(args, key, context)):
            print(line)
    except CommyClientError as exc:
        print(f"{prog}: {exc.code}: {exc.detail}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a malformed URL
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _tenant_of(args: argparse.Namespace) -> str:
    tenant: str = getattr(args, "tenant", "") or ""
    return "" if args.admin_op in ("create-tenant", "delete-tenant") else tenant


async def _login(client: AsyncClient, key: str, tenant: str) -> None:
    """The server-wide session, and the tenant's when the operation has one; a tenant admin's key
    may fail the first and pass the second."""
    try:
        await client.authenticate(SERVER, api_key=key)
    except UnauthenticatedError:
        raise
    except CommyClientError:
        if not tenant:
            raise
    if tenant:
        try:
            await client.authenticate(tenant, api_key=key)
        except CommyClientError:
            if SERVER not in client.sessions:
                raise


async def _run(args: argparse.Namespace, key: str, context: ssl.SSLContext | None) -> list[str]:
    async with AsyncClient.connect(args.url, ssl=context, reconnect=False, heartbeat=0, timeout=args.timeout,
                                   refresh_tokens=False) as client:
        await _login(client, key, _tenant_of(args))
        match args.admin_op:
            case "create-tenant":
                await client.create_tenant(args.tenant)
                return [f"created tenant {args.tenant}"]
            case "delete-tenant":
                await client.delete_tenant(args.tenant)
                return [f"deleted tenant {args.tenant}"]
            case "create-service":
                await client.create_service(args.tenant, args.service)
                return [f"created service {args.tenant}/{args.service}"]
            case "delete-service":
                await client.delete_service(args.tenant, args.service)
                return [f"deleted service {args.tenant}/{args.service}"]
            case "grant":
                await client.grant(args.tenant, args.client, args.scope)
                return [f"granted {' '.join(args.scope)} on {args.tenant} to {args.client}"]
            case "revoke":
                await client.revoke(args.tenant, args.client, args.scope)
                return [f"revoked {' '.join(args.scope) or 'every permission'} on {args.tenant} from {args.client}"]
            case "create-key":
                key_id, new_key = await client.create_api_key(args.client, server_admin=args.server_admin,
                                                              tenant=args.tenant, scopes=args.scope)
                print(f"key id {key_id} for client {args.client}; the key (shown only this once):", file=sys.stderr)
                return [new_key]
            case "revoke-key":
                await client.revoke_api_key(args.key_id)
                return [f"revoked key {args.key_id}"]
            case "tenants":
                return await client.list_tenants()
            case "services":
                return await client.list_services(args.tenant)
            case "auth-hook":
                await client.set_auth_hook(args.tenant, args.hook)
                return [f"tenant {args.tenant} delegates logins to {args.hook or 'nobody'}"]
            case "drain":
                return [await client.drain(args.node)]
        raise AssertionError(f"unhandled admin op {args.admin_op}")

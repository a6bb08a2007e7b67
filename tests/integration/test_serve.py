"""`commy serve` and `commy certs` as real processes.

The server runs as a subprocess whose stdout goes to a file (never a pipe left undrained); the test
reads the URL and the admin key from it, talks to the server over WebSocket, stops it with SIGTERM
or SIGINT and checks the exit code and that what was acknowledged survived the restart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from commy.client_codec import client_codec
from commy.core.catalog import Catalog
from commy.core.catalog_records import KdfParams
from commy.messages import (
    AdminDone,
    ApiKeyCreated,
    Authenticate,
    AuthenticationResponse,
    CreateApiKey,
    CreateTenant,
    Error,
    GetVariables,
    GrantPermission,
    Message,
    NamedValue,
    SetAuthHook,
    SetVariables,
    VariablesData,
    VariablesUpdated,
)
from commy.runtime.loop import run
from commy.runtime.server import RunningServer, start_server

pytestmark = pytest.mark.integration

CODEC = client_codec()
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 15.0


def commy() -> list[str]:
    """`python -m commy.cli` once `serve` is wired into it, else the serve module on its own."""
    from commy import cli

    subs = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    wired = bool(subs) and "serve" in subs[0].choices
    return [sys.executable, "-m", "commy.cli" if wired else "commy.runtime.serve"]


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], out: Path) -> None:
        self.proc = proc
        self.out = out

    def lines(self) -> list[str]:
        return self.out.read_text(encoding="utf-8", errors="replace").splitlines()

    def wait_for_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            urls = [line for line in self.lines() if line.startswith(("ws://", "wss://"))]
            if urls and any(line.startswith("{") for line in self.lines()):  # the ready record follows
                return urls[0]
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"no URL from commy serve (exit {self.proc.poll()}): {self.lines()}")

    def admin_key(self) -> str | None:
        keys = [line.split(": ", 1)[1] for line in self.lines() if line.startswith("admin key: ")]
        assert len(keys) <= 1
        return keys[0] if keys else None

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=15)


@contextmanager
def serving(tmp: Path, *args: str, name: str = "serve") -> Iterator[Server]:
    out = tmp / f"{name}.out"
    with open(out, "wb") as stdout, open(tmp / f"{name}.err", "wb") as stderr:
        proc = subprocess.Popen([*commy(), "serve", "--listen", "127.0.0.1:0", *args], stdout=stdout,
                                stderr=stderr, stdin=subprocess.DEVNULL, cwd=ROOT)
    try:
        yield Server(proc, out)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


async def _call(ws: ClientConnection, rid: int, msg: Message) -> Message:
    await ws.send(CODEC.encode_binary(rid, msg))
    got_rid, reply = CODEC.decode_binary(await asyncio.wait_for(ws.recv(decode=False), 5.0))
    assert got_rid == rid, reply
    return reply


def _client(url: str, tls: ssl.SSLContext | None = None) -> connect:
    return connect(url, compression=None, open_timeout=5, ssl=tls)


async def _first_session(url: str, admin_key: str) -> str:
    """As the admin: a tenant and a key for a writer; as the writer: one acknowledged write."""
    async with _client(url) as ws:
        assert isinstance(await _call(ws, 1, Authenticate("", "api_key", admin_key)), AuthenticationResponse)
        assert isinstance(await _call(ws, 2, CreateTenant("acme")), AdminDone)
        created = await _call(ws, 3, CreateApiKey("writer", False, "acme", ("write",)))
        assert isinstance(created, ApiKeyCreated)
    async with _client(url) as ws:
        assert isinstance(await _call(ws, 1, Authenticate("acme", "api_key", created.key)), AuthenticationResponse)
        done = await _call(ws, 2, SetVariables("acme", "svc", (NamedValue("x", b"kept"),), ""))
        assert isinstance(done, VariablesUpdated)
    return created.key


async def _second_session(url: str, admin_key: str, writer_key: str) -> None:
    async with _client(url) as ws:
        assert isinstance(await _call(ws, 1, Authenticate("", "api_key", admin_key)), AuthenticationResponse)
        assert isinstance(await _call(ws, 2, Authenticate("acme", "api_key", writer_key)), AuthenticationResponse)
        data = await _call(ws, 3, GetVariables("acme", "svc", ("x",)))
        assert isinstance(data, VariablesData)
        assert [(v.name, v.value) for v in data.variables] == [("x", b"kept")]


def test_serve_prints_the_url_and_a_first_admin_key_and_stops_cleanly_keeping_what_it_acknowledged(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serving(tmp_path, "--data", str(data), name="first") as first:
        url = first.wait_for_url()
        assert url.startswith("ws://127.0.0.1:")
        admin_key = first.admin_key()
        assert admin_key is not None and admin_key.startswith("ck_")
        writer_key = asyncio.run(_first_session(url, admin_key))
        assert first.stop(signal.SIGTERM) == 0
    assert (data / "server.key").stat().st_mode & 0o777 == 0o600
    assert (data / "catalog.bin").is_file()
    with serving(tmp_path, "--data", str(data), name="second") as second:
        url = second.wait_for_url()
        assert second.admin_key() is None  # only the first start makes one
        asyncio.run(_second_session(url, admin_key, writer_key))
        assert second.stop(signal.SIGINT) == 0
    for line in second.lines()[1:]:
        assert line.startswith("{"), line  # everything after the URL is a JSON log record


@pytest.mark.parametrize(("args", "flag"), [
    (["--max-frame", "0"], "--max-frame"),
    (["--max-frame", "lots"], "--max-frame"),
    (["--listen", "nowhere"], "--listen"),
    (["--cert", "cert.pem"], "--cert"),
    (["--cert", "missing.pem", "--key", "missing.key"], "--cert"),
    (["--http-token-file", "missing.token"], "--http-token-file"),
])
def test_bad_flags_are_named_and_exit_2(tmp_path: Path, args: list[str], flag: str) -> None:
    done = subprocess.run([*commy(), "serve", "--data", str(tmp_path / "d"), *args], capture_output=True,
                          timeout=30, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done
    assert flag in done.stderr.decode(), done.stderr
    assert done.stdout == b""
    assert not (tmp_path / "d").exists()


def test_http_token_file_guards_status_and_metrics(tmp_path: Path) -> None:
    token = tmp_path / "http.token"
    token.write_text("t0ken-" + "x" * 26 + "\n")
    token.chmod(0o644)
    refused = subprocess.run([*commy(), "serve", "--data", str(tmp_path / "d"), "--http-token-file", str(token)],
                             capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and b"open to other users" in refused.stderr, refused.stderr
    token.chmod(0o600)
    with serving(tmp_path, "--data", str(tmp_path / "d"), "--http-token-file", str(token)) as server:
        base = server.wait_for_url().replace("ws://", "http://")

        def get(path: str, auth: str | None = None) -> int:
            request = urllib.request.Request(base + path, headers={"Authorization": auth} if auth else {})
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    return int(answer.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert get("/health") == 200
        assert get("/status") == 401 and get("/metrics") == 401
        assert get("/status", "Bearer wrong-" + "y" * 20) == 401
        assert get("/status", "Bearer t0ken-" + "x" * 26) == 200 and get("/metrics", "Bearer t0ken-" + "x" * 26) == 200


def test_certs_writes_a_pair_that_serve_and_a_trusting_client_accept(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    made = subprocess.run([*commy(), "certs", "--out", str(certs), "--host", "127.0.0.1"], capture_output=True,
                          timeout=30, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert made.returncode == 0, made
    cert, key = certs / "cert.pem", certs / "key.pem"
    assert cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert key.stat().st_mode & 0o777 == 0o600
    again = subprocess.run([*commy(), "certs", "--out", str(certs)], capture_output=True, timeout=30, cwd=ROOT,
                           stdin=subprocess.DEVNULL)
    assert again.returncode == 1 and b"--force" in again.stderr  # never overwritten by accident

    with serving(tmp_path, "--data", str(tmp_path / "data"), "--cert", str(cert), "--key", str(key)) as server:
        url = server.wait_for_url()
        assert url.startswith("wss://127.0.0.1:")
        admin_key = server.admin_key()
        assert admin_key is not None

        async def authenticate() -> None:
            tls = ssl.create_default_context(cafile=str(cert))
            async with _client(url, tls) as ws:
                assert isinstance(await _call(ws, 1, Authenticate("", "api_key", admin_key)),
                                  AuthenticationResponse)

        asyncio.run(authenticate())
        assert server.stop() == 0
    assert os.path.exists(tmp_path / "data" / "catalog.bin")


# --------------------------------------------------------------------------- the server in-process


def _in_process(tmp: Path, main: Callable[[RunningServer], Awaitable[None]], **kwargs: Any) -> None:
    async def go() -> None:
        srv = await start_server(tmp / "data", ("127.0.0.1", 0), kdf=KdfParams(n=16, r=1, p=1), **kwargs)
        try:
            await asyncio.wait_for(main(srv), 15.0)
        finally:
            await srv.close()
            await srv.close()  # idempotent

    run(go())


def test_catalog_changes_are_on_disk_before_their_reply_and_the_server_closes_its_clients(tmp_path: Path) -> None:
    async def main(srv: RunningServer) -> None:
        assert srv.bootstrap_key is not None
        async with _client(srv.url) as ws:
            await _call(ws, 1, Authenticate("", "api_key", srv.bootstrap_key))
            assert isinstance(await _call(ws, 2, CreateTenant("acme")), AdminDone)
            saved = Catalog.restore((tmp_path / "data" / "catalog.bin").read_bytes(), kdf=KdfParams(n=16, r=1, p=1))
            assert saved.tenants() == ["acme"]
            await srv.close()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5.0)
            assert ws.close_code == 1001

    _in_process(tmp_path, main)


def test_delegated_authentication_runs_the_tenants_hook(tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []

    async def corp(tenant: str, credential: str) -> str | None:
        calls.append((tenant, credential))
        if credential == "slow":
            await asyncio.sleep(60)
        if credential == "boom":
            raise RuntimeError("the directory is down")
        return "alice" if credential == "good" else None

    async def main(srv: RunningServer) -> None:
        assert srv.bootstrap_key is not None
        async with _client(srv.url) as ws:
            await _call(ws, 1, Authenticate("", "api_key", srv.bootstrap_key))
            await _call(ws, 2, CreateTenant("acme"))
            assert isinstance(await _call(ws, 3, GrantPermission("acme", "acme/alice", ("read",))), AdminDone)
            assert isinstance(await _call(ws, 4, SetAuthHook("acme", "corp")), AdminDone)
        async with _client(srv.url) as ws:
            ok = await _call(ws, 1, Authenticate("acme", "delegated", "good"))
            assert isinstance(ok, AuthenticationResponse) and ok.client_id == "acme/alice"  # the tenant's namespace
            for rid, credential in enumerate(("bad", "boom", "slow"), start=2):
                refused = await _call(ws, rid, Authenticate("acme", "delegated", credential))
                assert isinstance(refused, Error) and refused.code == "unauthenticated", refused
        assert calls == [("acme", "good"), ("acme", "bad"), ("acme", "boom"), ("acme", "slow")]

    _in_process(tmp_path, main, auth_hooks={"corp": corp}, auth_timeout=0.3)


def test_one_data_folder_serves_one_server_and_a_failed_first_start_shows_the_key_next_time(tmp_path: Path) -> None:
    data = tmp_path / "data"
    kdf = KdfParams(n=16, r=1, p=1)

    async def main() -> None:
        first = await start_server(data, ("127.0.0.1", 0), kdf=kdf)
        try:
            with pytest.raises(ValueError, match="another server"):
                await start_server(data, ("127.0.0.1", 0), kdf=kdf)
            busy = first.gateway.listen_address
            assert busy is not None
            with pytest.raises(OSError):  # a fresh folder, a port already taken
                await start_server(tmp_path / "fresh", busy, kdf=kdf)
            assert not (tmp_path / "fresh" / "catalog.bin").exists()
        finally:
            await first.close()
        again = await start_server(tmp_path / "fresh", ("127.0.0.1", 0), kdf=kdf)
        reopened = await start_server(data, ("127.0.0.1", 0), kdf=kdf)  # the lock went with the first
        try:
            assert again.bootstrap_key is not None
            assert reopened.bootstrap_key is None
        finally:
            await again.close()
            await reopened.close()

    run(main())

"""The whole single-server product, as a user meets it: `commy serve` as a real process, the SDK and
bare `websockets` clients speaking the documented protocol (binary and text), a second OS process
mapping the service file, logout, revocation with file rotation, a stalled client dropped while the
others are served, and a SIGTERM that loses no acknowledged write."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from commy.client import AsyncClient, PermissionRevokedError

pytestmark = pytest.mark.integration
DEADLINE = 20.0


class Served:
    """`commy serve` in a child process whose stdout goes to a file we read."""

    def __init__(self, data: Path, log: Path, *extra: str) -> None:
        self.log = log
        self.out = open(log, "w")  # closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "commy.cli", "serve", "--data", str(data), "--listen", "127.0.0.1:0", *extra],
            stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.url = self._line(lambda s: s.startswith(("ws://", "wss://")))
        self.admin_key = self._line(lambda s: s.startswith("admin key: "), required=False)

    def _line(self, pick: Any, required: bool = True) -> str:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            lines = self.log.read_text().splitlines()
            for line in lines:
                if pick(line):
                    return line.removeprefix("admin key: ").strip()
            if not required and any(line.startswith(("ws://", "wss://")) for line in lines):
                return ""
            assert self.proc.poll() is None, f"commy serve exited:\n{self.log.read_text()}"
            time.sleep(0.02)
        raise AssertionError(f"commy serve printed nothing useful:\n{self.log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=DEADLINE)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.out.close()


async def binary(ws: Any, rid: int, tag: int, *fields: Any) -> list[Any]:
    """Send one binary request; return the reply's [tag, version, fields...] (events skipped)."""
    await ws.send(msgpack.packb([rid, [tag, 1, *fields]], use_bin_type=True))
    while True:
        got_id, body = msgpack.unpackb(await asyncio.wait_for(ws.recv(), DEADLINE), raw=False)
        if got_id == rid:
            return list(body)


async def text(ws: Any, obj: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(obj))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
        if reply["id"] == obj["id"]:
            return dict(reply)


async def next_change(ws: Any, name: str) -> dict[str, Any]:
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
        if event["type"] == "VariableChanged" and event["name"] == name:
            return dict(event)


LOCAL_WRITER = """
import sys
from commy.client import Client
url, key = sys.argv[1], sys.argv[2]
with Client.connect(url) as client:
    client.authenticate("acme", api_key=key)
    svc = client.service("acme", "svc", local=True)
    assert svc.is_local or svc.map(), "not mapped"
    svc.write_local("y", b"from another process")
    print(svc.mapping.path, flush=True)
"""


async def scenario(url: str, admin_key: str, log: Path) -> None:
    admin = await AsyncClient.connect(url)
    await admin.authenticate("", api_key=admin_key)
    await admin.create_tenant("acme")
    keys = {name: (await admin.create_api_key(name, tenant="acme", scopes=[scope]))[1]
            for name, scope in [("alice", "write"), ("bob", "read"), ("carol", "write"), ("dave", "write")]}

    async with connect(url, compression=None) as alice, connect(url, compression=None) as bob:
        # alice speaks binary msgpack: [request_id, [tag, version, fields...]]
        auth = await binary(alice, 1, 100, "acme", "api_key", keys["alice"])
        assert auth[0] == 101 and auth[2 + 2] == "alice", auth
        alice_token = auth[2 + 3]
        updated = await binary(alice, 2, 122, "acme", "svc", [["x", b"1"]], "")
        assert updated[0] == 123 and [v[:2] for v in updated[2 + 2]] == [["x", 1]], updated
        assert updated[2 + 2][0][2] > 0, "each write carries its cluster-wide stamp"

        # bob speaks JSON text frames, bytes as base64
        reply = await text(bob, {"type": "Authenticate", "id": 1, "tenant": "acme", "method": "api_key",
                                 "credential": keys["bob"]})
        assert reply["type"] == "AuthenticationResponse" and reply["client_id"] == "bob", reply
        reply = await text(bob, {"type": "Subscribe", "id": 2, "tenant": "acme", "service": "svc", "names": []})
        assert reply["type"] == "SubscriptionAck" and base64.b64decode(reply["current"][0]["value"]) == b"1"
        reply = await text(bob, {"type": "SetVariables", "id": 3, "tenant": "acme", "service": "svc",
                                 "variables": [{"name": "x", "value": "Mg=="}], "concern": ""})
        assert reply == {"type": "Error", "id": 3, "code": "forbidden", "detail": reply["detail"]}

        await binary(alice, 3, 122, "acme", "svc", [["x", b"2"]], "")
        change = await next_change(bob, "x")
        assert (base64.b64decode(change["value"]), change["version"], change["changed_by"]) == (b"2", 2, "alice")

        # a second OS process maps the file and writes straight into it; bob hears of it
        proc = subprocess.run([sys.executable, "-c", LOCAL_WRITER, url, keys["carol"]], capture_output=True,
                              text=True, timeout=DEADLINE)
        assert proc.returncode == 0, proc.stderr
        mapped_path = Path(proc.stdout.strip())
        change = await next_change(bob, "y")
        assert base64.b64decode(change["value"]) == b"from another process" and change["changed_by"] == "carol"

        # logout revokes alice's token
        assert (await binary(alice, 4, 102, "acme"))[0] == 103
        refused = await binary(alice, 5, 100, "acme", "token", alice_token)
        assert refused[0] == 20 and refused[2] == "unauthenticated", refused

        # revocation: carol (mapping) is cut off, the file rotates, dave (mapping) follows it
        carol = await AsyncClient.connect(url)
        await carol.authenticate("acme", api_key=keys["carol"])
        carol_svc = carol.service("acme", "svc", local=True)
        assert await carol_svc.map()
        dave = await AsyncClient.connect(url)
        await dave.authenticate("acme", api_key=keys["dave"])
        dave_svc = dave.service("acme", "svc", local=True)
        assert await dave_svc.map()
        assert dave_svc.mapping is not None and Path(dave_svc.mapping.path) == mapped_path
        await admin.revoke("acme", "carol")
        deadline = time.monotonic() + DEADLINE
        while Path(dave_svc.mapping.path) == mapped_path:  # FileMigration reached dave's SDK
            assert time.monotonic() < deadline, "dave never remapped"
            await asyncio.sleep(0.01)
        assert not mapped_path.exists(), "the old file is deleted (no honeypot configured)"
        with pytest.raises(PermissionRevokedError):
            await carol_svc.get("x")
        dave_svc.write_local("z", b"after rotation")
        change = await next_change(bob, "z")
        assert change["changed_by"] == "dave"

        # a client that never reads is dropped; bob keeps being served
        async with connect(url, compression=None, max_queue=1) as staller:
            assert (await binary(staller, 1, 100, "acme", "api_key", keys["bob"]))[0] == 101
            assert (await binary(staller, 2, 124, "acme", "svc", []))[0] == 125
            writer = admin  # the admin may write anywhere
            await writer.authenticate("acme", api_key=admin_key)
            big = os.urandom(256 * 1024)
            svc = writer.service("acme", "svc", local=False)
            for _ in range(80):
                await svc.set("big", big)
                await next_change(bob, "big")  # bob keeps reading (a 1 s stall timeout drops any laggard)
            deadline = time.monotonic() + DEADLINE
            while '"client_stalled"' not in log.read_text():
                assert time.monotonic() < deadline, "the stalled client was never dropped"
                await svc.set("tick", str(time.monotonic()).encode())
                await next_change(bob, "tick")  # the others are still served meanwhile
                await asyncio.sleep(0.1)
            with pytest.raises(ConnectionClosed):  # what it had buffered, then the end
                while time.monotonic() < deadline:
                    await asyncio.wait_for(staller.recv(), DEADLINE)
        for client in (admin, carol, dave):
            await client.close()


def test_one_server_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "data"
    served = Served(data, tmp_path / "serve.log", "--stall-timeout", "1")
    try:
        assert served.admin_key.startswith("ck_")
        asyncio.run(scenario(served.url, served.admin_key, served.log))
    finally:
        rc = served.stop()
    assert rc == 0, served.log.read_text()

    again = Served(data, tmp_path / "serve2.log")
    try:
        assert again.admin_key == "", "a restart must not print a new admin key"

        async def check() -> None:
            async with AsyncClient.connect(again.url) as client:
                await client.authenticate("acme", api_key=served.admin_key)
                assert await client.service("acme", "svc", local=False).get("z") == b"after rotation"
        asyncio.run(check())
    finally:
        assert again.stop() == 0

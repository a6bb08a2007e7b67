"""`commy admin` against a fake server: every operation, error exit codes and usage errors."""

from __future__ import annotations

import argparse
import socket

import pytest

from commy.client.admin_cli import add_admin_parser
from commy.messages import CreateService, GrantPermission, RevokeApiKey, RevokePermission
from tests.helpers.fake_server import ThreadedFakeServer


def admin(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="commy")
    add_admin_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["admin", *argv])
    return int(args.func(args))


def test_every_operation(capsys: pytest.CaptureFixture[str]) -> None:
    with ThreadedFakeServer(keys={"root": "admin"}) as srv:
        base = ["--url", srv.url, "--key", "root"]
        assert admin(*base, "create-tenant", "t2") == 0
        assert admin(*base, "create-service", "t2", "svc") == 0
        assert admin(*base, "grant", "t2", "bob", "read", "write") == 0
        assert admin(*base, "revoke", "t2", "bob") == 0
        assert admin(*base, "revoke-key", "k9") == 0
        assert capsys.readouterr().out.splitlines() == [
            "created tenant t2", "created service t2/svc", "granted read write on t2 to bob",
            "revoked every permission on t2 from bob", "revoked key k9"]
        assert admin(*base, "create-key", "bob", "--tenant", "t2", "--scope", "write") == 0
        out = capsys.readouterr()
        assert out.out.strip() in srv.fake.keys and "shown only this once" in out.err
        assert admin(*base, "tenants") == 0
        assert capsys.readouterr().out.split() == ["acme", "t2"]
        assert admin(*base, "delete-tenant", "t2") == 0
        fake = srv.fake
        assert fake.requests(CreateService) == [CreateService("t2", "svc")]
        assert fake.requests(GrantPermission) == [GrantPermission("t2", "bob", ("read", "write"))]
        assert fake.requests(RevokePermission) == [RevokePermission("t2", "bob", ())]
        assert fake.requests(RevokeApiKey) == [RevokeApiKey("k9")]


def test_server_errors_exit_1_and_usage_errors_exit_2(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMMY_ADMIN_KEY", raising=False)
    with ThreadedFakeServer(keys={"root": "admin"}) as srv:
        assert admin("--url", srv.url, "--key", "wrong", "tenants") == 1
        assert "unauthenticated: authentication failed" in capsys.readouterr().err
        assert admin("--url", srv.url, "--key", "root", "delete-tenant", "nope") == 1
        assert "not_found: tenant 'nope' not found" in capsys.readouterr().err
        assert admin("--url", srv.url, "tenants") == 2
        assert "COMMY_ADMIN_KEY" in capsys.readouterr().err
        monkeypatch.setenv("COMMY_ADMIN_KEY", "root")
        assert admin("--url", srv.url, "tenants") == 0
        assert admin("--url", srv.url, "create-key", "bob", "--scope", "read") == 2
        assert admin("--url", srv.url, "--cafile", "/nonexistent/ca.pem", "tenants") == 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert admin("--url", f"ws://127.0.0.1:{port}", "--key", "root", "--timeout", "2", "tenants") == 1
    assert "could not connect" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        admin("grant", "t")
    assert usage.value.code == 2

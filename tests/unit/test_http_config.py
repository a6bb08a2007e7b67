"""The `[http]` table of the cluster configuration: defaults, values, mistakes named by file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from commy.config import ClusterConfig, ConfigError, HttpConfig, describe, load_cluster_config

SECRET = "s3cret-0123456789-abcdef"
BASE = """
[cluster]
name = "test"
secret_env = "COMMY_CLUSTER_SECRET"

[[nodes]]
id = "n1"
peer = "127.0.0.1:7101"
listen = "127.0.0.1:8101"
data = "data/n1"
"""


@pytest.fixture(autouse=True)
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMMY_CLUSTER_SECRET", SECRET)


def load(folder: Path, text: str) -> ClusterConfig:
    path = folder / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    return load_cluster_config(path)


def problems(folder: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(folder, text)
    assert all(p.startswith(f"{folder / 'cluster.toml'}: ") for p in info.value.problems), info.value
    return info.value.problems


def test_without_an_http_table_the_endpoints_answer_loopback_only(tmp_path: Path) -> None:
    c = load(tmp_path, BASE)
    assert c.http == HttpConfig(enabled=True, public=False)
    assert "http endpoints (/health, /metrics, /status, /): loopback clients only" in describe(c)


@pytest.mark.parametrize(("table", "expected", "shown"), [
    ("[http]\npublic = true\n", HttpConfig(True, True), "every client"),
    ("[http]\nenabled = false\n", HttpConfig(False, False), "off"),
    ("[http]\n", HttpConfig(), "loopback clients only"),
])
def test_http_values_read_back(tmp_path: Path, table: str, expected: HttpConfig, shown: str) -> None:
    c = load(tmp_path, BASE + table)
    assert c.http == expected
    assert f"http endpoints (/health, /metrics, /status, /): {shown}" in describe(c)


def test_http_mistakes_name_the_file_and_key(tmp_path: Path) -> None:
    where = f"{tmp_path / 'cluster.toml'}: "
    found = problems(tmp_path, BASE + '[http]\npublic = "yes"\nenable = true\n')
    assert f'{where}http.public: expected true or false, got "yes"' in found
    assert any(p.startswith(f'{where}http.enable: unknown key (did you mean "enabled"?)') for p in found), found
    found = problems(tmp_path, "http = 3\n" + BASE)  # a top-level key, not a table
    assert any(p.startswith(f"{where}http: expected a table ([http])") for p in found), found


def test_configs_built_in_code_default_to_loopback_only(tmp_path: Path) -> None:
    c = load(tmp_path, BASE)
    built = ClusterConfig("x", SECRET.encode(), c.nodes, replication_factor=1)
    assert built.http == HttpConfig() and not built.http.public and built.http.enabled


TOKEN = "0123456789abcdef-token"


def token_file(folder: Path, text: str, mode: int = 0o600) -> Path:
    path = folder / "http.token"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_token_file_is_read_relative_to_the_config_and_never_shown(tmp_path: Path) -> None:
    token_file(tmp_path, TOKEN + "\n")
    c = load(tmp_path, BASE + '[http]\ntoken_file = "http.token"\n')
    assert c.http == HttpConfig(token=TOKEN)
    assert TOKEN not in repr(c) and TOKEN not in describe(c)
    assert "/status and /metrics need the bearer token of [http] token_file" in describe(c)
    assert load(tmp_path, BASE).http.token is None


@pytest.mark.parametrize(("text", "mode", "expected"), [
    (TOKEN, 0o644, "is open to other users (mode 644); run: chmod 600"),
    (TOKEN, 0o640, "is open to other users (mode 640)"),
    ("short-token", 0o600, "must hold one token of at least 16 characters"),
    ("0123456789 abcdef token", 0o600, "must hold one token of at least 16 characters"),
    ("", 0o600, "must hold one token"),
])
def test_token_file_mistakes_name_the_key(tmp_path: Path, text: str, mode: int, expected: str) -> None:
    path = token_file(tmp_path, text, mode)
    found = problems(tmp_path, BASE + '[http]\ntoken_file = "http.token"\n')
    where = f"{tmp_path / 'cluster.toml'}: http.token_file: {path}"
    assert any(p.startswith(where) and expected in p for p in found), found
    assert all(TOKEN not in p for p in found)


def test_a_missing_or_odd_token_file_names_the_key(tmp_path: Path) -> None:
    where = f"{tmp_path / 'cluster.toml'}: http.token_file: "
    found = problems(tmp_path, BASE + '[http]\ntoken_file = "nowhere.token"\n')
    assert any(p.startswith(f"{where}cannot read {tmp_path / 'nowhere.token'}") for p in found), found
    found = problems(tmp_path, BASE + f'[http]\ntoken_file = "{tmp_path}"\n')
    assert any(p.startswith(f"{where}{tmp_path} is not a regular file") for p in found), found
    found = problems(tmp_path, BASE + "[http]\ntoken_file = 7\n")
    assert any(p.startswith(f"{where}expected a non-empty string") for p in found), found


def test_a_token_given_in_code_is_checked() -> None:
    assert HttpConfig(token=TOKEN).token == TOKEN
    for bad in ("short", "has a space in it, 0123456789", "ünïcödé-0123456789"):
        with pytest.raises(ValueError, match=r"http\.token"):
            HttpConfig(token=bad)

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

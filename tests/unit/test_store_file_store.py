"""FileStore: random names in per-tenant folders, a persisted index, rotation and honeypots, confinement."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from commy.errors import BAD_REQUEST, NOT_FOUND, LocalProtocolError, RemoteProtocolError
from commy.store import FileStore, HoneypotAlert, ServiceFile, StoreError


def counting_entropy() -> Callable[[int], bytes]:
    state = {"n": 0}

    def entropy(n: int) -> bytes:
        state["n"] += 1
        return state["n"].to_bytes(n, "big")

    return entropy


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def store(root: Path) -> FileStore:
    s = FileStore(root, entropy=counting_entropy())
    yield s
    s.close()


def files_under(top: Path) -> list[Path]:
    return sorted(Path(d) / f for d, _, fs in os.walk(top) for f in fs)


def test_open_create_and_not_found(store: FileStore, root: Path) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        store.open("acme", "orders")
    assert info.value.code == NOT_FOUND and "'orders'" in info.value.detail
    assert not store.exists("acme", "orders") and store.tenants() == [] and store.services("acme") == []
    sf = store.open("acme", "orders", create=True)
    assert store.open("acme", "orders") is sf and store.open("acme", "orders", create=True) is sf
    assert store.exists("acme", "orders") and store.services("acme") == ["orders"] and store.tenants() == ["acme"]
    path = store.path("acme", "orders")
    assert path == sf.path and path.parent == root.resolve() / "tenants" / "acme"
    assert path.name == (1).to_bytes(16, "big").hex() + ".svc"
    sf.write("x", b"1")
    with ServiceFile.open(path, writer=3) as local:  # a local client maps the same file
        assert local.read_value("x") == b"1"
    with pytest.raises(RemoteProtocolError) as info:
        store.path("acme", "nope")
    assert info.value.code == NOT_FOUND


def test_modes(store: FileStore, root: Path) -> None:
    store.open("t", "s", create=True)
    folder = root / "tenants" / "t"
    assert stat.S_IMODE(os.stat(root / "tenants").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    for f in folder.iterdir():
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f


def test_index_persists_across_instances(root: Path) -> None:
    a = FileStore(root)
    for t, s in [("t1", "a"), ("t1", "b"), ("t2", "a")]:
        a.open(t, s, create=True).write("who", f"{t}/{s}".encode())
    paths = {(t, s): a.path(t, s) for t in a.tenants() for s in a.services(t)}
    a.close()
    b = FileStore(root)
    assert b.tenants() == ["t1", "t2"] and b.services("t1") == ["a", "b"] and b.services("t2") == ["a"]
    for (t, s), p in paths.items():
        assert b.path(t, s) == p
        assert b.open(t, s).read_value("who") == f"{t}/{s}".encode()
    doc = json.loads((root / "tenants" / "t1" / "index.json").read_text())
    assert doc["services"] == {"a": paths[("t1", "a")].name, "b": paths[("t1", "b")].name}
    b.close()


def test_remove_and_remove_tenant(store: FileStore, root: Path) -> None:
    path = store.open("t", "gone", create=True).path
    kept = store.open("t", "kept", create=True)
    store.remove("t", "gone")
    assert not path.exists() and store.services("t") == ["kept"] and not store.exists("t", "gone")
    with pytest.raises(RemoteProtocolError) as info:
        store.remove("t", "gone")
    assert info.value.code == NOT_FOUND
    assert FileStore(root).services("t") == ["kept"]
    store.remove_tenant("t")
    assert kept.closed and store.tenants() == [] and not (root / "tenants" / "t").exists()
    with pytest.raises(RemoteProtocolError):
        store.open("t", "kept")
    with pytest.raises(RemoteProtocolError) as info:
        store.remove_tenant("t")
    assert info.value.code == NOT_FOUND
    store.open("t", "again", create=True)
    assert store.services("t") == ["again"]


def test_rotate_moves_data_and_deletes_the_old_file(store: FileStore, root: Path) -> None:
    sf = store.open("t", "s", create=True)
    for i in range(50):
        sf.write(f"v{i}", bytes([i]) * i * 10)
    old_path = sf.path
    new_path = store.rotate("t", "s")
    assert new_path != old_path and new_path.parent == old_path.parent and not old_path.exists()
    assert sf.closed and store.path("t", "s") == new_path
    new = store.open("t", "s")
    assert new.path == new_path and new is not sf
    assert [e.value for e in new.entries()] == [bytes([i]) * i * 10 for i in range(50)]
    assert new.write("v0", b"next") == 2
    assert FileStore(root).path("t", "s") == new_path
    assert store.honeypot_alerts() == []
    assert sorted(p.name for p in new_path.parent.iterdir()) == sorted(["index.json", new_path.name])


def test_honeypot_alerts_once_per_touch(root: Path) -> None:
    store = FileStore(root, honeypot=True)
    sf = store.open("t", "s", create=True)
    sf.write("secret", b"v1")
    revoked = ServiceFile.open(sf.path, writer=7)  # the client whose access is being revoked
    old_path = sf.path
    new_path = store.rotate("t", "s")
    assert old_path.exists() and store.open("t", "s").read_value("secret") == b"v1"
    assert store.honeypot_alerts() == []
    revoked.write("secret", b"stolen?")
    alerts = store.honeypot_alerts()
    assert alerts == [HoneypotAlert("t", "s", old_path.resolve(), alerts[0].detail)]
    assert "written since rotation" in alerts[0].detail
    assert store.honeypot_alerts() == []  # reported once
    assert store.open("t", "s").read_value("secret") == b"v1"  # the new file never saw it
    revoked.read_value("secret")
    assert store.honeypot_alerts() == []  # reading through a live mapping leaves no trace we can see
    revoked.write("more", b"x" * 200_000)  # grows the file: mark and size change
    alerts = store.honeypot_alerts()
    assert len(alerts) == 1 and "size" in alerts[0].detail
    revoked.close()
    store.close()
    again = FileStore(root, honeypot=True)  # the honeypot is remembered in the index
    assert again.honeypot_alerts() == []
    old_path.unlink()
    alerts = again.honeypot_alerts()
    assert [a.detail for a in alerts] == ["honeypot removed"] and again.honeypot_alerts() == []
    assert again.path("t", "s") == new_path
    again.close()


def test_honeypot_overwritten_with_garbage(root: Path) -> None:
    store = FileStore(root, honeypot=True)
    store.open("t", "s", create=True)
    old = store.path("t", "s")
    store.rotate("t", "s")
    old.write_bytes(b"junk")
    alerts = store.honeypot_alerts()
    assert len(alerts) == 1 and "no longer a valid service file" in alerts[0].detail
    assert store.honeypot_alerts() == []
    store.close()


@pytest.mark.parametrize(("tenant", "service"), [
    ("..", "s"), ("t", ".."), ("../x", "s"), ("t", "../../etc"), ("t/u", "s"), ("t", "a\x00b"), ("", "s"),
    ("t", "x" * 10_000), (5, "s"), ("t", None), ("CON", "s"), ("t", "nul"), (".", "s"), ("t", "/abs"),
])
def test_bad_names_are_refused_and_nothing_lands_outside_root(store: FileStore, root: Path, tmp_path: Path,
                                                              tenant: object, service: object) -> None:
    store.open("good", "one", create=True)
    before = files_under(tmp_path)
    for op in (lambda: store.open(tenant, service, create=True), lambda: store.exists(tenant, service),  # type: ignore
               lambda: store.path(tenant, service), lambda: store.rotate(tenant, service),  # type: ignore
               lambda: store.remove(tenant, service)):  # type: ignore
        with pytest.raises(RemoteProtocolError) as info:
            op()
        assert info.value.code == BAD_REQUEST
    assert files_under(tmp_path) == before
    assert all(p.resolve().is_relative_to(root.resolve()) for p in files_under(tmp_path))


def test_a_symlinked_tenant_folder_is_not_followed_outside(store: FileStore, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "tenants" / "evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(LocalProtocolError, match="outside"):
        store.open("evil", "s", create=True)
    assert list(outside.iterdir()) == []
    assert store.tenants() == []  # a symlink is not a tenant folder


def test_corrupt_index_and_service_file(root: Path) -> None:
    store = FileStore(root)
    store.open("t", "s", create=True).write("x", b"1")
    path = store.path("t", "s")
    store.close()
    index = root / "tenants" / "t" / "index.json"
    good = index.read_text()
    head = {"format": "commy-store-index", "version": 1}
    for text in ("{not json", "[]", '{"format": "commy-store-index", "version": 9, "services": {}}',
                 json.dumps({**head, "services": {"s": "../../x.svc"}}),
                 json.dumps({**head, "services": {"..": path.name}}),
                 json.dumps({**head, "services": {"a": path.name, "b": path.name}}),
                 json.dumps({**head, "services": {}, "honeypots": {"x": 1}}),
                 json.dumps({**head, "services": {}, "honeypots": {"0" * 32 + ".svc": {"service": "s"}}})):
        index.write_text(text)
        with pytest.raises(StoreError) as info:
            FileStore(root).services("t")
        assert str(index) in str(info.value)
    index.write_text(good)
    path.write_bytes(b"\0" * 9000)
    with pytest.raises(StoreError) as info:
        FileStore(root).open("t", "s")
    assert str(path) in str(info.value)
    path.unlink()
    with pytest.raises(StoreError, match="missing"):
        FileStore(root).open("t", "s")


def test_entropy_is_checked(root: Path) -> None:
    with pytest.raises(LocalProtocolError, match="entropy"):
        FileStore(root, entropy=lambda n: b"short").open("t", "s", create=True)
    store = FileStore(root, entropy=lambda n: bytes(n))
    store.open("t", "a", create=True)
    with pytest.raises(LocalProtocolError, match="repeated"):
        store.open("t", "b", create=True)
    assert store.services("t") == ["a"]
    store.close()


def test_flush_all_and_close(store: FileStore) -> None:
    a = store.open("t", "a", create=True)
    a.write("x", b"1")
    store.flush_all()
    store.close()
    assert a.closed
    b = store.open("t", "a")  # usable again after close: handles reopen on demand
    assert b is not a and b.read_value("x") == b"1"


def test_table_capacity_and_max_value_reach_the_files(root: Path) -> None:
    store = FileStore(root, table_capacity=2, max_value=10)
    sf = store.open("t", "s", create=True)
    with pytest.raises(RemoteProtocolError):
        sf.write("x", b"x" * 11)
    for i in range(5):
        sf.write(f"v{i}", b"1")
    assert len(sf.names()) == 5
    store.close()

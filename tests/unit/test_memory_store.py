"""The in-memory store: the file store's behaviour (versions, stamps, clocks, services), no files."""

from __future__ import annotations

import pytest

from commy.errors import NOT_FOUND, LocalProtocolError, RemoteProtocolError
from commy.store.memory import MemoryStore


def test_writes_bump_versions_and_keep_stamps() -> None:
    h = MemoryStore().open("t", "s", create=True)
    assert h.write("x", b"a", stamp=7) == 1 and h.write("x", b"b") == 2
    e = h.read("x")
    assert e is not None and (e.value, e.version, e.writer, e.stamp) == (b"b", 2, 0, 0)
    assert h.write_as(3, "y", b"direct") == 1 and h.read("y").writer == 3  # type: ignore[union-attr]
    with pytest.raises(LocalProtocolError):
        h.write("x", b"c", stamp=-1)


def test_set_stamp_only_if_the_version_is_unchanged() -> None:
    h = MemoryStore().open("t", "s", create=True)
    mark = h.change_mark()
    h.write_as(2, "x", b"direct")
    assert not h.set_stamp("x", 2, 99) and not h.set_stamp("nope", 1, 99)
    assert h.set_stamp("x", 1, 99) and h.read("x").stamp == 99  # type: ignore[union-attr]
    assert h.read("x").version == 1 and h.change_mark() == mark + 1  # type: ignore[union-attr]


def test_clocks_only_grow() -> None:
    h = MemoryStore().open("t", "s", create=True)
    assert h.clocks() == {}
    h.set_clock(2, 50)
    h.set_clock(2, 40)
    h.set_clock(0, 5)
    assert h.clocks() == {0: 5, 2: 50}
    h.clocks()[2] = 1  # a copy
    assert h.clocks()[2] == 50
    with pytest.raises(LocalProtocolError):
        h.set_clock(256, 1)


def test_services_tenants_and_removal() -> None:
    store = MemoryStore()
    store.open("t", "b", create=True)
    store.open("t", "a", create=True)
    store.open("u", "a", create=True)
    assert store.services("t") == ["a", "b"] and store.tenants() == ["t", "u"] and store.services("v") == []
    store.remove_tenant("t")
    assert store.tenants() == ["u"] and not store.exists("t", "a")
    with pytest.raises(RemoteProtocolError) as err:
        store.open("t", "a")
    assert err.value.code == NOT_FOUND


def test_rotation_gives_a_new_path_and_records_the_old() -> None:
    store = MemoryStore()
    store.open("t", "s", create=True)
    old = store.path("t", "s")
    new = store.rotate("t", "s")
    assert new != old and store.rotated == [("t", "s", old)] and store.honeypot_alerts() == []

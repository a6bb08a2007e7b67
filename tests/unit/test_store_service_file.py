"""ServiceFile: round trips, versions, growth seen by a second mapping, change tracking, corruption."""

from __future__ import annotations

import mmap
import os
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commy.errors import BAD_REQUEST, TOO_LARGE, LocalProtocolError, RemoteProtocolError
from commy.store import Entry, ServiceFile, StoreError
from commy.store.layout import (
    E_SEQ,
    ENTRY_WORDS,
    H_CAP,
    H_COUNT,
    H_GEN,
    H_SIZE,
    H_TABLE,
    HEADER_SIZE,
    LAYOUT_VERSION,
    MAGIC,
    read_change_mark,
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "s.svc"


@pytest.fixture
def sf(path: Path) -> ServiceFile:
    f = ServiceFile.create(path)
    yield f
    f.close()


def raw_words(path: Path) -> tuple[mmap.mmap, memoryview]:
    fd = os.open(path, os.O_RDWR)
    try:
        mm = mmap.mmap(fd, 0)
    finally:
        os.close(fd)
    return mm, memoryview(mm).cast("Q")


def test_round_trip_and_missing(sf: ServiceFile) -> None:
    assert sf.read_value("x") is None and sf.read("x") is None and sf.names() == []
    assert sf.write("x", b"hello") == 1
    assert sf.read_value("x") == b"hello"
    assert sf.read("x") == Entry("x", b"hello", 1, 0, 0)
    assert sf.write("empty", b"") == 1 and sf.read_value("empty") == b""
    assert sf.names() == ["x", "empty"]
    assert type(sf.read_value("x")) is bytes


def test_versions_bump_on_every_write(sf: ServiceFile) -> None:
    versions = [sf.write("v", bytes([i]) * (i % 7), stamp=i) for i in range(1, 50)]
    assert versions == list(range(1, 50))
    assert sf.read("v") == Entry("v", bytes([49]) * 0, 49, 0, 49)
    assert sf.write("v", b"same") == 50 and sf.write("v", b"same") == 51


def test_bytes_like_values_and_refusals(sf: ServiceFile) -> None:
    assert sf.write("a", bytearray(b"ba")) == 1 and sf.read_value("a") == b"ba"
    assert sf.write("a", memoryview(b"xmv")[1:]) == 2 and sf.read_value("a") == b"mv"
    wide = memoryview(bytearray(8)).cast("I")
    sf.write("a", wide)
    assert sf.read_value("a") == bytes(8)
    for bad in ("text", 5, None, [1, 2]):
        with pytest.raises(RemoteProtocolError) as info:
            sf.write("a", bad)  # type: ignore[arg-type]
        assert info.value.code == BAD_REQUEST and "bytes-like" in info.value.detail
    for stamp in (-1, 1 << 64, 1.5, "1"):
        with pytest.raises(LocalProtocolError):
            sf.write("a", b"x", stamp=stamp)  # type: ignore[arg-type]
    assert sf.read("a") is not None and sf.read("a").version == 3  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["", "x" * 65, "a\x00", 5, None, b"x", ["unhashable"]])
def test_bad_variable_names(sf: ServiceFile, name: object) -> None:
    for op in (lambda: sf.write(name, b"v"), lambda: sf.read_value(name), lambda: sf.read(name)):  # type: ignore
        with pytest.raises(RemoteProtocolError) as info:
            op()
        assert info.value.code == BAD_REQUEST and info.value.detail.startswith("variable name:")
    assert sf.names() == []


def test_too_large(path: Path) -> None:
    with ServiceFile.create(path, max_value=100) as f:
        f.write("v", b"x" * 100)
        with pytest.raises(RemoteProtocolError) as info:
            f.write("v", b"x" * 101)
        assert info.value.code == TOO_LARGE and "101 bytes" in info.value.detail
        with pytest.raises(RemoteProtocolError):
            f.write("new", bytearray(1000))
        assert f.names() == ["v"] and f.read_value("v") == b"x" * 100


def test_file_mode_and_existing_path(path: Path) -> None:
    ServiceFile.create(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(FileExistsError):
        ServiceFile.create(path)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left behind


def test_writer_slots(path: Path, sf: ServiceFile) -> None:
    assert ServiceFile.MAX_WRITERS == 64
    other = ServiceFile.open(path, writer=63)
    other.write("x", b"1", stamp=7)
    assert sf.read("x") == Entry("x", b"1", 1, 63, 7)
    sf.write("x", b"2")
    assert other.read("x") == Entry("x", b"2", 2, 0, 0)
    other.close()
    for bad in (-1, 64, "1", 1.0):
        with pytest.raises(LocalProtocolError):
            ServiceFile.open(path, writer=bad)  # type: ignore[arg-type]


def test_value_growth_seen_by_a_second_mapping(path: Path, sf: ServiceFile) -> None:
    other = ServiceFile.open(path, writer=1)
    sf.write("v", b"s")
    assert other.read_value("v") == b"s"
    gen = other.generation
    for size in (63, 64, 65, 1000, 64 * 1024, 1 << 20, 10):
        value = os.urandom(size)
        sf.write("v", value)
        assert other.read_value("v") == value
        assert other.read("v").value == value  # type: ignore[union-attr]
    assert other.generation > gen  # a megabyte does not fit in 64 KiB: the file grew
    assert os.path.getsize(path) > 1 << 20
    other.write("v", b"back")
    assert sf.read_value("v") == b"back"
    other.close()


def test_many_variables_move_the_table(path: Path) -> None:
    sf = ServiceFile.create(path, table_capacity=4, data_size=0)
    other = ServiceFile.open(path, writer=2)
    other.write("early", b"e")
    gen = sf.generation
    for i in range(300):
        sf.write(f"v{i}", str(i).encode() * (i % 50))
        if i % 37 == 0:
            assert other.read_value(f"v{i}") == str(i).encode() * (i % 50)
    assert other.generation == sf.generation > gen
    assert len(other.names()) == 301 and other.names()[:2] == ["early", "v0"]
    for i in range(300):
        assert other.read_value(f"v{i}") == str(i).encode() * (i % 50)
    assert other.read_value("early") == b"e" and sf.read_value("early") == b"e"
    other.write("v5", b"five")
    assert sf.read("v5") == Entry("v5", b"five", 2, 2, 0)
    _, q = raw_words(path)
    assert q[H_CAP] >= 301 and q[H_TABLE] > HEADER_SIZE
    q.release()
    sf.close()
    other.close()


def test_stale_mapping_reads_through_a_moved_table(path: Path) -> None:
    a = ServiceFile.create(path, table_capacity=2, data_size=0)
    b = ServiceFile.open(path, writer=1)
    a.write("x", b"1")
    assert b.read_value("x") == b"1"  # b now holds slots into the first table
    for i in range(10):
        a.write(f"y{i}", b"grow")
    a.write("x", b"2")
    assert b.read_value("x") == b"2"
    b.write("x", b"3")
    assert a.read_value("x") == b"3"
    a.close()
    b.close()


def test_change_mark_and_changed_since(path: Path, sf: ServiceFile) -> None:
    other = ServiceFile.open(path, writer=9)
    seen: dict[str, int] = {}
    assert sf.changed_since(seen) == [] and seen == {}
    m0 = sf.change_mark()
    sf.write("a", b"1")
    m1 = other.change_mark()
    assert m1 != m0
    other.write("b", b"2")
    assert sf.change_mark() not in (m0, m1)
    changed = sf.changed_since(seen)
    assert [(e.name, e.value, e.writer) for e in changed] == [("a", b"1", 0), ("b", b"2", 9)]
    assert seen == {"a": 1, "b": 1}
    assert sf.changed_since(seen) == []
    other.write("a", b"3")
    assert [(e.name, e.version) for e in sf.changed_since(seen)] == [("a", 2)] and seen["a"] == 2
    seen["b"] = 99  # a version that is not current counts as changed
    assert [e.name for e in sf.changed_since(seen)] == ["b"]
    assert sf.entries() == [Entry("a", b"3", 2, 9, 0), Entry("b", b"2", 1, 9, 0)]
    assert read_change_mark(path)[0] == sf.change_mark() == 3
    other.close()


def test_threads_sharing_objects_and_a_slot_lose_no_change(path: Path, sf: ServiceFile) -> None:
    twin = ServiceFile.open(path, writer=0)  # same process, same slot: the process lock covers it
    per_thread = 300

    def work(f: ServiceFile, k: int) -> None:
        for i in range(per_thread):
            f.write(f"t{k}", i.to_bytes(4, "little") * (1 + i % 40))
            f.write("shared", bytes([k]) * 100)

    threads = [threading.Thread(target=work, args=(f, k)) for k, f in enumerate([sf, twin, sf, twin])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sf.change_mark() == twin.change_mark() == 4 * per_thread * 2
    assert sf.read("shared").version == 4 * per_thread  # type: ignore[union-attr]
    for k in range(4):
        assert twin.read("t" + str(k)).version == per_thread  # type: ignore[union-attr]
    twin.close()


def test_reopen_after_close(path: Path) -> None:
    with ServiceFile.create(path) as f:
        f.write("x", b"kept")
        f.write("big", b"b" * 100_000)
    assert f.closed
    f.close()  # idempotent
    for op in (lambda: f.read_value("x"), lambda: f.write("x", b"1"), f.names, f.change_mark, f.flush,
               lambda: f.generation):
        with pytest.raises(LocalProtocolError):
            op()
    with ServiceFile.open(path, writer=4) as g:
        assert g.read_value("x") == b"kept" and g.read_value("big") == b"b" * 100_000
        assert g.read("x") == Entry("x", b"kept", 1, 0, 0)
        g.flush()


def test_copy_to_is_a_consistent_copy(path: Path, sf: ServiceFile, tmp_path: Path) -> None:
    for i in range(20):
        sf.write(f"v{i}", bytes([i]) * (i * 50))
    sf.copy_to(tmp_path / "copy.svc")
    sf.write("v0", b"after")
    assert stat.S_IMODE(os.stat(tmp_path / "copy.svc").st_mode) == 0o600
    with ServiceFile.open(tmp_path / "copy.svc") as copy:
        assert copy.read_value("v0") == b""
        assert [e for e in copy.entries() if e.name != "v0"] == [e for e in sf.entries() if e.name != "v0"]
        assert copy.change_mark() == sf.change_mark() - 1
    with pytest.raises(FileExistsError):
        sf.copy_to(tmp_path / "copy.svc")


def test_a_writer_that_died_mid_write_does_not_wedge_readers(path: Path, sf: ServiceFile) -> None:
    sf.write("x", b"before")
    mm, q = raw_words(path)
    seq = q[H_TABLE] // 8 + 0 * ENTRY_WORDS + E_SEQ
    q[seq] += 1  # odd: as if a writer were killed between its two seq stores
    assert sf.read_value("x") == b"before"  # bounded retries, then the shared lock
    assert sf.read("x").version == 1  # type: ignore[union-attr]
    assert sf.write("x", b"after") == 2
    assert q[seq] % 2 == 0 and sf.read_value("x") == b"after"
    q.release()
    mm.close()


def corrupt(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda p: corrupt(p, 0, b"NOTCOMMY"), "bad magic"),
    (lambda p: corrupt(p, 8, (LAYOUT_VERSION + 1).to_bytes(8, "little")), "layout version 2"),
    (lambda p: corrupt(p, H_SIZE * 8, (1 << 50).to_bytes(8, "little")), "records size"),
    (lambda p: corrupt(p, H_COUNT * 8, (10_000).to_bytes(8, "little")), "variables in a table"),
    (lambda p: corrupt(p, H_TABLE * 8, (1 << 40).to_bytes(8, "little")), "outside the file"),
    (lambda p: corrupt(p, H_CAP * 8, bytes(8)), "table capacity 0"),
    (lambda p: os.truncate(p, 100), "too short"),
    (lambda p: os.truncate(p, 0), "not a commy service file"),
    (lambda p: p.write_bytes(b"{}" * 5000), "bad magic"),
    (lambda p: corrupt(p, HEADER_SIZE + 64, (200).to_bytes(8, "little")), "name of 200 bytes"),
    (lambda p: corrupt(p, HEADER_SIZE, b"\xff\xfe"), "not UTF-8"),
])
def test_corrupt_files_raise_store_error_naming_the_path(path: Path, damage: object, message: str) -> None:
    with ServiceFile.create(path) as f:
        f.write("x", b"1")
    damage(path)  # type: ignore[operator]
    with pytest.raises(StoreError) as info:
        ServiceFile.open(path)
    assert str(path) in str(info.value) and message in str(info.value)
    with pytest.raises(StoreError):
        read_change_mark(path) if "name" not in message and "UTF-8" not in message else ServiceFile.open(path)


def test_corruption_after_open_is_noticed(path: Path, sf: ServiceFile) -> None:
    sf.write("x", b"1")
    mm, q = raw_words(path)
    q[H_COUNT] = 2  # a second entry that was never written
    with pytest.raises(StoreError, match="name of 0 bytes"):
        sf.names()
    q[H_COUNT] = 1
    q[H_GEN] += 1
    mm[:8] = b"garbage!"
    with pytest.raises(StoreError, match="bad magic"):
        sf.read_value("missing")
    mm[:8] = MAGIC
    assert sf.read_value("x") == b"1"
    q.release()
    mm.close()


def test_create_arguments(path: Path) -> None:
    for kwargs in ({"table_capacity": 0}, {"table_capacity": "5"}, {"data_size": -1}):
        with pytest.raises(LocalProtocolError):
            ServiceFile.create(path, **kwargs)  # type: ignore[arg-type]
    assert not path.exists()
    with pytest.raises(FileNotFoundError):
        ServiceFile.open(path)


names = st.sampled_from(["a", "b", "c", "longer-name", "é"])
values = st.one_of(st.binary(max_size=80), st.integers(0, 3000).map(lambda n: bytes([n % 251]) * n))


@given(st.lists(st.tuples(names, values, st.booleans()), max_size=40))
def test_writes_match_a_dict_model(tmp_path_factory: pytest.TempPathFactory,
                                   ops: list[tuple[str, bytes, bool]]) -> None:
    path = tmp_path_factory.mktemp("model") / "m.svc"
    a = ServiceFile.create(path, table_capacity=1, data_size=0)
    b = ServiceFile.open(path, writer=1)
    model: dict[str, bytes] = {}
    versions: dict[str, int] = {}
    for name, value, via_b in ops:
        version = (b if via_b else a).write(name, value)
        versions[name] = versions.get(name, 0) + 1
        model[name] = value
        assert version == versions[name]
        reader = a if via_b else b
        assert reader.read_value(name) == value
    for f in (a, b):
        assert sorted(f.names()) == sorted(model)
        assert {e.name: (e.value, e.version) for e in f.entries()} == {n: (v, versions[n]) for n, v in model.items()}
    assert a.change_mark() == len(ops)
    a.close()
    b.close()

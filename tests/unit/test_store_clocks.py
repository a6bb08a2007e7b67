"""A service file's version vector (`clocks`/`set_clock`) and `set_stamp`: persisted, only growing,
carried through growth, table moves, reopening, rotation and into other processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commy.errors import BAD_REQUEST, LocalProtocolError, RemoteProtocolError
from commy.store import Entry, FileStore, ServiceFile
from commy.store.layout import CLOCK_END, CLOCK_FIRST, CLOCKS_AT, COUNTERS_AT, HEADER_SIZE, MAX_ORIGIN

ROOT = Path(__file__).resolve().parents[2]
BIG = (1 << 64) - 1


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "s.svc"


@pytest.fixture
def sf(path: Path) -> ServiceFile:
    f = ServiceFile.create(path)
    yield f
    f.close()


def header_clock(path: Path, origin: int) -> int:
    with open(path, "rb") as f:
        f.seek(CLOCKS_AT + 8 * origin)
        return int.from_bytes(f.read(8), "little")


def test_the_clocks_fill_the_spare_header_before_the_counters() -> None:
    assert CLOCK_FIRST * 8 == CLOCKS_AT == 2048 and CLOCK_END * 8 == COUNTERS_AT < HEADER_SIZE
    assert CLOCK_END - CLOCK_FIRST == MAX_ORIGIN + 1 == 256


def test_new_file_has_no_clocks_and_set_clock_only_raises(path: Path, sf: ServiceFile) -> None:
    assert sf.clocks() == {}
    sf.set_clock(3, 100)
    sf.set_clock(3, 99)  # smaller: ignored
    sf.set_clock(3, 100)
    sf.set_clock(0, 5)
    sf.set_clock(MAX_ORIGIN, BIG)
    sf.set_clock(7, 0)  # zero means "none": nothing to record
    assert sf.clocks() == {0: 5, 3: 100, MAX_ORIGIN: BIG}
    assert header_clock(path, 3) == 100 and header_clock(path, MAX_ORIGIN) == BIG  # at 2048 + 8*origin
    sf.set_clock(3, 101)
    assert sf.clocks()[3] == 101


@given(st.lists(st.tuples(st.integers(0, MAX_ORIGIN), st.integers(0, BIG)), max_size=30))
def test_clocks_are_the_pointwise_max_of_what_was_set(tmp_path_factory: pytest.TempPathFactory,
                                                      sets: list[tuple[int, int]]) -> None:
    with ServiceFile.create(tmp_path_factory.mktemp("c") / "s.svc") as f:
        model: dict[int, int] = {}
        for origin, stamp in sets:
            f.set_clock(origin, stamp)
            if stamp:
                model[origin] = max(model.get(origin, 0), stamp)
        assert f.clocks() == model


def test_bad_arguments_are_local_errors(sf: ServiceFile) -> None:
    for origin in (-1, 256, 1.0, "1", True, None):
        with pytest.raises(LocalProtocolError, match="origin"):
            sf.set_clock(origin, 1)  # type: ignore[arg-type]
    for stamp in (-1, 1 << 64, 1.0, "1", None):
        with pytest.raises(LocalProtocolError, match="stamp"):
            sf.set_clock(1, stamp)  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError, match="stamp"):
            sf.set_stamp("x", 1, stamp)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="version"):
        sf.set_stamp("x", -1, 1)
    assert sf.clocks() == {}


def test_clocks_are_not_writes(sf: ServiceFile) -> None:
    sf.write("x", b"1")
    mark = sf.change_mark()
    sf.set_clock(1, 10)
    assert sf.change_mark() == mark and sf.entries() == [Entry("x", b"1", 1, 0, 0)]


def test_clocks_survive_close_and_reopen(path: Path) -> None:
    with ServiceFile.create(path) as f:
        f.set_clock(2, 22)
    with ServiceFile.open(path, writer=5) as f:
        assert f.clocks() == {2: 22}
        f.set_clock(9, 99)
    with ServiceFile.open(path) as f:
        assert f.clocks() == {2: 22, 9: 99}


def test_clocks_survive_growth_and_table_moves_in_every_mapping(path: Path) -> None:
    a = ServiceFile.create(path, table_capacity=2, data_size=0)
    b = ServiceFile.open(path, writer=1)
    a.set_clock(1, 11)
    gen = b.generation
    a.write("big", os.urandom(1 << 20))  # the file grows: new generation
    for i in range(10):  # and the table moves
        a.write(f"v{i}", b"x")
    assert b.generation == a.generation > gen
    assert b.clocks() == a.clocks() == {1: 11}
    b.set_clock(2, 22)  # through the remapped file of the other handle
    assert a.clocks() == {1: 11, 2: 22}
    a.close()
    b.close()


def test_closed_file_refuses(path: Path) -> None:
    f = ServiceFile.create(path)
    f.write("x", b"1")
    f.close()
    for call in (f.clocks, lambda: f.set_clock(1, 1), lambda: f.set_stamp("x", 1, 1)):
        with pytest.raises(LocalProtocolError, match="closed"):
            call()


def test_rotation_and_a_new_store_keep_the_clocks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with FileStore(root) as store:
        sf = store.open("t", "s", create=True)
        sf.write("x", b"1", stamp=77)
        sf.set_clock(4, 77)
        store.rotate("t", "s")
        new = store.open("t", "s")
        assert new is not sf and new.clocks() == {4: 77} and new.read("x") == Entry("x", b"1", 1, 0, 77)
        new.set_clock(4, 78)
        assert store.services("t") == ["s"]
    with FileStore(root) as again:
        assert again.open("t", "s").clocks() == {4: 78}


_CHILD = """
import json, sys
from commy.store import ServiceFile
with ServiceFile.open(sys.argv[1], writer=3) as f:
    seen = f.clocks()
    f.set_clock(9, 900)
    print(json.dumps(seen))
"""


def test_another_process_sees_and_sets_clocks(path: Path, sf: ServiceFile) -> None:
    sf.set_clock(1, 10)
    sf.set_clock(200, 2000)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert json.loads(out) == {"1": 10, "200": 2000}
    assert sf.clocks() == {1: 10, 200: 2000, 9: 900}


# ---- set_stamp -------------------------------------------------------------------------------------


def test_set_stamp_stamps_the_version_it_was_given(path: Path, sf: ServiceFile) -> None:
    client = ServiceFile.open(path, writer=7)  # a local client writing through its own mapping
    assert client.write("x", b"v1") == 1
    mark = sf.change_mark()
    assert sf.set_stamp("x", 1, 1234) is True
    assert sf.read("x") == Entry("x", b"v1", 1, 7, 1234)  # value, version and writer untouched
    assert client.read("x") == Entry("x", b"v1", 1, 7, 1234)
    assert sf.change_mark() == mark  # not a write: the hub's watch does not fire again
    client.write("x", b"v2")
    assert sf.set_stamp("x", 1, 999) is False  # overtaken: the newer write keeps its own stamp
    assert sf.read("x") == Entry("x", b"v2", 2, 7, 0)
    assert sf.set_stamp("missing", 1, 5) is False
    client.close()


def test_set_stamp_through_a_stale_mapping_after_the_table_moved(path: Path) -> None:
    a = ServiceFile.create(path, table_capacity=2, data_size=0)
    b = ServiceFile.open(path, writer=1)
    a.write("x", b"1")
    assert b.read_value("x") == b"1"  # b indexes the first table
    for i in range(10):
        a.write(f"y{i}", b"grow")
    assert b.set_stamp("x", 1, 55) is True
    assert a.read("x") == Entry("x", b"1", 1, 0, 55)
    assert b.set_stamp("y9", 1, 66) and a.read("y9") == Entry("y9", b"grow", 1, 0, 66)  # one b never saw
    a.close()
    b.close()


@pytest.mark.parametrize("name", ["", "x" * 65, "a\x00", 5, None, b"x", ["unhashable"]])
def test_set_stamp_refuses_impossible_names(sf: ServiceFile, name: object) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        sf.set_stamp(name, 1, 1)  # type: ignore[arg-type]
    assert info.value.code == BAD_REQUEST

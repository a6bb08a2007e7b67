"""Structural rules from DESIGN.md, checked on the source tree with `ast`."""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

import pytest

from commy.messages import LOCAL, REGISTRY, WIRE, Message

ROOT = Path(__file__).resolve().parents[2]
CORE_FORBIDDEN = {"socket", "asyncio", "time", "uuid", "secrets", "threading", "thespian", "websockets"}
MAX_LINES, WARN_LINES = 700, 400
# The only product modules that may reach into the simulator, and only lazily (inside a function):
# `commy sim ...` and the simulator row of `commy bench`.
LAZY_SIM_IMPORTERS = {"commy/cli.py", "commy/bench.py"}


def modules(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def imported(tree: ast.AST) -> list[tuple[str, ast.stmt]]:
    """Absolute module names imported anywhere in `tree` (`import a.b`, `from a.b import c`)."""
    out: list[tuple[str, ast.stmt]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, node))
    return out


def top(name: str) -> str:
    return name.split(".")[0]


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_the_checks_see_the_tree() -> None:
    assert {"commy/core/actor.py", "commy/codec.py", "commy/cli.py"} <= {rel(p) for p in modules("commy")}
    sample = ast.parse("import time\nimport asyncio.events as e\nfrom socket import socket\nfrom . import x\n"
                       "def f():\n    from sim.network import N\n")
    assert [top(n) for n, _ in imported(sample)] == ["time", "asyncio", "socket", "sim"]


@pytest.mark.parametrize("path", modules("commy/core"), ids=rel)
def test_core_does_not_import_the_world(path: Path) -> None:
    bad = sorted({name for name, _ in imported(parse(path)) if top(name) in CORE_FORBIDDEN})
    assert not bad, f"{rel(path)} imports {bad}: actors reach the world only through their Context"


@pytest.mark.parametrize("path", modules("commy"), ids=rel)
def test_commy_does_not_import_sim(path: Path) -> None:
    tree = parse(path)
    in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                    for n in ast.walk(f)}
    sim_imports = [node for name, node in imported(tree) if top(name) == "sim"]
    if rel(path) in LAZY_SIM_IMPORTERS:
        sim_imports = [node for node in sim_imports if id(node) not in in_functions]
    assert not sim_imports, f"{rel(path)} imports sim at lines {[n.lineno for n in sim_imports]}"


def test_module_sizes() -> None:
    sizes = {rel(p): len(p.read_text(encoding="utf-8").splitlines()) for p in modules("commy", "sim")}
    for name, n in sorted(sizes.items(), key=lambda kv: -kv[1]):
        if n > WARN_LINES:
            print(f"{name}: {n} lines (over {WARN_LINES})")
    too_big = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not too_big, f"modules over the {MAX_LINES}-line cap: {too_big}"


@pytest.mark.parametrize("path", modules("commy", "sim"), ids=rel)
def test_every_module_opens_with_a_docstring(path: Path) -> None:
    tree = parse(path)
    first = tree.body[0] if tree.body else None
    assert (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str) and first.value.value.strip()), f"{rel(path)} has no docstring"


def records_of(cls: type) -> set[type]:
    """Nested dataclass records reachable from `cls`'s field annotations."""
    found: set[type] = set()
    todo = [tp for tp in typing.get_type_hints(cls).values()]
    while todo:
        tp = todo.pop()
        if isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp not in found:
            found.add(tp)
            todo += list(typing.get_type_hints(tp).values())
        todo += list(typing.get_args(tp))
    return found


def test_every_registered_message_is_a_frozen_slotted_dataclass_with_a_unique_tag() -> None:
    classes = list(REGISTRY.values())
    assert len({c.TAG for c in classes}) == len(classes) == len(set(classes)) and classes
    nested = set().union(*(records_of(c) for c in classes))
    for cls in classes + sorted(nested, key=lambda c: c.__name__):
        assert dataclasses.is_dataclass(cls), cls
        assert cls.__dataclass_params__.frozen, f"{cls.__name__} is not frozen"
        assert "__slots__" in cls.__dict__, f"{cls.__name__} is not slotted"
    for tag, cls in REGISTRY.items():
        assert issubclass(cls, Message) and type(tag) is int and tag == cls.TAG and type(cls.VERSION) is int
        assert cls.SCOPE == (LOCAL if tag >= 1000 else WIRE), f"{cls.__name__}: tag {tag} vs scope {cls.SCOPE}"


def test_importing_the_core_does_not_load_the_world_transitively() -> None:
    import subprocess
    import sys

    names = sorted(p.stem for p in (ROOT / "commy/core").glob("*.py") if p.stem != "__init__")
    code = ("import sys\n" + "".join(f"import commy.core.{n}\n" for n in names)
            + "print(sorted(m for m in ('mmap', 'fcntl', 'socket', 'asyncio', 'websockets', 'thespian', 'uuid',"
              " 'secrets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", f"importing commy.core loads {out.stdout.strip()}"

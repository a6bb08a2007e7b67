"""Every notebook runs top to bottom with a real kernel (nbclient) and draws its figures.

Each notebook is committed without outputs and executed here from its own folder; the test then
checks that it drew at least the figures it is expected to, and that every figure is a real
image with something on it (decoded, not all one colour). The embedded server the quickstart uses
gets its own check: it stops with no thread left behind.
"""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
FIGURES = {  # the least number of figures each notebook draws
    "01_quickstart": 1,
    "02_failover_timeline": 3,
    "03_fault_sweep": 3,
    "04_partition_and_convergence": 2,
    "05_reproduce_a_failure": 2,
}


def test_the_five_notebooks_are_there_without_outputs() -> None:
    assert [p.stem for p in NOTEBOOKS] == sorted(FIGURES)
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        stored = [cell for cell in nb.cells if cell.cell_type == "code" and (cell.outputs or cell.execution_count)]
        assert not stored, f"{path.name}: commit notebooks with outputs cleared"


def figure_is_drawn(png: bytes) -> bool:
    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
    return pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50 and float(pixels.std()) > 0.01


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_draws(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    images = [base64.b64decode(out["data"]["image/png"]) for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    assert len(images) >= FIGURES[path.stem], f"{path.name} drew {len(images)} figures, expected {FIGURES[path.stem]}"
    assert all(figure_is_drawn(img) for img in images), f"{path.name} drew an empty figure"


def test_an_embedded_server_stops_with_nothing_left() -> None:
    from commy.client import Client
    from commy.runtime.embedded import THREAD_NAME, EmbeddedServer

    before = set(threading.enumerate())
    with EmbeddedServer.start() as server:
        data = server.data
        assert server.running and data.is_dir() and server.bootstrap_key
        with Client.connect(server.url) as admin:
            admin.authenticate("", api_key=server.bootstrap_key)
            admin.create_tenant("acme")
            assert admin.list_tenants() == ["acme"]
    assert not server.running and not data.exists()
    server.stop()  # a second stop is harmless
    left = [t for t in threading.enumerate() if t not in before]
    assert not left, f"threads left behind: {left}"
    assert not any(t.name == THREAD_NAME for t in threading.enumerate())

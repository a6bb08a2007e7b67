"""The status page in a real headless Chromium, against three `commy serve` nodes on loopback.

Selenium drives Debian's `chromium` through its `chromedriver` (both installed by `.ci/run` where
missing; without them the test fails and says so). The page is loaded from n1 while two clients
work (a writer on n1, a reader on n2, run on their own loop in a thread); it must show the three
members HEALTHY, both services with their replicas and the clients. Then n3 is killed with SIGKILL
and the page, polling on its own, must show n3 DOWN; finally n1 stops and the page must say that
its node does not answer. Screenshots go to `test-artifacts/` (kept by CI as artifacts). Every
Chromium process -- the driver and everything under it -- is accounted for at the end by PID.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from commy.client import CommyClientError
from tests.helpers.cluster_procs import LocalCluster, ProcessGuard, pid_alive, process_guard  # noqa: F401
from tests.integration.test_observability import SERVICES, http_url, set_up_clients

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PAGE_WAIT = 45.0  # seconds for the page to show a change (it polls every second)


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` now (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


@contextlib.contextmanager
def chromium(guard: ProcessGuard, profile: Path) -> Iterator[object]:
    """A headless Chromium under Selenium; quits it and checks that none of its processes remain."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (shutil.which(path) and os.access(path, os.X_OK)):
            pytest.fail(f"{path} is missing: install Debian's {package} (apt-get install -y chromium chromium-driver;"
                        " .ci/run does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1360,1000", "--no-first-run", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    assert service.process is not None
    driver_pid = service.process.pid
    guard.watch(driver_pid, "chromedriver")
    pids = [driver_pid]
    try:
        pids += _children(driver_pid)
        for pid in pids[1:]:
            guard.watch(pid, "chromium")
        yield driver
    finally:
        pids += [p for p in _children(driver_pid) if p not in pids]
        driver.quit()
        deadline = time.monotonic() + 20
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [p for p in pids if pid_alive(p)]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"Chromium processes outlived driver.quit(): {left}"


class ClientThread:
    """The scenario's clients on their own event loop in a thread, until `stop()`."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.ready = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="status-page-clients", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            clients = await set_up_clients(self.cluster, writes=10)
            try:
                await clients.write_round(0)
                self.ready.set()
                i = 0
                while not self.done.is_set():
                    i += 1
                    with contextlib.suppress(CommyClientError):  # a write in flight when a node goes
                        await asyncio.wait_for(clients.write_round(i), 5)
                    await asyncio.sleep(0.2)
            finally:
                await clients.close()

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc
            self.ready.set()

    def start(self, timeout: float) -> None:
        self.thread.start()
        assert self.ready.wait(timeout), "the clients were not set up in time"
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self.done.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the client thread did not end"


def wait_page(driver: object, check: str, what: str) -> None:
    """Wait until the JavaScript expression `check` is true in the page."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, PAGE_WAIT, poll_frequency=0.1).until(lambda d: d.execute_script(f"return {check};"))
    except TimeoutException:
        body = driver.execute_script("return document.body.innerText;")  # type: ignore[attr-defined]
        pytest.fail(f"the page never showed {what} within {PAGE_WAIT:g} s; it shows:\n{body}")


def row_state(node: str) -> str:
    return f"(document.querySelector('#membership tr[data-node=\"{node}\"] .state') || {{}}).textContent"


def screenshot(driver: object, name: str) -> Path:
    """The whole page, beyond the window's height too, as `test-artifacts/NAME.png`."""
    cdp = driver.execute_cdp_cmd  # type: ignore[attr-defined]
    size = cdp("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = cdp("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def test_the_status_page_shows_a_killed_node_down(tmp_path: Path, process_guard: ProcessGuard) -> None:  # noqa: F811
    cluster = process_guard.cluster(3)
    cluster.start()
    assert cluster.wait_until(cluster.all_healthy, 30), "the three nodes never saw each other healthy"
    clients = ClientThread(cluster)
    clients.start(60)
    try:
        with chromium(process_guard, tmp_path / "chromium-profile") as driver:
            driver.get(http_url(cluster.nodes["n1"].url) + "/")  # type: ignore[attr-defined]
            wait_page(driver, " && ".join(f"{row_state(n)} === 'HEALTHY'" for n in ("n2", "n3")),
                      "n2 and n3 HEALTHY")
            wait_page(driver, "document.querySelector('#state').textContent === 'SERVING'", "n1 SERVING")
            wait_page(driver, f"document.querySelectorAll('#services tr[data-service]').length === {len(SERVICES)}",
                      "both services")
            wait_page(driver, "/alice/.test(document.querySelector('#clients').innerText)", "alice's session")
            screenshot(driver, "status-page-healthy")

            cluster.nodes["n3"].signal(signal.SIGKILL)
            wait_page(driver, f"{row_state('n3')} === 'DOWN'", "n3 DOWN")
            assert driver.execute_script(f"return {row_state('n2')};") == "HEALTHY"  # type: ignore[attr-defined]
            shot = screenshot(driver, "status-page-down")
            assert shot.stat().st_size > 10_000

            severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]  # type: ignore[attr-defined]
            assert not severe, f"the page logged errors (a blocked script or style?): {severe}"

            cluster.stop("n1")
            wait_page(driver, "document.querySelector('#banner').classList.contains('show')",
                      "that n1 does not answer")
            screenshot(driver, "status-page-unreachable")
    finally:
        clients.stop()
    assert cluster.close() == [], "a node had to be killed at the end"


class ServerThread:
    """One in-process server with a token on its own loop in a thread: two tenants, a service each."""

    def __init__(self, data: Path, token: str) -> None:
        self.data, self.token = data, token
        self.url = ""
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="status-page-server", daemon=True)

    def _run(self) -> None:
        from commy.client import AsyncClient
        from commy.config_hosts import HttpConfig
        from commy.runtime.server import start_server

        async def main() -> None:
            srv = await start_server(self.data, ("127.0.0.1", 0), http=HttpConfig(token=self.token))
            try:
                assert srv.bootstrap_key is not None
                async with AsyncClient.connect(srv.url) as admin:
                    await admin.authenticate("", api_key=srv.bootstrap_key)
                    for tenant in ("acme", "beta"):
                        await admin.create_tenant(tenant)
                        await admin.create_service(tenant, "sensors")
                self.url, self.loop, self.stop_event = srv.url, asyncio.get_running_loop(), asyncio.Event()
                self.ready.set()
                await self.stop_event.wait()
            finally:
                await srv.close()

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    def __enter__(self) -> ServerThread:
        self.thread.start()
        assert self.ready.wait(60) and self.error is None, self.error
        return self

    def __exit__(self, *_: object) -> None:
        if self.loop is not None and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)
        assert not self.thread.is_alive(), "the server thread did not end"
        if self.error is not None:
            raise self.error


def test_the_page_sends_its_token_and_shows_cut_lists(tmp_path: Path, process_guard: ProcessGuard,  # noqa: F811
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import commy.runtime.node_status as node_status

    monkeypatch.setattr(node_status, "MAX_ROWS", 1)
    token = "page-token-0123456789abcdef"
    with ServerThread(tmp_path / "data", token) as server, \
            chromium(process_guard, tmp_path / "chromium-profile") as driver:
        page = http_url(server.url) + "/"
        driver.get(page)  # type: ignore[attr-defined]
        wait_page(driver, "/wants a token/.test(document.querySelector('#banner').textContent)"
                          " && document.querySelector('#banner').classList.contains('show')"
                          " && document.querySelector('#state').textContent === 'NO TOKEN'", "that it needs a token")
        driver.get(page + "#token=" + token)  # type: ignore[attr-defined]
        driver.refresh()  # type: ignore[attr-defined]  # a new fragment alone does not reload the page
        wait_page(driver, "document.querySelector('#state').textContent === 'SERVING'", "the node with the token")
        wait_page(driver, "document.querySelector('#services-count').textContent === '(the first 1 of 2)'"
                          " && document.querySelector('#tenants-count').textContent === '(the first 1 of 2)'",
                  "that the services and tenants were cut")
        assert not driver.execute_script(  # type: ignore[attr-defined]
            "return document.querySelector('#banner').classList.contains('show');")
        screenshot(driver, "status-page-token")
        driver.get(page + "#token=not-the-token-0123456789")  # type: ignore[attr-defined]
        driver.refresh()  # type: ignore[attr-defined]
        wait_page(driver, "/refused the token/.test(document.querySelector('#banner').textContent)",
                  "that the token was refused")

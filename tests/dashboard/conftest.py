"""A live service (uvicorn on a free loopback port, SQLite) and a headless Chromium driven by Selenium.

The browser tests skip cleanly when Chromium, its driver or Selenium is missing. To run them (Debian):

    apt-get install -y chromium chromium-driver
    pip install selenium        # in the project's [test] extra

``BACKPROP_CHROMIUM`` / ``BACKPROP_CHROMEDRIVER`` point at other binaries.
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings


@dataclass
class Live:
    url: str
    app: Any
    session_factory: Any
    enqueued: list[str] = field(default_factory=list)

    def make_key(self, name: str = "dashboard") -> str:
        from service.auth import create_api_key

        with self.session_factory() as s, s.begin():
            return create_api_key(s, name, None)


@pytest.fixture(scope="module")
def live(make_settings: Callable[..., Settings], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    import uvicorn

    from service.app import create_app

    db = tmp_path_factory.mktemp("dashboard") / "backprop.db"
    enqueued: list[str] = []
    app = create_app(make_settings(f"sqlite:///{db}"), enqueue=enqueued.append)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2, access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="dashboard-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the service did not start")
        time.sleep(0.05)
    try:
        yield Live(f"http://127.0.0.1:{port}/", app, app.state.session_factory, enqueued)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def _find(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        path = os.environ[env]
        return path if os.access(path, os.X_OK) else None
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    chromium = _find("BACKPROP_CHROMIUM", "chromium", "chromium-browser", "google-chrome")
    driver_path = _find("BACKPROP_CHROMEDRIVER", "chromedriver")
    if not chromium or not driver_path:
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1440,1180", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        # An explicit driver path: Selenium Manager never tries to download one.
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"headless Chromium did not start: {exc}")
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests save their screenshots: a temporary folder, or ``BACKPROP_SCREENSHOTS`` when set. The
    README's pictures are made by ``BACKPROP_SCREENSHOTS=docs/screenshots pytest tests/dashboard`` (not on every
    run, so that a test run leaves the tree clean)."""
    chosen = os.environ.get("BACKPROP_SCREENSHOTS")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path

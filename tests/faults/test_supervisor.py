"""``backprop up``'s supervisor, with stand-in children: a child killed by a signal comes back; an API
that exits by itself right at its first start (port taken, bad configuration) stops everything."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from procs import wait_for
from service.cli import Supervisor

pytestmark = pytest.mark.timeout(60)

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def run_in_thread(sup: Supervisor) -> tuple[threading.Thread, list[int]]:
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(sup.run()), daemon=True)
    t.start()
    return t, rc


@pytest.fixture(autouse=True)
def _no_signal_handlers(monkeypatch):
    # Supervisor.run installs SIGINT/SIGTERM handlers, which only the main thread may do.
    monkeypatch.setattr(signal, "signal", lambda *a, **k: None)


def test_killed_children_are_restarted(tmp_path):
    sup = Supervisor(SLEEPER, SLEEPER, dict(os.environ), grace_s=1, pid_dir=tmp_path)
    t, rc = run_in_thread(sup)
    try:
        wait_for(lambda: (tmp_path / "api.pid").exists() and (tmp_path / "worker.pid").exists(), 10,
                 "both children started")
        for name in ("api", "worker"):
            old = int((tmp_path / f"{name}.pid").read_text())
            os.killpg(old, signal.SIGKILL)
            wait_for(lambda: int((tmp_path / f"{name}.pid").read_text()) != old, 10,
                     f"the {name} is restarted")
        assert sup.api_restarts == 1 and sup.worker_restarts == 1
    finally:
        sup.stopping.set()
        t.join(20)
    assert rc == [0]


def test_api_that_exits_at_its_first_start_stops_everything(tmp_path):
    failing_api = [sys.executable, "-c", "import sys; sys.exit(3)"]
    sup = Supervisor(failing_api, SLEEPER, dict(os.environ), grace_s=1, pid_dir=tmp_path)
    t0 = time.monotonic()
    t, rc = run_in_thread(sup)
    t.join(20)
    assert rc == [3] and time.monotonic() - t0 < 10
    assert sup.worker.poll() is not None  # the worker was stopped too

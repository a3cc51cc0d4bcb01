"""A real service for the client and CLI tests: ``backprop up`` (uvicorn + a Celery worker, SQLite and the
embedded broker) in a fresh data dir on a free loopback port."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveService:
    url: str
    key: str
    data_dir: Path
    log: Path

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for a CLI subprocess: the server URL, and the key found in the data dir."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKPROP_")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["BACKPROP_URL"] = self.url
        env["BACKPROP_DATA_DIR"] = str(self.data_dir)
        env.update(extra)
        return env


def _tail(log: Path, n: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""


@pytest.fixture(scope="session")
def live(tmp_path_factory) -> LiveService:
    data = tmp_path_factory.mktemp("client-service")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKPROP_")}
    env.update(PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1",
               BACKPROP_DATA_DIR=str(data), BACKPROP_EVENTS_POLL_INTERVAL_S="0.1",
               BACKPROP_EVENTS_KEEPALIVE_S="1")
    log = data / "up.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "up", "--port", str(port), "--grace", "3"],
                                env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"backprop up exited ({proc.returncode}):\n{_tail(log)}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200 and (data / "api-key").exists():
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service was not ready in 60 s:\n{_tail(log)}")
            time.sleep(0.1)
        yield LiveService(url, (data / "api-key").read_text().strip(), data, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=10)

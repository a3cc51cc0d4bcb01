"""A real service for the client and CLI tests: ``backprop up`` (uvicorn + a Celery worker, SQLite and the
embedded broker) in a fresh data dir on a free loopback port."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks._procs import ROOT, clean_env, start_up, stop

__all__ = ["ROOT", "LiveService"]


@dataclass
class LiveService:
    url: str
    key: str
    data_dir: Path
    log: Path

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for a CLI subprocess: the server URL, and the key found in the data dir."""
        return clean_env(**{"BACKPROP_URL": self.url, "BACKPROP_DATA_DIR": str(self.data_dir), **extra})


@pytest.fixture(scope="session")
def live(tmp_path_factory) -> LiveService:
    data = tmp_path_factory.mktemp("client-service")
    env = clean_env(BACKPROP_DATA_DIR=str(data), BACKPROP_EVENTS_POLL_INTERVAL_S="0.1",
                    BACKPROP_EVENTS_KEEPALIVE_S="1")
    log = data / "up.log"
    proc, url, key = start_up(data, env, log)
    try:
        yield LiveService(url, key, data, log)
    finally:
        stop(proc, timeout=20)

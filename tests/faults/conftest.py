"""Fault tests: real processes (``backprop up``; uvicorn + Celery workers on PostgreSQL and a Redis
server of the test's own) are killed, restarted and cut off while jobs run.

The services are the session fixtures of ``tests/procs.py`` (shared with ``tests/e2e``). Each test
records how long recovery took with ``recovery(name, seconds)``; the figures are printed at the end
of the run (and written as JSON to ``$BACKPROP_FAULTS_REPORT`` when it is set)."""
from __future__ import annotations

import json
import os

import pytest

_RECOVERY: list[dict] = []


@pytest.fixture
def recovery(request):
    def record(what: str, seconds: float) -> None:
        _RECOVERY.append({"test": request.node.name, "what": what, "seconds": round(seconds, 3)})

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _RECOVERY:
        return
    terminalreporter.section("fault recovery times")
    for r in _RECOVERY:
        terminalreporter.write_line(f"{r['test']:<60} {r['what']:<50} {r['seconds']:7.2f} s")
    path = os.environ.get("BACKPROP_FAULTS_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump(_RECOVERY, fh, indent=1)

"""schemathesis against /openapi.json, authenticated, every operation: no server error, responses as documented.

Bounded for CI: ``BACKPROP_FUZZ_EXAMPLES`` examples per operation (default 15; each operation's count is
printed and checked). A longer run of the same test::

    BACKPROP_FUZZ_EXAMPLES=500 python -m pytest tests/bad_inputs/test_schemathesis.py -q -s

The second test runs the schemathesis CLI itself (examples, coverage, fuzzing and stateful phases) against the app
on a real uvicorn, ``BACKPROP_FUZZ_CLI_EXAMPLES`` (default 10) examples per operation. The same by hand, against a
running server with a key from ``backprop keys create --name fuzz``::

    schemathesis run http://127.0.0.1:8000/openapi.json -H "Authorization: Bearer $KEY" \\
        --max-examples 500 --exclude-checks positive_data_acceptance,negative_data_rejection
"""
from __future__ import annotations

import os

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process  # noqa: E402

EXAMPLES = int(os.environ.get("BACKPROP_FUZZ_EXAMPLES", "15"))
CLI_EXAMPLES = int(os.environ.get("BACKPROP_FUZZ_CLI_EXAMPLES", "10"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Not negative_data_rejection: the service ignores unknown query parameters (usual HTTP leniency), and the
# Authorization header is always sent, so "schema-violating" cases built by dropping it are not violations.
# Negative cases still run, under every check above (no 5xx, documented status and body).
XOR = "a,b,y\n" + "\n".join(f"{i % 2},{(i // 2) % 2},{(i % 2) ^ ((i // 2) % 2)}" for i in range(20)) + "\n"


def _fuzz(op, label: str, counts: dict[str, int], statuses: dict[str, set[int]], real: dict[str, str],
          auth: dict[str, str]):
    """A Hypothesis test of one operation: positive and negative cases, half of those with a path id aimed at
    a real resource of the owner."""
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(case=st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)))
    def run(case) -> None:
        counts[label] += 1
        if case.path_parameters and counts[label] % 2 == 0:
            for name in case.path_parameters:
                if name in real:
                    case.path_parameters[name] = real[name]
        r = case.call_and_validate(headers=auth, checks=CHECKS)
        statuses.setdefault(label, set()).add(r.status_code)

    return run


def test_every_operation_survives_fuzzing(app, client, auth, session_factory):
    # Real resources, so that some generated path ids hit the owner's objects (the rest are random: 404).
    ds = make_dataset(client, auth, XOR)
    m = make_model(client, auth)
    done = make_job(client, auth, m["id"], ds["id"], epochs=1)
    run_job_in_process(session_factory, done["id"])
    sweep = client.post("/v1/sweeps", headers=auth, json={
        "model_id": m["id"], "dataset_id": ds["id"], "config": {"loss": "categorical_crossentropy", "epochs": 1},
        "grid": {"batch_size": [4, 8]}})
    assert sweep.status_code == 202, sweep.text
    real = {"dataset_id": ds["id"], "model_id": m["id"], "job_id": done["id"], "sweep_id": sweep.json()["id"]}

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    counts: dict[str, int] = {}
    statuses: dict[str, set[int]] = {}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    # Deletes last, so that the real resources live through the other operations.
    operations.sort(key=lambda op: op.method.upper() == "DELETE")
    for op in operations:
        label = f"{op.method.upper()} {op.path}"
        counts[label] = 0
        try:
            _fuzz(op, label, counts, statuses, real, auth)()
        except Exception as exc:  # collect every operation's failure, then fail once
            failures.append(f"{label}: {exc}")
    total = sum(counts.values())
    print(f"\nschemathesis: {len(counts)} operations, {total} cases, {EXAMPLES} max examples per operation")
    for label, n in counts.items():
        print(f"  {label}: {n} cases, statuses {sorted(statuses.get(label, ()))}")
    assert not failures, "\n\n".join(failures)
    assert len(counts) >= 14
    assert all(n >= 1 for n in counts.values())
    assert client.get("/healthz").status_code == 200


def test_schemathesis_cli_against_uvicorn(live_server, tmp_path):
    import re
    import shutil
    import subprocess
    import sys

    server = live_server()
    exe = shutil.which("schemathesis") or shutil.which("st")
    cmd = [exe] if exe else [sys.executable, "-m", "schemathesis.cli"]
    report = tmp_path / "report.xml"
    run = subprocess.run(
        [*cmd, "run", f"{server['base']}/openapi.json", "-H", f"Authorization: Bearer {server['key']}",
         "--max-examples", str(CLI_EXAMPLES), "--exclude-checks", "positive_data_acceptance,negative_data_rejection",
         "--report", "junit", "--report-junit-path", str(report), "--no-color"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "NO_COLOR": "1"},
    )
    out = run.stdout + run.stderr
    summary = re.search(r"(\d+) generated, (.*)", out)
    print(f"\nschemathesis CLI: {summary.group(0) if summary else '?'}")
    assert run.returncode == 0, out[-6000:]
    assert summary and int(summary.group(1)) > 100
    assert server["key"] not in out  # schemathesis filters the Authorization header from its output too

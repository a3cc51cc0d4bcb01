"""The ``backprop`` command: migrate, keys create/revoke, the parser, and ``up``'s first key."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli import build_parser, uvicorn_argv, worker_argv

ROOT = Path(__file__).resolve().parents[2]


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKPROP_")}
    env["BACKPROP_DATA_DIR"] = str(tmp_path)
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "service.cli", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_keys_create_and_revoke(tmp_path):
    out = cli(tmp_path, "keys", "create", "--name", "alice")
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert key.startswith("bp_") and len(key) > 30
    from service import auth
    from service.db.session import make_engine
    from sqlalchemy.orm import Session

    engine = make_engine(f"sqlite:///{tmp_path / 'backprop.db'}")
    with Session(engine) as s:
        assert auth.authenticate(s, key) is not None
    out = cli(tmp_path, "keys", "revoke", key[:12])
    assert out.returncode == 0 and "revoked 1" in out.stdout
    with Session(engine) as s:
        assert auth.authenticate(s, key) is None
    assert cli(tmp_path, "keys", "revoke", "bp_nothing").returncode == 1
    engine.dispose()


def test_migrate_is_idempotent(tmp_path):
    assert cli(tmp_path, "migrate").returncode == 0
    out = cli(tmp_path, "migrate")
    assert out.returncode == 0 and "head" in out.stdout


def test_parser_and_process_commands():
    args = build_parser().parse_args(["up", "--port", "9000", "--workers", "2"])
    assert (args.host, args.port, args.workers) == ("127.0.0.1", 9000, 2)
    argv = worker_argv(2, "q", "n@%h")
    assert argv[1:5] == ["-m", "celery", "-A", "workers.celery_app"]
    assert ["-Q", "q"] == argv[argv.index("-Q"):argv.index("-Q") + 2]
    assert "--without-gossip" in argv and "-c" in argv
    assert uvicorn_argv("0.0.0.0", 8000)[3:5] == ["service.app:create_app", "--factory"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["keys", "create"])  # --name is required


def test_first_key_file_is_private(tmp_path):
    """``ensure_first_key`` (what ``backprop up`` does on first start): one key, mode 600."""
    out = subprocess.run(
        [sys.executable, "-c",
         "from pathlib import Path; import os; from service import cli; cli.migrate(); "
         "d = Path(os.environ['BACKPROP_DATA_DIR']); k = cli.ensure_first_key(d); "
         "print(k); print(cli.ensure_first_key(d))"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("BACKPROP_")},
             "BACKPROP_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.split()
    assert first.startswith("bp_") and second == "None"
    key_file = tmp_path / "api-key"
    assert key_file.read_text().strip() == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

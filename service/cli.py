"""``backprop``: the command line.

    backprop up [--host H] [--port P] [--workers N]   embedded: everything in one command
    backprop api [--host H] [--port P] [--workers N]  production API process (uvicorn)
    backprop worker [--concurrency N] [CELERY ARGS]   production training worker (Celery)
    backprop migrate                                  apply database migrations
    backprop keys create --name NAME                  print a new API key
    backprop keys revoke PREFIX                       revoke the key(s) starting with PREFIX

and the user commands of ``backprop_client.cli`` (datasets, models, train, jobs, predict, export).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("backprop")

#: Seconds ``backprop up`` waits on Ctrl-C for a running job before it stops the worker hard. A job
#: cut short is not lost: the next start re-queues it and it resumes from its last checkpoint.
SHUTDOWN_GRACE_S = 10.0
#: A child that dies sooner than this after its start is crash-looping: its restarts back off
#: (1 s doubling to 30 s). One that ran longer was killed or crashed: it restarts after 1 s.
MIN_UPTIME_S = 5.0


def _settings():
    from service.config import get_settings

    return get_settings()


def _out(msg: str = "") -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------------
# migrate / keys
# --------------------------------------------------------------------------------------------------


def migrate(url: str | None = None) -> None:
    """Bring the database to the head revision (idempotent)."""
    from service.migrate import upgrade_to_head

    upgrade_to_head(url or _settings().resolved_database_url)


def _session():
    from service.db.session import session_factory

    return session_factory(_settings().resolved_database_url)()


def create_key(name: str) -> str:
    """A new API key for a new owner; returns the plaintext key (shown once, stored hashed)."""
    from service import auth

    with _session() as s:
        result = auth.create_api_key(s, name=name)
        s.commit()
    return _plaintext(result)


def _plaintext(result: Any) -> str:
    if isinstance(result, str):
        return result
    if isinstance(result, tuple):
        for item in result:
            if isinstance(item, str):
                return item
    for attr in ("key", "plaintext", "token", "secret"):
        value = getattr(result, attr, None)
        if isinstance(value, str):
            return value
    raise RuntimeError(f"service.auth.create_api_key returned {type(result).__name__}, no key")


def revoke_keys(prefix: str) -> int:
    from service import auth

    if hasattr(auth, "revoke_api_key"):
        with _session() as s:
            n = auth.revoke_api_key(s, prefix)
            s.commit()
        return int(n or 0)
    from datetime import datetime, timezone

    from sqlalchemy import update

    from service.db.models import ApiKey

    # The stored prefix is the first characters of the key; accept a longer or shorter PREFIX.
    with _session() as s, s.begin():
        keys = s.query(ApiKey).filter(ApiKey.revoked_at.is_(None)).all()
        hits = [k.id for k in keys if k.prefix.startswith(prefix) or prefix.startswith(k.prefix)]
        if hits:
            s.execute(update(ApiKey).where(ApiKey.id.in_(hits))
                      .values(revoked_at=datetime.now(timezone.utc)))
        return len(hits)


def _any_key_exists() -> bool:
    from sqlalchemy import func, select

    from service.db.models import ApiKey

    with _session() as s:
        return (s.execute(select(func.count()).select_from(ApiKey)).scalar() or 0) > 0


def ensure_first_key(data_dir: Path) -> str | None:
    """On first start (no key in the database): create one, write it to ``data_dir/api-key`` with
    mode 600 and return it. Otherwise None."""
    if _any_key_exists():
        return None
    key = create_key("default")
    path = data_dir / "api-key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.chmod(path, 0o600)
    return key


# --------------------------------------------------------------------------------------------------
# Process commands
# --------------------------------------------------------------------------------------------------


def uvicorn_argv(host: str, port: int, workers: int = 1, log_level: str = "info") -> list[str]:
    argv = [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
            "--host", host, "--port", str(port), "--log-level", log_level,
            "--no-access-log", "--timeout-graceful-shutdown", "5"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    return argv


def worker_argv(concurrency: int = 1, queue: str | None = None, name: str | None = None,
                loglevel: str = "INFO", extra: Sequence[str] = ()) -> list[str]:
    queue = queue or _settings().queue_name
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
            "-Q", queue, "-c", str(concurrency), "-P", "prefork", "--loglevel", loglevel,
            # No broadcast chatter: the embedded SQLAlchemy transport has no fanout, and workers
            # coordinate through the database, not through each other.
            "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if name:
        argv += ["-n", name]
    return argv + list(extra)


def cmd_api(args: argparse.Namespace) -> int:
    if args.migrate:
        migrate()
    argv = uvicorn_argv(args.host, args.port, args.workers, args.log_level)
    os.execv(argv[0], argv)
    return 0  # pragma: no cover


def cmd_worker(args: argparse.Namespace) -> int:
    argv = worker_argv(args.concurrency, args.queue, args.name, args.loglevel, args.celery_args)
    os.execv(argv[0], argv)
    return 0  # pragma: no cover


def cmd_migrate(_args: argparse.Namespace) -> int:
    migrate()
    _out("database at head")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    migrate()
    if args.keys_command == "create":
        _out(create_key(args.name))
        return 0
    n = revoke_keys(args.prefix)
    if n == 0:
        _out(f"no active key starts with {args.prefix!r}")
        return 1
    _out(f"revoked {n} key(s)")
    return 0


# --------------------------------------------------------------------------------------------------
# backprop up: the embedded supervisor
# --------------------------------------------------------------------------------------------------


class Supervisor:
    """Runs uvicorn and one Celery worker process as children; restarts either when it dies (an API
    process that exits by itself right at its first start has a configuration error: then
    everything stops);
    stops both on SIGINT/SIGTERM (the API first, then the worker, warm then hard)."""

    def __init__(self, api_argv: list[str], worker_argv: list[str], env: dict[str, str],
                 grace_s: float = SHUTDOWN_GRACE_S, pid_dir: Path | None = None) -> None:
        self.api_argv = api_argv
        self.worker_argv = worker_argv
        self.env = env
        self.grace_s = grace_s
        self.stopping = threading.Event()
        self.api: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.worker_restarts = 0
        self.api_restarts = 0
        self.pid_dir = pid_dir

    def _write_pid(self, name: str, proc: subprocess.Popen) -> None:
        # <data dir>/api.pid and worker.pid: each child leads its own process group (kill -- -PID).
        # Written aside and renamed into place: a reader (kill, a script, a test) never sees it half-written.
        if self.pid_dir is not None:
            tmp = self.pid_dir / f".{name}.pid.tmp"
            tmp.write_text(f"{proc.pid}\n")
            os.replace(tmp, self.pid_dir / f"{name}.pid")

    def _spawn(self, argv: list[str]) -> subprocess.Popen:
        # Own sessions: a terminal's Ctrl-C reaches only this supervisor, which stops the children
        # in order instead of letting them race.
        return subprocess.Popen(argv, env=self.env, start_new_session=True)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.stopping.is_set() and signum == signal.SIGINT:
            _out("stopping now")
            self._kill_all(signal.SIGKILL)
        self.stopping.set()

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        self.api = self._spawn(self.api_argv)
        self.worker = self._spawn(self.worker_argv)
        self._write_pid("api", self.api)
        self._write_pid("worker", self.worker)
        backoff = {"api": 1.0, "worker": 1.0}
        started = {"api": time.monotonic(), "worker": time.monotonic()}
        rc = 0
        while not self.stopping.wait(0.2):
            if self.api.poll() is not None:
                if (self.api.returncode >= 0 and self.api_restarts == 0
                        and time.monotonic() - started["api"] < MIN_UPTIME_S):
                    # It exited by itself right at its first start (port taken, bad
                    # configuration): restarting won't help. Killed by a signal, it restarts.
                    _out(f"API process exited with code {self.api.returncode}; stopping")
                    rc = self.api.returncode or 1
                    break
                if not self._restart("api", backoff, started):
                    break
                self.api_restarts += 1
            if self.worker.poll() is not None:
                if not self._restart("worker", backoff, started):
                    break
                self.worker_restarts += 1
        self.shutdown()
        return rc

    def _restart(self, name: str, backoff: dict[str, float], started: dict[str, float]) -> bool:
        """Start the dead child ``name`` again after its backoff (1 s, doubling to 30 s while it
        keeps dying within MIN_UPTIME_S of its start). False when asked to stop meanwhile."""
        proc: subprocess.Popen = getattr(self, name)
        if time.monotonic() - started[name] >= MIN_UPTIME_S:
            backoff[name] = 1.0  # it had been running: a kill or a crash, not a crash loop
        label = "API process" if name == "api" else "worker"
        _out(f"{label} exited with code {proc.returncode}; restarting in {backoff[name]:.0f}s")
        self._signal_group(proc, signal.SIGKILL)  # its stragglers (pool children)
        if self.stopping.wait(backoff[name]):
            return False
        backoff[name] = min(backoff[name] * 2, 30.0)
        proc = self._spawn(self.api_argv if name == "api" else self.worker_argv)
        setattr(self, name, proc)
        self._write_pid(name, proc)
        started[name] = time.monotonic()
        return True

    def shutdown(self) -> None:
        _out("stopping")
        self._terminate(self.api, 10.0)
        # Celery's warm shutdown waits for the running task; past the grace period it is stopped
        # hard and the job resumes from its last checkpoint on the next start.
        self._terminate(self.worker, self.grace_s)
        if self.pid_dir is not None:
            for name in ("api", "worker"):
                (self.pid_dir / f"{name}.pid").unlink(missing_ok=True)

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _terminate(self, proc: subprocess.Popen | None, grace_s: float) -> None:
        if proc is None or proc.poll() is not None:
            if proc is not None:
                self._signal_group(proc, signal.SIGKILL)
            return
        # SIGTERM to the leader only: Celery's main process then shuts its pool down in order
        # (a SIGTERM to the pool children themselves would kill the running task outright).
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self._signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)
        else:
            # Reap the group's stragglers (e.g. pool children) if the leader left any behind.
            self._signal_group(proc, signal.SIGKILL)

    def _kill_all(self, sig: int) -> None:
        for proc in (self.api, self.worker):
            if proc is not None and proc.poll() is None:
                self._signal_group(proc, sig)


def cmd_up(args: argparse.Namespace) -> int:
    data_dir = Path(os.environ.get("BACKPROP_DATA_DIR") or ".backprop").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["BACKPROP_DATA_DIR"] = str(data_dir)
    from service.config import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    migrate(settings.resolved_database_url)
    key = ensure_first_key(data_dir)

    # No worker of ours runs yet: any job still 'running' was cut short by the last stop.
    from service.db.session import session_factory
    from service.reconciler import reconcile_once

    try:
        counts = reconcile_once(session_factory(settings.resolved_database_url), settings,
                                startup=True)
        if counts["requeued"] or counts["resent"]:
            _out(f"re-queued {counts['requeued'] + counts['resent']} unfinished job(s)")
    except Exception as exc:  # pragma: no cover - never block the start on housekeeping
        log.warning("startup reconcile failed: %s", exc)

    url = f"http://{_url_host(args.host)}:{args.port}"
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    sup = Supervisor(
        uvicorn_argv(args.host, args.port, 1, args.log_level),
        worker_argv(args.workers, settings.queue_name, "backprop@%h", loglevel="WARNING"),
        env,
        grace_s=args.grace,
        pid_dir=data_dir,
    )
    _out(f"Backprop is running at {url}  (data in {data_dir})")
    if key:
        _out(f"Your API key (shown once; also saved to {data_dir / 'api-key'}, mode 600):")
        _out(f"  {key}")
    else:
        _out(f"API key: {data_dir / 'api-key'} (or create one: backprop keys create --name NAME)")
    _out(f'Try: curl -H "Authorization: Bearer $(cat {data_dir / "api-key"})" {url}/v1/models')
    return sup.run()


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="backprop", description="Train dense networks over HTTP.")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run everything embedded (SQLite; no servers needed)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--workers", type=int, default=1, help="concurrent training jobs")
    up.add_argument("--grace", type=float, default=SHUTDOWN_GRACE_S,
                    help="seconds to let a running job finish on stop")
    up.add_argument("--log-level", default="warning")
    up.set_defaults(func=cmd_up)

    api = sub.add_parser("api", help="run the API server (production)")
    api.add_argument("--host", default="0.0.0.0")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1)
    api.add_argument("--log-level", default="info")
    api.add_argument("--migrate", action="store_true", help="apply migrations first")
    api.set_defaults(func=cmd_api)

    w = sub.add_parser("worker", help="run a training worker (production)")
    w.add_argument("--concurrency", "-c", type=int, default=1)
    w.add_argument("--queue", "-Q", default=None)
    w.add_argument("--name", "-n", default=None)
    w.add_argument("--loglevel", "-l", default="INFO")
    w.add_argument("celery_args", nargs=argparse.REMAINDER, help="passed on to celery worker")
    w.set_defaults(func=cmd_worker)

    m = sub.add_parser("migrate", help="apply database migrations")
    m.set_defaults(func=cmd_migrate)

    keys = sub.add_parser("keys", help="manage API keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser("create", help="print a new API key")
    kc.add_argument("--name", required=True)
    kr = ksub.add_parser("revoke", help="revoke the key(s) starting with PREFIX")
    kr.add_argument("prefix")
    keys.set_defaults(func=cmd_keys)

    # The user commands (datasets, models, train, jobs, predict, export): HTTP clients of a running service.
    from backprop_client.cli import add_client_commands

    add_client_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

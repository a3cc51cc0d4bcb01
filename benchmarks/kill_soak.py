"""Kill the embedded worker's training process again and again; report the first time a job does not come back.

    python benchmarks/kill_soak.py [--minutes 10] [--hog] [--reconcile-every 0.01]

``backprop up`` runs in a fresh data dir. One job after another trains (400 epochs of batch size 1 on the digits);
each attempt is SIGKILLed 0–0.4 s after it starts running, 30 times per job. The worker's main process forks a new
pool child after every kill, while its other threads are busy with SQLite: the situation in which a child could
once inherit a locked SQLite mutex and hang (see ``service/db/fork_safe_sqlite.py``). A job that is not running
again within 20 s counts as a hang; the soak stops there and leaves the processes up for a debugger.

``--hog`` keeps both cores busy with two spinning processes (a loaded CI machine); ``--reconcile-every`` shortens the
reconciler's interval, so that more of the main process's time is spent inside SQLite. Without the fork gate, on
2026-11-26, the worker hung after 115 kills with ``--hog --reconcile-every 0.01``; with it, none in 630.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from benchmarks._procs import child_pids, start_up, stop  # noqa: E402
from procs import Service, base_env, create_model, get_job, start_job  # noqa: E402

KILLS_PER_JOB = 30
BACK_WITHIN_S = 20.0


def _spin() -> None:
    while True:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--hog", action="store_true", help="two spinning processes beside the service")
    parser.add_argument("--reconcile-every", type=float, default=None, help="seconds (default: the tests' 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="kill-soak-"))
    (data / "hooks").mkdir()
    env = base_env(BACKPROP_DATA_DIR=str(data), BACKPROP_TEST_HOOKS_DIR=str(data / "hooks"),
                   BACKPROP_MAX_ATTEMPTS="1000")
    if args.reconcile_every is not None:
        env["BACKPROP_RECONCILE_INTERVAL_S"] = str(args.reconcile_every)
    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(2 if args.hog else 0)]
    for hog in hogs:
        hog.start()
    log = data / "up.log"
    proc, url, key = start_up(data, env, log, "--log-level", "warning")

    def worker_pid() -> int:
        return int((data / "worker.pid").read_text())

    svc = Service("embedded", url, key, env, [log], data, lambda: None, worker_pid, lambda: None,
                  {"up": proc})
    model_id = create_model(svc)
    rng = random.Random(args.seed)
    kills, started = 0, time.monotonic()
    try:
        while time.monotonic() - started < args.minutes * 60:
            job_id = start_job(svc, model_id, epochs=400, batch_size=1)
            for attempt in range(1, KILLS_PER_JOB + 1):
                deadline = time.monotonic() + BACK_WITHIN_S
                while True:
                    job = get_job(svc, job_id)
                    if job["status"] == "running" and job["attempts"] == attempt:
                        break
                    if time.monotonic() > deadline:
                        print(f"HANG after {kills} kills: job {job_id} is {job['status']} at attempt "
                              f"{job['attempts']}; worker pid {worker_pid()}, pool children "
                              f"{child_pids(worker_pid())}; data dir {data} (processes left up)")
                        return 1
                    time.sleep(0.01)
                time.sleep(rng.uniform(0, 0.4))
                os.kill(child_pids(worker_pid())[0], signal.SIGKILL)
                kills += 1
            svc.client.post(f"/v1/jobs/{job_id}/cancel")
        minutes = (time.monotonic() - started) / 60
        print(f"no hang in {kills} kills over {minutes:.1f} minutes")
        stop(proc, timeout=30)
        return 0
    finally:
        for hog in hogs:
            hog.terminate()


if __name__ == "__main__":
    sys.exit(main())

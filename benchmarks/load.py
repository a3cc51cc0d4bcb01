"""Load benchmark: real processes on loopback, bounded in count and time; it stops by itself.

    python benchmarks/load.py [--mode production|embedded] [--seconds 60] [--concurrency 64]
                              [--jobs 50] [--json out.json]

1. Predict under load: single-row ``POST /v1/models/{id}/predict`` from ``--concurrency`` (64)
   concurrent clients (an httpx async client, one connection each) for ``--seconds`` (60), or at
   most ``--max-requests``, while a training job runs on the worker. Reports requests/s, p50/p99
   latency and the errors (any non-200 answer or transport error), which must be 0.
2. Burst of jobs: ``--jobs`` (50) training jobs of one model submitted at once (concurrent POSTs)
   with 2 workers. All must succeed, each in its first attempt, and make exactly one version:
   versions 1..50, one per job, none twice.

Modes: ``production`` (default): a fresh PostgreSQL database on 127.0.0.1:5432, the Redis at
127.0.0.1:6379 (db 13, a queue of its own, removed afterwards), one uvicorn process and two
``backprop worker -c 1`` processes. ``embedded``: ``backprop up --workers 2`` (SQLite; one Celery
worker with two pool processes).

The per-key rate limit is switched off for the run (``BACKPROP_RATE_LIMIT_PER_S=0``; pass
``--keep-rate-limit`` to measure with it): the point is the service's own capacity. Exit status 1
when a check fails. Only 127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from benchmarks._procs import start_embedded, start_production  # noqa: E402
from benchmarks.service import create_model, digits, percentile, upload_csv, wait_job  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/13"
MLP = {"input_shape": [64], "layers": [
    {"type": "dense", "units": 64, "activation": "relu"},
    {"type": "dense", "units": 10, "activation": "softmax"},
]}
QUICK_FIT = {"loss": "sparse_categorical_crossentropy", "optimizer": {"type": "adam", "learning_rate": 0.003},
             "epochs": 3, "batch_size": 64, "seed": 1}
#: The job that trains while the predict load runs (cancelled when the load ends; bounded anyway).
BACKGROUND_FIT = {**QUICK_FIT, "epochs": 5000, "batch_size": 8}


# --------------------------------------------------------------------------------------------------
# the load
# --------------------------------------------------------------------------------------------------


async def _predict_load(url: str, key: str, model_id: str, row: list[float], concurrency: int,
                        seconds: float, max_requests: int) -> dict[str, Any]:
    body = json.dumps({"inputs": [row]}).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    path = f"/v1/models/{model_id}/predict"
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:
        async def one_client() -> None:
            nonlocal sent
            while time.monotonic() < deadline and sent < max_requests:
                sent += 1
                t = time.perf_counter()
                try:
                    r = await client.post(path, content=body)
                    ok = r.status_code == 200
                    kind = str(r.status_code)
                except httpx.HTTPError as exc:
                    ok, kind = False, type(exc).__name__
                dt = time.perf_counter() - t
                if ok:
                    latencies.append(dt)
                else:
                    errors[kind] = errors.get(kind, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    n = len(latencies) + sum(errors.values())
    return {
        "concurrency": concurrency, "seconds": round(wall, 2), "requests": n,
        "errors": sum(errors.values()), "error_kinds": errors,
        "rps": round(n / wall, 1),
        "p50_ms": round(percentile(latencies, 50) * 1e3, 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 99) * 1e3, 2) if latencies else None,
        "max_ms": round(max(latencies) * 1e3, 2) if latencies else None,
    }


def bench_predict_while_training(c: httpx.Client, url: str, key: str, dataset: str, args) -> dict[str, Any]:
    X, _ = digits()
    served = create_model(c, MLP)
    job = c.post("/v1/jobs", json={"model_id": served, "dataset_id": dataset, **QUICK_FIT}).json()
    assert wait_job(c, job["id"])["status"] == "succeeded", "the model to serve did not train"
    trainer = create_model(c, MLP)
    bg = c.post("/v1/jobs", json={"model_id": trainer, "dataset_id": dataset, **BACKGROUND_FIT}).json()["id"]
    wait_job(c, bg, until=("running",), timeout=60)
    # warm the model cache
    c.post(f"/v1/models/{served}/predict", json={"inputs": [X[0].tolist()]}).raise_for_status()
    result = asyncio.run(_predict_load(url, key, served, X[0].tolist(), args.concurrency, args.seconds,
                                       args.max_requests))
    training = c.get(f"/v1/jobs/{bg}").json()
    result["training_job"] = {"status_at_end": training["status"], "epochs_done": training["progress"]["epoch"]}
    c.post(f"/v1/jobs/{bg}/cancel")
    wait_job(c, bg, timeout=30)
    return result


def bench_job_burst(c: httpx.Client, url: str, key: str, dataset: str, n: int, timeout: float) -> dict[str, Any]:
    model_id = create_model(c, MLP)
    body = {"model_id": model_id, "dataset_id": dataset, **QUICK_FIT}

    async def submit_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                     timeout=60, limits=httpx.Limits(max_connections=n)) as ac:
            return await asyncio.gather(*(ac.post("/v1/jobs", json=body) for _ in range(n)))

    t0 = time.monotonic()
    responses = asyncio.run(submit_all())
    submit_s = time.monotonic() - t0
    codes = [r.status_code for r in responses]
    ids = [r.json()["id"] for r in responses if r.status_code == 202]
    deadline = t0 + timeout
    jobs: dict[str, dict] = {}
    while len(jobs) < len(ids) and time.monotonic() < deadline:
        page = c.get("/v1/jobs", params={"model_id": model_id, "limit": 500}).json()["items"]
        jobs = {j["id"]: j for j in page if j["status"] in ("succeeded", "failed", "cancelled")}
        time.sleep(0.2)
    all_done_s = time.monotonic() - t0
    versions = c.get(f"/v1/models/{model_id}/versions", params={"limit": 500}).json()["items"]
    numbers = sorted(v["version"] for v in versions)
    version_jobs = [v["job_id"] for v in versions]
    statuses: dict[str, int] = {}
    for j in jobs.values():
        statuses[j["status"]] = statuses.get(j["status"], 0) + 1
    return {
        "jobs": n, "accepted": len(ids), "submit_codes": sorted(set(codes)),
        "submit_s": round(submit_s, 2), "all_finished_s": round(all_done_s, 2),
        "finished": len(jobs), "statuses": statuses,
        "attempts_max": max((j["attempts"] for j in jobs.values()), default=None),
        "versions": len(versions),
        "versions_are_1_to_n": numbers == list(range(1, n + 1)),
        "one_version_per_job": sorted(version_jobs) == sorted(ids) and len(set(version_jobs)) == len(ids),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mode", choices=("production", "embedded"), default="production")
    ap.add_argument("--seconds", type=float, default=60.0, help="predict load duration (default 60)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--max-requests", type=int, default=2_000_000, help="cap on predict requests")
    ap.add_argument("--jobs", type=int, default=50, help="jobs submitted at once")
    ap.add_argument("--jobs-timeout", type=float, default=600.0)
    ap.add_argument("--keep-rate-limit", action="store_true", help="do not switch the rate limit off")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if not (0 < args.seconds <= 3600 and 1 <= args.concurrency <= 1024 and 1 <= args.jobs <= 500):
        ap.error("--seconds in (0, 3600], --concurrency in [1, 1024], --jobs in [1, 500]")

    extra = {} if args.keep_rate_limit else {"BACKPROP_RATE_LIMIT_PER_S": "0"}
    results: dict[str, Any] = {"mode": args.mode, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="backprop-load-") as tmpdir:
        tmp = Path(tmpdir)
        if args.mode == "production":
            url, key, cleanup = start_production(tmp, "load", REDIS_URL, workers=2, extra_env=extra)
        else:
            url, key, cleanup = start_embedded(tmp, "--workers", "2", extra_env=extra)
        try:
            c = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"})
            X, y = digits()
            dataset = upload_csv(c, X, y, "digits")
            print(f"predict load: {args.concurrency} clients for {args.seconds:g} s while a job trains ...",
                  flush=True)
            results["predict"] = bench_predict_while_training(c, url, key, dataset, args)
            print(f"burst: {args.jobs} jobs at once, 2 workers ...", flush=True)
            results["burst"] = bench_job_burst(c, url, key, dataset, args.jobs, args.jobs_timeout)
        finally:
            cleanup()
    p, b = results["predict"], results["burst"]
    print(f"\n[{args.mode}, {results['cpus']} CPUs]")
    print(f"predict, 1 row, concurrency {p['concurrency']}, {p['seconds']} s, training alongside "
          f"({p['training_job']['epochs_done']} epochs done, {p['training_job']['status_at_end']}):")
    print(f"  {p['requests']} requests, {p['rps']} req/s, p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, "
          f"errors {p['errors']} {p['error_kinds'] or ''}")
    print(f"burst: {b['accepted']}/{b['jobs']} accepted in {b['submit_s']} s, {b['finished']} finished in "
          f"{b['all_finished_s']} s, {b['statuses']}, max attempts {b['attempts_max']}, "
          f"{b['versions']} versions, 1..n: {b['versions_are_1_to_n']}, one per job: {b['one_version_per_job']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    ok = (p["errors"] == 0 and p["training_job"]["status_at_end"] == "running"
          and b["accepted"] == b["jobs"] == b["finished"] == b["versions"]
          and b["statuses"] == {"succeeded": b["jobs"]} and b["attempts_max"] == 1
          and b["versions_are_1_to_n"] and b["one_version_per_job"])
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

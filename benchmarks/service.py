"""Service benchmark: real processes on loopback, bounded in count and time.

    python benchmarks/service.py [--quick] [--json out.json] [--skip-redis]

Measures, in one run:
1. single-row predict p50/p99 and requests/s (one keep-alive connection, sequential) beside a bare
   FastAPI endpoint served the same way (uvicorn, one process), as ratios;
2. a 1,000-row predict, single-row explain beside the engine's own attributions and the time to load the
   version, and single-row predict while another client uploads large JSON datasets;
3. job dispatch, POST /v1/jobs -> the job's ``started_at`` (the worker's claim), embedded (SQLite +
   SQLAlchemy transport) and production (PostgreSQL + Redis);
4. checkpoint write time (engine checkpoint + the worker's database transaction) as a share of the
   epoch time, through the worker's own ``Store``;
5. RSS of the API process and of the worker (main + pool child) at rest and while training on a
   100,000-row dataset.

Only 127.0.0.1 is contacted. Every loop has a fixed count and every wait a deadline.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from benchmarks._procs import (child_pids, clean_env, create_database, drop_database,  # noqa: E402
                               free_port, spawn, start_embedded, start_production, stop, wait_for,
                               wait_ready)

REDIS_URL = "redis://127.0.0.1:6379/12"

MLP = {"input_shape": [64], "layers": [
    {"type": "dense", "units": 64, "activation": "relu"},
    {"type": "dense", "units": 10, "activation": "softmax"},
]}
FIT = {"loss": "sparse_categorical_crossentropy", "optimizer": {"type": "adam", "learning_rate": 0.003},
       "epochs": 10, "batch_size": 32, "seed": 1, "metrics": ["accuracy"]}

BARE_APP = textwrap.dedent("""
    from typing import Any
    from fastapi import FastAPI
    from pydantic import BaseModel

    class In(BaseModel):
        inputs: list[list[Any]]

    class Out(BaseModel):
        predictions: list[Any]
        probabilities: list[list[float]]

    app = FastAPI()

    @app.post("/predict", response_model=Out)
    def predict(body: In) -> Out:
        return Out(predictions=[0] * len(body.inputs), probabilities=[[1.0]] * len(body.inputs))
""")


# --------------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def tree_rss_mb(pid: int) -> float:
    return rss_mb(pid) + sum(tree_rss_mb(c) for c in child_pids(pid))


# --------------------------------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------------------------------


def client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"})


def upload_csv(c: httpx.Client, X: np.ndarray, y: np.ndarray, name: str) -> str:
    buf = io.StringIO()
    buf.write(",".join([f"f{i}" for i in range(X.shape[1])] + ["label"]) + "\n")
    np.savetxt(buf, np.column_stack([X, y]), delimiter=",",
               fmt=["%.6g"] * X.shape[1] + ["%d"])
    r = c.post("/v1/datasets", files={"file": (f"{name}.csv", buf.getvalue().encode(), "text/csv")},
               data={"name": name, "target": "label"})
    r.raise_for_status()
    return r.json()["id"]


def create_model(c: httpx.Client, spec: dict) -> str:
    r = c.post("/v1/models", json={"name": "bench", **spec})
    r.raise_for_status()
    return r.json()["id"]


def wait_job(c: httpx.Client, job_id: str, until=("succeeded", "failed", "cancelled"),
             timeout: float = 300) -> dict:
    """The job once its status is one of ``until`` (by default: finished)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.02)
    raise RuntimeError(f"job {job_id} not {until} after {timeout}s")


def parse_time(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def timed_requests(c: httpx.Client, method: str, path: str, body: Any, n: int,
                   warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        c.request(method, path, json=body).raise_for_status()
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        r = c.request(method, path, json=body)
        lat.append(time.perf_counter() - t)
        r.raise_for_status()
    total = time.perf_counter() - t0
    return {"p50_ms": percentile(lat, 50) * 1e3, "p99_ms": percentile(lat, 99) * 1e3,
            "rps": n / total, "n": n}


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32), d.target


# --------------------------------------------------------------------------------------------------
# the measurements
# --------------------------------------------------------------------------------------------------


def bench_predict(url: str, key: str, tmp: Path, n: int, results: dict) -> None:
    X, y = digits()
    with client(url, key) as c:
        ds = upload_csv(c, X, y, "digits")
        model = create_model(c, MLP)
        r = c.post("/v1/jobs", json={"model_id": model, "dataset_id": ds, **FIT})
        r.raise_for_status()
        assert wait_job(c, r.json()["id"])["status"] == "succeeded"
        one = {"inputs": X[:1].tolist()}
        thousand = {"inputs": np.resize(X, (1000, 64)).tolist()}
        # bare FastAPI endpoint, served the same way, measured in the same run
        bare_file = tmp / "bare_app.py"
        bare_file.write_text(BARE_APP)
        port = free_port()
        bare = spawn([sys.executable, "-m", "uvicorn", "bare_app:app", "--host", "127.0.0.1",
                      "--port", str(port), "--log-level", "warning", "--no-access-log"],
                     clean_env(PYTHONPATH=str(tmp)), tmp / "bare.log")
        try:
            bare_url = f"http://127.0.0.1:{port}"
            wait_ready(bare_url, [bare], [tmp / "bare.log"], path="/docs")
            with httpx.Client(base_url=bare_url, timeout=30) as b:
                bare_res = timed_requests(b, "POST", "/predict", one, n, warmup=200)
        finally:
            stop(bare)
        path = f"/v1/models/{model}/predict"
        svc_res = timed_requests(c, "POST", path, one, n, warmup=200)
        big = timed_requests(c, "POST", path, thousand, max(n // 50, 20), warmup=5)
        results["explain_1_row"] = bench_explain(c, model, X[:1], max(n // 10, 50))
        results["predict_during_uploads"] = predict_during_json_uploads(c, url, key, path, one, n)
    results["predict_1_row"] = svc_res
    results["bare_fastapi"] = bare_res
    results["predict_ratio_p50"] = svc_res["p50_ms"] / bare_res["p50_ms"]
    results["predict_ratio_rps"] = svc_res["rps"] / bare_res["rps"]
    results["predict_1000_rows"] = big


def bench_explain(c: httpx.Client, model: str, row: np.ndarray, n: int, steps: int = 64) -> dict[str, Any]:
    """Single-row explain through the service beside the engine's own attributions on the same version (its
    npz export, in this process) and the time to load that version from its bytes, which is what every
    explain paid before it ran on the cached copy predict serves."""
    import engine

    res = timed_requests(c, "POST", f"/v1/models/{model}/explain", {"inputs": row.tolist(), "steps": steps},
                         n, warmup=20)
    r = c.get(f"/v1/models/{model}/export", params={"format": "npz"})
    r.raise_for_status()
    data = r.content

    def median_ms(fn, count: int) -> float:
        times = []
        for _ in range(count):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return percentile(times, 50) * 1e3

    net = engine.from_bytes(data)
    net.attributions(row, steps=steps)
    res["engine_ms"] = median_ms(lambda: net.attributions(row, steps=steps), n)
    res["load_ms"] = median_ms(lambda: engine.from_bytes(data), max(n // 5, 10))
    res["steps"] = steps
    return res


def predict_during_json_uploads(c: httpx.Client, url: str, key: str, path: str, one: dict, n: int) -> dict:
    """Single-row predict latency while a second client uploads 16 MiB JSON datasets back to back (each one
    decoded, checked and stored by the same API process), beside the same requests with nothing else running."""
    import threading

    def latencies(count: int) -> list[float]:
        out = []
        for _ in range(count):
            t = time.perf_counter()
            c.post(path, json=one).raise_for_status()
            out.append(time.perf_counter() - t)
        return out

    quiet = latencies(n)
    rng = np.random.default_rng(0)
    body = json.dumps({"name": "bench-json", "features": rng.standard_normal((20_000, 100)).round(4).tolist(),
                       "targets": [i % 3 for i in range(20_000)]}).encode()
    stop, uploads = threading.Event(), []

    def uploader() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}",
                                                 "Content-Type": "application/json"}, timeout=120) as u:
            while not stop.is_set():
                u.post("/v1/datasets", content=body).raise_for_status()
                uploads.append(1)

    thread = threading.Thread(target=uploader, daemon=True)
    thread.start()
    try:
        busy = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (len(uploads) < 5 or len(busy) < n):
            busy += latencies(20)
    finally:
        stop.set()
        thread.join(timeout=120)

    def summary(xs: list[float]) -> dict[str, float]:
        return {"p50_ms": percentile(xs, 50) * 1e3, "p99_ms": percentile(xs, 99) * 1e3,
                "max_ms": max(xs) * 1e3, "n": len(xs)}

    return {"quiet": summary(quiet), "busy": summary(busy), "uploads": len(uploads),
            "upload_mib": len(body) / 2 ** 20}


def bench_dispatch(url: str, key: str, n: int) -> dict[str, float]:
    X, y = digits()
    with client(url, key) as c:
        ds = upload_csv(c, X[:200], y[:200], "small")
        model = create_model(c, MLP)
        lat = []
        for _ in range(n):
            body = {"model_id": model, "dataset_id": ds, **FIT, "epochs": 1}
            t = time.time()
            r = c.post("/v1/jobs", json=body)
            r.raise_for_status()
            job = wait_job(c, r.json()["id"], timeout=60)
            lat.append(parse_time(job["started_at"]) - t)
            time.sleep(0.05)  # an idle worker, as a new job usually finds it
    return {"p50_ms": percentile(lat, 50) * 1e3, "p90_ms": percentile(lat, 90) * 1e3,
            "max_ms": max(lat) * 1e3, "n": n}


def bench_training_rss(url: str, key: str, api_pid: int, worker_pid: int, rows: int,
                       results: dict) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 32)).astype(np.float32)
    y = (X[:, :4].sum(axis=1) > 0).astype(np.int64) + (X[:, 4] > 1).astype(np.int64)
    results["rss_at_rest_mb"] = {"api": rss_mb(api_pid), "worker": tree_rss_mb(worker_pid)}
    with client(url, key) as c:
        ds = upload_csv(c, X, y, "big")
        model = create_model(c, {"input_shape": [32], "layers": [
            {"type": "dense", "units": 128, "activation": "relu"},
            {"type": "dense", "units": 64, "activation": "relu"},
            {"type": "dense", "units": 3, "activation": "softmax"}]})
        r = c.post("/v1/jobs", json={"model_id": model, "dataset_id": ds, **FIT, "epochs": 3,
                                     "batch_size": 256})
        r.raise_for_status()
        job_id = r.json()["id"]
        peak_api = peak_worker = 0.0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            peak_api = max(peak_api, rss_mb(api_pid))
            peak_worker = max(peak_worker, tree_rss_mb(worker_pid))
            job = c.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.1)
    results["rss_training_peak_mb"] = {"api": peak_api, "worker": peak_worker,
                                       "dataset_mb": X.nbytes / 2**20, "rows": rows,
                                       "job": job["status"],
                                       "epoch_s": [h.get("seconds") for h in job["history"]]}


def _bench_rows(sf, X, y, spec, config, n_classes):
    import engine

    from service.db.models import Dataset, Job, Model, Owner
    from service.training_data import pack_arrays

    with sf() as s, s.begin():
        owner = Owner(name="bench")
        s.add(owner)
        s.flush()
        m = Model(owner_id=owner.id, name="m", input_shape=spec["input_shape"], spec=spec,
                  summary=engine.build(spec, seed=0).summary())
        d = Dataset(owner_id=owner.id, name="d", task="classification", n_samples=len(X),
                    n_features=X.shape[1], input_shape=[X.shape[1]], feature_names=[],
                    target_names=["label"], classes=list(range(n_classes)), size_bytes=0,
                    data=pack_arrays(X, y))
        s.add_all([m, d])
        s.flush()
        job = Job(owner_id=owner.id, model_id=m.id, dataset_id=d.id, status="queued",
                  config={**engine.normalize_fit_config(config), "checkpoint_every": 1},
                  epochs=config["epochs"])
        s.add(job)
        s.flush()
        return job.id


def bench_checkpoint(db_url: str, workload: str, epochs: int) -> dict[str, Any]:
    """Checkpoints through the worker's own code (``workers.runner.run_job`` in this process, a
    checkpoint due every epoch): the training time of that run against a bare ``fit`` of the same
    job, and the raw cost of one checkpoint (engine serialization + its database transaction)
    against the epoch time."""
    import engine
    from sqlalchemy.orm import sessionmaker

    from service.config import Settings
    from service.db.session import make_engine
    from service.migrate import upgrade_to_head
    from workers import runner
    from workers.runner import Store, jsonable, run_job

    if workload == "digits":
        X, y = digits()
        spec, n_classes, batch = MLP, 10, 32
    else:
        rng = np.random.default_rng(0)
        X = rng.normal(size=(100_000, 32)).astype(np.float32)
        y = (X[:, :4].sum(axis=1) > 0).astype(np.int64)
        spec = {"input_shape": [32], "layers": [
            {"type": "dense", "units": 128, "activation": "relu"},
            {"type": "dense", "units": 64, "activation": "relu"},
            {"type": "dense", "units": 2, "activation": "softmax"}]}
        n_classes, batch = 2, 256
    config = {**FIT, "epochs": epochs, "batch_size": batch}
    upgrade_to_head(db_url)
    eng = make_engine(db_url)
    sf = sessionmaker(eng, expire_on_commit=False)
    settings = Settings(database_url=db_url, broker_url="memory://", data_dir=Path(tempfile.gettempdir()))

    # bare fit
    t0 = time.perf_counter()
    engine.build(spec, seed=1).fit(X, y, **config)
    bare = time.perf_counter() - t0

    # the worker's run, fit timed alone (claim, data load and the version write excluded)
    fit_time = {}
    real_build = engine.build

    def timed_build(spec_, seed=None):
        model = real_build(spec_, seed=seed)
        real_fit = model.fit

        def fit(*a, **kw):
            t = time.perf_counter()
            try:
                return real_fit(*a, **kw)
            finally:
                fit_time["s"] = time.perf_counter() - t
        model.fit = fit
        return model

    job_id = _bench_rows(sf, X, y, spec, config, n_classes)
    engine.build = timed_build
    try:
        outcome = run_job(job_id, settings=settings, session_factory=sf)
    finally:
        engine.build = real_build
    with sf() as s:
        from service.db.models import Checkpoint

        n_ck = s.query(Checkpoint).filter(Checkpoint.job_id == job_id).count()

    # the raw cost of one checkpoint, every epoch, synchronously
    claim_id = _bench_rows(sf, X, y, spec, config, n_classes)
    store = Store(sf)
    claim = store.claim(claim_id, "bench")
    costs, sizes, epoch_times = [], [], []
    mark = [time.perf_counter()]

    def on_epoch(ev):
        t = time.perf_counter()
        epoch_times.append(t - mark[0])
        data = ev.checkpoint()
        store.record_epoch(claim, ev.epoch, jsonable(dict(ev.row)), data)
        costs.append(time.perf_counter() - t)
        sizes.append(len(data))
        mark[0] = time.perf_counter()

    engine.build(spec, seed=1).fit(X, y, callbacks=[on_epoch], **config)
    eng.dispose()
    return {"workload": workload, "epochs": epochs, "outcome": outcome,
            "bare_fit_s": bare, "worker_fit_s": fit_time.get("s", float("nan")),
            "overhead": fit_time.get("s", float("nan")) / bare - 1,
            "checkpoints_kept": n_ck,
            "epoch_ms": statistics.median(epoch_times) * 1e3,
            "checkpoint_ms": statistics.median(costs) * 1e3,
            "share": statistics.median(costs) / statistics.median(epoch_times),
            "checkpoint_kb": statistics.median(sizes) / 1024,
            "budget": runner.CHECKPOINT_BUDGET}


# --------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--skip-redis", action="store_true", help="no PostgreSQL + Redis part")
    args = ap.parse_args()
    n_predict = 300 if args.quick else 2000
    n_dispatch = 5 if args.quick else 20
    rows = 20_000 if args.quick else 100_000
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}}
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="backprop-bench-") as tmp_s:
        tmp = Path(tmp_s)
        url, key, cleanup = start_embedded(tmp)
        data = tmp / "embedded"
        try:
            wait_for((data / "worker.pid").exists, 10, "the worker's pid file is written", poll=0.1)
            api_pid = int((data / "api.pid").read_text())
            worker_pid = int((data / "worker.pid").read_text())
            results["rss_start_mb"] = {"api": rss_mb(api_pid), "worker": tree_rss_mb(worker_pid)}
            bench_predict(url, key, tmp, n_predict, results)
            results["dispatch_embedded"] = bench_dispatch(url, key, n_dispatch)
            bench_training_rss(url, key, api_pid, worker_pid, rows, results)
        finally:
            cleanup()
        for workload, epochs in (("digits", 30), ("100k", 3 if args.quick else 5)):
            results[f"checkpoint_sqlite_{workload}"] = bench_checkpoint(
                f"sqlite:///{tmp / f'ck-{workload}.db'}", workload, epochs)
        if not args.skip_redis:
            url, key, cleanup = start_production(tmp, "bench", REDIS_URL)
            try:
                results["dispatch_redis"] = bench_dispatch(url, key, n_dispatch)
            finally:
                cleanup()
            ck_db = f"backprop_ck_{uuid.uuid4().hex[:8]}"
            ck_url = create_database(ck_db)
            try:
                for workload, epochs in (("digits", 30), ("100k", 3 if args.quick else 5)):
                    results[f"checkpoint_postgres_{workload}"] = bench_checkpoint(ck_url, workload, epochs)
            finally:
                from service.db.session import engine_for

                engine_for.cache_clear()
                drop_database(ck_db)
    results["seconds"] = time.monotonic() - t_start
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def report(r: dict[str, Any]) -> None:
    p, b = r["predict_1_row"], r["bare_fastapi"]
    print(f"single-row predict : p50 {p['p50_ms']:.2f} ms  p99 {p['p99_ms']:.2f} ms  "
          f"{p['rps']:.0f} req/s   (n={p['n']}, one connection, sequential)")
    print(f"bare FastAPI       : p50 {b['p50_ms']:.2f} ms  p99 {b['p99_ms']:.2f} ms  {b['rps']:.0f} req/s")
    print(f"ratio (service/bare): p50 {r['predict_ratio_p50']:.2f}x   req/s {r['predict_ratio_rps']:.2f}x")
    k = r["predict_1000_rows"]
    print(f"1,000-row predict  : p50 {k['p50_ms']:.1f} ms  p99 {k['p99_ms']:.1f} ms  (n={k['n']})")
    e = r["explain_1_row"]
    print(f"single-row explain : p50 {e['p50_ms']:.2f} ms  p99 {e['p99_ms']:.2f} ms  ({e['steps']} steps, n={e['n']}); "
          f"the engine alone p50 {e['engine_ms']:.2f} ms; loading the version from its bytes {e['load_ms']:.2f} ms")
    u = r["predict_during_uploads"]
    q, b = u["quiet"], u["busy"]
    print(f"single-row predict while another client uploads {u['upload_mib']:.0f} MiB JSON datasets "
          f"({u['uploads']} uploads): p50 {b['p50_ms']:.2f} ms  p99 {b['p99_ms']:.1f} ms  max {b['max_ms']:.0f} ms "
          f"(n={b['n']}); alone: p50 {q['p50_ms']:.2f} ms  p99 {q['p99_ms']:.1f} ms  max {q['max_ms']:.0f} ms")
    for name in ("dispatch_embedded", "dispatch_redis"):
        if name in r:
            d = r[name]
            print(f"{name:19s}: POST -> running p50 {d['p50_ms']:.0f} ms  p90 {d['p90_ms']:.0f} ms  "
                  f"max {d['max_ms']:.0f} ms  (n={d['n']})")
    for name, c in r.items():
        if name.startswith("checkpoint_"):
            print(f"{name:26s}: one checkpoint ({c['checkpoint_kb']:.0f} KB) = "
                  f"{c['checkpoint_ms']:.2f} ms per {c['epoch_ms']:.1f} ms epoch "
                  f"({100 * c['share']:.1f}% if taken every epoch); worker's run: fit "
                  f"{c['worker_fit_s']:.2f} s vs bare {c['bare_fit_s']:.2f} s "
                  f"({100 * c['overhead']:+.1f}%), {c['checkpoints_kept']} kept")
    rest, peak = r["rss_at_rest_mb"], r["rss_training_peak_mb"]
    print(f"RSS at rest        : API {rest['api']:.0f} MB, worker {rest['worker']:.0f} MB "
          f"(main + pool child)")
    print(f"RSS training peak  : API {peak['api']:.0f} MB, worker {peak['worker']:.0f} MB on "
          f"{peak['rows']:,} x 32 float32 rows ({peak['dataset_mb']:.1f} MB), job {peak['job']}")
    print(f"total {r['seconds']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())

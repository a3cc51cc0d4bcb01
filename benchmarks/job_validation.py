"""How long creating a large model and queueing a job and a sweep for it take, beside what building it costs.

    python -m benchmarks.job_validation                  # 784-4096-4096-4096-10 (36.8M parameters), 20 trials
    python -m benchmarks.job_validation --trials 100 --units 1024

``backprop api`` alone (SQLite and the embedded broker in a fresh data dir, no worker, so nothing trains) takes
a 1,000 x 784 JSON dataset; then ``POST /v1/models``, ``POST /v1/jobs`` and ``POST /v1/sweeps`` (a grid of
learning rates) are timed, one keep-alive connection, sequential. The reference, from the same run:
``engine.build`` of the same spec in this process, which is what counting the model's parameters and checking a
job against it used to cost, once per model, per job and per trial (it initializes every weight);
``engine.shapes`` and ``engine.summarize``, what they cost now, are printed beside it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

import engine  # noqa: E402
from benchmarks._procs import (clean_env, free_port, migrate_and_create_key, spawn_api, stop,  # noqa: E402
                               wait_ready)


def _median_ms(fn, n: int) -> float:
    fn()                                     # warm-up
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=4096, help="width of the three hidden layers")
    ap.add_argument("--trials", type=int, default=20, help="learning rates in the sweep's grid")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    spec = {"input_shape": [784], "layers": [
        *({"type": "dense", "units": args.units, "activation": "relu"} for _ in range(3)),
        {"type": "dense", "units": 10, "activation": "softmax"}]}

    with tempfile.TemporaryDirectory() as tmp:
        env = clean_env(BACKPROP_DATA_DIR=str(Path(tmp) / "data"),
                        BACKPROP_MAX_CONCURRENT_JOBS_PER_OWNER="0", BACKPROP_MAX_SWEEP_TRIALS="1000")
        key = migrate_and_create_key(env, "bench")
        port = free_port()
        log = Path(tmp) / "api.log"
        api = spawn_api(env, port, log)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, [api], [log])
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as client:
                features = [[(i * 7 + j) % 255 for j in range(784)] for i in range(1000)]
                r = client.post("/v1/datasets", json={"name": "pixels", "features": features,
                                                      "targets": [i % 10 for i in range(1000)]})
                r.raise_for_status()
                dataset = r.json()["id"]
                def create_model():
                    r = client.post("/v1/models", json={"name": "big", **spec})
                    r.raise_for_status()
                    return r.json()

                model = create_model()
                model_ms = _median_ms(create_model, args.repeat)
                params = model["summary"]["total_params"]
                body = {"model_id": model["id"], "dataset_id": dataset, "loss": "sparse_categorical_crossentropy",
                        "epochs": 1}

                def job():
                    client.post("/v1/jobs", json=body).raise_for_status()

                grid = {"optimizer.learning_rate": [10.0 ** (-1 - k / args.trials) for k in range(args.trials)]}

                def sweep():
                    client.post("/v1/sweeps", json={"model_id": model["id"], "dataset_id": dataset,
                                                    "config": {"loss": body["loss"], "epochs": 1,
                                                               "optimizer": "adam"}, "grid": grid}
                                ).raise_for_status()

                job_ms = _median_ms(job, args.repeat)
                sweep_ms = _median_ms(sweep, max(1, args.repeat // 2))
        finally:
            stop(api)

    build_ms = _median_ms(lambda: engine.build(spec, seed=0), 3)
    shapes_ms = _median_ms(lambda: engine.shapes(spec), 50)
    summary_ms = _median_ms(lambda: engine.summarize(spec), 50)
    print(f"model: {params:,} parameters; API on SQLite, no worker; medians")
    print(f"POST /v1/models                    {model_ms:9.1f} ms")
    print(f"POST /v1/jobs                      {job_ms:9.1f} ms")
    print(f"POST /v1/sweeps, {args.trials:4d} trials        {sweep_ms:9.1f} ms  "
          f"({sweep_ms / args.trials:.1f} ms a trial)")
    sweep_s = build_ms * args.trials / 1e3
    print(f"reference: engine.build(spec)      {build_ms:9.1f} ms  (what creating the model and checking each job "
          f"and each trial against it cost before; a {args.trials}-trial sweep spent {sweep_s:.1f} s)")
    print(f"           engine.shapes(spec)     {shapes_ms:9.3f} ms  (the job check now)")
    print(f"           engine.summarize(spec)  {summary_ms:9.3f} ms  (the model's summary now)")
    print(f"ratios to engine.build: POST /v1/models {model_ms / build_ms:.3f}, POST /v1/jobs {job_ms / build_ms:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

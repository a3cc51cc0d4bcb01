"""Batch predict over HTTP: the same rows as JSON and as one .npy body, beside the engine alone.

    python -m benchmarks.predict_batch                # 1,000 rows x 784 features, net (a) of benchmarks/engine.py
    python -m benchmarks.predict_batch --rows 100 --requests 10

``backprop up`` runs on loopback with a fresh data dir; a 784-256-128-10 network is trained for one epoch on
2,000 synthetic rows, then the same batch is posted as ``{"inputs": [...]}`` and as ``numpy.save`` bytes
(``Content-Type: application/x-npy``), one keep-alive connection, sequential, the answers checked equal. The
references, from the same run: the engine's own ``predict`` on the same rows in this process, on the exported
version (the forward pass before any transport), and a bare FastAPI endpoint under uvicorn that reads the same
.npy bytes and answers a few bytes (the transport alone). The client's own encoding of each body is shown
apart. Last, ``POST /v1/models/{id}/evaluate`` on the training dataset beside the engine's own ``evaluate`` of
the same rows in this process (the same loss value, checked).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

import engine  # noqa: E402
from benchmarks._procs import (clean_env, free_port, spawn, start_embedded, stop,  # noqa: E402
                               wait_ready)

BARE_APP = """
from fastapi import FastAPI, Request

app = FastAPI()


@app.post("/echo")
async def echo(request: Request) -> dict:
    return {"bytes": len(await request.body())}
"""

SPEC = {"name": "wide", "input_shape": [784], "layers": [
    {"type": "dense", "units": 256, "activation": "relu"},
    {"type": "dense", "units": 128, "activation": "relu"},
    {"type": "dense", "units": 10, "activation": "softmax"}]}


def _p50_ms(fn, n: int) -> float:
    fn()                                    # warm-up: caches, connection, the model loaded
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def _bare_transport_ms(tmp: Path, body: bytes, n: int) -> float:
    """p50 of posting ``body`` to a bare FastAPI endpoint that reads it whole and answers its length."""
    (tmp / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    proc = spawn([sys.executable, "-m", "uvicorn", "bare_app:app", "--host", "127.0.0.1", "--port", str(port),
                  "--log-level", "warning", "--no-access-log"], clean_env(PYTHONPATH=str(tmp)), tmp / "bare.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, [proc], [tmp / "bare.log"], path="/docs")
        with httpx.Client(base_url=url, timeout=60) as c:
            return _p50_ms(lambda: c.post("/echo", content=body,
                                          headers={"content-type": "application/x-npy"}).raise_for_status(), n)
    finally:
        stop(proc)


def _train(c: httpx.Client, rng: np.random.Generator) -> tuple[str, str, np.ndarray, np.ndarray]:
    X = rng.integers(0, 256, size=(2000, 784)).astype(np.float32)
    y = rng.integers(0, 10, size=2000)
    ds = c.post("/v1/datasets", json={"name": "wide", "features": X.tolist(), "targets": y.tolist(),
                                      "task": "classification"})
    ds.raise_for_status()
    model = c.post("/v1/models", json=SPEC)
    model.raise_for_status()
    model_id = model.json()["id"]
    job = c.post("/v1/jobs", json={"model_id": model_id, "dataset_id": ds.json()["id"], "epochs": 1,
                                   "loss": "sparse_categorical_crossentropy", "batch_size": 128, "seed": 1})
    job.raise_for_status()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = c.get(f"/v1/jobs/{job.json()['id']}", params={"history_tail": 0}).json()["status"]
        if status in ("succeeded", "failed", "cancelled"):
            if status != "succeeded":
                raise RuntimeError(f"the training job ended {status}")
            return model_id, ds.json()["id"], X, y
        time.sleep(0.05)
    raise RuntimeError("the training job did not end within 120 s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=30, help="timed requests per form")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, size=(args.rows, 784)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="backprop-predict-") as tmp:
        url, key, cleanup = start_embedded(Path(tmp))
        try:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
                model_id, dataset_id, X_train, y_train = _train(c, rng)
                path = f"/v1/models/{model_id}/predict"
                json_body = json.dumps({"inputs": rows.tolist()}).encode()
                buf = io.BytesIO()
                np.save(buf, rows)
                npy_body = buf.getvalue()
                as_json = c.post(path, content=json_body, headers={"content-type": "application/json"}).json()
                as_npy = c.post(path, content=npy_body, headers={"content-type": "application/x-npy"}).json()
                if as_json != as_npy:
                    raise RuntimeError("the .npy answer differs from the JSON answer")
                json_ms = _p50_ms(lambda: c.post(path, content=json_body,
                                                 headers={"content-type": "application/json"}), args.requests)
                npy_ms = _p50_ms(lambda: c.post(path, content=npy_body,
                                                headers={"content-type": "application/x-npy"}), args.requests)
                served = engine.from_bytes(c.get(f"/v1/models/{model_id}/export", params={"format": "npz"}).content)
                scores = c.post(f"/v1/models/{model_id}/evaluate", json={"dataset_id": dataset_id}).json()
                evaluate_ms = _p50_ms(lambda: c.post(f"/v1/models/{model_id}/evaluate",
                                                     json={"dataset_id": dataset_id}).raise_for_status(), 10)
        finally:
            cleanup()
        bare_ms = _bare_transport_ms(Path(tmp), npy_body, args.requests)
    engine_ms = _p50_ms(lambda: served.predict(rows), args.requests)
    encode_json_ms = _p50_ms(lambda: json.dumps({"inputs": rows.tolist()}), 5)
    encode_npy_ms = _p50_ms(lambda: np.save(io.BytesIO(), rows), 5)
    print(f"{args.rows:,} rows x 784 features, 784-256-128-10, p50 of {args.requests} sequential requests")
    print(f"  JSON body  {len(json_body) / 2**20:6.2f} MiB: {json_ms:8.2f} ms  ({json_ms / engine_ms:6.1f}x the engine)"
          f"   client encoding {encode_json_ms:.1f} ms")
    print(f"  .npy body  {len(npy_body) / 2**20:6.2f} MiB: {npy_ms:8.2f} ms  ({npy_ms / engine_ms:6.1f}x the engine)"
          f"   client encoding {encode_npy_ms:.2f} ms")
    print(f"  references: the engine alone (in process) {engine_ms:.2f} ms; the same .npy bytes to a bare FastAPI "
          f"endpoint {bare_ms:.2f} ms; together {engine_ms + bare_ms:.2f} ms "
          f"(.npy predict {npy_ms / (engine_ms + bare_ms):.2f}x that)")
    print(f"  .npy is {json_ms / npy_ms:.1f}x faster than JSON")
    local = served.evaluate(X_train, y_train, loss="sparse_categorical_crossentropy", metrics=[])
    if local["loss"] != scores["metrics"]["loss"]:
        raise RuntimeError(f"evaluate answered {scores['metrics']['loss']}, the engine {local['loss']}")
    engine_eval_ms = _p50_ms(lambda: served.evaluate(X_train, y_train, loss="sparse_categorical_crossentropy",
                                                     metrics=[]), 10)
    print(f"evaluate on the 2,000 training rows over HTTP: {evaluate_ms:.1f} ms; the engine's evaluate in process "
          f"{engine_eval_ms:.1f} ms ({evaluate_ms / engine_eval_ms:.2f}x: the dataset and the version read from the "
          f"database and the version loaded afresh)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

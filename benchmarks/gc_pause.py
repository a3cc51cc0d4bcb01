"""How long one full garbage collection holds the API process's GIL, with its startup objects frozen (what
``create_app`` does at startup, ``gc_freeze_at_startup``) and without (the reference, in the same process).

    python -m benchmarks.gc_pause

The app is built as ``backprop api`` builds it (SQLite in a temporary data dir), started, and given some
traffic: the OpenAPI document, the dashboard, a CSV upload, a model, a job trained in process, single-row and
batch predictions, the metrics page. Then ``gc.collect()`` is timed (best and worst of 5) as the process stands,
and again after ``gc.unfreeze()`` has handed the startup objects back to the collector, which is the state every
full collection met before. A full collection lands inside whatever request is running when it triggers: its
length is a floor under that request's latency.
"""
from __future__ import annotations

import gc
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _collections_ms(n: int = 5) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        gc.collect()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _traffic(app, client) -> None:
    from service.auth import create_api_key
    from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

    with app.state.session_factory() as s, s.begin():
        key = create_api_key(s, "bench")
    key = key[0] if isinstance(key, tuple) else key
    auth = {"Authorization": f"Bearer {key}"}
    for path in ("/openapi.json", "/", "/healthz", "/metrics"):
        client.get(path)
    csv = "a,b,y\n" + "\n".join(f"{i % 7},{i % 5},{'xyz'[i % 3]}" for i in range(300)) + "\n"
    ds = make_dataset(client, auth, csv)
    model = make_model(client, auth, {"input_shape": [2], "layers": [
        {"type": "dense", "units": 16, "activation": "relu"}, {"type": "dense", "units": 3, "activation": "softmax"}]})
    job = make_job(client, auth, model["id"], ds["id"], loss="sparse_categorical_crossentropy", epochs=3)
    run_job_in_process(app.state.session_factory, job["id"])
    for _ in range(200):
        client.post(f"/v1/models/{model['id']}/predict", headers=auth, json={"inputs": [[1, 2]]})
    client.post(f"/v1/models/{model['id']}/predict", headers=auth, json={"inputs": [[1, 2]] * 1000})
    client.get("/v1/jobs", headers=auth)


def main() -> int:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.config import Settings

    with tempfile.TemporaryDirectory(prefix="backprop-gc-") as tmp:
        app = create_app(Settings(data_dir=tmp, broker_url="memory://", api_reconciler=False),
                         enqueue=lambda job_id: None)
        with TestClient(app) as client:
            frozen = gc.get_freeze_count()
            _traffic(app, client)
            gc.collect()
            tracked = len(gc.get_objects())
            now = _collections_ms()
            gc.unfreeze()
            before = _collections_ms()
    print(f"API process after startup and some traffic: {frozen:,} objects frozen at startup, {tracked:,} "
          f"tracked since")
    print(f"  one full collection, startup objects frozen (now):  best {min(now):6.2f} ms, worst {max(now):6.2f} ms")
    print(f"  the same, all {frozen + tracked:,} objects scanned (before): best {min(before):6.2f} ms, "
          f"worst {max(before):6.2f} ms")
    print(f"  ratio (before / now, best): {min(before) / min(now):.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

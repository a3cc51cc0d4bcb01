"""Test helpers: create resources over HTTP and train a version in-process (no worker needed)."""
from __future__ import annotations

from typing import Any

from service.db.models import Dataset, Job, Model
from service.services import training_results
from service.training_data import n_outputs_of, training_arrays

MLP = {"input_shape": [2], "layers": [{"type": "dense", "units": 8, "activation": "tanh"},
                                       {"type": "dense", "units": 2, "activation": "softmax"}]}


def make_dataset(client, auth, csv: str, target: str = "y", **fields) -> dict[str, Any]:
    r = client.post("/v1/datasets", headers=auth, data={"name": "d", "target": target, **fields},
                    files={"file": ("d.csv", csv.encode(), "text/csv")})
    assert r.status_code == 201, r.text
    return r.json()


def make_model(client, auth, spec: dict[str, Any] | None = None, name: str = "m") -> dict[str, Any]:
    r = client.post("/v1/models", headers=auth, json={"name": name, **(spec or MLP)})
    assert r.status_code == 201, r.text
    return r.json()


def make_job(client, auth, model_id: str, dataset_id: str, **config) -> dict[str, Any]:
    body = {"model_id": model_id, "dataset_id": dataset_id, "loss": "categorical_crossentropy", "epochs": 2,
            "seed": 1, **config}
    r = client.post("/v1/jobs", headers=auth, json=body)
    assert r.status_code == 202, r.text
    return r.json()


def run_job_in_process(session_factory, job_id: str, worker: str = "test-worker") -> int | None:
    """What a worker does, with the service-layer functions: claim, fit, record, complete."""
    import engine
    from workers.runner import fit_config, version_metrics

    with session_factory() as s, s.begin():
        if not training_results.claim_job(s, job_id, worker):
            return None
    with session_factory() as s:
        job = s.get(Job, job_id)
        model = s.get(Model, job.model_id)
        dataset = s.get(Dataset, job.dataset_id)
        config = dict(job.config)
        spec = dict(model.spec)
        X, y = training_arrays(dataset, model.input_shape, config["loss"], n_outputs_of(model.summary))
    every = int(config.pop("checkpoint_every", 0) or 0)

    def on_epoch(event) -> None:
        with session_factory() as s, s.begin():
            training_results.record_epoch(s, job_id, dict(event.row), event.epoch, worker=worker)
            if every and event.epoch % every == 0:
                metrics = {k: v for k, v in event.row.items() if k not in ("epoch", "grad_norms", "seconds")}
                training_results.save_checkpoint(s, job_id, event.epoch, metrics, event.checkpoint(), worker=worker)

    net = engine.build(spec, seed=config.get("seed"))
    history = net.fit(X, y, callbacks=[on_epoch], **fit_config(config, dataset))   # the engine's keys
    metrics = version_metrics(history, net.weights_epoch)
    with session_factory() as s, s.begin():
        return training_results.complete_job(s, job_id, net.to_bytes(), metrics, history=history, worker=worker)

"""A learning-rate schedule in a job's optimizer: accepted in Keras's form, stored normalized, followed by the fit,
refused with the field that is wrong."""
from __future__ import annotations

import math

from engine import schedules
from service.db.models import Job
from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

XOR = "a,b,y\n" + "\n".join(f"{i % 2},{(i // 2) % 2},{(i % 2) ^ ((i // 2) % 2)}" for i in range(40)) + "\n"
KERAS_FORM = {"module": "keras.optimizers.schedules", "class_name": "ExponentialDecay", "registered_name": None,
              "config": {"initial_learning_rate": 0.05, "decay_steps": 4, "decay_rate": 0.5, "staircase": True,
                         "name": "ExponentialDecay"}}


def test_a_scheduled_job_stores_the_schedule_and_follows_it(client, auth, session_factory):
    ds, m = make_dataset(client, auth, XOR), make_model(client, auth)
    job = make_job(client, auth, m["id"], ds["id"], optimizer={"type": "sgd", "learning_rate": KERAS_FORM},
                   epochs=3, batch_size=8)
    rate = job["config"]["optimizer"]["learning_rate"]
    assert rate == {"type": "exponential_decay", "initial_learning_rate": 0.05, "decay_steps": 4,
                    "decay_rate": 0.5, "staircase": True}
    run_job_in_process(session_factory, job["id"])
    done = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert done["status"] == "succeeded"
    steps = math.ceil(40 / 8)
    schedule = schedules.get(rate)
    assert [row["learning_rate"] for row in done["history"]] == [schedule(steps * e) for e in (1, 2, 3)]
    assert done["history"][0]["learning_rate"] > done["history"][-1]["learning_rate"]


def test_bad_schedules_are_422_naming_the_field(client, auth, enqueued, session_factory):
    ds, m = make_dataset(client, auth, XOR), make_model(client, auth)
    base = {"model_id": m["id"], "dataset_id": ds["id"], "loss": "categorical_crossentropy"}
    cases = [
        ({"optimizer": {"type": "adam", "learning_rate": {"type": "cosine_decay", "initial_learning_rate": 0.1,
                                                          "decay_steps": -5}}},
         ["body", "optimizer", "learning_rate", "decay_steps"]),
        ({"optimizer": {"type": "adam", "learning_rate": {"type": "piecewise_constant_decay", "boundaries": [5, 3],
                                                          "values": [0.1, 0.01, 0.001]}}},
         ["body", "optimizer", "learning_rate", "boundaries", 1]),
        ({"optimizer": {"type": "adam", "learning_rate": {"type": "linear_warmup"}}},
         ["body", "optimizer", "learning_rate", "type"]),
        ({"optimizer": {"type": "adam", "learning_rate": KERAS_FORM}, "reduce_lr_on_plateau": {"monitor": "loss"}},
         ["body", "reduce_lr_on_plateau"]),
    ]
    before = (len(enqueued), _jobs(session_factory))
    for extra, loc in cases:
        r = client.post("/v1/jobs", headers=auth, json={**base, **extra})
        assert r.status_code == 422, (extra, r.text)
        assert r.json()["errors"][0]["loc"] == loc, r.json()
    assert (len(enqueued), _jobs(session_factory)) == before


def _jobs(session_factory) -> int:
    with session_factory() as s:
        return s.query(Job).count()

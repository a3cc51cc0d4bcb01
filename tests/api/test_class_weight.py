"""class_weight on POST /v1/jobs: keyed by the dataset's own labels (matched to its classes by value), kept so in
the job's config, translated to class indices for the engine, carried by a continued job; refused with a 422
naming the field, before anything is stored, where it cannot apply."""
from __future__ import annotations

import pytest

import engine
from engine.serialization import checkpoint_from_bytes
from service.db.models import Checkpoint, Dataset, Job, Model
from service.services.dataset_matching import label_index
from service.training_data import n_outputs_of, training_arrays
from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

# 30 rows, labels "r", "g", "b": stored sorted, so "b" is class 0, "g" 1 and "r" 2
THREE = "a,b,y\n" + "\n".join(f"{i % 7},{(i * 3) % 5},{['r', 'g', 'b'][i % 3]}" for i in range(30)) + "\n"
NUMBERS = "a,b,y\n" + "\n".join(f"{i % 2},{(i // 2) % 2},{(i % 2) ^ ((i // 2) % 2)}" for i in range(40)) + "\n"
HALVES = "a,b,y\n" + "\n".join(f"{i % 3},{i % 4},{[0.5, 1.5][i % 2]}" for i in range(20)) + "\n"
REAL = "a,b,y\n" + "\n".join(f"{i},{i % 3},{i * 0.37}" for i in range(20)) + "\n"
MULTILABEL = "a,b,u,v\n" + "\n".join(f"{i},{i % 3},{i % 2},{(i // 2) % 2}" for i in range(20)) + "\n"
SOFTMAX3 = {"input_shape": [2], "layers": [{"type": "dense", "units": 8, "activation": "tanh"},
                                           {"type": "dense", "units": 3, "activation": "softmax"}]}
SIGMOID = {"input_shape": [2], "layers": [{"type": "dense", "units": 1, "activation": "sigmoid"}]}
SIGMOID3 = {"input_shape": [2], "layers": [{"type": "dense", "units": 3, "activation": "sigmoid"}]}
LINEAR = {"input_shape": [2], "layers": [{"type": "dense", "units": 1}]}
SPARSE = {"loss": "sparse_categorical_crossentropy"}


@pytest.fixture()
def three(client, auth):
    ds = make_dataset(client, auth, THREE)
    assert ds["classes"] == ["b", "g", "r"]
    return ds["id"], make_model(client, auth, SOFTMAX3)["id"]


def post(client, auth, model_id, dataset_id, **config):
    return client.post("/v1/jobs", headers=auth, json={"model_id": model_id, "dataset_id": dataset_id, "epochs": 2,
                                                       "seed": 1, **config})


def test_the_job_keeps_the_labels_and_the_engine_gets_class_indices(client, auth, session_factory, three):
    ds_id, model_id = three
    job = make_job(client, auth, model_id, ds_id, **SPARSE, class_weight={"r": 3, "b": 0.5}, epochs=3,
                   batch_size=8)
    assert job["config"]["class_weight"] == {"r": 3.0, "b": 0.5}
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["config"]["class_weight"] == {"r": 3.0, "b": 0.5}
    run_job_in_process(session_factory, job["id"])
    history = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["history"]

    # the same fit in process, given the engine's form: "b" is class 0, "r" class 2 ("g", left out, weighs 1)
    with session_factory() as s:
        dataset, model = s.get(Dataset, ds_id), s.get(Model, model_id)
        X, y = training_arrays(dataset, model.input_shape, SPARSE["loss"], n_outputs_of(model.summary))
        spec = dict(model.spec)
    config = {k: v for k, v in job["config"].items() if k != "checkpoint_every"}

    def first_loss(weights):
        return engine.build(spec, seed=1).fit(X, y, **{**config, "class_weight": weights})[0]["loss"]

    assert history[0]["loss"] == first_loss({"0": 0.5, "2": 3.0})
    assert history[0]["loss"] != first_loss({"2": 0.5, "0": 3.0})    # the labels read the other way round
    assert history[0]["loss"] != first_loss(None)


def test_balanced_passes_through_and_numbers_match_by_value(client, auth):
    numbers = make_dataset(client, auth, NUMBERS)
    assert numbers["classes"] == [0, 1]
    sigmoid = make_model(client, auth, SIGMOID)["id"]
    job = make_job(client, auth, sigmoid, numbers["id"], loss="binary_crossentropy", class_weight="balanced")
    assert job["config"]["class_weight"] == "balanced"
    # a JSON key is a string: "1" and "1.0" are the integer class 1
    for key in ("1", "1.0"):
        job = make_job(client, auth, sigmoid, numbers["id"], loss="binary_crossentropy", class_weight={key: 4})
        assert job["config"]["class_weight"] == {key: 4.0}
    halves = make_dataset(client, auth, HALVES, task="classification")
    assert halves["classes"] == [0.5, 1.5]
    job = make_job(client, auth, sigmoid, halves["id"], loss="binary_crossentropy", class_weight={"1.5": 2})
    assert job["config"]["class_weight"] == {"1.5": 2.0}


def test_labels_match_stored_classes_by_value():
    assert label_index(["b", "g", "r"], "r") == 2 and label_index(["b", "g", "r"], "R") is None
    assert label_index([0, 1], "1") == 1 and label_index([0.0, 1.0], "1") == 1 and label_index([1, 2], "1.0") == 0
    assert label_index([0.5, 1.5], "1.5") == 1 and label_index([0.5, 1.5], "1") is None
    assert label_index(["1", "2"], "1.0") is None              # string labels match as strings


def test_refusals_are_422_naming_the_field_and_store_nothing(client, auth, enqueued, session_factory, three):
    ds_id, model_id = three
    numbers = make_dataset(client, auth, NUMBERS)["id"]
    real = make_dataset(client, auth, REAL)["id"]
    multilabel = make_dataset(client, auth, MULTILABEL, target="u,v")
    assert multilabel["task"] == "multilabel"
    sigmoid, sigmoid3 = make_model(client, auth, SIGMOID)["id"], make_model(client, auth, SIGMOID3)["id"]
    linear = make_model(client, auth, LINEAR)["id"]
    before = (len(enqueued), _jobs(session_factory))
    cases = [
        ((model_id, ds_id), {**SPARSE, "class_weight": {"purple": 2}}, ["body", "class_weight", "purple"]),
        ((model_id, ds_id), {**SPARSE, "class_weight": {"r": -1}}, ["body", "class_weight", "r"]),
        ((model_id, ds_id), {**SPARSE, "class_weight": {"r": "2"}}, ["body", "class_weight", "r"]),
        ((model_id, ds_id), {**SPARSE, "class_weight": {"r": 10**30}}, ["body", "class_weight", "r"]),
        ((model_id, ds_id), {**SPARSE, "class_weight": "sometimes"}, ["body", "class_weight"]),
        ((model_id, ds_id), {**SPARSE, "class_weight": [1, 2, 3]}, ["body", "class_weight"]),
        # one-hot targets with a regression loss: no class per row for the loss
        ((model_id, ds_id), {"loss": "mean_squared_error", "class_weight": {"r": 2}}, ["body", "class_weight"]),
        ((sigmoid, numbers), {"loss": "binary_crossentropy", "class_weight": {"1": 1, "1.0": 2}},
         ["body", "class_weight", "1.0"]),
        ((linear, real), {"loss": "mean_squared_error", "class_weight": "balanced"}, ["body", "class_weight"]),
        ((sigmoid3, multilabel["id"]), {"loss": "binary_crossentropy", "class_weight": {"u": 2}},
         ["body", "class_weight"]),
        # three classes against three independent sigmoid columns: no single label column to weigh
        ((sigmoid3, ds_id), {"loss": "binary_crossentropy", "class_weight": {"r": 2}}, ["body", "class_weight"]),
    ]
    for (m, d), config, loc in cases:
        r = post(client, auth, m, d, **config)
        assert r.status_code == 422, (config, r.text)
        assert r.json()["errors"][0]["loc"][:len(loc)] == loc, (config, r.json())
    for text in ('{"r": NaN}', '{"r": Infinity}'):      # Python's JSON reader takes these literals
        r = client.post("/v1/jobs", headers={**auth, "Content-Type": "application/json"},
                        content=f'{{"model_id": "{model_id}", "dataset_id": "{ds_id}", '
                                f'"loss": "sparse_categorical_crossentropy", "class_weight": {text}}}')
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "class_weight", "r"], r.text
    assert (len(enqueued), _jobs(session_factory)) == before


def _jobs(session_factory) -> int:
    with session_factory() as s:
        return s.query(Job).count()


def test_a_continued_job_keeps_its_class_weights(client, auth, session_factory, three):
    ds_id, model_id = three
    job = make_job(client, auth, model_id, ds_id, **SPARSE, class_weight={"g": 2.5}, epochs=3)
    run_job_in_process(session_factory, job["id"])
    r = client.post(f"/v1/jobs/{job['id']}/continue", headers=auth, json={"epochs": 5})
    assert r.status_code == 202, r.text
    assert r.json()["config"]["class_weight"] == {"g": 2.5}
    # the worker resumes the checkpoint the new job names: the engine's config in it has the weights by index
    with session_factory() as s:
        data = s.query(Checkpoint.data).filter_by(job_id=job["id"], epoch=3).scalar()
    assert checkpoint_from_bytes(data)["config"]["class_weight"] == {"1": 2.5}

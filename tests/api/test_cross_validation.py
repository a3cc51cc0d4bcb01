"""k-fold cross-validation: a job's validation_fold (which rows it holds out, evaluate on them), and a sweep's
folds (every grid point trained once per fold, ranked by the mean of its folds' objectives)."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process
from tests.api.test_validation_rows import CSV, NET, ROWS

LIMITS = {"max_sweep_trials": 12, "max_concurrent_jobs_per_owner": 12}
FIT = {"loss": "sparse_categorical_crossentropy", "optimizer": "adam", "epochs": 3, "batch_size": 8, "seed": 4,
       "metrics": ["accuracy"]}


@pytest.fixture(scope="module")
def settings_overrides():
    return dict(LIMITS)


def _classes(dataset: dict) -> np.ndarray:
    return np.array([dataset["classes"].index(y) for _, _, y in ROWS])


def test_a_job_holds_out_its_fold_and_evaluate_scores_it(client, auth, session_factory):
    ds, m = make_dataset(client, auth, CSV), make_model(client, auth, NET)
    job = make_job(client, auth, m["id"], ds["id"], **FIT, validation_rows="stratified",
                   validation_fold={"fold": 2, "folds": 4})
    assert job["config"]["validation_fold"] == {"fold": 2, "folds": 4}
    run_job_in_process(session_factory, job["id"])
    last = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["history"][-1]
    out = client.post(f"/v1/models/{m['id']}/evaluate", headers=auth, json={"rows": "validation"}).json()
    assert out["n_samples"] == 15                                    # 60 rows, 4 folds
    assert out["metrics"]["loss"] == pytest.approx(last["val_loss"], rel=1e-5)
    assert [c["support"] for c in out["confusion"]["per_class"]] == [5, 5, 5]


def test_job_fold_refusals_name_the_field(client, auth, enqueued):
    ds, m = make_dataset(client, auth, CSV), make_model(client, auth, NET)
    other = make_dataset(client, auth, CSV)
    base = {"model_id": m["id"], "dataset_id": ds["id"], **FIT}
    cases = [({"validation_fold": {"fold": 1, "folds": 3}, "validation_split": 0.2}, ["body", "validation_fold"]),
             ({"validation_fold": {"fold": 1, "folds": 3}, "validation_dataset_id": other["id"]},
              ["body", "validation_fold"]),
             ({"validation_fold": {"fold": 5, "folds": 3}}, ["body", "validation_fold", "fold"]),
             ({"validation_fold": {"fold": 1, "folds": 61}}, ["body", "validation_fold", "folds"])]
    assert_refused(client, auth, enqueued, "/v1/jobs", base, cases)


def test_a_sweep_with_folds_ranks_points_by_their_mean_over_the_folds(client, auth, session_factory):
    ds, m = make_dataset(client, auth, CSV), make_model(client, auth, NET)
    r = client.post("/v1/sweeps", headers=auth, json={
        "model_id": m["id"], "dataset_id": ds["id"], "config": {**FIT, "validation_rows": "stratified"},
        "grid": {"optimizer.learning_rate": [0.001, 0.05]}, "folds": 3, "objective": "val_loss"})
    assert r.status_code == 202, r.text
    sweep = r.json()
    assert sweep["grid"]["validation_fold.fold"] == [1, 2, 3] and len(sweep["trials"]) == 6
    assert [t["params"] for t in sweep["trials"][:3]] == [
        {"optimizer.learning_rate": 0.001, "validation_fold.fold": i} for i in (1, 2, 3)]
    for trial in sweep["trials"]:
        run_job_in_process(session_factory, trial["job_id"])
    done = client.get(f"/v1/sweeps/{sweep['id']}", headers=auth).json()
    assert done["status"] == "succeeded" and done["best"] is None
    cv = done["cross_validation"]
    assert cv["folds"] == 3 and [p["params"] for p in cv["points"]] == [
        {"optimizer.learning_rate": 0.001}, {"optimizer.learning_rate": 0.05}]
    classes = _classes(ds)
    for point, trials in zip(cv["points"], (done["trials"][:3], done["trials"][3:])):
        assert point["job_ids"] == [t["job_id"] for t in trials] and point["folds_succeeded"] == 3
        scores = []
        held = []
        for trial in trials:
            job = client.get(f"/v1/jobs/{trial['job_id']}", headers=auth).json()
            scores.append(job["history"][-1]["val_loss"])
            held.append(engine.split_rows(job["config"], classes)[1])
            # stratified: 20 rows of each class dealt to 3 folds, each fold 6 or 7 of each class
            assert sorted(np.bincount(classes[held[-1]], minlength=3).tolist()) == [6, 7, 7]
        assert sorted(np.concatenate(held).tolist()) == list(range(60))      # every row validated once
        assert point["objective_mean"] == pytest.approx(np.mean(scores), rel=1e-12)
        assert point["objective_std"] == pytest.approx(np.std(scores), rel=1e-9)
    means = [p["objective_mean"] for p in cv["points"]]
    assert cv["best"]["params"] == cv["points"][int(np.argmin(means))]["params"]

    # refit: the best point's values trained on every row, by a job outside the sweep
    r = client.post(f"/v1/sweeps/{sweep['id']}/refit", headers=auth)
    assert r.status_code == 202, r.text
    refit = r.json()
    assert refit["sweep_id"] is None and refit["status"] == "queued"
    config = refit["config"]
    assert config["optimizer"]["learning_rate"] == cv["best"]["params"]["optimizer.learning_rate"]
    assert (config["validation_fold"], config["validation_split"], config["validation_rows"]) == (None, 0.0, "last")
    assert (config["seed"], config["epochs"], config["batch_size"]) == (FIT["seed"], FIT["epochs"], FIT["batch_size"])
    run_job_in_process(session_factory, refit["id"])
    done = client.get(f"/v1/jobs/{refit['id']}", headers=auth).json()
    assert done["status"] == "succeeded" and "val_loss" not in done["history"][-1]
    scored = client.post(f"/v1/models/{m['id']}/evaluate", headers=auth, json={"rows": "training"}).json()
    assert (scored["version"], scored["n_samples"]) == (done["result_version"], 60)      # every row trained


def test_refit_is_409_when_there_is_nothing_to_refit(client, auth, session_factory, enqueued):
    ds, m = make_dataset(client, auth, CSV), make_model(client, auth, NET)
    plain = client.post("/v1/sweeps", headers=auth, json={
        "model_id": m["id"], "dataset_id": ds["id"], "config": {**FIT, "validation_split": 0.2},
        "grid": {"optimizer.learning_rate": [0.01]}}).json()
    waiting = client.post("/v1/sweeps", headers=auth, json={
        "model_id": m["id"], "dataset_id": ds["id"], "config": FIT, "grid": {"optimizer.learning_rate": [0.01]},
        "folds": 2}).json()
    stopping = client.post("/v1/sweeps", headers=auth, json={
        "model_id": m["id"], "dataset_id": ds["id"], "config": {**FIT, "early_stopping": {"monitor": "val_loss"}},
        "grid": {"optimizer.learning_rate": [0.01]}, "folds": 2}).json()
    for trial in stopping["trials"]:
        run_job_in_process(session_factory, trial["job_id"])
    sent = len(enqueued)
    for sweep, says in ((plain, "has no folds"), (waiting, "no grid point has all its folds"),
                        (stopping, "early_stopping")):
        r = client.post(f"/v1/sweeps/{sweep['id']}/refit", headers=auth)
        assert r.status_code == 409 and says in r.json()["detail"], r.text
    assert len(enqueued) == sent
    assert client.post("/v1/sweeps/nope/refit", headers=auth).status_code == 404


def test_sweep_folds_refusals(client, auth, enqueued):
    ds, m = make_dataset(client, auth, CSV), make_model(client, auth, NET)
    base = {"model_id": m["id"], "dataset_id": ds["id"], "grid": {"optimizer.learning_rate": [0.01, 0.1]}}
    cases = [({"config": {**FIT, "validation_split": 0.2}, "folds": 3}, ["body", "folds"]),
             ({"config": FIT, "folds": 3, "grid": {"validation_split": [0.1, 0.2]}}, ["body", "folds"]),
             ({"config": {**FIT, "validation_fold": {"fold": 1, "folds": 3}}, "folds": 3}, ["body", "folds"]),
             ({"config": FIT, "folds": 1}, ["body", "folds"]),
             ({"config": FIT, "folds": 7}, ["body", "grid"])]                # 14 trials, over max_sweep_trials
    assert_refused(client, auth, enqueued, "/v1/sweeps", base, cases)


def assert_refused(client, auth, enqueued, path: str, base: dict, cases: list) -> None:
    """Each (extra fields, loc) case posted to ``path`` over ``base`` is a 422 whose first error is at loc, and
    nothing was queued."""
    sent = len(enqueued)
    for extra, loc in cases:
        r = client.post(path, headers=auth, json={**base, **extra})
        assert r.status_code == 422, (extra, r.text)
        assert r.json()["errors"][0]["loc"] == loc, (extra, r.json())
    assert len(enqueued) == sent


@pytest.mark.parametrize("n,k", [(10, 3), (60, 4), (7, 7), (151, 5)])
def test_the_training_rows_a_throughput_figure_counts_are_the_folds_complement(n, k):
    """service.metrics reports samples/s from the rows an epoch trains on: for fold i of k, what the engine's
    split leaves (checked against engine.split_rows for every fold)."""
    from service.metrics import n_train_samples

    for fold in range(1, k + 1):
        config = engine.normalize_fit_config({"loss": "mse", "seed": 1, "validation_fold": {"fold": fold, "folds": k}})
        train, _ = engine.split_rows(config, np.zeros(n))
        assert n_train_samples(n, config) == len(train)
    assert n_train_samples(n, engine.normalize_fit_config({"loss": "mse", "validation_split": 0.25})) == \
        int(np.floor(n * 0.75))

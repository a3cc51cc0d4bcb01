"""Hyperparameter sweeps: the grid's expansion, validation before anything is stored, the trials' objectives and the
best trial (read against the versions and histories the trials made), cancel, delete, owners."""
from __future__ import annotations

import itertools
import math

import pytest
from sqlalchemy import func, select

from service.db.models import Job, Sweep
from service.services import sweep_grid, sweep_results, training_results
from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

XOR = "a,b,y\n" + "\n".join(f"{i % 2},{(i // 2) % 2},{(i % 2) ^ ((i // 2) % 2)}" for i in range(40)) + "\n"
#: The rows validation_split=0.25 holds out of XOR (the last quarter, as Keras takes it).
XOR_VALIDATION = "a,b,y\n" + "\n".join(XOR.splitlines()[31:]) + "\n"
BASE = {"loss": "categorical_crossentropy", "optimizer": "adam", "epochs": 2, "validation_split": 0.25, "seed": 5,
        "metrics": ["accuracy"]}
LIMITS = {"max_sweep_trials": 12, "max_concurrent_jobs_per_owner": 10}


@pytest.fixture(scope="module")
def settings_overrides():
    return dict(LIMITS)


def _post(client, auth, model_id: str, dataset_id: str, grid: dict, config: dict | None = None, **fields):
    body = {"model_id": model_id, "dataset_id": dataset_id, "config": BASE if config is None else config,
            "grid": grid, **fields}
    return client.post("/v1/sweeps", headers=auth, json=body)


def make_sweep(client, auth, model_id: str, dataset_id: str, grid: dict, config: dict | None = None, **fields):
    r = _post(client, auth, model_id, dataset_id, grid, config, **fields)
    assert r.status_code == 202, r.text
    return r.json()


def _stored(session_factory) -> tuple[int, int]:
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(Sweep)), s.scalar(select(func.count()).select_from(Job))


def _sweep(client, auth, sweep_id: str) -> dict:
    r = client.get(f"/v1/sweeps/{sweep_id}", headers=auth)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_expansion_order_is_the_product_with_the_last_key_fastest():
    grid = {"a": [1, 2, 3], "b.c": ["x", "y"], "d": [None, True]}
    product = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    assert list(sweep_grid.trials(grid)) == product
    assert [sweep_grid.params(grid, i) for i in range(sweep_grid.count(grid))] == product
    assert product[1] == {"a": 1, "b.c": "x", "d": True} and sweep_grid.count(grid) == 12


def test_trials_are_the_grid_in_order_each_one_the_job_post_v1_jobs_makes(client, auth, enqueued, session_factory):
    ds, m = make_dataset(client, auth, XOR), make_model(client, auth)
    config = {k: v for k, v in BASE.items() if k != "seed"}     # no seed: the sweep draws one for every trial
    before = len(enqueued)
    sweep = make_sweep(client, auth, m["id"], ds["id"], {"optimizer.learning_rate": [0.001, 0.01],
                                                          "batch_size": [4, 8, 16]}, config)
    expected = [{"optimizer.learning_rate": lr, "batch_size": bs} for lr in (0.001, 0.01) for bs in (4, 8, 16)]
    assert [t["params"] for t in sweep["trials"]] == expected
    assert (sweep["status"], sweep["objective"], sweep["mode"], sweep["best"]) == ("running", "val_loss", "min", None)
    assert sweep["name"] == "optimizer.learning_rate × batch_size" and sweep["model_id"] == m["id"]
    assert {(t["status"], t["epochs_done"], t["objective"], t["result_version"]) for t in sweep["trials"]} == \
        {("queued", 0, None, None)}
    seed = sweep["config"]["seed"]
    assert isinstance(seed, int) and sweep["config"] == {**config, "seed": seed}
    job_ids = [t["job_id"] for t in sweep["trials"]]
    assert enqueued[before:] == job_ids             # each queued as POST /v1/jobs queues one, in trial order
    stored = _sweep(client, auth, sweep["id"])      # read back: the grid's key order is the expansion order
    assert list(stored["grid"]) == ["optimizer.learning_rate", "batch_size"] and stored == sweep

    for job_id, params in zip(job_ids, expected):
        job = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
        # the base's "adam" became {"type": "adam", "learning_rate": ...}
        assert job["config"]["optimizer"]["type"] == "adam"
        assert job["config"]["optimizer"]["learning_rate"] == params["optimizer.learning_rate"]
        alone = make_job(client, auth, m["id"], ds["id"], **{**config, "seed": seed, "batch_size": params["batch_size"],
                         "optimizer": {"type": "adam", "learning_rate": params["optimizer.learning_rate"]}})
        assert job["config"] == alone["config"]     # every default filled in, exactly as for a job on its own
        assert client.post(f"/v1/jobs/{alone['id']}/cancel", headers=auth).status_code == 202
    with session_factory() as s:
        rows = s.scalars(select(Job).where(Job.id.in_(job_ids))).all()
        assert {(r.id, r.sweep_id, r.sweep_trial) for r in rows} == \
            {(j, sweep["id"], i) for i, j in enumerate(job_ids)}
        assert all(r.enqueued_at is not None for r in rows)


def test_paths_create_objects_and_shorter_paths_are_set_first(client, auth):
    ds, m = make_dataset(client, auth, XOR), make_model(client, auth)
    config = {**BASE, "early_stopping": True}
    sweep = make_sweep(client, auth, m["id"], ds["id"], {"optimizer.learning_rate": [0.1], "optimizer": ["sgd", "adam"],
                                                          "early_stopping.patience": [3]}, config, name="mixed")
    assert [t["params"] for t in sweep["trials"]] == [
        {"optimizer.learning_rate": 0.1, "optimizer": "sgd", "early_stopping.patience": 3},
        {"optimizer.learning_rate": 0.1, "optimizer": "adam", "early_stopping.patience": 3}]
    assert sweep["name"] == "mixed"
    configs = [client.get(f"/v1/jobs/{t['job_id']}", headers=auth).json()["config"] for t in sweep["trials"]]
    assert [(c["optimizer"]["type"], c["optimizer"]["learning_rate"]) for c in configs] == [("sgd", 0.1), ("adam", 0.1)]
    assert [c["early_stopping"]["patience"] for c in configs] == [3, 3]
    assert configs[0]["early_stopping"]["monitor"] == "val_loss"       # the rest of early stopping's defaults


def test_every_refusal_stores_nothing_and_queues_nothing(client, auth, other_auth, enqueued, session_factory):
    ds, m = make_dataset(client, auth, XOR), make_model(client, auth)
    other_m = make_model(client, other_auth)
    no_validation = {k: v for k, v in BASE.items() if k != "validation_split"}
    cases = [
        # (grid, config, extra fields, loc, words in the detail)
        ({"optimizer.learning_rate": [0.01, -1]}, {**BASE, "optimizer": {"type": "adam"}}, {},
         ["body", "grid", "optimizer.learning_rate", 1], "grid optimizer.learning_rate[1] = -1"),
        ({"batch_size": [8], "epochs": [2, 3, 0]}, None, {}, ["body", "grid", "epochs", 2], "grid epochs[2] = 0"),
        ({"optimizer": ["adam", "nope"]}, None, {}, ["body", "grid", "optimizer", 1], "unknown optimizer"),
        ({"loss": ["categorical_crossentropy", "mean_squared_error"]}, None, {}, ["body", "config", "metrics", 0],
         'accuracy needs a crossentropy loss (trial 2 of 2: loss="mean_squared_error")'),
        ({"batch_size": [4, 8]}, {**BASE, "optimizer": {"type": "adam", "bogus": 1}}, {},
         ["body", "config", "optimizer", "bogus"], "config: optimizer.bogus"),
        ({"batch_size": [4]}, {**BASE, "bogus": 1}, {}, ["body", "config", "bogus"], "config: bogus"),
        ({"batch_size": [4]}, {**BASE, "model_id": m["id"]}, {}, ["body", "config", "model_id"], "model_id"),
        ({"bogus.x": [1]}, None, {}, ["body", "grid", "bogus.x"], "not a job-config field"),
        ({"optimizer..x": [1]}, None, {}, ["body", "grid", "optimizer..x"], "not a dotted path"),
        ({"epochs.x": [1]}, None, {}, ["body", "grid", "epochs.x"], "inside epochs, which is int"),
        ({"batch_size": list(range(1, 14))}, None, {}, ["body", "grid"], "max_sweep_trials=12"),
        ({"batch_size": list(range(1, 12))}, None, {}, ["body", "grid"], "max_concurrent_jobs_per_owner=10"),
        ({"batch_size": [4]}, None, {"objective": "val_r2"}, ["body", "objective"], "'val_r2'"),
        ({"batch_size": [4]}, no_validation, {"objective": "val_accuracy"}, ["body", "objective"],
         "needs validation data"),
        ({"validation_split": [0.25, 0.0]}, no_validation, {"objective": "val_loss"}, ["body", "objective"],
         "trial 2 has none"),
        ({"batch_size": [4]}, None, {"model_id": other_m["id"]}, ["body", "model_id"], "was not found"),
        ({"batch_size": [4]}, None, {"dataset_id": "nope"}, ["body", "dataset_id"], "was not found"),
        ({"batch_size": []}, None, {}, ["body", "grid", "batch_size"], ""),
        ({}, None, {}, ["body", "grid"], ""),
    ]
    before = (_stored(session_factory), len(enqueued))
    for grid, config, fields, loc, words in cases:
        body = {"model_id": m["id"], "dataset_id": ds["id"], **fields}
        r = _post(client, auth, body.pop("model_id"), body.pop("dataset_id"), grid, config, **body)
        assert r.status_code == 422, (grid, config, fields, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        problem = r.json()
        assert problem["errors"][0]["loc"][:len(loc)] == loc, (grid, config, fields, problem)
        assert words in problem["detail"], (words, problem)
    assert (_stored(session_factory), len(enqueued)) == before
    # without a default, a val_ objective with validation everywhere is fine and auto-maximizes accuracy
    sweep = make_sweep(client, auth, m["id"], ds["id"], {"batch_size": [4]}, objective="val_accuracy")
    assert (sweep["objective"], sweep["mode"]) == ("val_accuracy", "max")
    assert make_sweep(client, auth, m["id"], ds["id"], {"batch_size": [4]}, no_validation)["objective"] == "loss"
    assert make_sweep(client, auth, m["id"], ds["id"], {"batch_size": [4]}, mode="max")["mode"] == "max"


def test_the_trials_count_against_the_concurrent_jobs_quota_together(client, auth, enqueued, session_factory):
    ds, m = make_dataset(client, auth, XOR), make_model(client, auth)
    queued = [make_job(client, auth, m["id"], ds["id"], epochs=1) for _ in range(4)]
    before = (_stored(session_factory), len(enqueued))
    r = _post(client, auth, m["id"], ds["id"], {"batch_size": [1, 2, 4, 8], "epochs": [1, 2]})    # 4 + 8 > 10
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, r.text
    assert "max_concurrent_jobs_per_owner=10" in r.json()["detail"] and "8 more" in r.json()["detail"]
    assert (_stored(session_factory), len(enqueued)) == before
    sweep = make_sweep(client, auth, m["id"], ds["id"], {"batch_size": [1, 2, 4], "epochs": [1, 2]})  # 4 + 6 = 10
    r = client.post("/v1/jobs", headers=auth, json={"model_id": m["id"], "dataset_id": ds["id"], **BASE})
    assert r.status_code == 429
    assert client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=auth).status_code == 202
    for job in queued:
        client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert client.get("/openapi.json").json()["paths"]["/v1/sweeps"]["post"]["responses"].keys() >= {"422", "429"}


def _version_metrics(client, auth, model_id: str) -> dict[int, dict]:
    """Every version's metrics, as GET /v1/models/{id}/versions answers them."""
    page = client.get(f"/v1/models/{model_id}/versions", headers=auth, params={"limit": 500}).json()
    return {v["version"]: v["metrics"] for v in page["items"]}


def test_objectives_best_and_status_follow_the_trials_versions(client, auth, session_factory):
    ds, m = make_dataset(client, auth, XOR), make_model(client, auth)
    sweep = make_sweep(client, auth, m["id"], ds["id"], {"optimizer.learning_rate": [0.001, 0.05, 0.2],
                                                          "batch_size": [4, 16]},
                       {**BASE, "epochs": 3}, objective="val_accuracy")
    assert sweep["mode"] == "max"
    trials = sweep["trials"]
    for done, trial in enumerate(trials[:-1], 1):
        assert run_job_in_process(session_factory, trial["job_id"]) == done
        got = _sweep(client, auth, sweep["id"])
        assert got["status"] == "running"                      # the last trial is still queued
        assert [t["status"] for t in got["trials"]] == ["succeeded"] * done + ["queued"] * (len(trials) - done)
    run_job_in_process(session_factory, trials[-1]["job_id"])
    got = _sweep(client, auth, sweep["id"])
    assert got["status"] == "succeeded"

    metrics = _version_metrics(client, auth, m["id"])
    values = [metrics[t["result_version"]]["val_accuracy"] for t in got["trials"]]
    assert [t["objective"] for t in got["trials"]] == values
    assert all(t["epochs_done"] == 3 and t["status"] == "succeeded" for t in got["trials"])
    first_best = values.index(max(values))                     # ties go to the earlier trial
    assert got["best"] == got["trials"][first_best]
    assert client.get("/v1/sweeps", headers=auth).json()["items"][0] == got

    # the default objective (val_loss) is minimized
    low = make_sweep(client, auth, m["id"], ds["id"], {"optimizer.learning_rate": [0.001, 0.2]}, {**BASE, "epochs": 3})
    for trial in low["trials"]:
        run_job_in_process(session_factory, trial["job_id"])
    got = _sweep(client, auth, low["id"])
    metrics = _version_metrics(client, auth, m["id"])
    values = [metrics[t["result_version"]]["val_loss"] for t in got["trials"]]
    assert [t["objective"] for t in got["trials"]] == values and values[0] != values[1]
    assert got["best"]["job_id"] == got["trials"][values.index(min(values))]["job_id"]

    # the same value twice: two identical trials (one seed), and the tie goes to the first
    twins = make_sweep(client, auth, m["id"], ds["id"], {"batch_size": [8, 8]}, mode="max")
    for trial in reversed(twins["trials"]):
        run_job_in_process(session_factory, trial["job_id"])
    got = _sweep(client, auth, twins["id"])
    assert got["trials"][0]["objective"] == got["trials"][1]["objective"] is not None
    assert got["best"] == got["trials"][0]


def test_best_and_status_rules():
    def trial(i: int, status: str, objective: float | None) -> sweep_results.Trial:
        return sweep_results.Trial(f"j{i}", {}, status, 1, objective, None)

    trials = [trial(0, "failed", None), trial(1, "succeeded", 0.5), trial(2, "running", None),
              trial(3, "succeeded", 0.2), trial(4, "succeeded", None), trial(5, "succeeded", 0.5)]
    assert sweep_results.best(trials, "max").job_id == "j1"       # 0.5 twice: the earlier
    assert sweep_results.best(trials, "min").job_id == "j3"
    assert sweep_results.best(trials[:1] + trials[2:3], "min") is None
    assert sweep_results.status(["succeeded", "running", "failed"]) == "running"
    assert sweep_results.status(["queued"]) == "running"
    assert sweep_results.status(["failed", "succeeded", "cancelled"]) == "succeeded"
    assert sweep_results.status(["failed", "cancelled"]) == "cancelled"
    assert sweep_results.status(["failed", "failed"]) == "failed"


def test_with_restored_best_weights_the_objective_is_the_restored_epochs(client, auth, session_factory):
    """Early stopping with restore_best_weights hands back an earlier epoch's weights: the version's metrics, and
    so the trial's objective, are that epoch's, not the last one's. Here no epoch improves on the third by
    min_delta, so the third epoch's weights are the version's (evaluate on the held-out rows agrees)."""
    ds, m = make_dataset(client, auth, XOR), make_model(client, auth)
    held_out = make_dataset(client, auth, XOR_VALIDATION)
    early_stopping = {"monitor": "val_loss", "patience": 100, "min_delta": 10.0, "start_from_epoch": 2,
                      "restore_best_weights": True}
    sweep = make_sweep(client, auth, m["id"], ds["id"], {"optimizer.learning_rate": [0.05, 0.2]},
                       {**BASE, "optimizer": "sgd", "epochs": 6, "early_stopping": early_stopping})
    for trial in sweep["trials"]:
        run_job_in_process(session_factory, trial["job_id"])
    got = _sweep(client, auth, sweep["id"])
    metrics = _version_metrics(client, auth, m["id"])
    for trial in got["trials"]:
        history = client.get(f"/v1/jobs/{trial['job_id']}", headers=auth).json()["history"]
        assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6]
        assert trial["objective"] == history[2]["val_loss"]
        assert metrics[trial["result_version"]]["val_loss"] == trial["objective"] != history[-1]["val_loss"]
        r = client.post(f"/v1/models/{m['id']}/evaluate", headers=auth,
                        json={"dataset_id": held_out["id"], "version": trial["result_version"]})
        assert r.status_code == 200, r.text
        assert math.isclose(r.json()["metrics"]["loss"], trial["objective"], rel_tol=1e-5)
    assert got["best"]["objective"] == min(t["objective"] for t in got["trials"])


def test_cancel_stops_every_unfinished_trial_as_a_job_cancel_does(client, auth, session_factory):
    ds, m = make_dataset(client, auth, XOR), make_model(client, auth)
    sweep = make_sweep(client, auth, m["id"], ds["id"], {"batch_size": [4, 8, 16]})
    running, done, queued = (t["job_id"] for t in sweep["trials"])
    run_job_in_process(session_factory, done)
    with session_factory() as s, s.begin():
        assert training_results.claim_job(s, running, "w1")
    r = client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=auth)
    assert r.status_code == 202, r.text
    assert [(t["status"]) for t in r.json()["trials"]] == ["running", "succeeded", "cancelled"]
    assert r.json()["status"] == "running"                      # until the worker stops the running trial
    job = client.get(f"/v1/jobs/{running}", headers=auth).json()
    assert job["status"] == "running" and job["cancel_requested"] is True
    assert client.get(f"/v1/jobs/{queued}", headers=auth).json()["finished_at"]
    with session_factory() as s, s.begin():
        assert not training_results.heartbeat(s, running, "w1")     # the worker sees the request
        assert training_results.cancel_running(s, running, "w1")
    got = _sweep(client, auth, sweep["id"])
    assert got["status"] == "succeeded" and got["best"]["job_id"] == done
    assert client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=auth).status_code == 202     # nothing left

    stopped = make_sweep(client, auth, m["id"], ds["id"], {"batch_size": [4, 8]})
    first, second = (t["job_id"] for t in stopped["trials"])
    with session_factory() as s, s.begin():
        assert training_results.claim_job(s, first, "w2")
        assert training_results.fail_job(s, first, "diverged", "loss became NaN", worker="w2")
    assert _sweep(client, auth, stopped["id"])["status"] == "running"
    r = client.post(f"/v1/sweeps/{stopped['id']}/cancel", headers=auth)
    assert r.json()["status"] == "cancelled" and r.json()["best"] is None
    assert [t["status"] for t in r.json()["trials"]] == ["failed", "cancelled"]

    failed = make_sweep(client, auth, m["id"], ds["id"], {"batch_size": [4]})
    job_id = failed["trials"][0]["job_id"]
    with session_factory() as s, s.begin():
        assert training_results.claim_job(s, job_id, "w3")
        assert training_results.fail_job(s, job_id, "diverged", "loss became NaN", worker="w3")
    assert _sweep(client, auth, failed["id"])["status"] == "failed"
    assert second


def test_delete_is_refused_while_a_trial_runs_and_keeps_the_jobs(client, auth, session_factory):
    ds, m = make_dataset(client, auth, XOR), make_model(client, auth)
    sweep = make_sweep(client, auth, m["id"], ds["id"], {"batch_size": [4, 8]})
    trained, waiting = (t["job_id"] for t in sweep["trials"])
    version = run_job_in_process(session_factory, trained)
    r = client.delete(f"/v1/sweeps/{sweep['id']}", headers=auth)
    assert r.status_code == 409 and waiting in r.json()["detail"], r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert _sweep(client, auth, sweep["id"])["trials"][1]["status"] == "queued"
    client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=auth)
    assert client.delete(f"/v1/sweeps/{sweep['id']}", headers=auth).status_code == 204
    assert client.get(f"/v1/sweeps/{sweep['id']}", headers=auth).status_code == 404
    assert client.delete(f"/v1/sweeps/{sweep['id']}", headers=auth).status_code == 404
    assert client.get(f"/v1/jobs/{trained}", headers=auth).json()["result_version"] == version
    assert client.get(f"/v1/jobs/{waiting}", headers=auth).json()["status"] == "cancelled"
    assert version in _version_metrics(client, auth, m["id"])
    with session_factory() as s:
        assert {(j.sweep_id, j.sweep_trial) for j in s.scalars(select(Job).where(Job.id.in_([trained, waiting])))} \
            == {(None, None)}


def test_lists_are_pages_newest_first_filtered_by_model(client, auth):
    ds = make_dataset(client, auth, XOR)
    m1, m2 = make_model(client, auth), make_model(client, auth)
    made = [make_sweep(client, auth, model["id"], ds["id"], {"batch_size": [4]}) for model in (m1, m2, m2)]
    page = client.get("/v1/sweeps", headers=auth).json()
    assert page["total"] == 3 and [s["id"] for s in page["items"]] == [s["id"] for s in reversed(made)]
    page = client.get("/v1/sweeps", headers=auth, params={"model_id": m2["id"], "limit": 1, "offset": 1}).json()
    assert page["total"] == 2 and [s["id"] for s in page["items"]] == [made[1]["id"]]
    assert client.get("/v1/sweeps", headers=auth, params={"limit": 0}).status_code == 422
    # deleting the model deletes its sweeps with its jobs
    assert client.delete(f"/v1/models/{m2['id']}", headers=auth).status_code == 204
    assert client.get("/v1/sweeps", headers=auth).json()["total"] == 1
    # the dataset cannot go while a trial waits for it; once it has gone, the sweep shows no dataset
    assert client.delete(f"/v1/datasets/{ds['id']}", headers=auth).status_code == 409
    client.post(f"/v1/sweeps/{made[0]['id']}/cancel", headers=auth)
    assert client.delete(f"/v1/datasets/{ds['id']}", headers=auth).status_code == 204
    assert _sweep(client, auth, made[0]["id"])["dataset_id"] is None


def test_another_owner_gets_404_everywhere(client, auth, other_auth, session_factory):
    ds, m = make_dataset(client, auth, XOR), make_model(client, auth)
    sweep = make_sweep(client, auth, m["id"], ds["id"], {"batch_size": [4, 8]})
    for method, path in (("GET", ""), ("POST", "/cancel"), ("DELETE", "")):
        r = client.request(method, f"/v1/sweeps/{sweep['id']}{path}", headers=other_auth)
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json"), r.text
        missing = client.request(method, f"/v1/sweeps/{'0' * 36}{path}", headers=other_auth)
        assert missing.status_code == 404 and missing.json()["title"] == r.json()["title"]
    assert client.get("/v1/sweeps", headers=other_auth).json() == {"items": [], "total": 0}
    assert client.get("/v1/sweeps", headers=other_auth, params={"model_id": m["id"]}).json()["total"] == 0
    r = _post(client, other_auth, m["id"], ds["id"], {"batch_size": [4]})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "model_id"]
    got = _sweep(client, auth, sweep["id"])         # untouched by the other owner
    assert got["status"] == "running" and [t["status"] for t in got["trials"]] == ["queued", "queued"]


def test_max_sweep_trials_is_a_setting_read_from_the_environment(monkeypatch):
    from pydantic import ValidationError

    from service.config import Settings

    assert Settings(_env_file=None).max_sweep_trials == 100
    monkeypatch.setenv("BACKPROP_MAX_SWEEP_TRIALS", "7")
    assert Settings().max_sweep_trials == 7
    monkeypatch.setenv("BACKPROP_MAX_SWEEP_TRIALS", "0")
    with pytest.raises(ValidationError, match="max_sweep_trials"):
        Settings()


def test_a_sweeps_trials_are_jobs_that_name_it(client, auth, session_factory):
    ds, m = make_dataset(client, auth, XOR), make_model(client, auth)
    make_job(client, auth, m["id"], ds["id"])                              # a job of no sweep
    sweep = make_sweep(client, auth, m["id"], ds["id"], {"batch_size": [4, 8]})
    listed = client.get(f"/v1/jobs?sweep_id={sweep['id']}", headers=auth).json()
    assert listed["total"] == 2
    assert sorted(j["id"] for j in listed["items"]) == sorted(t["job_id"] for t in sweep["trials"])
    assert {j["sweep_id"] for j in listed["items"]} == {sweep["id"]}
    assert client.get(f"/v1/jobs/{sweep['trials'][0]['job_id']}", headers=auth).json()["sweep_id"] == sweep["id"]
    for trial in sweep["trials"]:
        run_job_in_process(session_factory, trial["job_id"])
    assert client.delete(f"/v1/sweeps/{sweep['id']}", headers=auth).status_code == 204
    assert client.get(f"/v1/jobs?sweep_id={sweep['id']}", headers=auth).json()["total"] == 0
    assert client.get(f"/v1/jobs/{sweep['trials'][0]['job_id']}", headers=auth).json()["sweep_id"] is None

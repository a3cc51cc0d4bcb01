"""Jobs: validation before queueing, defaults filled in, queue, list/filter, cancel, checkpoints, versions."""
from __future__ import annotations

from service.db.models import Checkpoint, Job, ModelVersion
from service.services import job_history, training_results
from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

XOR = "a,b,y\n" + "\n".join(f"{i % 2},{(i // 2) % 2},{(i % 2) ^ ((i // 2) % 2)}" for i in range(40)) + "\n"
THREE = "a,b,y\n" + "\n".join(f"{i},{i * 2},{['r', 'g', 'b'][i % 3]}" for i in range(30)) + "\n"


def test_create_queues_with_defaults(client, auth, enqueued, session_factory):
    ds = make_dataset(client, auth, XOR)
    m = make_model(client, auth)
    job = make_job(client, auth, m["id"], ds["id"])
    assert job["status"] == "queued" and job["attempts"] == 0
    cfg = job["config"]
    assert cfg["loss"] == "categorical_crossentropy" and cfg["epochs"] == 2 and cfg["batch_size"] == 32
    assert cfg["optimizer"]["type"] == "rmsprop" and "learning_rate" in cfg["optimizer"]
    assert cfg["standardize"] is True and cfg["checkpoint_every"] == 1 and cfg["seed"] == 1
    assert job["progress"] == {"epoch": 0, "epochs": 2, "fraction": 0.0}
    assert job["history"] == [] and job["result_version"] is None and job["error"] is None
    assert enqueued[-1] == job["id"]
    with session_factory() as s:
        assert s.get(Job, job["id"]).enqueued_at is not None
    got = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert got["id"] == job["id"] and got["status"] == "queued"


def test_mismatches_are_422_before_queueing(client, auth, enqueued, session_factory):
    ds3 = make_dataset(client, auth, THREE)
    m2 = make_model(client, auth)  # 2 output units
    wide = make_model(client, auth, {"input_shape": [5], "layers": [{"type": "dense", "units": 3,
                                                                      "activation": "softmax"}]})
    before = (len(enqueued), _jobs(session_factory))
    cases = [
        ({"model_id": m2["id"], "dataset_id": ds3["id"], "loss": "categorical_crossentropy"}, ["body", "loss"]),
        ({"model_id": wide["id"], "dataset_id": ds3["id"], "loss": "categorical_crossentropy"}, ["body", "dataset_id"]),
        ({"model_id": m2["id"], "dataset_id": ds3["id"], "loss": "nope"}, ["body", "loss"]),
        ({"model_id": m2["id"], "dataset_id": ds3["id"], "loss": "mean_squared_error", "bogus": 1}, ["body", "bogus"]),
        ({"model_id": m2["id"], "dataset_id": ds3["id"], "loss": "mean_squared_error",
          "optimizer": {"type": "adam", "learning_rate": -1}}, ["body", "optimizer"]),
        ({"model_id": "nope", "dataset_id": ds3["id"], "loss": "mean_squared_error"}, ["body", "model_id"]),
        ({"model_id": m2["id"], "dataset_id": "nope", "loss": "mean_squared_error"}, ["body", "dataset_id"]),
        ({"model_id": m2["id"], "dataset_id": ds3["id"], "loss": "mean_squared_error", "epochs": 10**9},
         ["body", "epochs"]),
    ]
    for body, loc in cases:
        r = client.post("/v1/jobs", headers=auth, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["errors"][0]["loc"][: len(loc)] == loc, (body, r.json())
    assert (len(enqueued), _jobs(session_factory)) == before


def _jobs(session_factory) -> int:
    with session_factory() as s:
        return s.query(Job).count()


def test_list_filters_and_cancel(client, auth, session_factory):
    ds = make_dataset(client, auth, XOR)
    m1, m2 = make_model(client, auth), make_model(client, auth)
    j1 = make_job(client, auth, m1["id"], ds["id"])
    j2 = make_job(client, auth, m2["id"], ds["id"])
    j3 = make_job(client, auth, m2["id"], ds["id"])
    page = client.get("/v1/jobs", headers=auth).json()
    assert page["total"] == 3 and [j["id"] for j in page["items"]] == [j3["id"], j2["id"], j1["id"]]
    page = client.get(f"/v1/jobs?model_id={m2['id']}", headers=auth).json()
    assert page["total"] == 2
    # queued -> cancelled at once
    r = client.post(f"/v1/jobs/{j1['id']}/cancel", headers=auth)
    assert r.status_code == 202 and r.json()["status"] == "cancelled" and r.json()["finished_at"]
    assert client.post(f"/v1/jobs/{j1['id']}/cancel", headers=auth).status_code == 202
    # running -> cancel_requested
    with session_factory() as s, s.begin():
        assert training_results.claim_job(s, j2["id"], "w1")
    r = client.post(f"/v1/jobs/{j2['id']}/cancel", headers=auth)
    assert r.status_code == 202 and r.json()["status"] == "running" and r.json()["cancel_requested"] is True
    with session_factory() as s, s.begin():
        assert not training_results.heartbeat(s, j2["id"], "w1")
        assert training_results.cancel_running(s, j2["id"], "w1")
    assert client.get(f"/v1/jobs/{j2['id']}", headers=auth).json()["status"] == "cancelled"
    assert client.get("/v1/jobs?status=cancelled", headers=auth).json()["total"] == 2
    assert client.get("/v1/jobs?status=queued", headers=auth).json()["total"] == 1
    assert client.get("/v1/jobs?status=bogus", headers=auth).status_code == 422
    # a cancelled job cannot be claimed
    with session_factory() as s, s.begin():
        assert not training_results.claim_job(s, j1["id"], "w2")


def test_dataset_in_use_cannot_be_deleted(client, auth):
    ds = make_dataset(client, auth, XOR)
    job = make_job(client, auth, make_model(client, auth)["id"], ds["id"])
    r = client.delete(f"/v1/datasets/{ds['id']}", headers=auth)
    assert r.status_code == 409 and job["id"] in r.json()["detail"]
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert client.delete(f"/v1/datasets/{ds['id']}", headers=auth).status_code == 204


def test_training_versions_checkpoints_and_cascade(client, auth, session_factory):
    ds = make_dataset(client, auth, XOR)
    m = make_model(client, auth)
    versions = []
    for _ in range(3):
        job = make_job(client, auth, m["id"], ds["id"], epochs=5, checkpoint_every=1, validation_split=0.2)
        versions.append(run_job_in_process(session_factory, job["id"]))
    assert versions == [1, 2, 3]
    # the same job delivered again: claimed already, one version
    assert run_job_in_process(session_factory, job["id"]) is None
    with session_factory() as s, s.begin():
        assert training_results.complete_job(s, job["id"], b"x", {}) == 3
    got = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert got["status"] == "succeeded" and got["result_version"] == 3 and got["attempts"] == 1
    assert got["progress"] == {"epoch": 5, "epochs": 5, "fraction": 1.0}
    assert [h["epoch"] for h in got["history"]] == [1, 2, 3, 4, 5]
    assert {"loss", "val_loss", "learning_rate", "grad_norms", "seconds"} <= got["history"][0].keys()
    assert got["started_at"] and got["finished_at"]
    page = client.get(f"/v1/models/{m['id']}/versions", headers=auth).json()
    assert page["total"] == 3 and [v["version"] for v in page["items"]] == [3, 2, 1]
    assert page["items"][0]["job_id"] == job["id"] and "loss" in page["items"][0]["metrics"]
    assert client.get(f"/v1/models/{m['id']}", headers=auth).json()["latest_version"] == 3
    cks = client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=auth).json()
    # finished: the last and the best are kept
    assert 1 <= cks["total"] <= 2 and cks["items"][0]["epoch"] == 5 and cks["items"][0]["size_bytes"] > 0
    # deleting the model removes versions, jobs and checkpoints
    assert client.delete(f"/v1/models/{m['id']}", headers=auth).status_code == 204
    with session_factory() as s:
        assert s.query(ModelVersion).filter_by(model_id=m["id"]).count() == 0
        assert s.query(Job).filter_by(model_id=m["id"]).count() == 0
        assert s.query(Checkpoint).filter_by(job_id=job["id"]).count() == 0
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).status_code == 404


def test_checkpoint_retention_and_history_replacement(client, auth, session_factory):
    ds = make_dataset(client, auth, XOR)
    job = make_job(client, auth, make_model(client, auth)["id"], ds["id"], epochs=10)
    jid = job["id"]
    with session_factory() as s, s.begin():
        assert training_results.claim_job(s, jid, "w")
    losses = [5, 1, 4, 3, 2, 6]
    with session_factory() as s, s.begin():
        for epoch, loss in enumerate(losses, start=1):
            assert training_results.record_epoch(s, jid, {"loss": loss}, epoch, worker="w")
            assert training_results.save_checkpoint(s, jid, epoch, {"loss": loss}, b"ck%d" % epoch, worker="w")
        # a resumed attempt replays epoch 5: the history keeps each epoch once
        assert training_results.record_epoch(s, jid, {"loss": 2.5}, 5, worker="w")
        assert not training_results.record_epoch(s, jid, {"loss": 0}, 6, worker="someone-else")
    cks = client.get(f"/v1/jobs/{jid}/checkpoints", headers=auth).json()
    assert [c["epoch"] for c in cks["items"]] == [6, 5, 4, 2]
    assert [c["is_best"] for c in cks["items"]] == [False, False, False, True]
    with session_factory() as s:
        assert training_results.latest_checkpoint(s, jid) == (6, b"ck6")
    got = client.get(f"/v1/jobs/{jid}", headers=auth).json()
    assert [h["epoch"] for h in got["history"]] == [1, 2, 3, 4, 5] and got["progress"]["epoch"] == 5
    with session_factory() as s, s.begin():
        assert training_results.fail_job(s, jid, "diverged", "loss became NaN at epoch 6", worker="w")
    got = client.get(f"/v1/jobs/{jid}", headers=auth).json()
    assert got["status"] == "failed" and got["error"] == {"code": "diverged", "message": "loss became NaN at epoch 6"}
    assert client.post(f"/v1/jobs/{jid}/cancel", headers=auth).status_code == 409


def test_many_epochs_in_one_transaction_update_the_job_once(client, auth, session_factory):
    """The worker hands over the epochs since its last write together; they cost one UPDATE of the job (its
    progress), not one per epoch, and give the history that epoch-by-epoch calls give, replays of a dead
    attempt's epochs included."""
    from sqlalchemy import event

    ds = make_dataset(client, auth, XOR)
    jid = make_job(client, auth, make_model(client, auth)["id"], ds["id"], epochs=500)["id"]
    with session_factory() as s, s.begin():
        assert training_results.claim_job(s, jid, "w")
    with session_factory() as s, s.begin():
        assert training_results.record_epochs(s, jid, [{"loss": 1.0, "epoch": e} for e in range(1, 201)], "w")
    updates: list[str] = []

    def count(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE JOBS"):
            updates.append(statement)

    bind = session_factory.kw["bind"]
    event.listen(bind, "before_cursor_execute", count)
    try:
        with session_factory() as s, s.begin():     # replays 151..200 (a resumed attempt), then goes on
            rows = [{"loss": 0.5, "epoch": e} for e in range(151, 401)]
            assert training_results.record_epochs(s, jid, rows, "w")
    finally:
        event.remove(bind, "before_cursor_execute", count)
    assert len(updates) == 1, updates
    with session_factory() as s:
        history = job_history.load(s, jid)
        assert s.get(Job, jid).epoch == 400
    assert [r["epoch"] for r in history] == list(range(1, 401))
    assert {r["loss"] for r in history[:150]} == {1.0} and {r["loss"] for r in history[150:]} == {0.5}
    with session_factory() as s, s.begin():
        assert not training_results.record_epochs(s, jid, [{"loss": 0, "epoch": 401}], "someone-else")


def test_recording_an_epoch_does_not_carry_the_history_already_stored(client, auth, session_factory):
    """History rows live one per epoch in job_epochs: the write of epoch 3,001 sends that row and the job's
    progress, not the 3,000 rows before it (one JSON value rewritten whole made long jobs quadratic)."""
    from sqlalchemy import event

    ds = make_dataset(client, auth, XOR)
    jid = make_job(client, auth, make_model(client, auth)["id"], ds["id"], epochs=5000)["id"]
    row = {"loss": 0.25, "accuracy": 0.5, "learning_rate": 0.001, "grad_norms": {"dense": 0.1}, "seconds": 0.01}
    with session_factory() as s, s.begin():
        assert training_results.claim_job(s, jid, "w")
    with session_factory() as s, s.begin():
        assert training_results.record_epochs(s, jid, [{**row, "epoch": e} for e in range(1, 3001)], "w")
    sent: list[int] = []

    def measure(conn, cursor, statement, params, context, executemany):
        sent.append(len(statement) + len(repr(params)))

    bind = session_factory.kw["bind"]
    event.listen(bind, "before_cursor_execute", measure)
    try:
        with session_factory() as s, s.begin():
            assert training_results.record_epochs(s, jid, [{**row, "epoch": 3001}], "w")
    finally:
        event.remove(bind, "before_cursor_execute", measure)
    one_row = len(repr(row))
    assert sum(sent) < 40 * one_row, sent        # the 3,000 stored rows alone would be 3,000 of them
    with session_factory() as s:
        assert [r["epoch"] for r in job_history.load(s, jid)] == list(range(1, 3002))
        assert s.get(Job, jid).epoch == 3001
        assert [r["epoch"] for r in job_history.load(s, jid, after=2998)] == [2999, 3000, 3001]


def test_list_can_carry_only_the_tail_of_each_history(client, auth, session_factory):
    ds = make_dataset(client, auth, XOR)
    jid = make_job(client, auth, make_model(client, auth)["id"], ds["id"], epochs=50)["id"]
    with session_factory() as s, s.begin():
        assert training_results.claim_job(s, jid, "w")
        assert training_results.record_epochs(s, jid, [{"loss": 1.0 / e, "epoch": e} for e in range(1, 31)], "w")

    def listed(**params):
        r = client.get("/v1/jobs", headers=auth, params=params)
        assert r.status_code == 200, r.text
        return next(j for j in r.json()["items"] if j["id"] == jid)

    assert [row["epoch"] for row in listed()["history"]] == list(range(1, 31))       # the default: all
    assert [row["epoch"] for row in listed(history_tail=3)["history"]] == [28, 29, 30]
    assert listed(history_tail=0)["history"] == []
    assert len(listed(history_tail=1000)["history"]) == 30
    tail = listed(history_tail=1)
    assert tail["progress"] == {"epoch": 30, "epochs": 50, "fraction": 0.6} and tail["status"] == "running"
    assert client.get(f"/v1/jobs/{jid}", headers=auth).json()["history"] == listed()["history"]
    r = client.get("/v1/jobs", headers=auth, params={"history_tail": -1})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "history_tail"]


def test_one_job_can_carry_only_the_tail_of_its_history(client, auth, session_factory):
    ds = make_dataset(client, auth, XOR)
    jid = make_job(client, auth, make_model(client, auth)["id"], ds["id"], epochs=50)["id"]
    with session_factory() as s, s.begin():
        assert training_results.claim_job(s, jid, "w")
        assert training_results.record_epochs(s, jid, [{"loss": 1.0 / e, "epoch": e} for e in range(1, 31)], "w")

    def got(**params):
        r = client.get(f"/v1/jobs/{jid}", headers=auth, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    assert [row["epoch"] for row in got()["history"]] == list(range(1, 31))
    assert [row["epoch"] for row in got(history_tail=2)["history"]] == [29, 30]
    assert got(history_tail=0)["history"] == [] and got(history_tail=0)["progress"]["epoch"] == 30
    assert len(got(history_tail=10**6)["history"]) == 30
    r = client.get(f"/v1/jobs/{jid}", headers=auth, params={"history_tail": "x"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "history_tail"]


def test_a_version_restored_by_early_stopping_carries_its_epochs_metrics(client, auth, session_factory):
    """A version's metrics are the history row of the epoch whose weights it holds: the best one when early
    stopping restored its weights, not the last."""
    ds, m = make_dataset(client, auth, XOR), make_model(client, auth)
    job = make_job(client, auth, m["id"], ds["id"], epochs=12, validation_split=0.3, metrics=["accuracy"],
                   optimizer={"type": "adam", "learning_rate": 1.0}, seed=3,
                   early_stopping={"patience": 12, "restore_best_weights": True})
    run_job_in_process(session_factory, job["id"])
    history = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["history"]
    val_losses = [row["val_loss"] for row in history]
    best = history[val_losses.index(min(val_losses))]
    assert best["epoch"] < len(history)
    metrics = client.get(f"/v1/models/{m['id']}/versions", headers=auth).json()["items"][0]["metrics"]
    assert metrics == {k: v for k, v in best.items() if k not in ("epoch", "grad_norms", "seconds", "learning_rate")}

"""POST /v1/jobs/{id}/continue: a new queued job carrying a finished job's fit on from its latest checkpoint,
refused (409 or 422, saying why) where carrying on would not make sense."""
from __future__ import annotations

from sqlalchemy import update

from service.db.models import Job
from tests.api.helpers import MLP, make_dataset, make_job, make_model, run_job_in_process

XOR = "a,b,y\n" + "\n".join(f"{i % 2},{(i // 2) % 2},{(i % 2) ^ ((i // 2) % 2)}" for i in range(40)) + "\n"


def trained(client, auth, session_factory, **config):
    ds = make_dataset(client, auth, XOR)
    model = make_model(client, auth, MLP)
    job = make_job(client, auth, model["id"], ds["id"], epochs=3, **config)
    run_job_in_process(session_factory, job["id"])
    return job["id"], ds["id"]


def carry_on(client, auth, job_id, **body):
    return client.post(f"/v1/jobs/{job_id}/continue", headers=auth, json=body or None)


def set_job(session_factory, job_id, **values):
    with session_factory() as s, s.begin():
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def test_a_succeeded_job_goes_on_to_more_epochs(client, auth, session_factory, enqueued):
    job_id, _ = trained(client, auth, session_factory)
    r = carry_on(client, auth, job_id, epochs=7)
    assert r.status_code == 202, r.text
    new = r.json()
    assert new["status"] == "queued" and new["id"] != job_id and new["progress"]["epochs"] == 7
    assert new["config"]["continue_from"] == {"job_id": job_id, "epoch": 3} and new["config"]["epochs"] == 7
    assert new["id"] in enqueued
    # it starts where the checkpoint is: the source's first three epochs are its own, and so is its progress
    shown = client.get(f"/v1/jobs/{new['id']}", headers=auth).json()
    source = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
    assert shown["history"] == source["history"] and shown["progress"]["epoch"] == 3
    # the same number of epochs is nothing to do
    r = carry_on(client, auth, job_id)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "epochs"]


def test_a_cancelled_or_lost_job_is_finished_by_default(client, auth, session_factory):
    job_id, _ = trained(client, auth, session_factory)
    set_job(session_factory, job_id, status="cancelled", epochs=10, epoch=3, result_version=None)
    r = carry_on(client, auth, job_id)
    assert r.status_code == 202 and r.json()["config"]["epochs"] == 10
    set_job(session_factory, job_id, status="failed", error={"code": "worker_lost", "message": "lost"})
    assert carry_on(client, auth, job_id).status_code == 202


def test_what_cannot_be_carried_on_is_refused_saying_why(client, auth, other_auth, session_factory, app):
    job_id, ds_id = trained(client, auth, session_factory)
    assert carry_on(client, other_auth, job_id, epochs=9).status_code == 404
    for values, needle in [
        ({"status": "running"}, "goes on by itself"),
        ({"status": "queued"}, "goes on by itself"),
        ({"status": "failed", "error": {"code": "diverged", "message": "NaN"}}, "(diverged)"),
        ({"status": "succeeded", "epoch": 2, "error": None}, "early stopping ended"),
    ]:
        set_job(session_factory, job_id, **values)
        r = carry_on(client, auth, job_id, epochs=9)
        assert r.status_code == 409 and needle in r.json()["detail"], (values, r.text)
    set_job(session_factory, job_id, status="succeeded", epoch=3)
    old = app.state.settings.max_epochs
    app.state.settings.max_epochs = 5
    try:
        r = carry_on(client, auth, job_id, epochs=9)
    finally:
        app.state.settings.max_epochs = old
    assert r.status_code == 422 and "max_epochs=5" in r.json()["detail"]

    no_checkpoints, _ = trained(client, auth, session_factory, checkpoint_every=0)
    r = carry_on(client, auth, no_checkpoints, epochs=9)
    assert r.status_code == 409 and "no checkpoint" in r.json()["detail"]


def test_a_deleted_validation_dataset_is_named(client, auth, session_factory):
    ds = make_dataset(client, auth, XOR)
    held = make_dataset(client, auth, XOR)
    model = make_model(client, auth, MLP)
    job = make_job(client, auth, model["id"], ds["id"], epochs=3, validation_dataset_id=held["id"])
    run_job_in_process(session_factory, job["id"])
    assert client.delete(f"/v1/datasets/{held['id']}", headers=auth).status_code == 204
    r = carry_on(client, auth, job["id"], epochs=6)
    assert r.status_code == 409 and "validation dataset was deleted" in r.json()["detail"]

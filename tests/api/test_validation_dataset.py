"""validation_dataset_id on POST /v1/jobs: checked against the training dataset before anything is queued, kept
in the job's config, exclusive with validation_split, and protected from deletion while the job is active."""
from __future__ import annotations

import pytest

from tests.api.helpers import make_dataset, make_model

TRAIN = "a,b,y\n" + "\n".join(f"{i % 7},{i % 5},{'xyz'[i % 3]}" for i in range(60)) + "\n"


@pytest.fixture()
def ids(client, auth):
    train = make_dataset(client, auth, TRAIN)
    held = make_dataset(client, auth, "b,a,y\n" + "\n".join(f"{i % 5},{i % 7},{'zy'[i % 2]}" for i in range(20)))
    model = make_model(client, auth, {"input_shape": [2], "layers": [{"type": "dense", "units": 3,
                                                                      "activation": "softmax"}]})
    return {"model_id": model["id"], "dataset_id": train["id"], "validation_dataset_id": held["id"]}


def post(client, auth, ids, **config):
    return client.post("/v1/jobs", headers=auth, json={**ids, "loss": "sparse_categorical_crossentropy",
                                                       "epochs": 2, **config})


def test_a_held_out_dataset_validates_the_job(client, auth, ids):
    r = post(client, auth, ids, metrics=["accuracy"],
             early_stopping={"monitor": "val_accuracy", "patience": 2, "restore_best_weights": True})
    assert r.status_code == 202, r.text
    config = r.json()["config"]
    assert config["validation_dataset_id"] == ids["validation_dataset_id"] and config["validation_split"] == 0
    assert config["early_stopping"]["monitor"] == "val_accuracy"
    # while the job is queued its validation dataset cannot go; once cancelled it can
    held = ids["validation_dataset_id"]
    busy = client.delete(f"/v1/datasets/{held}", headers=auth)
    assert busy.status_code == 409 and r.json()["id"] in busy.json()["detail"]
    client.post(f"/v1/jobs/{r.json()['id']}/cancel", headers=auth)
    assert client.delete(f"/v1/datasets/{held}", headers=auth).status_code == 204


def test_without_validation_rows_val_monitors_are_refused(client, auth, ids):
    no_validation = {k: v for k, v in ids.items() if k != "validation_dataset_id"}
    r = post(client, auth, no_validation, early_stopping={"monitor": "val_loss"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "early_stopping", "monitor"]


def test_it_is_refused_beside_a_split_or_when_it_does_not_fit(client, auth, other_auth, ids):
    r = post(client, auth, ids, validation_split=0.2)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "validation_split"]
    cases = {
        "labels": ("a,b,y\n1,2,x\n3,4,emu\n5,6,x\n7,8,emu\n", "'emu'"),
        "width": ("a,b,c,y\n1,2,3,x\n4,5,6,y\n", "takes 2 values"),
        "task": ("a,b,y\n" + "\n".join(f"{i},{i},{i * 0.37}" for i in range(20)), "task=classification"),
    }
    for name, (csv, needle) in cases.items():
        other = make_dataset(client, auth, csv)
        r = post(client, auth, {**ids, "validation_dataset_id": other["id"]})
        assert r.status_code == 422, name
        assert needle in r.json()["detail"] and r.json()["errors"][0]["loc"] == ["body", "validation_dataset_id"]
    theirs = make_dataset(client, other_auth, TRAIN)
    r = post(client, auth, {**ids, "validation_dataset_id": theirs["id"]})
    assert r.status_code == 422 and "was not found" in r.json()["detail"]

"""A second owner's key sees none of the first owner's resources, on every operation of the OpenAPI document."""
from __future__ import annotations

from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

XOR = "a,b,y\n" + "\n".join(f"{i % 2},{(i // 2) % 2},{(i % 2) ^ ((i // 2) % 2)}" for i in range(20)) + "\n"

BODIES = {
    ("post", "/v1/models/{model_id}/predict"): {"inputs": [[0, 1]]},
    ("post", "/v1/models/{model_id}/explain"): {"inputs": [[0, 1]]},
    ("post", "/v1/jobs/{job_id}/cancel"): None,
    ("post", "/v1/models/{model_id}/evaluate"): {"dataset_id": "filled in below"},
    ("patch", "/v1/models/{model_id}"): {"serving_version": 1},
}


def test_every_operation_hides_other_owners_resources(client, auth, other_auth, session_factory):
    ds = make_dataset(client, auth, XOR)
    m = make_model(client, auth)
    done = make_job(client, auth, m["id"], ds["id"], epochs=1)
    run_job_in_process(session_factory, done["id"])
    job = make_job(client, auth, m["id"], ds["id"], epochs=1)  # stays queued
    sweep = client.post("/v1/sweeps", headers=auth, json={
        "model_id": m["id"], "dataset_id": ds["id"], "config": {"loss": "categorical_crossentropy", "epochs": 1},
        "grid": {"batch_size": [4, 8]}})
    assert sweep.status_code == 202, sweep.text
    ids = {"dataset_id": ds["id"], "model_id": m["id"], "job_id": job["id"], "sweep_id": sweep.json()["id"]}

    doc = client.get("/openapi.json").json()
    walked = 0
    for path, ops in doc["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method in ops:
            if "{" in path:
                url = path.format(**ids)
                kwargs = {}
                body = BODIES.get((method, path))
                if body is not None and "dataset_id" in body:
                    body = {**body, "dataset_id": ds["id"]}
                if body is not None:
                    kwargs["json"] = body
                r = client.request(method.upper(), url, headers=other_auth, **kwargs)
                assert r.status_code == 404, (method, path, r.status_code, r.text)
                assert r.headers["content-type"].startswith("application/problem+json")
                # exactly as if it did not exist
                missing = client.request(method.upper(), path.format(**{k: "0" * 8 for k in ids}),
                                         headers=other_auth, **kwargs)
                assert missing.status_code == 404 and missing.json()["title"] == r.json()["title"]
            elif method == "get":
                page = client.get(path, headers=other_auth).json()
                assert page == {"items": [], "total": 0}, path
            elif path == "/v1/jobs":
                r = client.post(path, headers=other_auth, json={"model_id": m["id"], "dataset_id": ds["id"],
                                                                 "loss": "categorical_crossentropy"})
                missing = client.post(path, headers=other_auth, json={"model_id": "x", "dataset_id": "y",
                                                                       "loss": "categorical_crossentropy"})
                assert r.status_code == missing.status_code == 422
                assert r.json()["errors"][0]["loc"] == missing.json()["errors"][0]["loc"] == ["body", "model_id"]
            elif path == "/v1/sweeps":
                sweep_body = {"config": {"loss": "categorical_crossentropy"}, "grid": {"batch_size": [4]}}
                r = client.post(path, headers=other_auth, json={"model_id": m["id"], "dataset_id": ds["id"],
                                                                 **sweep_body})
                missing = client.post(path, headers=other_auth, json={"model_id": "x", "dataset_id": "y",
                                                                       **sweep_body})
                assert r.status_code == missing.status_code == 422
                assert r.json()["errors"][0]["loc"] == missing.json()["errors"][0]["loc"] == ["body", "model_id"]
            else:
                continue  # creating in one's own namespace (datasets, models)
            walked += 1
    assert walked >= 17
    # and nothing was changed by the walk
    assert client.get(f"/v1/datasets/{ds['id']}", headers=auth).status_code == 200
    assert client.get(f"/v1/models/{m['id']}", headers=auth).json()["latest_version"] == 1
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["status"] == "queued"
    trials = client.get(f"/v1/sweeps/{ids['sweep_id']}", headers=auth).json()["trials"]
    assert [t["status"] for t in trials] == ["queued", "queued"]
    # a second owner's dataset cannot be used with the first owner's model either
    other_ds = make_dataset(client, other_auth, XOR)
    r = client.post("/v1/jobs", headers=other_auth, json={"model_id": m["id"], "dataset_id": other_ds["id"],
                                                          "loss": "categorical_crossentropy"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "model_id"]

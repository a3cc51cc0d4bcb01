"""GET /v1/datasets/{id}/export: a stored dataset back as .npz or CSV, which uploaded again (with the dataset's
task) is the same dataset to the bit, whatever form it first came in."""
from __future__ import annotations

import io

import numpy as np
import pytest
from sqlalchemy import select

from service.db.models import Dataset
from service.training_data import unpack_arrays

RNG = np.random.default_rng(11)


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _multipart(client, auth, content: bytes, filename: str, **fields):
    return client.post("/v1/datasets", headers=auth, data={"name": "d", **fields},
                       files={"file": (filename, content, "application/octet-stream")})


# Each: how the first upload is sent. Values that float32 cannot hold exactly (0.1, 1/3, 1e-40) on purpose.
ORIGINALS = {
    "csv, string labels with a comma": lambda c, a: _multipart(
        c, a, ("p,q,kind\n" + "\n".join(f"{i / 3},{0.1 * i},\"{'ab'[i % 2]}, {'xy'[i % 3 % 2]}\""
                                        for i in range(30))).encode(), "d.csv", target="kind"),
    "json, two regression targets": lambda c, a: c.post("/v1/datasets", headers=a, json={
        "name": "d", "features": RNG.normal(size=(25, 3)).tolist(), "targets": RNG.normal(size=(25, 2)).tolist(),
        "feature_names": ["a", "b", "c"], "target_names": ["u", "v"]}),
    "npz, images and integer labels": lambda c, a: _multipart(
        c, a, _npz(features=RNG.integers(0, 256, (20, 2, 3), dtype=np.uint8), targets=np.arange(20) % 4),
        "d.npz"),
    "npz, multilabel": lambda c, a: _multipart(
        c, a, _npz(features=RNG.normal(size=(16, 2)).astype(np.float32) * 1e-40,
                   targets=RNG.integers(0, 2, (16, 3)).astype(bool), target_names=np.array(["r", "s", "t"])),
        "d.npz"),
    "json, float labels as classes": lambda c, a: c.post("/v1/datasets", headers=a, json={
        "name": "d", "features": [[i] for i in range(12)], "targets": [0.5, 1.5, 2.25] * 4,
        "task": "classification"}),
}
SAME = ("task", "n_samples", "n_features", "input_shape", "feature_names", "target_names", "classes")


def _stored(session_factory, dataset_id: str):
    with session_factory() as s:
        return unpack_arrays(s.scalar(select(Dataset.data).where(Dataset.id == dataset_id)))


@pytest.mark.parametrize("fmt", ["npz", "csv"])
@pytest.mark.parametrize("original", list(ORIGINALS), ids=list(ORIGINALS))
def test_an_export_uploaded_again_is_the_same_dataset(client, auth, session_factory, original, fmt):
    first = ORIGINALS[original](client, auth)
    assert first.status_code == 201, first.text
    d = first.json()
    r = client.get(f"/v1/datasets/{d['id']}/export", headers=auth, params={"format": fmt})
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == f'attachment; filename="dataset-{d["id"]}.{fmt}"'
    if fmt == "npz":
        again = _multipart(client, auth, r.content, "again.npz", task=d["task"])
    else:
        assert r.headers["content-type"].startswith("text/csv")
        again = _multipart(client, auth, r.content, "again.csv", task=d["task"], target=",".join(d["target_names"]),
                           input_shape=",".join(map(str, d["input_shape"])))
    assert again.status_code == 201, again.text
    assert {k: again.json()[k] for k in SAME} == {k: d[k] for k in SAME}
    for a, b in zip(_stored(session_factory, again.json()["id"]), _stored(session_factory, d["id"])):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_a_long_csv_streams_in_chunks_with_every_row(client, auth):
    X = RNG.normal(size=(2500, 2)).astype(np.float32)
    d = _multipart(client, auth, _npz(features=X, targets=X[:, 0] * 2), "d.npz").json()
    with client.stream("GET", f"/v1/datasets/{d['id']}/export?format=csv", headers=auth) as r:
        chunks = list(r.iter_raw())
    text = b"".join(chunks).decode()
    lines = text.splitlines()
    assert lines[0] == "x0,x1,target" and len(lines) == 2501
    assert np.array_equal(np.array([line.split(",")[:2] for line in lines[1:]], dtype=np.float32), X)


def test_another_owners_dataset_is_404_and_formats_are_checked(client, auth, other_auth):
    d = ORIGINALS["json, float labels as classes"](client, auth).json()
    assert client.get(f"/v1/datasets/{d['id']}/export", headers=other_auth).status_code == 404
    assert client.get("/v1/datasets/nope/export", headers=auth).status_code == 404
    bad = client.get(f"/v1/datasets/{d['id']}/export?format=parquet", headers=auth)
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["query", "format"]

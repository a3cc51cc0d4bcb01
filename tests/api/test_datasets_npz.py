"""Datasets uploaded as a .npz archive (numpy.savez): the same dataset as the JSON form of the same rows, the
input shape carried by the features' dimensions, and every malformed or hostile archive refused with a 4xx that
names the array, row and column, with nothing stored."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from sqlalchemy import func, select

from service.db.models import Dataset
from service.training_data import unpack_arrays
from tests.api.helpers import make_job, make_model, run_job_in_process

RNG = np.random.default_rng(4)
X = np.round(RNG.normal(size=(60, 4)), 3).astype(np.float32)
LABELS = np.array(["cat", "dog", "emu"])[np.arange(60) % 3]


def archive(compressed: bool = False, **arrays) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def upload(client, auth, content: bytes, **fields):
    return client.post("/v1/datasets", headers=auth, data={"name": "arrays", **fields},
                       files={"file": ("data.npz", content, "application/octet-stream")})


def count(session_factory) -> int:
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(Dataset))


def stored(session_factory, dataset_id: str) -> tuple[np.ndarray, np.ndarray]:
    with session_factory() as s:
        return unpack_arrays(s.get(Dataset, dataset_id).data)


def test_an_archive_is_the_same_dataset_as_its_rows_in_json(client, auth, session_factory):
    r = upload(client, auth, archive(features=X, targets=LABELS))
    assert r.status_code == 201, r.text
    as_json = client.post("/v1/datasets", headers=auth, json={
        "name": "arrays", "features": X.tolist(), "targets": LABELS.tolist()})
    assert as_json.status_code == 201
    got, want = r.json(), as_json.json()
    for key in ("task", "n_samples", "n_features", "input_shape", "feature_names", "target_names", "classes",
                "size_bytes"):
        assert got[key] == want[key], key
    assert got["task"] == "classification" and got["classes"] == ["cat", "dog", "emu"]
    for a, b in zip(stored(session_factory, got["id"]), stored(session_factory, want["id"])):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_it_trains_and_predicts(client, auth, session_factory):
    ds = upload(client, auth, archive(compressed=True, features=X, targets=LABELS)).json()
    m = make_model(client, auth, {"input_shape": [4], "layers": [{"type": "dense", "units": 3,
                                                                  "activation": "softmax"}]})
    job = make_job(client, auth, m["id"], ds["id"], epochs=3)
    assert run_job_in_process(session_factory, job["id"]) == 1
    out = client.post(f"/v1/models/{m['id']}/predict", headers=auth, json={"inputs": X[:2].tolist()}).json()
    assert set(out["predictions"]) <= {"cat", "dog", "emu"}


def test_image_shaped_features_carry_their_input_shape(client, auth, session_factory):
    images = RNG.integers(0, 256, size=(20, 3, 5), dtype=np.uint8)
    digits = np.arange(20) % 2
    d = upload(client, auth, archive(features=images, targets=digits)).json()
    assert d["input_shape"] == [3, 5] and d["n_features"] == 15 and d["classes"] == [0, 1]
    Xs, _ = stored(session_factory, d["id"])
    assert Xs.shape == (20, 3, 5) and np.array_equal(Xs, images.astype(np.float32))
    # the form's input_shape wins when it holds the same features
    assert upload(client, auth, archive(features=images, targets=digits), input_shape="15").json()[
        "input_shape"] == [15]
    assert upload(client, auth, archive(features=images, targets=digits), input_shape="4,4").status_code == 422


def test_task_inference_names_and_layouts(client, auth, session_factory):
    multilabel = upload(client, auth, archive(features=X, targets=np.stack([X[:, 0] > 0, X[:, 1] > 0], axis=1),
                                              target_names=np.array(["p", "q"]),
                                              feature_names=np.array(["a", "b", "c", "d"])))
    assert multilabel.status_code == 201, multilabel.text
    d = multilabel.json()
    assert d["task"] == "multilabel" and d["classes"] == ["p", "q"] and d["feature_names"] == ["a", "b", "c", "d"]
    regression = upload(client, auth, archive(features=np.asfortranarray(X.astype(">f8")), targets=X[:, 0] * 2.5))
    assert regression.status_code == 201, regression.text
    r = regression.json()
    assert r["task"] == "regression" and r["target_names"] == ["target"]
    Xs, ys = stored(session_factory, r["id"])
    assert np.array_equal(Xs, X) and np.allclose(ys.ravel(), X[:, 0] * 2.5)
    forced = upload(client, auth, archive(features=X, targets=np.arange(60) % 3), task="regression").json()
    assert forced["task"] == "regression"


class _OpensAFile:
    """Unpickling this creates ``path``: the proof that a pickle inside the archive was never loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _zip(**members: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


BAD = {
    "no targets": (archive(features=X), ["body", "file", "targets"], "no targets.npy"),
    "no features": (archive(targets=LABELS), ["body", "file", "features"], "no features.npy"),
    "unknown array": (archive(features=X, targets=LABELS, X=X), ["body", "file", "X"], "'X.npy'"),
    "not npy": (_zip(**{"features.npy": b"1,2\n", "targets.npy": _npy(LABELS)}), ["body", "file", "features"],
                "not a .npy"),
    "truncated member": (_zip(**{"features.npy": _npy(X)[:-4], "targets.npy": _npy(LABELS)}),
                         ["body", "file", "features"], "does not match"),
    "string features": (archive(features=X.astype(str), targets=LABELS), ["body", "file", "features"], "dtype"),
    "complex targets": (archive(features=X, targets=LABELS.size * [1j]), ["body", "file", "targets"], "dtype"),
    "object names": (archive(features=X, targets=LABELS, feature_names=np.array(list("abcd"), dtype=object)),
                     ["body", "file", "feature_names"], "dtype"),
    "1-D features": (archive(features=X[:, 0], targets=LABELS), ["body", "file", "features"], "shape (60,)"),
    "row counts": (archive(features=X, targets=LABELS[:59]), ["body", "file", "targets"], "60 rows"),
    "nan": (archive(features=np.where(np.arange(240).reshape(60, 4) == 22, np.nan, X), targets=LABELS),
            ["body", "file", "features", 5, 2], "row 6, column 'x2'"),
    "beyond float32": (archive(features=np.where(np.arange(240).reshape(60, 4) == 9, 1e39, X.astype(float)),
                               targets=LABELS), ["body", "file", "features", 2, 1], "float32 range"),
    "one class": (archive(features=X, targets=np.zeros(60, int)), ["body", "file", "targets", "target"], "2 classes"),
    "feature names": (archive(features=X, targets=LABELS, feature_names=np.array(["a"])),
                      ["body", "file", "feature_names"], "1 names for 4"),
    "repeated name": (archive(features=X, targets=LABELS, feature_names=np.array(["a", "b", "a", "c"])),
                      ["body", "file", "feature_names"], "'a' appears more than once"),
    "feature named as the target": (archive(features=X, targets=LABELS, feature_names=np.array(["a", "b", "c",
                                                                                                "target"])),
                                    ["body", "file", "target_names"], "'target' names both"),
    "no rows": (archive(features=np.zeros((0, 4)), targets=np.zeros(0)), ["body", "file", "features"],
                "at least one row"),
    "corrupt zip": (archive(features=X, targets=LABELS)[:300], ["body", "file"], "not a readable .npz"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_archives_are_422_naming_the_place_and_store_nothing(client, auth, session_factory, case):
    content, loc, needle = BAD[case]
    before = count(session_factory)
    r = upload(client, auth, content)
    assert r.status_code == 422, r.text
    body = r.json()
    assert needle in body["detail"], body["detail"]
    assert body["errors"][0]["loc"] == loc
    assert count(session_factory) == before


def test_a_pickled_object_array_is_refused_unopened(client, auth, tmp_path):
    marker = tmp_path / "unpickled"
    targets = np.empty(60, dtype=object)
    targets[:] = "cat"
    targets[0] = _OpensAFile(marker)
    r = upload(client, auth, _zip(**{"features.npy": _npy(X), "targets.npy": _npy_pickled(targets)}))
    assert r.status_code == 422 and "dtype" in r.json()["detail"]
    assert not marker.exists()


def _npy_pickled(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def test_the_target_field_is_for_csv_only(client, auth):
    r = upload(client, auth, archive(features=X, targets=LABELS), target="y")
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "target"]


def test_a_compressed_archive_is_bounded_by_its_headers_not_inflated(client, auth, app, session_factory):
    # 4 MB of zeros compress to a few KB; with max_upload_bytes at 1 MB the header alone answers 413.
    bomb = archive(compressed=True, features=np.zeros((250_000, 4), np.float32), targets=np.arange(250_000) % 2)
    assert len(bomb) < 100_000
    old = app.state.settings.max_upload_bytes
    app.state.settings.max_upload_bytes = 1_000_000
    try:
        before = count(session_factory)
        r = upload(client, auth, bomb)
    finally:
        app.state.settings.max_upload_bytes = old
    assert r.status_code == 413 and "max_upload_bytes=1000000" in r.json()["detail"]
    assert count(session_factory) == before


def test_row_and_feature_limits_apply(client, auth, app):
    old = app.state.settings.max_rows
    app.state.settings.max_rows = 50
    try:
        r = upload(client, auth, archive(features=X, targets=LABELS))
    finally:
        app.state.settings.max_rows = old
    assert r.status_code == 422 and "max_rows=50" in r.json()["detail"]

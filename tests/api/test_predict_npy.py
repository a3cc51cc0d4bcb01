"""Predict with a .npy body (Content-Type: application/x-npy): the same answers as JSON rows, every layout numpy
writes, the version in the query, and every malformed or hostile array refused with a 4xx that says why."""
from __future__ import annotations

import io

import numpy as np
import pytest

from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

NPY = "application/x-npy"
# Values on a 1/4 grid: the same float64 whether they travel as JSON numbers or as float32, so that the two
# forms of one request must give the same bits.
ROWS = np.array([[0.5, 0.5], [4.5, -2.5], [8.5, -5.5], [1.25, -0.75]])
CSV = "a,b,c,d,y\n" + "\n".join(
    f"{(i % 3) * 2 + (i % 5) / 4},{(i % 7) / 4},{-(i % 3) + (i % 4) / 4},{(i % 2) / 2},{'xyz'[i % 3]}"
    for i in range(90)) + "\n"


def npy(array: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, **save)
    return buf.getvalue()


@pytest.fixture(scope="module")
def trained(client, make_key, session_factory):
    """A 2 x 2 image-shaped classifier over 4 features, trained in process."""
    auth = {"Authorization": f"Bearer {make_key('npy')}"}
    ds = make_dataset(client, auth, CSV, input_shape="2,2")
    m = make_model(client, auth, {"input_shape": [2, 2], "layers": [
        {"type": "flatten"}, {"type": "dense", "units": 8, "activation": "relu"},
        {"type": "dense", "units": 3, "activation": "softmax"}]})
    job = make_job(client, auth, m["id"], ds["id"], epochs=5, optimizer={"type": "adam", "learning_rate": 0.05})
    assert run_job_in_process(session_factory, job["id"]) == 1
    return auth, m["id"]


ROWS4 = np.concatenate([ROWS, ROWS[:, ::-1] * 2], axis=1)      # 4 rows of 4 features


def post(client, auth, model_id, content, query=""):
    return client.post(f"/v1/models/{model_id}/predict{query}", headers={**auth, "content-type": NPY},
                       content=content)


@pytest.mark.parametrize("array", [
    ROWS4.astype(np.float32), ROWS4, ROWS4.astype(">f8"), ROWS4.astype(np.float16), np.asfortranarray(ROWS4),
    ROWS4.reshape(4, 2, 2), (ROWS4 * 4).astype(np.int64) / 4,
], ids=["float32", "float64", "big-endian", "float16", "fortran", "image-shaped", "from-int"])
def test_npy_rows_answer_exactly_as_json_rows(client, trained, array):
    auth, model_id = trained
    expected = client.post(f"/v1/models/{model_id}/predict", headers=auth, json={"inputs": ROWS4.tolist()})
    assert expected.status_code == 200, expected.text
    r = post(client, auth, model_id, npy(array))
    assert r.status_code == 200, r.text
    assert r.json() == expected.json()


def test_integer_arrays_and_a_single_row(client, trained):
    auth, model_id = trained
    ints = np.array([[1, 2, 0, 1], [3, 0, 1, 0]], dtype=np.int32)
    as_json = client.post(f"/v1/models/{model_id}/predict", headers=auth, json={"inputs": ints.tolist()}).json()
    assert post(client, auth, model_id, npy(ints)).json() == as_json
    one = post(client, auth, model_id, npy(ints[1]))                  # 1-D: one row
    assert one.status_code == 200, one.text
    assert one.json()["predictions"] == as_json["predictions"][1:]
    # one row goes through a matrix-vector product, a batch through a matrix-matrix one: on some BLAS kernels
    # (OpenBLAS's Haswell kernel on an AMD Zen 3 host) their float32 sums round differently in the last bits
    assert one.json()["probabilities"] == [pytest.approx(p, rel=1e-5, abs=1e-7)
                                           for p in as_json["probabilities"][1:]]


def test_the_version_comes_from_the_query(client, trained):
    auth, model_id = trained
    body = npy(ROWS4)
    ok = post(client, auth, model_id, body, "?version=1")
    assert ok.status_code == 200 and ok.json()["version"] == 1
    missing = post(client, auth, model_id, body, "?version=9")
    assert missing.status_code == 404
    # A JSON body may carry it either way, but not two different ones.
    url = f"/v1/models/{model_id}/predict"
    assert client.post(url + "?version=9", headers=auth, json={"inputs": ROWS4.tolist()}).status_code == 404
    assert client.post(url + "?version=1", headers=auth, json={"inputs": ROWS4.tolist(), "version": 1}).json()[
        "version"] == 1
    both = client.post(url + "?version=2", headers=auth, json={"inputs": ROWS4.tolist(), "version": 1})
    assert both.status_code == 422
    assert both.json()["errors"][0]["loc"] == ["query", "version"]


def test_another_owners_model_is_404(client, trained, other_auth):
    _, model_id = trained
    assert post(client, other_auth, model_id, npy(ROWS4)).status_code == 404


class _OpensAFile:
    """Unpickling this creates ``path``: the proof that a pickle inside an array was never loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _with_header(header: bytes, data: bytes = b"") -> bytes:
    header = header + b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


BAD = {
    "structured": (npy(np.zeros((2, 4), dtype=[("a", "f4"), ("b", "f4")])), "dtype"),
    "complex": (npy(ROWS4.astype(np.complex64)), "dtype"),
    "bool": (npy(ROWS4 > 1), "dtype"),
    "strings": (npy(np.array([["1", "2", "3", "4"]])), "dtype"),
    "1-D structured": (npy(np.zeros(2, dtype=[("a", "f4"), ("b", "f4")])), "dtype"),
    "datetime": (npy(np.zeros((1, 4), "datetime64[s]")), "dtype"),
    "void": (npy(np.zeros((1, 4), "V4")), "dtype"),
    "scalar": (npy(np.float32(1.0)), "scalar"),
    "truncated": (npy(ROWS4)[:-8], "bytes"),
    "trailing bytes": (npy(ROWS4) + b"\0" * 8, "bytes"),
    "not npy": (b"1,2,3,4\n", "not a .npy"),
    "empty body": (b"", "not a .npy"),
    "bad header": (_with_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4), 'x': os}"),
                   "not a .npy"),
    "version 9": (b"\x93NUMPY\x09\x00" + npy(ROWS4)[8:], "not a .npy"),
    "huge header": (b"\x93NUMPY\x02\x00" + (200_000).to_bytes(4, "little") + b" " * 200_000, "not a .npy"),
    "row width": (npy(np.zeros((2, 3), np.float32)), "shape (3,)"),
    "row shape": (npy(np.zeros((2, 4, 1), np.float32)), "shape (4, 1)"),
    "no rows": (npy(np.zeros((0, 4), np.float32)), "no rows"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_malformed_arrays_are_422_saying_why(client, trained, case):
    auth, model_id = trained
    content, needle = BAD[case]
    r = post(client, auth, model_id, content)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert needle in body["detail"], body["detail"]
    assert body["errors"][0]["loc"] == ["body"]


def test_a_pickled_object_array_is_refused_unopened(client, trained, tmp_path):
    auth, model_id = trained
    marker = tmp_path / "unpickled"
    evil = np.empty((1, 4), dtype=object)
    evil[0, 0] = _OpensAFile(marker)
    r = post(client, auth, model_id, npy(evil, allow_pickle=True))
    assert r.status_code == 422 and "dtype" in r.json()["detail"]
    assert not marker.exists()


@pytest.mark.parametrize("value,row", [(np.nan, 3), (np.inf, 1), (-np.inf, 4)])
def test_non_finite_values_name_their_row(client, trained, value, row):
    auth, model_id = trained
    rows = ROWS4.astype(np.float32)
    rows[row - 1, 2] = value
    r = post(client, auth, model_id, npy(rows))
    assert r.status_code == 422
    assert f"row {row} " in r.json()["detail"]
    assert r.json()["errors"][0]["loc"] == ["body", row - 1]


def test_the_row_limit_is_read_from_the_header(client, trained, app):
    auth, model_id = trained
    # A header that claims 10^12 rows in front of 16 bytes: 413 from the header, nothing allocated.
    liar = _with_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 4), }", b"\0" * 16)
    r = post(client, auth, model_id, liar)
    assert r.status_code == 413 and "max_predict_rows" in r.json()["detail"]
    old = app.state.settings.max_predict_rows
    app.state.settings.max_predict_rows = 2
    try:
        assert post(client, auth, model_id, npy(ROWS4[:2])).status_code == 200
        r = post(client, auth, model_id, npy(ROWS4[:3]))
    finally:
        app.state.settings.max_predict_rows = old
    assert r.status_code == 413 and "max_predict_rows=2" in r.json()["detail"]


def test_openapi_documents_the_npy_body_and_the_version_query(client):
    op = client.get("/openapi.json").json()["paths"]["/v1/models/{model_id}/predict"]["post"]
    content = op["requestBody"]["content"]
    assert set(content) == {"application/json", NPY}
    assert content[NPY]["schema"]["format"] == "binary"
    assert any(p["name"] == "version" and p["in"] == "query" for p in op["parameters"])


def test_the_media_type_is_read_without_case_or_parameters(client, trained):
    auth, model_id = trained
    r = client.post(f"/v1/models/{model_id}/predict", content=npy(ROWS4),
                    headers={**auth, "content-type": "Application/X-NPY; charset=binary"})
    assert r.status_code == 200, r.text

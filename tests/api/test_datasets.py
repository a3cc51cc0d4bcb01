"""Dataset upload (CSV and JSON), task inference, rejections that store nothing, listing and deletion."""
from __future__ import annotations

import io

import numpy as np
import pytest

from service.db.models import Dataset


def upload(client, auth, text: str | bytes, target="y", name="d", **fields):
    data = {"name": name, "target": target, **fields}
    raw = text.encode() if isinstance(text, str) else text
    return client.post("/v1/datasets", headers=auth, data=data, files={"file": ("d.csv", raw, "text/csv")})


def count(session_factory) -> int:
    with session_factory() as s:
        return s.query(Dataset).count()


def test_csv_string_labels_classification(client, auth, session_factory):
    csv = "a,b,y\n1,2,cat\n3,4,dog\n5,6,cat\n7,8,bird\n"
    r = upload(client, auth, csv)
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["task"] == "classification"
    assert d["classes"] == ["bird", "cat", "dog"]
    assert d["n_samples"] == 4 and d["n_features"] == 2
    assert d["feature_names"] == ["a", "b"] and d["target_names"] == ["y"]
    assert d["input_shape"] == [2]
    assert d["size_bytes"] > 0 and d["created_at"].endswith(("Z", "+00:00"))
    with session_factory() as s:
        row = s.get(Dataset, d["id"])
        with np.load(io.BytesIO(row.data), allow_pickle=False) as npz:
            assert npz["X"].dtype == np.float32 and npz["X"].shape == (4, 2)
            assert npz["y"].tolist() == [1, 2, 1, 0]


def test_csv_integer_labels_stay_ints(client, auth):
    rows = "\n".join(f"{i},{i * 2},{i % 3}" for i in range(12))
    d = upload(client, auth, "a,b,y\n" + rows + "\n").json()
    assert d["task"] == "classification" and d["classes"] == [0, 1, 2]


def test_csv_regression_and_multilabel_inference(client, auth):
    rows = "\n".join(f"{i},{i * 0.5 + 0.25}" for i in range(10))
    d = upload(client, auth, "a,y\n" + rows).json()
    assert d["task"] == "regression" and d["classes"] is None
    rows = "\n".join(f"{i},{i % 2},{(i // 2) % 2}" for i in range(8))
    d = upload(client, auth, "a,p,q\n" + rows, target="p,q").json()
    assert d["task"] == "multilabel" and d["classes"] == ["p", "q"] and d["target_names"] == ["p", "q"]
    rows = "\n".join(f"{i},{i * 1.5},{i * 2.5}" for i in range(8))
    d = upload(client, auth, "a,p,q\n" + rows, target="p,q").json()
    assert d["task"] == "regression" and d["target_names"] == ["p", "q"]


def test_explicit_task_and_input_shape(client, auth):
    header = ",".join(f"p{i}" for i in range(4)) + ",y"
    rows = "\n".join(",".join(str(v) for v in [1, 2, 3, 4, i]) for i in range(6))
    d = upload(client, auth, header + "\n" + rows, task="regression", input_shape="2,2").json()
    assert d["task"] == "regression" and d["input_shape"] == [2, 2]
    r = upload(client, auth, header + "\n" + rows, input_shape="3,3")
    assert r.status_code == 422 and "input_shape" in r.json()["detail"]


def test_bom_and_crlf_and_quotes(client, auth):
    csv = "\ufeffa,b,y\r\n\"1\",2,x\r\n3,4,\"y, z\"\r\n"
    d = upload(client, auth, csv.encode("utf-8")).json()
    assert d["feature_names"] == ["a", "b"] and d["classes"] == ["x", "y, z"]


@pytest.mark.parametrize(
    "csv,target,needle,loc_tail",
    [
        ("a,b,y\n1,2,0\n3,4\n", "y", "row 2", [2]),
        ("a,b,y\n1,2,0\n3,oops,1\n", "y", "row 2", [2, "b"]),
        ("a,b,y\n1,2,0\n3,nan,1\n", "y", "NaN", [2, "b"]),
        ("a,b,y\n1,2,0\n3,inf,1\n", "y", "infinite", [2, "b"]),
        ("", "y", "empty", []),
        ("a,b,y\n", "y", "no data rows", []),
        ("a,b,y\n1,2,0\n3,4,1\n", "label", "'label'", None),
        ("a,b,y\n1,2,7\n3,4,7\n", "y", "2 classes", None),
        ("a,b,y\n1,2,0\n3,,1\n", "y", "row 2", [2, "b"]),
    ],
    ids=["ragged", "non-numeric", "nan", "inf", "empty", "header-only", "missing-target", "one-class", "blank-cell"],
)
def test_bad_csv_is_422_naming_the_place_and_stores_nothing(client, auth, session_factory, csv, target, needle, loc_tail):
    before = count(session_factory)
    r = upload(client, auth, csv, target=target)
    assert r.status_code == 422, r.text
    body = r.json()
    assert needle in body["detail"], body
    assert body["errors"] and "loc" in body["errors"][0]
    if loc_tail is not None:
        loc = body["errors"][0]["loc"]
        assert loc[: 2 + len(loc_tail)] == ["body", "file", *loc_tail]
    assert count(session_factory) == before


def test_non_utf8_and_binary_are_422(client, auth):
    assert upload(client, auth, b"a,b,y\n1,2,\xff\xfe\n").status_code == 422
    assert upload(client, auth, b"\x00\x01\x02garbage").status_code == 422


def test_multipart_missing_fields(client, auth):
    r = client.post("/v1/datasets", headers=auth, data={"name": "x"}, files={"file": ("d.csv", b"a,y\n1,0\n")})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "target"]
    r = client.post("/v1/datasets", headers=auth, data={"name": "x", "target": "y"})
    assert r.status_code == 422


def test_unsupported_media_type(client, auth):
    r = client.post("/v1/datasets", headers={**auth, "content-type": "text/plain"}, content=b"hello")
    assert r.status_code == 415


def test_json_dataset(client, auth):
    body = {"name": "j", "features": [[0, 0], [0, 1], [1, 0], [1, 1]], "targets": [0, 1, 1, 0]}
    r = client.post("/v1/datasets", headers=auth, json=body)
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["task"] == "classification" and d["classes"] == [0, 1] and d["feature_names"] == ["x0", "x1"]
    body = {"name": "j2", "features": [[0.5], [1.5], [2.5]], "targets": [[0.1, 1.0], [0.2, 2.0], [0.3, 3.0]],
            "feature_names": ["t"], "target_names": ["u", "v"]}
    d = client.post("/v1/datasets", headers=auth, json=body).json()
    assert d["task"] == "regression" and d["target_names"] == ["u", "v"] and d["feature_names"] == ["t"]


@pytest.mark.parametrize(
    "features,targets,loc,names",
    [
        ([[1, 2], [3]], [0, 1], ["body", "features", 1], {}),
        ([[1, 2], [3, "x"]], [0, 1], ["body", "features", 1, 1], {}),
        ([[1, 2], [3, 4]], [0], ["body", "targets"], {}),
        ([[1, 2], [3, 4]], ["a", "a"], ["body", "targets", "target"], {}),
        ([], [], ["body", "features"], {}),
        ([[1, 2], [3, 4]], [0, 1], ["body", "feature_names"], {"feature_names": ["a", "a"]}),
        ([[1, 2], [3, 4]], [0, 1], ["body", "target_names"], {"feature_names": ["a", "target"]}),
        ([[1, 2], [3, 4]], [[0, 1], [1, 0]], ["body", "target_names"], {"target_names": ["p", "p"]}),
    ],
    ids=["ragged", "string", "count", "one-class", "empty", "repeated-feature", "feature-is-target",
         "repeated-target"],
)
def test_bad_json_dataset(client, auth, session_factory, features, targets, loc, names):
    before = count(session_factory)
    r = client.post("/v1/datasets", headers=auth, json={"name": "b", "features": features, "targets": targets,
                                                        **names})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"][: len(loc)] == loc
    assert count(session_factory) == before


def test_json_nan_is_422(client, auth):
    raw = b'{"name": "n", "features": [[1.0], [NaN]], "targets": [0, 1]}'
    r = client.post("/v1/datasets", headers={**auth, "content-type": "application/json"}, content=raw)
    assert r.status_code == 422 and "NaN" in r.json()["detail"]


def test_list_get_delete_newest_first(client, auth):
    ids = [upload(client, auth, "a,y\n1,0\n2,1\n", name=f"n{i}").json()["id"] for i in range(3)]
    page = client.get("/v1/datasets", headers=auth).json()
    assert page["total"] == 3 and [d["id"] for d in page["items"]] == ids[::-1]
    page = client.get("/v1/datasets?limit=1&offset=1", headers=auth).json()
    assert page["total"] == 3 and [d["id"] for d in page["items"]] == [ids[1]]
    assert client.get(f"/v1/datasets/{ids[0]}", headers=auth).json()["name"] == "n0"
    assert client.delete(f"/v1/datasets/{ids[0]}", headers=auth).status_code == 204
    assert client.get(f"/v1/datasets/{ids[0]}", headers=auth).status_code == 404
    assert client.delete(f"/v1/datasets/{ids[0]}", headers=auth).status_code == 404

"""A corpus of malformed requests: each gets a 4xx problem+json, stores nothing, and leaves the service healthy.

Every case runs on SQLite and PostgreSQL. After each one: ``/healthz`` answers 200, a normal authenticated
request still works, and the counts of datasets, models, model versions, jobs and checkpoints are unchanged.
The CSV oddities a real file has (BOM, quoted commas, CRLF) are accepted and parsed right, in their own tests.
"""
from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from service.db.models import Checkpoint, Dataset, Job, Model, ModelVersion
from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

XOR = "a,b,y\n" + "\n".join(f"{i % 2},{(i // 2) % 2},{(i % 2) ^ ((i // 2) % 2)}" for i in range(20)) + "\n"
TABLES = (Dataset, Model, ModelVersion, Job, Checkpoint)
DEEP = 10_000


def counts(session_factory) -> dict[str, int]:
    with session_factory() as s:
        return {t.__tablename__: s.scalar(select(func.count()).select_from(t)) for t in TABLES}


@pytest.fixture(scope="module")
def owner(make_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key('corpus')}"}


@pytest.fixture(scope="module")
def trained(client, owner, session_factory) -> dict[str, str]:
    ds = make_dataset(client, owner, XOR)
    m = make_model(client, owner)
    job = make_job(client, owner, m["id"], ds["id"], epochs=1)
    assert run_job_in_process(session_factory, job["id"]) == 1
    return {"dataset_id": ds["id"], "model_id": m["id"], "job_id": job["id"]}


# ------------------------------------------------------------------------------------------------ the corpus
def _npz_with_object_array() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, X=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    return buf.getvalue()


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("d.csv", "a,y\n1,0\n2,1\n")
    return buf.getvalue()


WIDE = 1_000_000
#: name -> (file bytes, extra form fields)
CSV_CASES: dict[str, tuple[bytes, dict[str, str]]] = {
    "binary-garbage": (bytes(range(256)) * 64, {}),
    "random-bytes": (np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes(), {}),
    "latin-1": ("a,y\ncafé,0\n1,1\n".encode("latin-1"), {}),
    "utf-16": ("a,y\n1,0\n2,1\n".encode("utf-16"), {}),
    "nul-bytes": (b"a,y\n1\x00,0\n2,1\n", {}),
    "zip-archive": (_zip_bytes(), {}),
    "npz-with-object-array": (_npz_with_object_array(), {}),
    "html-page": (b"<!doctype html><html><body><table><tr><td>1</td></tr></table></body></html>", {}),
    "huge-field-10MB": (b"a,y\n" + b"1" * 10_000_000 + b",0\n2,1\n", {}),
    "huge-quoted-field-10MB": (b'a,y\n"' + b"1," * 5_000_000 + b'",0\n2,1\n', {}),
    "million-columns": (b",".join(b"c%d" % i for i in range(WIDE)) + b",y\n" + b"0," * WIDE + b"1\n", {}),
    "million-quoted-columns": (b",".join(b'"c%d"' % i for i in range(WIDE)) + b',"y"\n' + b"0," * WIDE + b"1\n",
                               {}),
    "million-fields-in-one-row": (b"a,y\n" + b"0," * WIDE + b"1\n", {}),
    "empty-file": (b"", {}),
    "only-blank-lines": (b"\n\n\r\n\n", {}),
    "header-only": (b"a,y\n", {}),
    "ragged-row": (b"a,b,y\n1,2,0\n3,1\n", {}),
    "unclosed-quote": (b'a,y\n"1,0\n2,1\n', {}),
    "nan-feature": (b"a,y\nnan,0\n1,1\n", {}),
    "infinite-feature": (b"a,y\ninf,0\n1,1\n", {}),
    "1e400-feature": (b"a,y\n1e400,0\n1,1\n", {}),
    "1e400-regression-target": (b"a,y\n1,1e400\n2,0.5\n", {"task": "regression"}),
    "5000-digit-integer": (b"a,y\n" + b"9" * 5000 + b",0\n1,1\n", {}),
    "text-feature": (b"a,y\nabc,0\n1,1\n", {}),
    "empty-feature-cell": (b"a,b,y\n,1,0\n1,2,1\n", {}),
    "empty-target-cell": (b"a,y\n1,\n2,1\n", {}),
    "single-class": (b"a,y\n1,0\n2,0\n", {}),
    "duplicate-column": (b"a,a,y\n1,2,0\n3,4,1\n", {}),
    "every-column-a-target": (b"y\n0\n1\n", {}),
    "missing-target-column": (b"a,b\n1,2\n3,4\n", {}),
    "multilabel-not-0-1": (b"a,y1,y2\n1,0,2\n2,1,0\n", {"target": "y1,y2", "task": "multilabel"}),
    "string-regression-target": (b"a,y\n1,cat\n2,dog\n", {"task": "regression"}),
    "unknown-task": (XOR.encode(), {"task": "clustering"}),
    "input-shape-not-integers": (XOR.encode(), {"input_shape": "2,a"}),
    "input-shape-wrong-product": (XOR.encode(), {"input_shape": "3"}),
    "input-shape-negative": (XOR.encode(), {"input_shape": "-1,-2"}),
    "input-shape-huge": (XOR.encode(), {"input_shape": "9" * 400}),
    "empty-name": (XOR.encode(), {"name": "   "}),
    "empty-target": (XOR.encode(), {"target": " , "}),
}


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "XyZ") -> tuple[bytes, str]:
    out = b""
    for name, filename, value in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


Request = Callable[[Any, dict[str, str], dict[str, str]], Any]


def _raw(method: str, path: str, body: bytes | str, ctype: str = "application/json") -> Request:
    data = body.encode() if isinstance(body, str) else body

    def send(client, auth, ids):
        return client.request(method, path.format(**ids), headers={**auth, "content-type": ctype}, content=data)

    return send


def _json(method: str, path: str, payload: Any) -> Request:
    def send(client, auth, ids):
        body = payload(ids) if callable(payload) else payload
        return client.request(method, path.format(**ids), headers=auth, json=body)

    return send


def _form(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]] | None) -> Request:
    def send(client, auth, ids):
        return client.post("/v1/datasets", headers=auth, data=fields, files=files)

    return send


def _multipart_raw(parts: list[tuple[str, str | None, bytes]], boundary: str = "XyZ", declared: str | None = None
                   ) -> Request:
    body, ctype = _multipart(parts, boundary)
    return _raw("POST", "/v1/datasets", body, declared or ctype)


def _job(**over: Any) -> Callable[[dict[str, str]], dict[str, Any]]:
    return lambda ids: {"model_id": ids["model_id"], "dataset_id": ids["dataset_id"],
                        "loss": "categorical_crossentropy", **over}


def _deep_array(n: int = DEEP) -> str:
    return "[" * n + "]" * n


def _deep_object(n: int = DEEP) -> str:
    return '{"a":' * n + "1" + "}" * n


BODY_ROUTES = {
    "datasets": "/v1/datasets",
    "models": "/v1/models",
    "jobs": "/v1/jobs",
    "predict": "/v1/models/{model_id}/predict",
}
MLP_LAYERS = [{"type": "dense", "units": 2, "activation": "softmax"}]

REQUESTS: dict[str, Request] = {}
# Broken or hostile JSON bodies, on every route that takes one.
for route, path in BODY_ROUTES.items():
    REQUESTS.update({
        f"{route}:nested-10000-arrays": _raw("POST", path, _deep_array()),
        f"{route}:nested-10000-objects": _raw("POST", path, _deep_object()),
        f"{route}:invalid-json": _raw("POST", path, '{"name": "x",'),
        f"{route}:trailing-garbage": _raw("POST", path, '{"name": "x"} trailing'),
        f"{route}:not-utf8": _raw("POST", path, b'{"name": "\xff\xfe"}'),
        f"{route}:empty-body": _raw("POST", path, b""),
        f"{route}:null": _raw("POST", path, "null"),
        f"{route}:array-not-object": _raw("POST", path, "[]"),
        f"{route}:string-not-object": _raw("POST", path, '"hello"'),
        f"{route}:number-not-object": _raw("POST", path, "1e400"),
        f"{route}:binary-garbage": _raw("POST", path, bytes(range(256)) * 16),
        f"{route}:xml": _raw("POST", path, "<model><name>x</name></model>", "application/xml"),
    })
# Wrong types, absurd numbers and sizes, field by field.
REQUESTS.update({
    # datasets (JSON form)
    "datasets:1e400-feature": _raw("POST", "/v1/datasets", '{"name":"x","features":[[1e400],[1]],"targets":[0,1]}'),
    "datasets:NaN-literal": _raw("POST", "/v1/datasets", '{"name":"x","features":[[NaN],[1]],"targets":[0,1]}'),
    "datasets:Infinity-literal": _raw("POST", "/v1/datasets",
                                      '{"name":"x","features":[[-Infinity],[1]],"targets":[0,1]}'),
    "datasets:400-digit-integer-feature": _raw("POST", "/v1/datasets",
                                               '{"name":"x","features":[[%s],[1]],"targets":[0,1]}' % ("9" * 400)),
    "datasets:400-digit-integer-target": _raw("POST", "/v1/datasets",
                                              '{"name":"x","features":[[0],[1]],"targets":[%s,1]}' % ("9" * 400)),
    "datasets:5000-digit-integer": _raw("POST", "/v1/datasets",
                                        '{"name":"x","features":[[%s],[1]],"targets":[0,1]}' % ("9" * 5000)),
    "datasets:strings-for-numbers": _json("POST", "/v1/datasets", {"name": "x", "features": [["1"], ["2"]],
                                                                    "targets": [0, 1]}),
    "datasets:bools-for-numbers": _json("POST", "/v1/datasets", {"name": "x", "features": [[True], [False]],
                                                                  "targets": [0, 1]}),
    "datasets:null-features": _json("POST", "/v1/datasets", {"name": "x", "features": None, "targets": [0, 1]}),
    "datasets:object-for-array": _json("POST", "/v1/datasets", {"name": "x", "features": {"a": [1, 2]},
                                                                 "targets": [0, 1]}),
    "datasets:flat-features": _json("POST", "/v1/datasets", {"name": "x", "features": [1, 2], "targets": [0, 1]}),
    "datasets:object-targets": _json("POST", "/v1/datasets", {"name": "x", "features": [[1], [2]],
                                                               "targets": [{"a": 1}, {"b": 2}]}),
    "datasets:null-targets": _json("POST", "/v1/datasets", {"name": "x", "features": [[1], [2]],
                                                             "targets": [None, None]}),
    "datasets:ragged": _json("POST", "/v1/datasets", {"name": "x", "features": [[1, 2], [3]], "targets": [0, 1]}),
    "datasets:targets-count": _json("POST", "/v1/datasets", {"name": "x", "features": [[1], [2]], "targets": [0]}),
    "datasets:empty": _json("POST", "/v1/datasets", {"name": "x", "features": [], "targets": []}),
    "datasets:million-columns": _json("POST", "/v1/datasets", {"name": "x", "features": [[0] * WIDE, [1] * WIDE],
                                                                "targets": [0, 1]}),
    "datasets:name-10MB": _json("POST", "/v1/datasets", {"name": "n" * 10_000_000, "features": [[1], [2]],
                                                          "targets": [0, 1]}),
    "datasets:unknown-field": _json("POST", "/v1/datasets", {"name": "x", "features": [[1], [2]],
                                                              "targets": [0, 1], "pickle": "yes"}),
    "datasets:wrong-task": _json("POST", "/v1/datasets", {"name": "x", "features": [[1], [2]], "targets": [0, 1],
                                                           "task": 3}),
    "datasets:input-shape-strings": _json("POST", "/v1/datasets", {"name": "x", "features": [[1], [2]],
                                                                    "targets": [0, 1], "input_shape": ["a"]}),
    # datasets (multipart)
    "datasets:form-no-file": _form({"name": "x", "target": "y"}, None),
    "datasets:form-file-as-text-field": _form({"name": "x", "target": "y", "file": "a,y\n1,0\n"}, None),
    "datasets:form-no-name": _form({"target": "y"}, {"file": ("d.csv", XOR.encode(), "text/csv")}),
    "datasets:form-no-target": _form({"name": "x"}, {"file": ("d.csv", XOR.encode(), "text/csv")}),
    "datasets:form-two-files": _multipart_raw([("name", None, b"x"), ("target", None, b"y"),
                                               ("file", "a.csv", XOR.encode()), ("file", "b.csv", XOR.encode())]),
    "datasets:form-broken-boundary": _multipart_raw([("name", None, b"x")], boundary="XyZ",
                                                    declared="multipart/form-data; boundary=other"),
    "datasets:form-no-boundary": _raw("POST", "/v1/datasets", b"--XyZ\r\n\r\n", "multipart/form-data"),
    "datasets:form-field-1MB+": _form({"name": "x", "target": "y" * 2_000_000},
                                      {"file": ("d.csv", XOR.encode(), "text/csv")}),
    "datasets:text-plain": _raw("POST", "/v1/datasets", XOR, "text/plain"),
    "datasets:no-content-type": _raw("POST", "/v1/datasets", XOR, ""),
    # models
    "models:units-string": _json("POST", "/v1/models", {"name": "x", "input_shape": [2],
                                                         "layers": [{"type": "dense", "units": "8"}]}),
    "models:units-1e400": _raw("POST", "/v1/models",
                               '{"name":"x","input_shape":[2],"layers":[{"type":"dense","units":1e400}]}'),
    "models:units-400-digits": _raw("POST", "/v1/models",
                                    '{"name":"x","input_shape":[2],"layers":[{"type":"dense","units":%s}]}'
                                    % ("9" * 400)),
    "models:input-shape-400-digits": _raw("POST", "/v1/models",
                                          '{"name":"x","input_shape":[%s],"layers":[{"type":"dense","units":1}]}'
                                          % ("9" * 400)),
    "models:units-null": _json("POST", "/v1/models", {"name": "x", "input_shape": [2],
                                                       "layers": [{"type": "dense", "units": None}]}),
    "models:layers-object": _json("POST", "/v1/models", {"name": "x", "input_shape": [2],
                                                          "layers": {"type": "dense", "units": 2}}),
    "models:layer-not-object": _json("POST", "/v1/models", {"name": "x", "input_shape": [2], "layers": [3, "a"]}),
    "models:input-shape-object": _json("POST", "/v1/models", {"name": "x", "input_shape": {"a": 2},
                                                               "layers": MLP_LAYERS}),
    "models:input-shape-negative": _json("POST", "/v1/models", {"name": "x", "input_shape": [-2],
                                                                 "layers": MLP_LAYERS}),
    "models:activation-object": _json("POST", "/v1/models", {"name": "x", "input_shape": [2], "layers": [
        {"type": "dense", "units": 2, "activation": {"$ref": "x"}}]}),
    "models:rate-string": _json("POST", "/v1/models", {"name": "x", "input_shape": [2], "layers": [
        {"type": "dropout", "rate": "0.5"}, *MLP_LAYERS]}),
    "models:stddev-1e400": _raw("POST", "/v1/models", '{"name":"x","input_shape":[2],"layers":['
                                '{"type":"gaussian_noise","stddev":1e400},{"type":"dense","units":2}]}'),
    "models:initializer-deep": _raw("POST", "/v1/models", '{"name":"x","input_shape":[2],"layers":[{"type":"dense",'
                                    '"units":2,"kernel_initializer":{"type":"zeros","x":%s}}]}' % _deep_object(900)),
    "models:too-many-params": _json("POST", "/v1/models", {"name": "x", "input_shape": [10**9],
                                                            "layers": [{"type": "dense", "units": 10**9}]}),
    "models:keras-string-nested-10000": _json("POST", "/v1/models", {"name": "x", "keras": _deep_array()}),
    "models:keras-string-invalid": _json("POST", "/v1/models", {"name": "x", "keras": "{not json"}),
    "models:keras-wrong-types": _json("POST", "/v1/models", {"name": "x", "keras": {
        "class_name": "Sequential", "config": {"layers": [None, 5, "x", {"class_name": ["Dense"]}]}}}),
    "models:keras-and-layers": _json("POST", "/v1/models", {"name": "x", "keras": {}, "input_shape": [2],
                                                             "layers": MLP_LAYERS}),
    "models:name-number": _json("POST", "/v1/models", {"name": 5, "input_shape": [2], "layers": MLP_LAYERS}),
    # jobs
    "jobs:epochs-string": _json("POST", "/v1/jobs", _job(epochs="ten")),
    "jobs:epochs-1e400": _raw("POST", "/v1/jobs", '{"model_id":"m","dataset_id":"d","epochs":1e400}'),
    "jobs:epochs-over-limit": _json("POST", "/v1/jobs", _job(epochs=10**9)),
    "jobs:epochs-400-digits": _json("POST", "/v1/jobs", _job(epochs=int("9" * 400))),
    "jobs:seed-400-digits": _json("POST", "/v1/jobs", _job(seed=int("9" * 400))),
    "jobs:batch-size-object": _json("POST", "/v1/jobs", _job(batch_size={"size": 3})),
    "jobs:batch-size-negative": _json("POST", "/v1/jobs", _job(batch_size=-5)),
    "jobs:learning-rate-string": _json("POST", "/v1/jobs", _job(optimizer={"type": "adam", "learning_rate": "x"})),
    "jobs:learning-rate-huge": _json("POST", "/v1/jobs", _job(optimizer={"type": "adam",
                                                                         "learning_rate": int("9" * 400)})),
    "jobs:optimizer-list": _json("POST", "/v1/jobs", _job(optimizer=["adam"])),
    "jobs:loss-number": _json("POST", "/v1/jobs", _job(loss=3)),
    "jobs:loss-unknown": _json("POST", "/v1/jobs", _job(loss="pickle")),
    "jobs:metrics-object": _json("POST", "/v1/jobs", _job(metrics={"accuracy": True})),
    "jobs:validation-split-1": _json("POST", "/v1/jobs", _job(validation_split=1)),
    "jobs:model-id-null": _json("POST", "/v1/jobs", lambda ids: {"model_id": None, "dataset_id": ids["dataset_id"]}),
    "jobs:model-id-10KB": _json("POST", "/v1/jobs", lambda ids: {"model_id": "m" * 10_000,
                                                                 "dataset_id": ids["dataset_id"],
                                                                 "loss": "categorical_crossentropy"}),
    "jobs:checkpoint-every-negative": _json("POST", "/v1/jobs", _job(checkpoint_every=-1)),
    # predictions
    "predict:strings-for-numbers": _json("POST", "/v1/models/{model_id}/predict", {"inputs": [["0", "1"]]}),
    "predict:null-row": _json("POST", "/v1/models/{model_id}/predict", {"inputs": [None]}),
    "predict:object-not-array": _json("POST", "/v1/models/{model_id}/predict", {"inputs": {"a": 0, "b": 1}}),
    "predict:1e400": _raw("POST", "/v1/models/{model_id}/predict", '{"inputs":[[1e400,0]]}'),
    "predict:NaN-literal": _raw("POST", "/v1/models/{model_id}/predict", '{"inputs":[[NaN,0]]}'),
    "predict:400-digit-integer": _raw("POST", "/v1/models/{model_id}/predict",
                                      '{"inputs":[[%s,0]]}' % ("9" * 400)),
    "predict:nested-rows": _json("POST", "/v1/models/{model_id}/predict", {"inputs": [[[0, [1]]]]}),
    "predict:wrong-width": _json("POST", "/v1/models/{model_id}/predict", {"inputs": [[0, 1, 2]]}),
    "predict:unknown-feature": _json("POST", "/v1/models/{model_id}/predict", {"inputs": [{"a": 0, "zz": 1}]}),
    "predict:mixed-forms": _json("POST", "/v1/models/{model_id}/predict", {"inputs": [[0, 1], {"a": 0, "b": 1}]}),
    "predict:empty": _json("POST", "/v1/models/{model_id}/predict", {"inputs": []}),
    "predict:version-string": _json("POST", "/v1/models/{model_id}/predict", {"inputs": [[0, 1]], "version": "x"}),
    "predict:version-400-digits": _json("POST", "/v1/models/{model_id}/predict",
                                        {"inputs": [[0, 1]], "version": int("9" * 400)}),
    "predict:version-missing": _json("POST", "/v1/models/{model_id}/predict", {"inputs": [[0, 1]], "version": 99}),
    "predict:too-many-rows": _json("POST", "/v1/models/{model_id}/predict", {"inputs": [[0, 1]] * 10_001}),
    # queries and paths
    "query:limit-huge": _json("GET", "/v1/models?limit=" + "9" * 400, None),
    "query:offset-huge": _json("GET", "/v1/jobs?offset=" + "9" * 30, None),
    "query:offset-negative": _json("GET", "/v1/datasets?offset=-1", None),
    "query:limit-float": _json("GET", "/v1/datasets?limit=1.5", None),
    "query:status-unknown": _json("GET", "/v1/jobs?status=exploded", None),
    "query:export-version-huge": _json("GET", "/v1/models/{model_id}/export?version=" + "9" * 30, None),
    "query:export-format-pickle": _json("GET", "/v1/models/{model_id}/export?format=pickle", None),
    "path:id-10KB": _json("GET", "/v1/models/" + "m" * 10_000, None),
    "path:id-traversal": _json("GET", "/v1/models/..%2F..%2Fetc%2Fpasswd", None),
    "path:id-sql": _json("GET", "/v1/datasets/' OR '1'='1", None),
    "path:id-nul": _json("GET", "/v1/jobs/%00", None),
    "query:model-id-nul": _json("GET", "/v1/jobs?model_id=a%00b", None),
    # NUL characters (PostgreSQL text cannot hold them) and over-long names
    "models:name-nul": _json("POST", "/v1/models", {"name": "a\x00b", "input_shape": [2], "layers": MLP_LAYERS}),
    "datasets:name-nul": _json("POST", "/v1/datasets", {"name": "a\x00", "features": [[1], [2]],
                                                         "targets": [0, 1]}),
    "datasets:form-name-nul": _form({"name": "a\x00", "target": "y"}, {"file": ("d.csv", XOR.encode(), "text/csv")}),
    "datasets:form-name-201-chars": _form({"name": "n" * 201, "target": "y"},
                                          {"file": ("d.csv", XOR.encode(), "text/csv")}),
})
REQUESTS["jobs:regularization-deep"] = _raw(
    "POST", "/v1/jobs", '{"model_id":"m","dataset_id":"d","regularization":%s}' % _deep_object(900))
for name, (raw, fields) in CSV_CASES.items():
    REQUESTS[f"csv:{name}"] = _form({"name": "d", "target": "y", **fields}, {"file": ("d.csv", raw, "text/csv")})


def _assert_harmless(client, auth, session_factory, before: dict[str, int], r) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers["content-type"]
    body = r.json()
    assert {"type", "title", "status", "detail"} <= body.keys() and body["status"] == r.status_code
    assert "Traceback (most recent call last)" not in r.text
    assert len(r.content) < 64 * 1024, "the error echoes too much of the input"
    assert counts(session_factory) == before, "something was stored"
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/models", headers=auth).status_code == 200


@pytest.mark.parametrize("case", sorted(REQUESTS))
def test_bad_request_is_a_harmless_4xx(case, client, owner, trained, session_factory):
    before = counts(session_factory)
    r = REQUESTS[case](client, owner, trained)
    _assert_harmless(client, owner, session_factory, before, r)


def test_corpus_size():
    print(f"\nbad-input corpus: {len(REQUESTS)} requests ({len(CSV_CASES)} CSV files)")
    assert len(REQUESTS) >= 150


def test_npz_upload_never_reaches_numpy_load(client, owner, session_factory, monkeypatch):
    """A dataset archive is read by service.npy from its headers, never by np.load: an archive with a pickled
    object array is refused (for its CSV-only target field, its array names, or the object dtype itself)."""
    calls = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: calls.append((a, k)) or real_load(*a, **k))
    before = counts(session_factory)
    r = REQUESTS["csv:npz-with-object-array"](client, owner, {})
    _assert_harmless(client, owner, session_factory, before, r)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "target"]
    buf = io.BytesIO()
    np.savez(buf, features=np.array([[{"a": 1}], [None]], dtype=object), targets=np.array([0, 1]))
    for archive, needle in ((_npz_with_object_array(), "'X.npy'"), (buf.getvalue(), "dtype '|O'")):
        r = client.post("/v1/datasets", headers=owner, data={"name": "d"},
                        files={"file": ("d.npz", archive, "application/octet-stream")})
        _assert_harmless(client, owner, session_factory, before, r)
        assert r.status_code == 422 and needle in r.json()["detail"], r.json()["detail"]
    assert calls == []


def test_million_columns_is_refused_quickly(client, owner):
    raw, _ = CSV_CASES["million-columns"]
    t0 = time.perf_counter()
    r = client.post("/v1/datasets", headers=owner, data={"name": "d", "target": "y"},
                    files={"file": ("d.csv", raw, "text/csv")})
    elapsed = time.perf_counter() - t0
    assert r.status_code == 422 and "max_features" in r.json()["detail"]
    assert elapsed < 5, elapsed  # refused from the header's comma count, no matrix is built


def test_json_nested_10000_deep_is_no_recursion_error(client, owner, caplog):
    for path in BODY_ROUTES.values():
        for body in (_deep_array(), _deep_object(), json.dumps({"name": "x", "keras": _deep_array()})):
            r = client.post(path.format(model_id="x"), headers={**owner, "content-type": "application/json"},
                            content=body.encode())
            assert r.status_code in (400, 404, 422), (path, r.status_code)
    assert "RecursionError" not in caplog.text


# ------------------------------------------------------------------------------------------------ accepted
def _upload(client, auth, raw: bytes, **fields):
    return client.post("/v1/datasets", headers=auth, data={"name": "d", "target": "y", **fields},
                       files={"file": ("d.csv", raw, "text/csv")})


def test_csv_with_bom_is_accepted_and_the_bom_stripped(client, owner):
    r = _upload(client, owner, b"\xef\xbb\xbfa,b,y\n1,2,0\n3,4,1\n")
    assert r.status_code == 201, r.text
    assert r.json()["feature_names"] == ["a", "b"]
    # the BOM is not part of the first column's name, even when the first column is the target
    r = _upload(client, owner, b"\xef\xbb\xbfy,a\n0,1\n1,2\n")
    assert r.status_code == 201, r.text
    assert r.json()["target_names"] == ["y"] and r.json()["feature_names"] == ["a"]


def test_csv_quoted_commas_and_quotes(client, owner):
    raw = b'"a","b,c",y\n"1","2","x, y"\n3,4,"say ""hi"""\n5,6,"x, y"\n'
    r = _upload(client, owner, raw)
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["feature_names"] == ["a", "b,c"]
    assert d["classes"] == ['say "hi"', "x, y"] and d["n_samples"] == 3


def test_csv_crlf_and_mixed_line_endings(client, owner, session_factory):
    r = _upload(client, owner, b"a,y\r\n1,0\r\n2,1\r\n\r\n")
    assert r.status_code == 201, r.text
    assert r.json()["n_samples"] == 2 and r.json()["classes"] == [0, 1]
    r = _upload(client, owner, b"\xef\xbb\xbfa,y\r\n1,0\n2,1\r\n3,0")
    assert r.status_code == 201, r.text
    assert r.json()["n_samples"] == 3
    with session_factory() as s:
        row = s.get(Dataset, r.json()["id"])
        with np.load(io.BytesIO(row.data), allow_pickle=False) as npz:
            assert npz["X"].ravel().tolist() == [1.0, 2.0, 3.0]


def test_csv_quoted_newline_in_a_label(client, owner):
    r = _upload(client, owner, b'a,y\n1,"two\nlines"\n2,one\n')
    assert r.status_code == 201, r.text
    assert r.json()["classes"] == ["one", "two\nlines"]

"""No client or stored data ever reaches pickle; JSON messages only on the broker.

- The source tree has no pickle (nor cloudpickle, dill, joblib, shelve, marshal, torch.load) and every np.load
  passes allow_pickle=False.
- Both Celery apps (the API's sending app and the worker app) accept JSON only.
- Crafted npz blobs with pickled object arrays, written straight into the database as a dataset and as a model
  version, are refused by the loaders (allow_pickle=False): the payload's code never runs, the API answers a
  problem and stays healthy.
"""
from __future__ import annotations

import io
import os
import pickle  # noqa: S403 - to craft the hostile payload only
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "service", "workers", "backprop_client", "migrations")
FORBIDDEN = re.compile(
    r"^\s*(import|from)\s+(pickle|cPickle|_pickle|cloudpickle|dill|joblib|shelve|marshal)\b"
    r"|pickle\.loads?\(|allow_pickle\s*=\s*True|torch\.load\(|\bjoblib\.load\(|yaml\.load\(|\beval\(|\bexec\(",
    re.M,
)


def _sources():
    for pkg in PACKAGES:
        base = ROOT / pkg
        if base.is_dir():
            yield from sorted(p for p in base.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_pickle_in_the_source_tree():
    files = list(_sources())
    assert len(files) > 20
    bad = []
    for path in files:
        src = path.read_text(encoding="utf-8")
        for m in FORBIDDEN.finditer(src):
            bad.append(f"{path.relative_to(ROOT)}:{src[:m.start()].count(chr(10)) + 1}: {m.group(0).strip()}")
        # every np.load / numpy.load call names allow_pickle=False
        for m in re.finditer(r"\b(?:np|numpy)\.load\(", src):
            depth, end = 1, m.end()
            while depth and end < len(src):
                depth += {"(": 1, ")": -1}.get(src[end], 0)
                end += 1
            call = src[m.start():end]
            if "allow_pickle=False" not in call:
                bad.append(f"{path.relative_to(ROOT)}:{src[:m.start()].count(chr(10)) + 1}: {call}")
    assert not bad, "\n".join(bad)


def test_celery_apps_accept_json_only(make_settings, tmp_path):
    from service.celery_client import get_celery, reset_celery_cache

    settings = make_settings("", data_dir=tmp_path, broker_url="memory://json-only")
    app = get_celery(settings)
    try:
        assert app.conf.accept_content == ["json"]
        assert app.conf.task_serializer == "json"
        assert app.conf.result_accept_content == ["json"]
        assert app.conf.event_serializer == "json"
    finally:
        reset_celery_cache()
    # the worker app, imported in a fresh process (it reads the environment's settings at import)
    env = {**os.environ, "BACKPROP_DATA_DIR": str(tmp_path), "BACKPROP_BROKER_URL": "memory://",
           "BACKPROP_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}"}
    code = ("import workers.celery_app as w; c = w.app.conf; "
            "print(c.accept_content, c.task_serializer, c.result_accept_content, c.event_serializer)")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[-2 if run.stdout.endswith("\n") else -1] == "['json'] json ['json'] json"


class _Payload:
    """Unpickling this calls Path.touch(marker): the proof that pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _hostile_npz(marker: Path, **extra: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, X=np.array([_Payload(marker), 1], dtype=object), y=np.array([0, 1]), **extra)
    data = buf.getvalue()
    # really a pickle inside: np.load(allow_pickle=True) would run it
    assert b"touch" in data and pickle.DEFAULT_PROTOCOL
    return data


def test_dataset_and_model_loaders_refuse_pickled_arrays(tmp_path):
    import engine
    from service.training_data import unpack_arrays

    marker = tmp_path / "pwned"
    data = _hostile_npz(marker)
    with pytest.raises(ValueError):
        unpack_arrays(data)
    with pytest.raises(ValueError):
        engine.from_bytes(data)
    # a model archive whose header is fine but whose weights are an object array
    header = np.frombuffer(b'{"format":"backprop-model","version":1}', dtype=np.uint8)
    with pytest.raises(ValueError):
        engine.from_bytes(_hostile_npz(marker, header=header))
    assert not marker.exists()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_pickled_blobs_in_the_database_fail_safely(client, auth, session_factory, tmp_path, db_url):
    from service.db.models import Dataset, Job, ModelVersion
    from service.training_data import training_arrays
    from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

    xor = "a,b,y\n" + "\n".join(f"{i % 2},{(i // 2) % 2},{(i % 2) ^ ((i // 2) % 2)}" for i in range(8)) + "\n"
    ds = make_dataset(client, auth, xor)
    m = make_model(client, auth)
    job = make_job(client, auth, m["id"], ds["id"], epochs=1)
    run_job_in_process(session_factory, job["id"])
    marker = tmp_path / "pwned"
    hostile = _hostile_npz(marker)
    with session_factory() as s, s.begin():
        s.get(Dataset, ds["id"]).data = hostile
        version = s.query(ModelVersion).filter_by(model_id=m["id"]).one()
        version.data = hostile
    # serving: the stored version cannot be loaded; a problem, not pickle
    r = client.post(f"/v1/models/{m['id']}/predict", headers=auth, json={"inputs": [[0, 1]]})
    assert r.status_code >= 400 and r.headers["content-type"].startswith("application/problem+json")
    assert "cannot be loaded" in r.json()["detail"]
    assert "Traceback" not in r.text
    # training: what a worker does with the dataset row
    with session_factory() as s:
        row = s.get(Dataset, ds["id"])
        job_row = s.get(Job, job["id"])
        with pytest.raises(ValueError):
            training_arrays(row, [2], job_row.config["loss"], 2)
    assert not marker.exists()
    assert client.get("/healthz").status_code == 200
    assert client.get(f"/v1/models/{m['id']}", headers=auth).status_code == 200

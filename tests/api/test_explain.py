"""POST /v1/models/{id}/explain: integrated gradients of a version's output, named in the dataset's terms."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

RNG = np.random.default_rng(4)
LABELS = ("low", "mid", "high")
ROWS = [(float(RNG.normal(k, 0.6)), float(RNG.normal(0, 1.0)), LABELS[k]) for k in range(3) for _ in range(20)]
CSV = "signal,noise,y\n" + "".join(f"{a:.4f},{b:.4f},{y}\n" for a, b, y in ROWS)
NET = {"input_shape": [2], "layers": [{"type": "dense", "units": 8, "activation": "tanh"},
                                      {"type": "dense", "units": 3, "activation": "softmax"}]}
FIT = dict(loss="sparse_categorical_crossentropy", optimizer={"type": "adam", "learning_rate": 0.05}, epochs=20,
           batch_size=8, seed=3)


def trained(client, auth, session_factory, csv=CSV, net=NET, **fit):
    ds, m = make_dataset(client, auth, csv), make_model(client, auth, net)
    job = make_job(client, auth, m["id"], ds["id"], **{**FIT, **fit})
    run_job_in_process(session_factory, job["id"])
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["status"] == "succeeded"
    return ds, m


def explain(client, auth, model_id, **body):
    return client.post(f"/v1/models/{model_id}/explain", headers=auth, json=body)


def test_attributions_are_the_engines_and_name_the_predicted_class(client, auth, session_factory):
    ds, m = trained(client, auth, session_factory)
    rows = [[2.1, 0.3], [-0.2, -1.0]]
    r = explain(client, auth, m["id"], inputs=rows, steps=128)
    assert r.status_code == 200, r.text
    out = r.json()
    predicted = client.post(f"/v1/models/{m['id']}/predict", headers=auth, json={"inputs": rows}).json()
    assert out["targets"] == predicted["predictions"] == ["high", "low"]
    assert out["feature_names"] == ["signal", "noise"] and out["version"] == 1 and out["steps"] == 128
    assert out["outputs"] == pytest.approx([max(p) for p in predicted["probabilities"]], rel=1e-5)
    gaps = np.array(out["outputs"]) - np.array(out["baseline_outputs"])
    np.testing.assert_allclose(np.sum(out["attributions"], axis=1), gaps, atol=2e-3)
    # the signal column carries the prediction, the noise column little of it
    assert all(abs(a[0]) > abs(a[1]) for a in out["attributions"])
    # the baseline is the training rows' mean; objects by feature name are the same rows
    X = np.array([[float(f"{a:.4f}"), float(f"{b:.4f}")] for a, b, _ in ROWS], np.float32)
    np.testing.assert_allclose(out["baseline"], X.mean(axis=0), rtol=1e-5)
    named = explain(client, auth, m["id"], inputs=[{"noise": 0.3, "signal": 2.1}, {"signal": -0.2, "noise": -1.0}],
                    steps=128).json()
    assert named["attributions"] == out["attributions"]


def test_a_named_class_and_baseline(client, auth, session_factory):
    ds, m = trained(client, auth, session_factory)
    out = explain(client, auth, m["id"], inputs=[[2.1, 0.3]], target="mid", baseline={"signal": 1.0, "noise": 0.0},
                  steps=32).json()
    assert out["targets"] == ["mid"] and out["baseline"] == [1.0, 0.0]
    predicted = client.post(f"/v1/models/{m['id']}/predict", headers=auth,
                            json={"inputs": [[2.1, 0.3], [1.0, 0.0]]}).json()
    k = predicted["classes"].index("mid")        # classes are stored sorted: high, low, mid
    assert out["outputs"][0] == pytest.approx(predicted["probabilities"][0][k], rel=1e-5)
    assert out["baseline_outputs"][0] == pytest.approx(predicted["probabilities"][1][k], rel=1e-5)


def test_a_binary_classifier_explains_either_class(client, auth, session_factory):
    csv = "signal,noise,y\n" + "".join(f"{a:.4f},{b:.4f},{'yes' if y == 'high' else 'no'}\n" for a, b, y in ROWS)
    net = {"input_shape": [2], "layers": [{"type": "dense", "units": 4, "activation": "tanh"},
                                          {"type": "dense", "units": 1, "activation": "sigmoid"}]}
    ds, m = trained(client, auth, session_factory, csv=csv, net=net, loss="binary_crossentropy")
    yes = explain(client, auth, m["id"], inputs=[[2.5, 0.0]], target="yes").json()
    no = explain(client, auth, m["id"], inputs=[[2.5, 0.0]], target="no").json()
    default = explain(client, auth, m["id"], inputs=[[2.5, 0.0]]).json()
    assert yes["targets"] == default["targets"] == ["yes"] and no["targets"] == ["no"]
    assert no["outputs"][0] == pytest.approx(1 - yes["outputs"][0], abs=1e-6)
    np.testing.assert_allclose(no["attributions"], -np.array(yes["attributions"]))
    assert default["attributions"] == yes["attributions"]


def test_regression_names_its_target_column(client, auth, session_factory):
    csv = "a,b,price\n" + "".join(f"{a:.3f},{b:.3f},{2 * a - b:.3f}\n" for a, b, _ in ROWS)
    net = {"input_shape": [2], "layers": [{"type": "dense", "units": 1}]}
    ds = make_dataset(client, auth, csv, target="price")
    m = make_model(client, auth, net)
    job = make_job(client, auth, m["id"], ds["id"], loss="mse", epochs=30, seed=1,
                   optimizer={"type": "adam", "learning_rate": 0.1})
    run_job_in_process(session_factory, job["id"])
    out = explain(client, auth, m["id"], inputs=[[1.0, 2.0]], steps=3).json()
    assert out["targets"] == ["price"]
    # a linear model: attributions add up exactly, whatever the steps
    assert sum(out["attributions"][0]) == pytest.approx(out["outputs"][0] - out["baseline_outputs"][0], abs=1e-5)
    r = explain(client, auth, m["id"], inputs=[[1.0, 2.0]], target="cost")
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "target"]


def test_refusals_name_the_field(client, auth, session_factory):
    ds, m = trained(client, auth, session_factory)
    cases = [({"inputs": [[1.0]]}, ["body", "inputs", 0]),
             ({"inputs": [[1.0, 2.0]], "target": "huge"}, ["body", "target"]),
             ({"inputs": [[1.0, 2.0]], "baseline": [1.0]}, ["body", "baseline"]),
             ({"inputs": [[1.0, 2.0]], "baseline": {"signal": 1.0}}, ["body", "baseline"]),
             ({"inputs": [[1.0, 2.0]], "steps": 0}, ["body", "steps"]),
             ({"inputs": [[1.0, 2.0]] * 300, "steps": 1024}, ["body", "steps"])]
    for body, loc in cases:
        r = explain(client, auth, m["id"], **body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["errors"][0]["loc"] == loc, (body, r.json())
    assert explain(client, auth, m["id"], inputs=[[1.0, 2.0]], baseline={"signal": 1.0}).json()["detail"] == \
        "baseline: missing feature(s) 'noise'"
    assert explain(client, auth, "no-such-model", inputs=[[1.0, 2.0]]).status_code == 404
    assert explain(client, auth, m["id"], inputs=[[1.0, 2.0]] * 10_001, steps=1).status_code == 413  # as predict


def test_explain_runs_on_the_cached_copy_or_on_its_own_while_that_one_is_busy(client, auth, session_factory):
    """Explain loads nothing for a version predict already serves (one cache miss in all), frees what it
    computed with, and answers the same, from a copy of its own, while another explanation holds the cached
    copy."""
    ds, m = trained(client, auth, session_factory)
    cache = client.app.state.model_cache
    rows = {"inputs": [[2.1, 0.3], [-0.2, -1.0]], "steps": 32}
    assert client.post(f"/v1/models/{m['id']}/predict", headers=auth, json={"inputs": rows["inputs"]}).status_code == 200
    misses, hits = cache.misses, cache.hits
    first = explain(client, auth, m["id"], **rows)
    assert first.status_code == 200, first.text
    assert (cache.misses, cache.hits) == (misses, hits + 1)     # the copy predict serves
    served = cache.peek((m["id"], 1)).net
    assert all(not layer._work for layer in served.layers)
    with served._explain_lock:             # another request's explanation is running on the cached copy
        assert served.explaining
        busy = explain(client, auth, m["id"], **rows)
    assert busy.status_code == 200, busy.text
    assert busy.json()["attributions"] == first.json()["attributions"]
    assert cache.misses == misses

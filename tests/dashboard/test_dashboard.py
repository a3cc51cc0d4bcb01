"""The dashboard at ``/`` in headless Chromium against a live service: sign-in, a finished job's curves, a
running job's curves growing, a model's summary, versions and predictions. Writes the README screenshots."""
from __future__ import annotations

import json
import math
import random
import threading
import time
from typing import Any

import httpx
import pytest

from service.db.models import Model
from service.services import training_results
from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

EPOCHS = 30
COSINE = {"type": "cosine_decay", "initial_learning_rate": 0.01, "decay_steps": 400, "alpha": 0.1}
SPEC = {"input_shape": [2], "layers": [{"type": "dense", "units": 16, "activation": "relu"},
                                       {"type": "dense", "units": 16, "activation": "tanh"},
                                       {"type": "dense", "units": 3, "activation": "softmax"}]}


def blobs_csv(n: int = 240, seed: int = 3) -> str:
    rnd = random.Random(seed)
    centers = {"setosa": (-1.5, 0.0), "versicolor": (1.2, 1.3), "virginica": (1.0, -1.4)}
    rows = ["petal,sepal,species"]
    for i in range(n):
        label = list(centers)[i % 3]
        cx, cy = centers[label]
        rows.append(f"{cx + rnd.gauss(0, 0.8):.4f},{cy + rnd.gauss(0, 0.8):.4f},{label}")
    return "\n".join(rows)


@pytest.fixture(scope="module")
def world(live) -> dict[str, Any]:
    """An owner with a dataset, a model, and a job trained to the end (version 1)."""
    key = live.make_key()
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=live.url, timeout=30) as client:
        dataset = make_dataset(client, auth, blobs_csv(), target="species", name="iris-ish blobs")
        model = make_model(client, auth, SPEC, name="blob classifier")
        job = make_job(client, auth, model["id"], dataset["id"], epochs=EPOCHS, validation_split=0.2,
                       validation_rows="stratified", metrics=["accuracy"], batch_size=16, diagnostics=True,
                       optimizer={"type": "adam", "learning_rate": COSINE})
        assert run_job_in_process(live.session_factory, job["id"]) == 1
        finished = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
        # Two more for the jobs list: one that diverged, one still queued (nothing consumes the queue here).
        failed = make_job(client, auth, model["id"], dataset["id"], epochs=20, optimizer={"type": "sgd",
                          "learning_rate": 50.0})
        make_job(client, auth, model["id"], dataset["id"], epochs=50, validation_split=0.2, metrics=["accuracy"])
    sf = live.session_factory
    with sf() as s, s.begin():
        assert training_results.claim_job(s, failed["id"], "w")
    for epoch in (1, 2, 3):
        with sf() as s, s.begin():
            row = {"loss": 10.0 ** epoch, "learning_rate": 50.0, "seconds": 0.01,
                   "grad_norms": {"dense": 10.0 ** (2 * epoch)}}
            training_results.record_epoch(s, failed["id"], row, epoch, worker="w")
    with sf() as s, s.begin():
        training_results.fail_job(s, failed["id"], "diverged", "the loss became infinite at epoch 4: lower the "
                                  "learning rate or clip gradients", worker="w")
    assert finished["status"] == "succeeded" and len(finished["history"]) == EPOCHS
    return {"key": key, "auth": auth, "dataset": dataset, "model": model, "job": finished, "failed": failed}


# ------------------------------------------------------------------------------------------- browser helpers

def wait_for(browser, script: str, *args: Any, timeout: float = 15.0, what: str = "") -> Any:
    """Poll a JS expression (``return ...``) until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = browser.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.1)
    logs = ""
    try:
        logs = "\n".join(str(e) for e in browser.get_log("browser"))
    except Exception:
        pass
    raise AssertionError(f"timed out waiting for {what or script!r} (last value {value!r})\n{logs}")


def open_signed_in(browser, live, key: str, fragment: str = "") -> None:
    """Load the page fresh, sign in through the form, land on ``#fragment``."""
    from selenium.webdriver.common.by import By

    browser.get(live.url)
    browser.execute_script("sessionStorage.clear()")
    browser.get("about:blank")
    browser.get(live.url + (f"#{fragment}" if fragment else ""))
    wait_for(browser, "return !document.getElementById('signin').hidden", what="the sign-in form")
    browser.find_element(By.ID, "api-key").send_keys(key)
    browser.find_element(By.ID, "signin-button").click()
    wait_for(browser, "return window.__dashboard && window.__dashboard.ready", what="the signed-in dashboard")


def points(browser, chart: str) -> int:
    return int(browser.execute_script(f"return document.getElementById('chart-{chart}').dataset.points"))


# ------------------------------------------------------------------------------------------- tests

def test_page_and_assets_are_served(live) -> None:
    with httpx.Client(base_url=live.url, timeout=10) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'id="signin"' in page.text and "dashboard/static/app.js" in page.text
        for path, kind in [("app.js", "text/javascript"), ("sse.js", "text/javascript"), ("style.css", "text/css"),
                           ("vendor/uPlot.iife.min.js", "text/javascript"), ("vendor/uPlot.min.css", "text/css")]:
            r = client.get(f"/dashboard/static/{path}")
            assert r.status_code == 200, path
            assert r.headers["content-type"].startswith(kind), path
        for bad in ("nope.js", "../router.py", "..%2Frouter.py", "vendor/uPlot.LICENSE"):
            r = client.get(f"/dashboard/static/{bad}")
            assert r.status_code == 404, bad
            assert r.headers["content-type"].startswith("application/problem+json")
        assert "/" not in client.get("/openapi.json").json()["paths"]  # the page is not part of the API


def test_sign_in_refuses_a_bad_key(browser, live) -> None:
    from selenium.webdriver.common.by import By

    browser.get(live.url)
    browser.execute_script("sessionStorage.clear()")
    browser.get("about:blank")
    browser.get(live.url)
    wait_for(browser, "return !document.getElementById('signin').hidden", what="the sign-in form")
    browser.find_element(By.ID, "api-key").send_keys("bp_not_a_real_key")
    browser.find_element(By.ID, "signin-button").click()
    message = wait_for(browser, "return document.getElementById('signin-error').textContent", what="an error")
    assert "not valid" in message
    assert browser.execute_script("return document.getElementById('app').hidden")
    assert browser.execute_script("return sessionStorage.getItem('backprop.apiKey')") is None


def test_finished_job_shows_its_curves(browser, live, world, screenshot_dir) -> None:
    job = world["job"]
    open_signed_in(browser, live, world["key"], f"job/{job['id']}")
    assert browser.execute_script("return sessionStorage.getItem('backprop.apiKey')") == world["key"]
    wait_for(browser, f"return document.getElementById('chart-loss').dataset.points === '{EPOCHS}'",
             what="the loss curve")
    for chart, series in (("loss", 2), ("metrics", 2), ("grads", 3), ("lr", 1)):
        assert points(browser, chart) == EPOCHS, chart
        assert browser.execute_script(f"return document.querySelectorAll('#chart-{chart} canvas').length") >= 1
        assert int(browser.execute_script(f"return document.getElementById('chart-{chart}').dataset.series")) == \
            series, chart
    # The charts' own data: one x per epoch, train and validation loss as stored.
    data = browser.execute_script("return window.__dashboard.charts.loss.plot.data")
    assert data[0] == list(range(1, EPOCHS + 1))
    assert data[1] == pytest.approx([r["loss"] for r in job["history"]])
    assert data[2] == pytest.approx([r["val_loss"] for r in job["history"]])
    labels = browser.execute_script("return window.__dashboard.charts.grads.plot.series.slice(1).map(s => s.label)")
    assert labels == ["dense", "dense_1", "dense_2"]
    assert browser.execute_script("return window.__dashboard.charts.grads.plot.scales.y.distr") == 3  # log scale
    # the learning rate follows its cosine schedule, and the job's details name it
    rates = browser.execute_script("return window.__dashboard.charts.lr.plot.data[1]")
    assert rates == pytest.approx([r["learning_rate"] for r in job["history"]]) and rates[0] > rates[-1]
    # diagnostics: the relu and the tanh layer, each its inactive share and its dead units, as stored
    assert not browser.execute_script("return document.getElementById('chart-acts-box').hidden")
    assert points(browser, "acts") == EPOCHS
    labels = browser.execute_script("return window.__dashboard.charts.acts.plot.series.slice(1).map(s => s.label)")
    assert labels == ["dense inactive", "dense dead units", "dense_1 inactive", "dense_1 dead units"]
    assert points(browser, "changes") == EPOCHS
    changes = browser.execute_script("return window.__dashboard.charts.changes.plot.data")
    assert changes[3] == pytest.approx([r["weight_changes"]["dense_2"] for r in job["history"]])
    assert browser.execute_script("return window.__dashboard.charts.changes.plot.scales.y.distr") == 3  # log scale
    acts = browser.execute_script("return window.__dashboard.charts.acts.plot.data")
    assert acts[1] == pytest.approx([r["activations"]["dense"]["inactive"] for r in job["history"]])
    assert acts[4] == pytest.approx([r["activations"]["dense_1"]["dead_units"] for r in job["history"]])
    meta = browser.execute_script("return document.getElementById('job-meta').textContent")
    assert "adam (lr cosine_decay from 0.01)" in meta
    assert "0.2 (stratified rows)" in meta

    view = browser.execute_script(
        "const v = document.getElementById('job-view'); return [v.hidden, v.dataset.status, "
        "document.getElementById('job-status').textContent, document.getElementById('job-progress-bar').style.width]"
    )
    assert view == [False, "succeeded", "succeeded", "100%"]
    row = browser.execute_script(
        "const r = document.querySelector(`#jobs-table tr[data-job-id='${arguments[0]}']`);"
        "return r && [r.dataset.status, r.querySelector('.progress .bar').style.width]", job["id"])
    assert row == ["succeeded", "100%"]
    time.sleep(0.3)  # let the progress bar's transition finish before the picture
    browser.save_screenshot(str(screenshot_dir / "dashboard.png"))


def test_failed_job_shows_its_error(browser, live, world, screenshot_dir) -> None:
    open_signed_in(browser, live, world["key"], f"job/{world['failed']['id']}")
    wait_for(browser, "return document.getElementById('chart-grads').dataset.points === '3'", what="3 epochs")
    error = browser.execute_script("const e = document.getElementById('job-error'); return [e.hidden, e.textContent]")
    assert error[0] is False and error[1].startswith("diverged: the loss became infinite")
    assert browser.execute_script("return document.getElementById('job-status').textContent") == "failed"
    assert browser.execute_script("return document.getElementById('job-cancel').hidden")
    # No validation split, no metrics: one loss curve, and the metrics chart says why it is empty.
    assert browser.execute_script("return document.getElementById('chart-loss').dataset.series") == "1"
    assert "No metrics" in browser.execute_script("return document.getElementById('chart-metrics').textContent")
    assert browser.execute_script("return document.getElementById('chart-acts-box').hidden")   # no diagnostics
    assert browser.execute_script("return document.getElementById('chart-changes-box').hidden")
    # Exploding gradients on the log scale: 1e2 .. 1e6 all drawn.
    assert browser.execute_script("return window.__dashboard.charts.grads.plot.data[1]") == [1e2, 1e4, 1e6]


def test_model_summary_versions_and_predictions(browser, live, world, screenshot_dir) -> None:
    from selenium.webdriver.common.by import By

    model = world["model"]
    open_signed_in(browser, live, world["key"], f"model/{model['id']}")
    wait_for(browser, "return !document.getElementById('model-view').hidden", what="the model view")
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#model-summary tbody tr')].map(r => "
        "[...r.cells].map(c => c.textContent))")
    assert rows[0][:3] == ["input", "InputLayer", "(None, 2)"]
    assert [r[0] for r in rows[1:]] == [layer["name"] for layer in model["summary"]["layers"]]
    assert [r[2] for r in rows[1:]] == ["(None, 16)", "(None, 16)", "(None, 3)"]
    assert [int(r[3].replace(",", "")) for r in rows[1:]] == [layer["params"] for layer in model["summary"]["layers"]]
    total = model["summary"]["total_params"]
    assert f"{total:,}" in browser.find_element(By.CSS_SELECTOR, "#model-summary tfoot").text
    versions = browser.execute_script(
        "return [...document.querySelectorAll('#model-versions tbody tr')].map(r => r.dataset.version)")
    assert versions == ["1"]
    assert "petal, sepal" in browser.find_element(By.ID, "predict-hint").text

    inputs = [[-1.5, 0.1], [1.2, 1.3], [1.0, -1.4]]
    box = browser.find_element(By.ID, "predict-input")
    box.clear()
    box.send_keys(json.dumps(inputs))
    browser.find_element(By.ID, "predict-button").click()
    wait_for(browser, "return !document.getElementById('predict-result').hidden", what="the predictions")
    shown = browser.execute_script(
        "return [...document.querySelectorAll('#predict-result tbody td.prediction')].map(c => c.textContent)")
    with httpx.Client(base_url=live.url, timeout=10) as client:
        expected = client.post(f"/v1/models/{model['id']}/predict", headers=world["auth"],
                               json={"inputs": inputs}).json()
    assert shown == expected["predictions"] == ["setosa", "versicolor", "virginica"]
    header = browser.execute_script(
        "return [...document.querySelectorAll('#predict-result thead th')].map(c => c.textContent)")
    assert header[-3:] == ["P(setosa)", "P(versicolor)", "P(virginica)"]
    browser.save_screenshot(str(screenshot_dir / "dashboard-model.png"))

    # Explain: the same rows' attributions, as the API answers them
    browser.find_element(By.ID, "explain-button").click()
    wait_for(browser, "return !document.getElementById('explain-result').hidden", what="the attributions")
    with httpx.Client(base_url=live.url, timeout=10) as client:
        explained = client.post(f"/v1/models/{model['id']}/explain", headers=world["auth"],
                                json={"inputs": inputs}).json()
    header = browser.execute_script(
        "return [...document.querySelectorAll('#explain-result thead th')].map(c => c.textContent)")
    assert header == ["#", "target", "output", "baseline", "petal", "sepal"]
    cells = browser.execute_script(
        "return [...document.querySelectorAll('#explain-result tbody tr')].map(r => "
        "[...r.querySelectorAll('td')].map(c => c.textContent))")
    assert [c[1] for c in cells] == explained["targets"] == expected["predictions"]
    for shown_row, attrs in zip(cells, explained["attributions"]):
        assert [float(v) for v in shown_row[4:]] == pytest.approx(attrs, rel=1e-3, abs=1e-6)
    caption = browser.execute_script("return document.getElementById('explain-caption').textContent")
    assert caption.endswith("over 64 steps") and "from the baseline row [" in caption
    browser.execute_script("document.getElementById('explain-result').scrollIntoView()")
    browser.save_screenshot(str(screenshot_dir / "dashboard-explain.png"))

    # A bad row answers the API's problem detail in the form, not a crash.
    box.clear()
    box.send_keys("[[1, 2, 3]]")
    browser.find_element(By.ID, "predict-button").click()
    message = wait_for(browser, "return document.getElementById('predict-error').textContent", what="an error")
    assert "row" in message.lower()


def test_model_view_pins_the_serving_version(browser, live, world) -> None:
    """A second version appears; "Serve" on the first pins it (the API then predicts with it by default), and
    "Unpin" hands serving back to the latest."""
    from selenium.webdriver.common.by import By

    auth = world["auth"]
    with httpx.Client(base_url=live.url, timeout=30) as client:
        model = make_model(client, auth, SPEC, name="pinned blobs")
        for epochs in (2, 3):
            job = make_job(client, auth, model["id"], world["dataset"]["id"], epochs=epochs, batch_size=32)
            assert run_job_in_process(live.session_factory, job["id"]) is not None
    open_signed_in(browser, live, world["key"], f"model/{model['id']}")
    badge = "return document.getElementById('model-version').textContent"
    wait_for(browser, f"{badge} === 'latest v2'", what="two versions")

    def serving_cells():
        return browser.execute_script("return [...document.querySelectorAll('#model-versions tbody tr')].map("
                                      "r => [r.dataset.version, r.querySelector('td.serving').textContent])")

    assert serving_cells() == [["2", "serving (latest)"], ["1", "Serve"]]
    browser.find_element(By.CSS_SELECTOR, "#model-versions tr[data-version='1'] td.serving button").click()
    wait_for(browser, f"{badge} === 'latest v2 · serving v1'", what="the pin")
    assert serving_cells() == [["2", "Serve"], ["1", "serving (pinned) Unpin"]]
    with httpx.Client(base_url=live.url, timeout=10) as client:
        assert client.get(f"/v1/models/{model['id']}", headers=auth).json()["serving_version"] == 1
        answer = client.post(f"/v1/models/{model['id']}/predict", headers=auth, json={"inputs": [[0.0, 0.0]]})
        assert answer.json()["version"] == 1
    selected = "return document.getElementById('predict-version').selectedOptions[0].text"
    assert browser.execute_script(selected) == "v1 (serving)"
    browser.find_element(By.CSS_SELECTOR, "#model-versions tr[data-version='1'] td.serving button").click()
    wait_for(browser, f"{badge} === 'latest v2'", what="the pin removed")
    with httpx.Client(base_url=live.url, timeout=10) as client:
        assert client.get(f"/v1/models/{model['id']}", headers=auth).json()["serving_version"] is None


def test_dataset_view_shows_its_profile(browser, live, world) -> None:
    """A dataset from the list: its shape, each class's rows, share and first and last row, each feature's
    statistics, as GET /v1/datasets/{id} gives them."""
    from selenium.webdriver.common.by import By

    dataset = world["dataset"]
    with httpx.Client(base_url=live.url, timeout=10) as client:
        profile = client.get(f"/v1/datasets/{dataset['id']}", headers=world["auth"]).json()["profile"]
    open_signed_in(browser, live, world["key"], "")
    item = wait_for(browser, "return document.querySelector(`#datasets-list li[data-dataset-id='${arguments[0]}']`)",
                    dataset["id"], what="the datasets list")
    assert dataset["name"] in item.text and f"{dataset['n_samples']:,} × {dataset['n_features']}" in item.text
    browser.find_element(By.CSS_SELECTOR, f"#datasets-list li[data-dataset-id='{dataset['id']}']").click()
    wait_for(browser, f"return document.getElementById('dataset-view').dataset.datasetId === '{dataset['id']}' && "
                      "!document.getElementById('dataset-view').hidden", what="the dataset view")
    assert browser.execute_script("return location.hash") == f"#dataset/{dataset['id']}"
    assert text(browser, "dataset-title") == dataset["name"] and text(browser, "dataset-task") == "classification"
    rows = browser.execute_script("return [...document.querySelectorAll('#dataset-targets tbody tr')].map(r => "
                                  "[...r.cells].map(c => c.textContent))")
    assert rows == [[str(t["label"]), f"{t['count']:,}", f"{100 * t['count'] / dataset['n_samples']:.1f}%",
                     str(t["first_row"]), str(t["last_row"])] for t in profile["targets"]]
    features = browser.execute_script("return [...document.querySelectorAll('#dataset-features tbody tr')].map(r => "
                                      "[...r.cells].map(c => c.textContent))")
    assert [f[0] for f in features] == [f["name"] for f in profile["features"]]
    for shown, f in zip(features, profile["features"]):
        for cell, key in zip(shown[1:], ("min", "max", "mean", "std")):
            assert float(cell) == pytest.approx(f[key], rel=1e-3, abs=1e-4), (f["name"], key)
    assert not visible(browser, "dataset-no-profile") and not visible(browser, "dataset-wide")


def test_model_view_evaluates_on_a_dataset(browser, live, world, screenshot_dir) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    model, dataset = world["model"], world["dataset"]
    open_signed_in(browser, live, world["key"], f"model/{model['id']}")
    wait_for(browser, "return !document.getElementById('model-view').hidden", what="the model view")
    Select(browser.find_element(By.ID, "evaluate-dataset")).select_by_value(dataset["id"])
    browser.find_element(By.ID, "evaluate-button").click()
    wait_for(browser, "return !document.getElementById('evaluate-metrics').hidden", what="the evaluation")
    with httpx.Client(base_url=live.url, timeout=30) as client:
        expected = client.post(f"/v1/models/{model['id']}/evaluate", headers=world["auth"],
                               json={"dataset_id": dataset["id"], "version": 1}).json()
    shown = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#evaluate-metrics tbody tr[data-metric]')]"
        ".map(r => [r.dataset.metric, r.cells[1].textContent]))")
    assert set(shown) == set(expected["metrics"]) == {"loss", "accuracy"}
    for name, value in expected["metrics"].items():
        assert float(shown[name]) == pytest.approx(value, rel=1e-3, abs=1e-4), name
    matrix = browser.execute_script(
        "return [...document.querySelectorAll('#evaluate-confusion tbody tr')].map(r => "
        "[...r.querySelectorAll('td')].map(c => Number(c.textContent)))")
    assert matrix == expected["confusion"]["matrix"]
    labels = browser.execute_script(
        "return [...document.querySelectorAll('#evaluate-classes tbody tr')].map(r => r.cells[0].textContent)")
    assert labels == [str(c) for c in expected["confusion"]["classes"]]
    browser.save_screenshot(str(screenshot_dir / "dashboard-evaluate.png"))

    # the version's own job's validation rows (its stratified validation_split): the job's last val_ figures
    select = Select(browser.find_element(By.ID, "evaluate-dataset"))
    assert [o.get_attribute("value") for o in select.options][:2] == ["rows:validation", "rows:training"]
    select.select_by_value("rows:validation")
    browser.execute_script("document.getElementById('evaluate-metrics').hidden = true")
    browser.find_element(By.ID, "evaluate-button").click()
    wait_for(browser, "return !document.getElementById('evaluate-metrics').hidden", what="the validation rows")
    shown = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#evaluate-metrics tbody tr')]"
        ".map(r => [r.dataset.metric || 'rows', r.cells[1].textContent]))")
    job = world["job"]
    n = dataset["n_samples"]
    assert int(shown["rows"].replace(",", "")) == n - math.floor(n * (1 - job["config"]["validation_split"]))
    assert float(shown["loss"]) == pytest.approx(job["history"][-1]["val_loss"], rel=1e-3, abs=1e-4)


SWEEP_BASE = {"loss": "categorical_crossentropy", "optimizer": "adam", "epochs": 3, "validation_split": 0.2,
              "metrics": ["accuracy"], "seed": 1}
#: Each trial row of the sweep view as the page shows it.
TRIAL_ROWS = """return [...document.querySelectorAll('#sweep-trials tbody tr')].map(r => ({
  job: r.dataset.jobId, status: r.dataset.status, best: r.classList.contains('best'),
  bestCells: r.querySelectorAll('td.best').length,
  params: [...r.querySelectorAll('td.param')].map(c => c.textContent),
  epochs: r.querySelector('td.epochs').textContent, version: r.querySelector('td.version').textContent,
  objective: r.querySelector('td.objective').dataset.value ?? null,
  shown: r.querySelector('td.objective').textContent}))"""


def make_sweep(client, auth, model_id: str, dataset_id: str, grid: dict[str, list[Any]]) -> dict[str, Any]:
    r = client.post("/v1/sweeps", headers=auth, json={"model_id": model_id, "dataset_id": dataset_id,
                                                       "config": SWEEP_BASE, "grid": grid})
    assert r.status_code == 202, r.text
    return r.json()


def visible(browser, element_id: str) -> bool:
    return not browser.execute_script(f"return document.getElementById('{element_id}').hidden")


def text(browser, element_id: str) -> str:
    return browser.execute_script(f"return document.getElementById('{element_id}').textContent")


def test_sweep_view_shows_the_trials_and_serves_the_best(browser, live, world, screenshot_dir) -> None:
    """A finished sweep of four trials: its grid, one row per trial as the API reports it with the best one
    marked, a link to each trial's job (whose details link back), and "Serve best" pins the best version."""
    from selenium.webdriver.common.by import By

    auth = world["auth"]
    # The best trial comes first (the last version is not the best), so pinning the latest would be caught.
    grid = {"optimizer.learning_rate": [0.05, 0.001], "batch_size": [64, 16]}
    with httpx.Client(base_url=live.url, timeout=30) as client:
        model = make_model(client, auth, SPEC, name="swept blobs")
        sweep = make_sweep(client, auth, model["id"], world["dataset"]["id"], grid)
        for trial in sweep["trials"]:   # nothing consumes the queue here: run them as a worker would
            assert run_job_in_process(live.session_factory, trial["job_id"]) is not None
        sweep = client.get(f"/v1/sweeps/{sweep['id']}", headers=auth).json()
    best = sweep["best"]
    assert sweep["status"] == "succeeded" and sweep["objective"] == "val_loss" and best is not None
    assert best["result_version"] != 4

    open_signed_in(browser, live, world["key"], f"sweep/{sweep['id']}")
    wait_for(browser, f"return document.getElementById('sweep-view').dataset.sweepId === '{sweep['id']}'",
             what="the sweep view")
    assert text(browser, "sweep-title") == sweep["name"] == "optimizer.learning_rate × batch_size"
    assert text(browser, "sweep-status") == "succeeded"
    assert "val_loss (lower is better)" in text(browser, "sweep-meta")
    assert browser.execute_script("return [...document.querySelectorAll('#sweep-grid div')].map(d => "
                                  "[d.querySelector('dt').textContent, d.querySelector('dd').textContent])") == \
        [["optimizer.learning_rate", "0.05, 0.001"], ["batch_size", "64, 16"]]
    header = browser.execute_script("return [...document.querySelectorAll('#sweep-trials thead th')]"
                                    ".map(c => c.textContent)")
    assert header == ["#", *grid, "Status", "Epochs", "val_loss", "Job", "Version"]

    rows = browser.execute_script(TRIAL_ROWS)
    assert [r["job"] for r in rows] == [t["job_id"] for t in sweep["trials"]]
    for row, trial in zip(rows, sweep["trials"]):
        assert row["params"] == [str(trial["params"][k]) for k in grid]
        assert (row["status"], row["epochs"], row["version"]) == \
            (trial["status"], str(trial["epochs_done"]), f"v{trial['result_version']}")
        assert float(row["objective"]) == trial["objective"]     # the API's value, exactly
        assert float(row["shown"]) == pytest.approx(trial["objective"], rel=1e-3)
        is_best = trial["job_id"] == best["job_id"]
        assert (row["best"], row["bestCells"]) == (is_best, 1 if is_best else 0)
    assert sum(r["best"] for r in rows) == 1
    assert not visible(browser, "sweep-cancel") and visible(browser, "sweep-serve")
    assert browser.execute_script("return document.getElementById('sweep-view').dataset.live") == ""
    side = wait_for(browser, "const r = document.querySelector(`#sweeps-table tr[data-sweep-id='${arguments[0]}']`);"
                    "return r && [r.dataset.status, r.querySelector('td.trials').textContent, "
                    "r.querySelector('td.objective').textContent]", sweep["id"], what="the sweeps list")
    assert side[:2] == ["succeeded", "4/4"] and float(side[2]) == pytest.approx(best["objective"], rel=1e-3)
    browser.save_screenshot(str(screenshot_dir / "dashboard-sweep.png"))

    # A trial's job, and back to its sweep from the job's details.
    other = next(t for t in sweep["trials"] if t["job_id"] != best["job_id"])
    browser.find_element(By.CSS_SELECTOR, f"#sweep-trials tr[data-job-id='{other['job_id']}'] a.job").click()
    wait_for(browser, f"return document.getElementById('job-view').dataset.jobId === '{other['job_id']}' && "
                      "!document.getElementById('job-view').hidden", what="the trial's job")
    assert browser.execute_script("return location.hash") == f"#job/{other['job_id']}"
    link = browser.find_element(By.CSS_SELECTOR, "#job-meta a.sweep")
    assert link.text == sweep["name"]
    link.click()
    wait_for(browser, "return !document.getElementById('sweep-view').hidden", what="the sweep again")
    assert browser.execute_script("return location.hash") == f"#sweep/{sweep['id']}"

    # "Serve best" pins the best trial's version, then shows the model.
    browser.find_element(By.ID, "sweep-serve").click()
    wait_for(browser, f"return !document.getElementById('model-view').hidden && "
                      f"document.getElementById('model-view').dataset.modelId === '{model['id']}'",
             what="the model view")
    badge = wait_for(browser, "return document.getElementById('model-version').textContent", what="the badge")
    assert badge == f"latest v4 · serving v{best['result_version']}"
    with httpx.Client(base_url=live.url, timeout=10) as client:
        assert client.get(f"/v1/models/{model['id']}", headers=auth).json()["serving_version"] == \
            best["result_version"]


def test_cross_validation_sweep_shows_the_best_point_over_its_folds(browser, live, world) -> None:
    """A sweep with folds: the best grid point's mean ± std over its folds in the list and the details, its
    folds' rows marked, and no "Serve best" (each fold's version saw only part of the rows)."""
    auth = world["auth"]
    config = {k: v for k, v in SWEEP_BASE.items() if k != "validation_split"}
    with httpx.Client(base_url=live.url, timeout=30) as client:
        model = make_model(client, auth, SPEC, name="cross-validated blobs")
        r = client.post("/v1/sweeps", headers=auth, json={
            "model_id": model["id"], "dataset_id": world["dataset"]["id"], "config": config,
            "grid": {"optimizer.learning_rate": [0.05, 0.001]}, "folds": 2})
        assert r.status_code == 202, r.text
        for trial in r.json()["trials"]:
            assert run_job_in_process(live.session_factory, trial["job_id"]) is not None
        sweep = client.get(f"/v1/sweeps/{r.json()['id']}", headers=auth).json()
    cv = sweep["cross_validation"]
    assert sweep["best"] is None and cv["best"] is not None and len(sweep["trials"]) == 4

    open_signed_in(browser, live, world["key"], f"sweep/{sweep['id']}")
    wait_for(browser, f"return document.getElementById('sweep-view').dataset.sweepId === '{sweep['id']}'",
             what="the sweep view")
    meta = text(browser, "sweep-meta")
    mean, std = cv["best"]["objective_mean"], cv["best"]["objective_std"]
    assert "over 2 folds (optimizer.learning_rate=" in meta
    shown = meta.split("Best")[1].split(" over")[0].split(" ± ")
    assert float(shown[0]) == pytest.approx(mean, rel=1e-3) and float(shown[1]) == pytest.approx(std, rel=1e-3,
                                                                                                  abs=1e-4)
    rows = browser.execute_script(TRIAL_ROWS)
    assert [r["job"] for r in rows if r["best"]] == cv["best"]["job_ids"]
    assert [r["params"][-1] for r in rows] == ["1", "2", "1", "2"]       # the fold, the grid's last key
    assert not visible(browser, "sweep-serve")
    side = wait_for(browser, "const r = document.querySelector(`#sweeps-table tr[data-sweep-id='${arguments[0]}']`);"
                    "return r && r.querySelector('td.objective').textContent", sweep["id"], what="the sweeps list")
    assert float(side.split(" ± ")[0]) == pytest.approx(mean, rel=1e-3)

    # a fold's job says which fold it held out
    from selenium.webdriver.common.by import By
    second = sweep["trials"][1]["job_id"]
    browser.find_element(By.CSS_SELECTOR, f"#sweep-trials tr[data-job-id='{second}'] a.job").click()
    wait_for(browser, f"return document.getElementById('job-view').dataset.jobId === '{second}' && "
                      "!document.getElementById('job-view').hidden", what="a fold's job")
    assert "fold 2 of 2" in text(browser, "job-meta")
    browser.back()
    wait_for(browser, "return !document.getElementById('sweep-view').hidden", what="the sweep again")

    # "Train best on all rows" queues the refit job and shows it
    assert visible(browser, "sweep-refit")
    browser.find_element(By.ID, "sweep-refit").click()
    job_id = wait_for(browser, "const v = document.getElementById('job-view');"
                      "return !v.hidden && v.dataset.jobId", what="the refit job")
    with httpx.Client(base_url=live.url, timeout=10) as client:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
    assert job["sweep_id"] is None and job["config"]["validation_fold"] is None
    assert job["config"]["optimizer"]["learning_rate"] == cv["best"]["params"]["optimizer.learning_rate"]


def test_running_sweep_polls_and_cancels(browser, live, world) -> None:
    """While a trial is queued the view polls the sweep: a trial that ends shows without a reload; "Cancel"
    cancels the queued one, the sweep ends as the API says, and the polling stops."""
    from selenium.webdriver.common.by import By

    auth = world["auth"]
    with httpx.Client(base_url=live.url, timeout=30) as client:
        model = make_model(client, auth, SPEC, name="cancelled sweep")
        sweep = make_sweep(client, auth, model["id"], world["dataset"]["id"], {"batch_size": [16, 32]})
    first, second = (t["job_id"] for t in sweep["trials"])
    open_signed_in(browser, live, world["key"], f"sweep/{sweep['id']}")
    wait_for(browser, f"return document.getElementById('sweep-view').dataset.sweepId === '{sweep['id']}'",
             what="the sweep view")
    status = "return document.getElementById('sweep-status').textContent"
    assert browser.execute_script(status) == "running"
    assert visible(browser, "sweep-cancel") and not visible(browser, "sweep-serve")
    assert browser.execute_script("return document.getElementById('sweep-view').dataset.live") == "polling"
    browser.execute_script("window.__sameDocument = true")

    assert run_job_in_process(live.session_factory, first) is not None
    wait_for(browser, f"return document.querySelector(\"#sweep-trials tr[data-job-id='{first}']\")"
                      ".dataset.status === 'succeeded'", what="the first trial to end")
    assert browser.execute_script(status) == "running"        # the second is still queued
    assert visible(browser, "sweep-serve")                        # a best exists now

    browser.find_element(By.ID, "sweep-cancel").click()
    wait_for(browser, f"{status} !== 'running'", what="the sweep to end")
    with httpx.Client(base_url=live.url, timeout=10) as client:
        expected = client.get(f"/v1/sweeps/{sweep['id']}", headers=auth).json()
    assert [t["status"] for t in expected["trials"]] == ["succeeded", "cancelled"]
    assert browser.execute_script(status) == expected["status"] == "succeeded"
    assert [(r["job"], r["status"]) for r in browser.execute_script(TRIAL_ROWS)] == \
        [(first, "succeeded"), (second, "cancelled")]
    assert not visible(browser, "sweep-cancel")
    assert browser.execute_script("return document.getElementById('sweep-view').dataset.live") == ""
    assert browser.execute_script("return window.__dashboard.state.watcher") is None   # no more polling
    assert browser.execute_script("return window.__sameDocument === true")
    wait_for(browser, f"return document.querySelector(\"#sweeps-table tr[data-sweep-id='{sweep['id']}']\")"
                      ".dataset.status === 'succeeded'", what="the sweeps list to settle")


def _row(epoch: int) -> dict[str, Any]:
    loss = 1.1 * math.exp(-epoch / 4) + 0.1
    return {"epoch": epoch, "loss": loss, "accuracy": 1 - loss / 2, "val_loss": loss * 1.1,
            "val_accuracy": 1 - loss / 1.8, "learning_rate": 0.01,
            "grad_norms": {"dense": 0.5 / epoch, "dense_1": 0.05 / epoch, "dense_2": 2e-4 / epoch},
            "seconds": 0.4}


NO_EVENTS_ROUTE = """
const realFetch = window.fetch;
window.fetch = (input, init) => String(input).split("?")[0].endsWith("/events")
  ? Promise.resolve(new Response('{"status": 404, "title": "Not found"}',
      {status: 404, headers: {"Content-Type": "application/problem+json"}}))
  : realFetch(input, init);
"""


@pytest.mark.parametrize("mode", ["stream", "polling"])
def test_running_job_curves_grow_live(browser, live, world, mode, screenshot_dir) -> None:
    """The curves grow while a job runs: fed by the events stream, or (a service without it: the events route
    answers 404, simulated here) by polling the job every 2 s."""
    import engine

    has_events = "/v1/jobs/{job_id}/events" in live.app.openapi()["paths"]
    if mode == "stream" and not has_events:
        pytest.skip("this service has no events route")
    epochs = 8
    with httpx.Client(base_url=live.url, timeout=10) as client:
        job = make_job(client, world["auth"], world["model"]["id"], world["dataset"]["id"], epochs=epochs,
                       validation_split=0.2, metrics=["accuracy"],
                       optimizer={"type": "adam", "learning_rate": 0.01})   # the rate _row reports
    sf = live.session_factory
    with sf() as s, s.begin():
        assert training_results.claim_job(s, job["id"], "browser-test")
    for epoch in (1, 2):
        with sf() as s, s.begin():
            assert training_results.record_epoch(s, job["id"], _row(epoch), epoch, worker="browser-test")

    script = None
    if mode == "polling":
        script = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": NO_EVENTS_ROUTE})
    try:
        open_signed_in(browser, live, world["key"], f"job/{job['id']}")
    finally:
        if script:
            browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})
    wait_for(browser, "return document.getElementById('chart-loss').dataset.points === '2'", what="2 epochs")
    assert browser.execute_script("return document.getElementById('job-status').textContent") == "running"
    eta = browser.execute_script("return document.getElementById('job-progress-text').textContent")
    assert "epoch 2 / 8" in eta and "ETA" in eta  # 6 epochs left at 0.4 s each
    row_eta = browser.execute_script(
        f"return document.querySelector(\"#jobs-table tr[data-job-id='{job['id']}'] td.eta\").textContent")
    assert row_eta in ("2 s", "3 s")
    assert wait_for(browser, "return document.getElementById('job-view').dataset.live", what="a live mode") == mode
    browser.execute_script("window.__sameDocument = true")

    with sf() as s:
        spec = dict(s.get(Model, job["model_id"]).spec)
    done = threading.Event()
    errors: list[BaseException] = []

    def train() -> None:
        try:
            for epoch in range(3, epochs + 1):
                time.sleep(pace)
                with sf() as s, s.begin():
                    training_results.record_epoch(s, job["id"], _row(epoch), epoch, worker="browser-test")
            with sf() as s, s.begin():
                history = [_row(e) for e in range(1, epochs + 1)]
                version = training_results.complete_job(
                    s, job["id"], engine.build(spec, seed=1).to_bytes(), {"loss": history[-1]["loss"]},
                    history=history, worker="browser-test")
                assert version is not None
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    seen = {2}
    pace = 0.4 if mode == "stream" else 0.9  # polling sees every 2 s: slower epochs so it sees some in between
    shot = mode != "stream"
    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        seen.add(points(browser, "loss"))
        if not shot and points(browser, "loss") >= 5:
            browser.save_screenshot(str(screenshot_dir / "dashboard-live.png"))
            shot = True
        status = browser.execute_script("return document.getElementById('job-status').textContent")
        if status == "succeeded" and points(browser, "loss") == epochs:
            break
        time.sleep(0.1)
    thread.join(5)
    assert not errors, errors
    assert done.is_set()
    assert points(browser, "loss") == epochs, sorted(seen)
    assert points(browser, "grads") == epochs and points(browser, "metrics") == epochs
    assert len(seen) >= 3, f"the curve jumped straight to the end: {sorted(seen)}"  # it grew while running
    assert browser.execute_script("return window.__sameDocument === true")  # no page reload
    wait_for(browser, "return document.getElementById('job-view').dataset.live === ''", what="the watch to end")
    wait_for(browser, f"return document.querySelector(\"#jobs-table tr[data-job-id='{job['id']}']\")"
                      ".dataset.status === 'succeeded'", what="the jobs list to settle")


def test_event_stream_parser(browser, live) -> None:
    """sse.js against the event-stream rules: CRLF/LF/CR line ends split across chunks, comments, multi-line
    data, ids kept for Last-Event-ID, events without data dropped, an unfinished event not dispatched."""
    browser.get(live.url)
    chunks = ["retry: 2000\r\n\r", "\n: keep-alive\n\nid: 1.1\nevent: status\ndata: {\"status\":", " \"running\"}\n",
              "\nevent: progress\r", "\ndata: {\"epoch\": 1,\ndata:  \"loss\": 0.5}\r\rid: 2.1\nevent: progress\n",
              "data:x\n\nevent: nothing\n\ndata: unfinished"]
    events = browser.execute_async_script(
        """const [chunks, done] = arguments;
        import("./dashboard/static/sse.js").then(({SSEParser}) => {
          const seen = [];
          const p = new SSEParser((e) => seen.push(e));
          for (const c of chunks) p.push(c);
          done(seen);
        }).catch((e) => done(String(e)));""", chunks)
    assert events == [
        {"type": "status", "data": '{"status": "running"}', "id": "1.1"},
        {"type": "progress", "data": '{"epoch": 1,\n "loss": 0.5}', "id": "1.1"},
        {"type": "progress", "data": "x", "id": "2.1"},
    ]


def test_static_files_ship_with_the_package() -> None:
    """Every file the page loads is covered by [tool.setuptools.package-data] (so a wheel serves the page)."""
    import fnmatch
    import tomllib
    from pathlib import Path

    from service.dashboard import STATIC_DIR

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "service.dashboard"]
    files = [p.relative_to(STATIC_DIR.parent).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()]
    assert "static/vendor/uPlot.iife.min.js" in files and "static/index.html" in files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not missing, missing


def test_a_missing_job_model_dataset_or_sweep_says_so(browser, live, world) -> None:
    """A link to something gone (or another owner's) shows the API's answer in place of a view."""
    for kind, title in (("job", "Job"), ("model", "Model"), ("dataset", "Dataset"), ("sweep", "Sweep")):
        open_signed_in(browser, live, world["key"], f"{kind}/0000-gone")
        text = wait_for(browser, "const p = document.getElementById('placeholder');"
                                 "return !p.hidden && p.textContent.includes('0000-gone') && p.textContent",
                        what=f"the missing {kind}")
        assert text.startswith(f"{title} 0000-gone: ") and "not found" in text.lower(), text
        assert browser.execute_script(f"return document.getElementById('{kind}-view').hidden")

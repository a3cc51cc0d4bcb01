"""The user commands of ``backprop`` against a running service: upload -> model -> train (live progress) ->
jobs -> predict -> export, as a user types them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backprop_client.cli import ProgressBar, _fmt, _params_text, build_parser, job_body, sweep_body
from tests.client.conftest import ROOT, LiveService

XOR = "a,b,y\n" + "\n".join(f"{i % 2},{(i // 2) % 2},{'yes' if (i % 2) ^ ((i // 2) % 2) else 'no'}"
                            for i in range(40)) + "\n"
MLP = {"name": "xor-net", "input_shape": [2], "layers": [{"type": "dense", "units": 8, "activation": "tanh"},
                                                          {"type": "dense", "units": 2, "activation": "softmax"}]}


def run(live: LiveService, *argv: str, module: str = "backprop_client.cli", check: bool = True,
        cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", module, *argv], env=live.env(**env), cwd=cwd or ROOT,
                         capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, f"{argv}: rc {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


def test_a_cli_session(live, tmp_path):
    data = tmp_path / "xor.csv"
    data.write_text(XOR)
    spec = tmp_path / "net.json"
    spec.write_text(json.dumps(MLP))

    out = run(live, "datasets", "upload", str(data), "--target", "y", "--json")
    ds = json.loads(out.stdout)
    assert ds["name"] == "xor" and ds["n_samples"] == 40
    human = run(live, "datasets", "upload", str(data), "--target", "y", "--name", "again", "--task",
                "classification").stdout
    assert "again: 40 rows x 2 features, classification" in human
    assert "again" in run(live, "datasets", "list").stdout
    arrays = tmp_path / "grid.npz"
    np.savez(arrays, features=np.zeros((10, 4, 4), np.float32), targets=np.arange(10) % 2)
    assert "grid: 10 rows x 16 features, classification" in run(live, "datasets", "upload", str(arrays)).stdout
    refused = run(live, "datasets", "upload", str(arrays), "--target", "y", check=False)
    assert refused.returncode != 0 and "leave out --target" in refused.stderr
    refused = run(live, "datasets", "upload", str(data), check=False)
    assert refused.returncode != 0 and "--target is required" in refused.stderr
    grid = json.loads(run(live, "datasets", "list", "--json").stdout)["items"][0]
    exported = tmp_path / "back.npz"
    run(live, "datasets", "export", grid["id"], "-o", str(exported))
    with np.load(exported, allow_pickle=False) as z:
        assert z["features"].shape == (10, 4, 4) and list(z["targets"]) == [0, 1] * 5

    model = json.loads(run(live, "models", "create", str(spec), "--json").stdout)
    assert model["name"] == "xor-net"
    listing = run(live, "models", "list").stdout
    assert model["id"] in listing and "xor-net" in listing

    # train: follows the event stream with a progress line per epoch (stderr is not a terminal here)
    out = run(live, "train", "--model", model["id"], "--dataset", ds["id"], "--loss", "categorical_crossentropy",
              "--optimizer", "adam", "--lr", "0.05", "--epochs", "5", "--batch-size", "8", "--validation-split",
              "0.25", "--metric", "accuracy")
    progress = [line for line in out.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in progress] == ["1/5", "2/5", "3/5", "4/5", "5/5"], out.stderr
    assert "ETA" in progress[-1] and "loss" in progress[-1] and "val_accuracy" in progress[-1]
    assert "[########################]  100%" in progress[-1] and "ms/epoch" in progress[-1]
    assert "succeeded" in out.stderr.splitlines()[-1] or "succeeded" in out.stdout
    assert f"model {model['id']} version 1" in out.stdout

    jobs = run(live, "jobs").stdout
    assert "succeeded" in jobs and "5/5" in jobs
    job_id = jobs.splitlines()[1].split()[0]
    assert "succeeded" in run(live, "jobs", "--status", "succeeded").stdout
    assert run(live, "jobs", "--status", "running").stdout.strip() == "ID  STATUS  EPOCH  LOSS  MODEL  CREATED"
    shown = run(live, "jobs", "show", job_id).stdout
    assert "status   succeeded" in shown and "epoch 5/5" in shown and "VAL_LOSS" in shown

    # a job config file; --no-wait prints the id; the options on the command line win over the file
    cfg = tmp_path / "job.json"
    cfg.write_text(json.dumps({"model_id": model["id"], "dataset_id": ds["id"], "loss": "categorical_crossentropy",
                               "epochs": 3, "optimizer": {"type": "sgd", "learning_rate": 0.1}}))
    new_id = run(live, "train", "--config", str(cfg), "--epochs", "4", "--no-wait").stdout.strip()
    watched = run(live, "jobs", "watch", new_id)
    assert "epoch 4/4" in watched.stderr and "version 2" in watched.stdout
    job = json.loads(run(live, "jobs", "show", new_id, "--json").stdout)
    assert job["config"]["optimizer"]["type"] == "sgd" and job["config"]["epochs"] == 4

    # predict from a CSV (dropping the target column) and from JSON rows
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([[0, 0], [1, 0]]))
    pred = json.loads(run(live, "predict", model["id"], "--input", str(rows), "--json").stdout)
    assert pred["version"] == 2 and len(pred["predictions"]) == 2
    table = run(live, "predict", model["id"], "--csv", str(data), "--drop", "y", "--version", "1").stdout
    assert table.splitlines()[0].split() == ["ROW", "PREDICTION", "PROBABILITY"] and len(table.splitlines()) == 41
    scores = json.loads(run(live, "evaluate", model["id"], "--dataset", ds["id"], "--metric", "accuracy",
                            "--json").stdout)
    assert scores["n_samples"] == 40 and set(scores["metrics"]) == {"loss", "accuracy"}
    shown = run(live, "evaluate", model["id"], "--dataset", ds["id"], "--version", "1")
    assert shown.stdout.splitlines()[0].split() == ["METRIC", "VALUE"] and "version 1 on dataset" in shown.stderr
    assert "PRECISION" in shown.stdout and "TRUE/PREDICTED" in shown.stdout
    matrix = shown.stdout.split("TRUE/PREDICTED")[1].splitlines()[1:3]
    assert sum(int(n) for line in matrix for n in line.split()[1:]) == 40
    own = run(live, "evaluate", model["id"], "--rows", "training", "--version", "1")   # the job held out 10
    assert "(training rows of its job): 30 rows" in own.stderr and "TRUE/PREDICTED" in own.stdout
    npy_rows = tmp_path / "rows.npy"
    np.save(npy_rows, np.array([[0, 0], [1, 0]], dtype=np.float32))
    assert json.loads(run(live, "predict", model["id"], "--npy", str(npy_rows), "--json").stdout) == pred

    # pin version 1 as the one served by default, then unpin
    assert "latest version 2, serving 1" in run(live, "models", "serve", model["id"], "1").stdout
    assert json.loads(run(live, "predict", model["id"], "--input", str(rows), "--json").stdout)["version"] == 1
    assert "2, serving 1" in run(live, "models", "list").stdout
    refused = run(live, "models", "serve", model["id"], check=False)
    assert refused.returncode != 0 and "--latest" in refused.stderr
    refused = run(live, "models", "serve", model["id"], "7", check=False)
    assert refused.returncode != 0 and "no version 7" in refused.stderr
    assert json.loads(run(live, "models", "serve", model["id"], "--latest", "--json").stdout)["serving_version"] is None
    assert "xor-renamed  input" in run(live, "models", "rename", model["id"], "xor-renamed").stdout

    # export
    out_file = tmp_path / "model.npz"
    run(live, "export", model["id"], "--format", "npz", "-o", str(out_file))
    with np.load(out_file, allow_pickle=False) as z:
        assert z.files

    # cancel
    slow = run(live, "train", "--model", model["id"], "--dataset", ds["id"], "--loss", "categorical_crossentropy",
               "--epochs", "5000", "--batch-size", "1", "--no-wait").stdout.strip()
    assert slow in run(live, "jobs", "cancel", slow).stdout
    final = run(live, "jobs", "watch", slow, check=False)
    assert final.returncode == 1 and "cancelled" in final.stderr

    # continue: the 4-epoch job above carried on to 6 by a new job, from its last epoch's checkpoint
    carried = run(live, "jobs", "continue", new_id, "--epochs", "6").stdout
    assert f"carrying job {new_id} on from epoch 4 to 6" in carried
    assert "epoch 6/6" in run(live, "jobs", "watch", carried.split()[1].rstrip(":")).stderr


def xor_dataset_and_model(live, tmp_path) -> tuple[dict, dict]:
    """The XOR dataset and the MLP, each created through the CLI."""
    data = tmp_path / "xor.csv"
    data.write_text(XOR)
    spec = tmp_path / "net.json"
    spec.write_text(json.dumps(MLP))
    ds = json.loads(run(live, "datasets", "upload", str(data), "--target", "y", "--json").stdout)
    return ds, json.loads(run(live, "models", "create", str(spec), "--json").stdout)


def test_train_prints_the_servers_warnings(live, tmp_path):
    ds, model = xor_dataset_and_model(live, tmp_path)
    train = ["train", "--model", model["id"], "--dataset", ds["id"], "--loss", "categorical_crossentropy",
             "--epochs", "1", "--no-wait"]
    profile = json.loads(run(live, "datasets", "show", ds["id"]).stdout)["profile"]
    assert [t["count"] for t in profile["targets"]] == [20, 20]
    quiet = run(live, *train, "--validation-split", "0.25")     # XOR's rows alternate: every class held out
    assert "warning:" not in quiet.stderr
    loud = run(live, *train, "--validation-split", "0.02")        # holds out the last row: one class
    assert "warning: validation_split=" in loud.stderr and "1 of 2 classes" in loud.stderr
    assert len(loud.stdout.split()) == 1          # queued all the same: its id
    swept = run(live, "sweep", "--model", model["id"], "--dataset", ds["id"], "--loss", "categorical_crossentropy",
                "--epochs", "1", "--validation-split", "0.02", "--grid", '{"batch_size": [4, 8]}')
    assert swept.stderr.count("warning: validation_split=") == 1 and "2 trials queued" in swept.stdout


def test_train_with_class_weights(live, tmp_path):
    ds, model = xor_dataset_and_model(live, tmp_path)
    train = ["train", "--model", model["id"], "--dataset", ds["id"], "--loss", "categorical_crossentropy",
             "--epochs", "2", "--no-wait", "--json"]
    job = json.loads(run(live, *train, "--class-weight", '{"yes": 4}').stdout)
    assert job["config"]["class_weight"] == {"yes": 4.0}
    assert json.loads(run(live, *train, "--class-weight", "balanced").stdout)["config"]["class_weight"] == "balanced"
    out = run(live, *train, "--class-weight", '{"maybe": 4}', check=False)      # the server names the label
    assert out.returncode == 1 and "class_weight.maybe" in out.stderr and "Traceback" not in out.stderr
    out = run(live, *train, "--class-weight", "yes=4", check=False)
    assert out.returncode == 1 and "--class-weight takes balanced or a JSON object" in out.stderr


def test_train_with_diagnostics_prints_the_hidden_layers(live, tmp_path):
    ds, model = xor_dataset_and_model(live, tmp_path)
    out = run(live, "train", "--model", model["id"], "--dataset", ds["id"], "--loss", "categorical_crossentropy",
              "--epochs", "3", "--lr", "0.5", "--diagnostics")
    line = next(x for x in out.stdout.splitlines() if x.startswith("hidden layers (last epoch): "))
    job_id = out.stdout.split()[1]
    job = json.loads(run(live, "jobs", "show", job_id, "--json").stdout)
    assert job["config"]["diagnostics"] is True
    last = job["history"][-1]["activations"]
    assert list(last) == ["dense"]            # the tanh layer; the output layer is not watched
    assert line == (f"hidden layers (last epoch): dense {last['dense']['inactive']:.0%} inactive, "
                    f"{last['dense']['dead_units']:.0%} dead units")
    changes = job["history"][-1]["weight_changes"]
    assert (f"weight change (last epoch): dense {changes['dense']:.2g}, dense_1 {changes['dense_1']:.2g}"
            in out.stdout.splitlines())


def test_explain_from_the_command_line(live, tmp_path):
    ds, model = xor_dataset_and_model(live, tmp_path)
    run(live, "train", "--model", model["id"], "--dataset", ds["id"], "--loss", "categorical_crossentropy",
        "--epochs", "20", "--lr", "0.05")
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b,y\n1,0,yes\n0,0,no\n")
    out = run(live, "explain", model["id"], "--csv", str(rows), "--drop", "y", "--target", "yes", "--steps", "16")
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ROW", "TARGET", "OUTPUT", "BASELINE", "a", "b"]
    assert [line.split()[1] for line in lines[1:3]] == ["yes", "yes"]
    assert "integrated gradients over 16 steps" in out.stderr
    as_json = json.loads(run(live, "explain", model["id"], "--csv", str(rows), "--drop", "y", "--json").stdout)
    assert as_json["feature_names"] == ["a", "b"] and len(as_json["attributions"]) == 2


def test_a_sweep_from_the_command_line(live, tmp_path):
    ds, model = xor_dataset_and_model(live, tmp_path)
    out = run(live, "sweep", "--model", model["id"], "--dataset", ds["id"], "--loss", "categorical_crossentropy",
              "--epochs", "3", "--validation-split", "0.25", "--metric", "accuracy", "--objective", "val_accuracy",
              "--grid", '{"optimizer.learning_rate": [0.01, 0.1], "batch_size": [8, 32]}', "--wait")
    assert "4 trials queued, ranked by val_accuracy" in out.stderr and "4 succeeded" in out.stderr
    lines = out.stdout.splitlines()
    assert lines[1] == "status   succeeded (4/4 trials ended)" and "higher is better" in lines[3]
    header = lines[4].split()
    assert header == ["BEST", "TRIAL", "PARAMS", "STATUS", "EPOCHS", "VAL_ACCURACY", "JOB"]
    trials = lines[5:9]
    assert [t.lstrip("* ").split()[0] for t in trials] == ["1", "2", "3", "4"]
    assert 'optimizer.learning_rate=0.01  batch_size=8' in trials[0] and "succeeded" in trials[0]
    assert sum(t.startswith("*") for t in trials) == 1 and lines[9].startswith("best: trial ")
    sweep_id = lines[0].split()[1]
    sweep = json.loads(run(live, "sweeps", "show", sweep_id, "--json").stdout)
    best = [t["job_id"] for t in sweep["trials"]].index(sweep["best"]["job_id"])
    assert trials[best].startswith("*") and sweep["trials"][0]["params"] == {"optimizer.learning_rate": 0.01,
                                                                             "batch_size": 8}
    # optimizer.* paths with no --optimizer tune adam, as train's --lr does
    assert json.loads(run(live, "jobs", "show", sweep["best"]["job_id"], "--json").stdout
                      )["config"]["optimizer"]["type"] == "adam"
    assert sweep_id in run(live, "sweeps", "list", "--model", model["id"]).stdout
    assert run(live, "sweeps", "show", sweep_id).stdout == out.stdout

    # cross-validation: two folds of each learning rate, dealt by class; each point's mean ± std over its folds
    cv = run(live, "sweep", "--model", model["id"], "--dataset", ds["id"], "--loss", "categorical_crossentropy",
             "--epochs", "2", "--validation-rows", "stratified", "--folds", "2", "--grid",
             '{"optimizer.learning_rate": [0.01, 0.1]}', "--wait")
    assert "4 trials queued, ranked by val_loss" in cv.stderr
    shown = json.loads(run(live, "sweeps", "show", cv.stdout.split()[1], "--json").stdout)["cross_validation"]
    points = cv.stdout.split("MEAN VAL_LOSS")[1].splitlines()[1:3]
    assert ["optimizer.learning_rate=0.01" in points[0], "optimizer.learning_rate=0.1" in points[1]] == [True, True]
    assert all("2/2" in p for p in points) and sum(p.startswith("*") for p in points) == 1
    assert f"best over 2 folds: {_params_text(shown['best']['params'])}" in cv.stdout
    listed = run(live, "sweeps", "list", "--model", model["id"]).stdout
    assert f"{_fmt(shown['best']['objective_mean'])} ± {_fmt(shown['best']['objective_std'])}" in listed
    refit = run(live, "sweeps", "refit", cv.stdout.split()[1], "--json").stdout
    refit_job = json.loads(refit)
    assert refit_job["config"]["validation_fold"] is None and refit_job["config"]["optimizer"]["learning_rate"] == \
        shown["best"]["params"]["optimizer.learning_rate"]

    queued = run(live, "sweep", "--model", model["id"], "--dataset", ds["id"], "--loss", "categorical_crossentropy",
                 "--epochs", "10000", "--grid", '{"batch_size": [1, 2]}').stdout
    queued_id = queued.split()[0]
    refused = run(live, "sweeps", "delete", queued_id, check=False)
    assert refused.returncode == 1 and "409" in refused.stderr and "cancel it first" in refused.stderr
    cancelled = run(live, "sweeps", "cancel", queued_id).stdout
    assert "status   " in cancelled
    assert "deleted" in run(live, "sweeps", "delete", sweep_id).stdout
    assert sweep_id not in run(live, "sweeps", "list").stdout
    bad = run(live, "sweep", "--model", model["id"], "--dataset", ds["id"], "--loss", "categorical_crossentropy",
              "--grid", '{"optimizer.learning_rate": [0.01, -1]}', check=False)
    assert bad.returncode == 1 and "grid.optimizer.learning_rate.1" in bad.stderr and "Traceback" not in bad.stderr
    bad = run(live, "sweep", "--model", model["id"], "--dataset", ds["id"], "--grid", "lr=0.1", check=False)
    assert bad.returncode == 1 and "--grid takes a JSON object" in bad.stderr


def test_errors_are_messages_not_tracebacks(live, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"input_shape": [2], "layers": [{"type": "dense", "units": 0}]}))
    out = run(live, "models", "create", str(bad), check=False)
    assert out.returncode == 1 and out.stderr.startswith("error: 422") and "Traceback" not in out.stderr
    assert "body.layers.0.units" in out.stderr or "units" in out.stderr
    out = run(live, "jobs", "show", "nope", check=False)
    assert out.returncode == 1 and "404" in out.stderr
    # the key: --api-key wins over the key file; a wrong one is a 401
    out = run(live, "models", "list", "--api-key", "bp_wrong", check=False)
    assert out.returncode == 1 and "401" in out.stderr
    # no key anywhere
    out = run(live, "models", "list", check=False, BACKPROP_DATA_DIR=str(tmp_path / "empty"))
    assert out.returncode == 1 and "no API key" in out.stderr
    # nothing listening
    out = run(live, "models", "list", "--url", "http://127.0.0.1:9", check=False)
    assert out.returncode == 1 and "cannot reach" in out.stderr


def test_the_backprop_command_has_the_user_commands(live):
    """``backprop`` (service.cli) registers the client's commands next to up/api/worker/keys/migrate."""
    out = run(live, "models", "list", "--json", module="service.cli")
    assert "items" in json.loads(out.stdout)
    helptext = run(live, "--help", module="service.cli").stdout
    for command in ("datasets", "models", "train", "jobs", "sweep", "sweeps", "predict", "evaluate", "export", "up",
                    "keys"):
        assert command in helptext


def test_parsing_and_progress_rendering():
    args = build_parser().parse_args(["jobs", "--url", "http://x", "show", "J"])
    assert args.url == "http://x" and args.jobs_command == "show" and args.id == "J"
    args = build_parser().parse_args(["train", "--model", "m", "--dataset", "d", "--lr", "0.1",
                                      "--batch-size", "full", "--metric", "accuracy"])
    assert job_body(args) == {"model_id": "m", "dataset_id": "d", "batch_size": "full", "metrics": ["accuracy"],
                              "optimizer": {"type": "adam", "learning_rate": 0.1}}
    args = build_parser().parse_args(["train", "--model", "m", "--dataset", "d", "--validation-dataset", "v"])
    assert job_body(args) == {"model_id": "m", "dataset_id": "d", "validation_dataset_id": "v"}
    args = build_parser().parse_args(["train", "--model", "m", "--dataset", "d", "--validation-split", "0.2",
                                      "--validation-rows", "stratified"])
    assert job_body(args) == {"model_id": "m", "dataset_id": "d", "validation_split": 0.2,
                              "validation_rows": "stratified"}
    for text, weights in (("balanced", "balanced"), ('{"yes": 5, "1": 0.5}', {"yes": 5, "1": 0.5})):
        args = build_parser().parse_args(["train", "--model", "m", "--dataset", "d", "--class-weight", text])
        assert job_body(args) == {"model_id": "m", "dataset_id": "d", "class_weight": weights}
    args = build_parser().parse_args(["train", "--model", "m", "--dataset", "d", "--diagnostics"])
    assert job_body(args) == {"model_id": "m", "dataset_id": "d", "diagnostics": True}
    args = build_parser().parse_args(["sweep", "--model", "m", "--dataset", "d", "--epochs", "5", "--grid",
                                      '{"optimizer.learning_rate": [0.1, 1]}', "--objective", "val_accuracy"])
    assert sweep_body(args) == {"model_id": "m", "dataset_id": "d", "config": {"epochs": 5, "optimizer": "adam"},
                                "grid": {"optimizer.learning_rate": [0.1, 1]}, "objective": "val_accuracy"}
    args = build_parser().parse_args(["sweep", "--model", "m", "--dataset", "d", "--optimizer", "sgd", "--mode",
                                      "min", "--grid", '{"batch_size": [8]}', "--wait"])
    assert sweep_body(args) == {"model_id": "m", "dataset_id": "d", "config": {"optimizer": {"type": "sgd"}},
                                "grid": {"batch_size": [8]}, "mode": "min"} and args.wait
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "m"])  # --input or --csv

    class Out:
        def __init__(self) -> None:
            self.text = ""

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

        def isatty(self) -> bool:
            return True

    out = Out()
    bar = ProgressBar(4, out, width=8)
    bar.update({"epoch": 1, "loss": 0.5, "seconds": 2.0, "grad_norms": {"d": 1.0}})
    bar.update({"epoch": 2, "loss": 0.25, "seconds": 2.0})
    bar.close()
    assert "\r\x1b[2Kepoch 2/4  [####----]   50%  loss 0.25  2.00s/epoch  ETA 0:04" in out.text
    assert out.text.endswith("\n") and "grad_norms" not in out.text

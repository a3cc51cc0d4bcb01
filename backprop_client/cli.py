"""The user commands of ``backprop`` (they talk to a running service over HTTP):

    backprop datasets upload FILE.csv --target COL [--name N] [--task T] [--input-shape 28,28]
    backprop datasets upload FILE.npz [--name N] [--task T] [--input-shape 28,28]
    backprop datasets export ID [--format npz|csv] [-o FILE]
    backprop datasets list | show ID
    backprop models create SPEC.json [--name N]
    backprop models list | show ID
    backprop train --model ID --dataset ID [--loss L] [--optimizer adam] [--lr X] [--epochs N]
                   [--batch-size N] [--validation-split F [--validation-rows last|random|stratified]]
                   [--class-weight balanced|JSON] [--diagnostics] [--config JOB.json] [--no-wait]
    backprop jobs [--status S] | jobs show ID | jobs watch ID | jobs cancel ID
    backprop sweep --model ID --dataset ID --grid JSON [train's options] [--objective O] [--folds K] [--wait]
    backprop sweeps list [--model ID] | sweeps show ID | sweeps cancel ID | sweeps refit ID | sweeps delete ID
    backprop predict MODEL_ID (--input ROWS.json | --csv FILE | --npy ROWS.npy)
    backprop explain MODEL_ID (--input ROWS.json | --csv FILE) [--target LABEL] [--steps N] [--version N]
    backprop evaluate MODEL_ID (--dataset DATASET_ID | --rows validation|training) [--version N] [--metric M ...]
    backprop export MODEL_ID --format npz|keras|onnx -o FILE

The server and the key: ``--url`` / ``--api-key``, else ``BACKPROP_URL`` / ``BACKPROP_API_KEY``, else
``http://127.0.0.1:8000`` and the key file ``$BACKPROP_DATA_DIR/api-key`` (``./.backprop/api-key``), which
``backprop up`` writes. ``--json`` prints the API's JSON instead of tables.

Standalone: ``python -m backprop_client.cli ...``; the ``backprop`` command registers the same commands
(:func:`add_client_commands`).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx

from backprop_client.client import ApiError, Client

DEFAULT_URL = "http://127.0.0.1:8000"
COMMANDS = ("datasets", "models", "train", "jobs", "sweep", "sweeps", "predict", "explain", "evaluate", "export")
#: History keys that are not shown as metrics on the progress line.
_NOT_METRICS = ("epoch", "grad_norms", "weight_changes", "activations", "seconds", "learning_rate")


class CliError(Exception):
    """A user error with a message (exit code 1)."""


# --------------------------------------------------------------------------------------------------
# Connection
# --------------------------------------------------------------------------------------------------


def resolve_url(args: argparse.Namespace) -> str:
    return getattr(args, "url", None) or os.environ.get("BACKPROP_URL") or DEFAULT_URL


def resolve_key(args: argparse.Namespace) -> str:
    key = getattr(args, "api_key", None) or os.environ.get("BACKPROP_API_KEY")
    if key:
        return key.strip()
    path = Path(os.environ.get("BACKPROP_DATA_DIR") or ".backprop") / "api-key"
    try:
        key = path.read_text().strip()
    except OSError:
        key = ""
    if not key:
        raise CliError(
            f"no API key: pass --api-key, set BACKPROP_API_KEY, or start the service with `backprop up` "
            f"(it writes {path})"
        )
    return key


def connect(args: argparse.Namespace) -> Client:
    return Client(resolve_url(args), resolve_key(args))


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


def _print_json(value: Any, out: TextIO | None = None) -> None:
    print(json.dumps(value, indent=2), file=out or sys.stdout)


def _when(ts: str | None) -> str:
    return (ts or "").replace("T", " ")[:19]


def table(rows: Sequence[Sequence[Any]], header: Sequence[str], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def _duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressBar:
    """One line on stderr: ``epoch 3/20 [#####-----] 15%  loss 0.41  val_loss 0.5  1.2s/epoch  ETA 0:20``.

    On a terminal the line is redrawn in place; elsewhere (pipes, logs) each epoch prints its own line."""

    def __init__(self, epochs: int, out: TextIO | None = None, width: int = 24) -> None:
        self.epochs = max(int(epochs or 0), 0)
        self.out = out or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.seconds: list[float] = []
        self.last_at: float | None = None
        self.drawn = False

    def line(self, row: dict[str, Any]) -> str:
        epoch = int(row.get("epoch", 0))
        total = max(self.epochs, epoch)
        frac = epoch / total if total else 0.0
        done = int(round(frac * self.width))
        parts = [f"epoch {epoch:>{len(str(total))}}/{total}", f"[{'#' * done}{'-' * (self.width - done)}]",
                 f"{frac * 100:3.0f}%"]
        parts += [f"{k} {_fmt(v)}" for k, v in row.items() if k not in _NOT_METRICS and not isinstance(v, dict)]
        if self.seconds:
            recent = self.seconds[-10:]
            per_epoch = sum(recent) / len(recent)
            parts.append(f"{per_epoch:.2f}s/epoch" if per_epoch >= 1 else f"{per_epoch * 1000:.0f}ms/epoch")
            parts.append(f"ETA {_duration(per_epoch * (total - epoch))}")
        return "  ".join(parts)

    def update(self, row: dict[str, Any]) -> None:
        now = time.monotonic()
        seconds = row.get("seconds")
        if isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0:
            self.seconds.append(float(seconds))
        elif self.last_at is not None:
            self.seconds.append(now - self.last_at)
        self.last_at = now
        text = self.line(row)
        if self.tty:
            self.out.write("\r\x1b[2K" + text)
            self.drawn = True
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def message(self, text: str) -> None:
        """A line above the bar."""
        if self.tty and self.drawn:
            self.out.write("\r\x1b[2K")
        self.out.write(text + "\n")
        self.out.flush()
        self.drawn = False

    def close(self) -> None:
        if self.tty and self.drawn:
            self.out.write("\n")
            self.out.flush()
        self.drawn = False


def follow(bp: Client, job_id: str, epochs: int, out: TextIO | None = None) -> dict[str, Any]:
    """Render a job's event stream as a progress bar until its final status; returns the final job."""
    bar = ProgressBar(epochs, out)
    status = None
    try:
        for event in bp.events(job_id):
            if event.type == "progress" and isinstance(event.data, dict):
                bar.update(event.data)
            elif event.type == "status" and isinstance(event.data, dict):
                progress = event.data.get("progress") or {}
                bar.epochs = int(progress.get("epochs") or bar.epochs)
                if event.data.get("status") != status:
                    status = event.data.get("status")
                    note = f" (attempt {event.data.get('attempts')})" if (event.data.get("attempts") or 0) > 1 else ""
                    bar.message(f"job {job_id}: {status}{note}")
    finally:
        bar.close()
    return dict(bp.get_job(job_id))


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


def cmd_datasets(args: argparse.Namespace) -> int:
    with connect(args) as bp:
        if args.datasets_command == "upload":
            if args.file.endswith(".npz"):
                if args.target:
                    raise CliError("a .npz archive names its arrays (features, targets): leave out --target")
                ds = bp.upload_npz(args.file, name=args.name, task=args.task, input_shape=args.input_shape)
            elif not args.target:
                raise CliError("--target is required for a CSV file: the target column (or comma-separated columns)")
            else:
                ds = bp.upload_csv(args.file, args.target, name=args.name, task=args.task,
                                   input_shape=args.input_shape)
            if _json(args):
                _print_json(ds)
            else:
                classes = f", classes {ds['classes']}" if ds.get("classes") is not None else ""
                print(f"{ds['id']}  {ds['name']}: {ds['n_samples']} rows x {ds['n_features']} features, "
                      f"{ds['task']}{classes}")
            return 0
        if args.datasets_command == "show":
            ds = bp.get_dataset(args.id)
            _print_json(ds)
            return 0
        if args.datasets_command == "export":
            out = args.output or f"dataset-{args.id}.{args.format}"
            content = bp.export_dataset(args.id, args.format, to=out)
            print(f"wrote {out} ({len(content)} bytes)", file=sys.stderr)
            return 0
        page = bp.list_datasets(limit=args.limit)
        if _json(args):
            _print_json(page)
        else:
            table([(d["id"], d["name"], d["task"], d["n_samples"], d["n_features"], _when(d["created_at"]))
                   for d in page["items"]], ("ID", "NAME", "TASK", "ROWS", "FEATURES", "CREATED"))
        return 0


def _load_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}") from None


def _versions_text(m: dict[str, Any]) -> str:
    """'3', or '3, serving 2' when a version is pinned; '-' when nothing is trained."""
    latest, pinned = m.get("latest_version"), m.get("serving_version")
    if latest is None:
        return "-"
    return f"{latest}, serving {pinned}" if pinned is not None else str(latest)


def _print_model(m: dict[str, Any]) -> None:
    print(f"{m['id']}  {m['name']}  input {m['input_shape']}  latest version {_versions_text(m)}")
    summary = m.get("summary") or {}
    table([(l["name"], l["type"], l["output_shape"], l["params"]) for l in summary.get("layers", [])],
          ("LAYER", "TYPE", "OUTPUT", "PARAMS"))
    print(f"total params {summary.get('total_params')} (trainable {summary.get('trainable_params')})")


def cmd_models(args: argparse.Namespace) -> int:
    with connect(args) as bp:
        if args.models_command == "create":
            spec = _load_json(args.spec, "the model spec")
            if not isinstance(spec, dict):
                raise CliError(f"{args.spec}: a model spec is a JSON object")
            name = args.name or spec.get("name") or Path(args.spec).stem
            m = bp.create_model(spec, name=name)
        elif args.models_command == "show":
            m = bp.get_model(args.id)
        elif args.models_command == "serve":
            if (args.version is None) == (not args.latest):
                raise CliError("give a VERSION to pin, or --latest to serve the latest version")
            m = bp.set_serving_version(args.id, args.version)
        elif args.models_command == "rename":
            m = bp.rename_model(args.id, args.name)
        else:
            page = bp.list_models(limit=args.limit)
            if _json(args):
                _print_json(page)
            else:
                table([(m["id"], m["name"], m["input_shape"], m["summary"]["total_params"],
                        _versions_text(m), _when(m["created_at"])) for m in page["items"]],
                      ("ID", "NAME", "INPUT", "PARAMS", "VERSION", "CREATED"))
            return 0
        if _json(args):
            _print_json(m)
        else:
            _print_model(dict(m))
        return 0


def _class_weight(text: str) -> str | dict[str, Any]:
    """--class-weight: "balanced", or a JSON object of the dataset's labels and their weights."""
    if text == "balanced":
        return text
    try:
        weights = json.loads(text)
    except ValueError:
        weights = None
    if not isinstance(weights, dict):
        raise CliError(f"--class-weight takes balanced or a JSON object of label: weight, e.g. "
                       f"'{{\"yes\": 5}}'; got {text!r}")
    return weights


def job_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.config:
        loaded = _load_json(args.config, "the job config")
        if not isinstance(loaded, dict):
            raise CliError(f"{args.config}: a job config is a JSON object")
        body.update(loaded)
    for key in ("loss", "epochs", "validation_split", "validation_rows", "validation_dataset_id", "seed"):
        value = getattr(args, key)
        if value is not None:
            body[key] = value
    if args.batch_size is not None:
        body["batch_size"] = "full" if args.batch_size == "full" else int(args.batch_size)
    if args.metric:
        body["metrics"] = list(args.metric)
    if args.class_weight is not None:
        body["class_weight"] = _class_weight(args.class_weight)
    if args.diagnostics:
        body["diagnostics"] = True
    if args.optimizer is not None or args.lr is not None:
        opt = body.get("optimizer")
        opt = dict(opt) if isinstance(opt, dict) else ({"type": opt} if isinstance(opt, str) else {})
        if args.optimizer is not None:
            opt["type"] = args.optimizer
        if args.lr is not None:
            opt["learning_rate"] = args.lr
        opt.setdefault("type", "adam")
        body["optimizer"] = opt
    model = args.model or body.pop("model_id", None)
    dataset = args.dataset or body.pop("dataset_id", None)
    body.pop("model_id", None)
    body.pop("dataset_id", None)
    if not model or not dataset:
        raise CliError("--model and --dataset are required (or model_id and dataset_id in --config)")
    body["model_id"], body["dataset_id"] = model, dataset
    return body


def diagnostics_lines(row: dict[str, Any]) -> list[str]:
    """A history row's diagnostics, one line each: "weight change (last epoch): dense 9.2e-10, ..." and
    "hidden layers (last epoch): dense 41% inactive, 3% dead units; ..."."""
    lines = []
    if row.get("weight_changes"):
        lines.append("weight change (last epoch): " + ", ".join(
            f"{name} {'-' if v is None else f'{v:.2g}'}" for name, v in row["weight_changes"].items()))
    if row.get("activations"):
        lines.append("hidden layers (last epoch): " + "; ".join(
            f"{name} {a['inactive']:.0%} inactive, {a['dead_units']:.0%} dead units"
            for name, a in row["activations"].items()))
    return lines


def _finish(job: dict[str, Any], as_json: bool) -> int:
    if as_json:
        _print_json(job)
    status = job["status"]
    if status == "succeeded":
        last = job["history"][-1] if job.get("history") else {}
        metrics = "  ".join(f"{k} {_fmt(v)}" for k, v in last.items() if k not in _NOT_METRICS
                            and not isinstance(v, dict))
        if not as_json:
            print(f"job {job['id']} succeeded: model {job['model_id']} version {job['result_version']}"
                  + (f"  ({metrics})" if metrics else ""))
            for line in diagnostics_lines(last):
                print(line)
        return 0
    if not as_json:
        error = job.get("error") or {}
        detail = f": {error.get('code')}: {error.get('message')}" if error else ""
        print(f"job {job['id']} {status}{detail}", file=sys.stderr)
    return 1


def cmd_train(args: argparse.Namespace) -> int:
    body = job_body(args)
    with connect(args) as bp:
        model_id, dataset_id = body.pop("model_id"), body.pop("dataset_id")
        job = bp.create_job(model_id, dataset_id, body)
        for warning in job.get("warnings") or []:      # the job is queued all the same
            print(f"warning: {warning}", file=sys.stderr)
        if args.no_wait:
            if _json(args):
                _print_json(job)
            else:
                print(job["id"])
            return 0
        print(f"job {job['id']} queued: {job['progress']['epochs']} epochs of model {model_id} on dataset "
              f"{dataset_id}", file=sys.stderr)
        return _watch(bp, job["id"], int(job["progress"]["epochs"]), _json(args))


def _watch(bp: Client, job_id: str, epochs: int, as_json: bool) -> int:
    try:
        job = follow(bp, job_id, epochs)
    except KeyboardInterrupt:
        print(f"\nstopped watching; the job goes on (backprop jobs cancel {job_id} stops it)", file=sys.stderr)
        return 130
    return _finish(job, as_json)


def cmd_jobs(args: argparse.Namespace) -> int:
    with connect(args) as bp:
        sub = getattr(args, "jobs_command", None)
        if sub == "show":
            job = bp.get_job(args.id)
            if _json(args):
                _print_json(job)
            else:
                _print_job(dict(job))
            return 0
        if sub == "cancel":
            job = bp.cancel_job(args.id)
            if _json(args):
                _print_json(job)
            else:
                state = "cancel requested" if job["status"] == "running" else job["status"]
                print(f"job {job['id']}: {state}")
            return 0
        if sub == "continue":
            job = bp.continue_job(args.id, epochs=args.epochs)
            if _json(args):
                _print_json(job)
            else:
                source = job["config"]["continue_from"]
                print(f"job {job['id']}: queued, carrying job {source['job_id']} on from epoch {source['epoch']} "
                      f"to {job['progress']['epochs']}")
            return 0
        if sub == "watch":
            job = bp.get_job(args.id)  # a finished job's stream replays its epochs, then its final status
            return _watch(bp, args.id, int(job["progress"]["epochs"]), _json(args))
        # the table shows each job's last loss; --json prints the jobs whole
        page = bp.list_jobs(status=args.status, model_id=args.model, limit=args.limit,
                            history_tail=None if _json(args) else 1)
        if _json(args):
            _print_json(page)
        else:
            table([(j["id"], j["status"], f"{j['progress']['epoch']}/{j['progress']['epochs']}",
                    _last_loss(dict(j)), j["model_id"], _when(j["created_at"])) for j in page["items"]],
                  ("ID", "STATUS", "EPOCH", "LOSS", "MODEL", "CREATED"))
        return 0


def _last_loss(job: dict[str, Any]) -> str:
    history = job.get("history") or []
    return _fmt(history[-1].get("loss")) if history and "loss" in history[-1] else "-"


def _print_job(job: dict[str, Any]) -> None:
    p = job["progress"]
    print(f"job      {job['id']}")
    print(f"status   {job['status']}" + (" (cancel requested)" if job.get("cancel_requested") and
                                         job["status"] == "running" else ""))
    print(f"model    {job['model_id']}" + (f"  -> version {job['result_version']}" if job.get("result_version")
                                           else ""))
    print(f"dataset  {job['dataset_id']}")
    print(f"progress epoch {p['epoch']}/{p['epochs']} ({p['fraction'] * 100:.0f}%), attempts {job['attempts']}")
    print(f"created  {_when(job['created_at'])}   started {_when(job.get('started_at')) or '-'}   "
          f"finished {_when(job.get('finished_at')) or '-'}")
    if job.get("error"):
        print(f"error    {job['error']['code']}: {job['error']['message']}")
    cfg = job.get("config") or {}
    opt = cfg.get("optimizer")
    opt_s = opt.get("type") if isinstance(opt, dict) else opt
    print(f"config   loss {cfg.get('loss')}, optimizer {opt_s}, batch_size {cfg.get('batch_size')}, "
          f"epochs {cfg.get('epochs')}")
    history = job.get("history") or []
    if history:
        keys = [k for k in history[-1] if k not in ("epoch", "grad_norms")]
        rows = history if len(history) <= 10 else history[:3] + history[-7:]
        table([[r.get("epoch")] + [_fmt(r.get(k, "")) for k in keys] for r in rows],
              ["EPOCH"] + [k.upper() for k in keys])


def sweep_body(args: argparse.Namespace) -> dict[str, Any]:
    """POST /v1/sweeps's body from the sweep command's options: the train options make the base config."""
    try:
        grid = json.loads(args.grid)
    except ValueError:
        grid = None
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
        raise CliError(f"--grid takes a JSON object of paths and lists of values, e.g. "
                       f"'{{\"optimizer.learning_rate\": [0.001, 0.01]}}'; got {args.grid!r}")
    config = job_body(args)
    if "optimizer" not in config and "optimizer" not in grid and any(k.startswith("optimizer.") for k in grid):
        config["optimizer"] = "adam"        # as train's --lr without --optimizer: a rate needs an optimizer to tune
    body: dict[str, Any] = {"model_id": config.pop("model_id"), "dataset_id": config.pop("dataset_id"),
                            "config": config, "grid": grid}
    for key in ("objective", "mode", "name", "folds"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    return body


def _params_text(params: dict[str, Any]) -> str:
    return "  ".join(f"{path}={json.dumps(value)}" for path, value in params.items())


def _print_sweep(sweep: dict[str, Any]) -> None:
    """The sweep's header, then one line per trial (its values, status and objective), the best one marked."""
    trials = sweep.get("trials") or []
    ended = sum(t["status"] not in ("queued", "running") for t in trials)
    print(f"sweep    {sweep['id']}  {sweep['name']}")
    print(f"status   {sweep['status']} ({ended}/{len(trials)} trials ended)")
    print(f"model    {sweep['model_id']}   dataset {sweep['dataset_id']}")
    print(f"ranking  {sweep['objective']} ({'lower' if sweep['mode'] == 'min' else 'higher'} is better)")
    best = (sweep.get("best") or {}).get("job_id")
    table([("*" if t["job_id"] == best else "", i + 1, _params_text(t["params"]), t["status"], t["epochs_done"],
            "-" if t["objective"] is None else _fmt(t["objective"]), t["job_id"]) for i, t in enumerate(trials)],
          ("BEST", "TRIAL", "PARAMS", "STATUS", "EPOCHS", sweep["objective"].upper(), "JOB"))
    if sweep.get("best"):
        print(f"best: trial {[t['job_id'] for t in trials].index(best) + 1}, {_params_text(sweep['best']['params'])}"
              f", {sweep['objective']} {_fmt(sweep['best']['objective'])}: model {sweep['model_id']} version "
              f"{sweep['best']['result_version']}")
    cv = sweep.get("cross_validation")
    if cv:
        print()
        table([("*" if cv["best"] and p["job_ids"] == cv["best"]["job_ids"] else "", _params_text(p["params"]),
                f"{p['folds_succeeded']}/{cv['folds']}",
                "-" if p["objective_mean"] is None else f"{_fmt(p['objective_mean'])} ± {_fmt(p['objective_std'])}")
               for p in cv["points"]], ("BEST", "PARAMS", "FOLDS", f"MEAN {sweep['objective'].upper()}"))
        if cv["best"]:
            print(f"best over {cv['folds']} folds: {_params_text(cv['best']['params'])}, {sweep['objective']} "
                  f"{_fmt(cv['best']['objective_mean'])} ± {_fmt(cv['best']['objective_std'])}")


def cmd_sweep(args: argparse.Namespace) -> int:
    body = sweep_body(args)
    with connect(args) as bp:
        sweep = dict(bp.create_sweep(body.pop("model_id"), body.pop("dataset_id"), body.pop("grid"),
                                     **{k: body.pop(k) for k in ("objective", "mode", "name", "folds")
                                        if k in body},
                                     **body.pop("config")))
        for warning in sweep.get("warnings") or []:    # the trials are queued all the same
            print(f"warning: {warning}", file=sys.stderr)
        if not args.wait:
            if _json(args):
                _print_json(sweep)
            else:
                print(f"{sweep['id']}  {len(sweep['trials'])} trials queued, ranked by {sweep['objective']}")
            return 0
        print(f"sweep {sweep['id']}: {len(sweep['trials'])} trials queued, ranked by {sweep['objective']}",
              file=sys.stderr)
        try:
            sweep = _follow_sweep(bp, sweep)
        except KeyboardInterrupt:
            print(f"\nstopped watching; the trials go on (backprop sweeps cancel {sweep['id']} stops them)",
                  file=sys.stderr)
            return 130
    if _json(args):
        _print_json(sweep)
    else:
        _print_sweep(sweep)
    return 0 if sweep["status"] == "succeeded" else 1


def _follow_sweep(bp: Client, sweep: dict[str, Any], poll_s: float = 1.0) -> dict[str, Any]:
    """Poll until the sweep ends, printing a line on stderr whenever a trial's status changes."""
    seen = [t["status"] for t in sweep["trials"]]
    while sweep["status"] == "running":
        time.sleep(poll_s)
        sweep = dict(bp.get_sweep(sweep["id"]))
        now = [t["status"] for t in sweep["trials"]]
        if now != seen:
            seen = now
            counts = {s: now.count(s) for s in ("succeeded", "running", "queued", "failed", "cancelled") if s in now}
            best = sweep.get("best")
            print(f"sweep {sweep['id']}: " + ", ".join(f"{n} {s}" for s, n in counts.items())
                  + (f"; best so far {sweep['objective']} {_fmt(best['objective'])}" if best else ""),
                  file=sys.stderr)
    return sweep


def _best_text(sweep: dict[str, Any]) -> str:
    """The best trial's objective; in a cross-validation sweep the best point's mean ± std over its folds."""
    cv = sweep.get("cross_validation")
    if cv:
        best = cv.get("best")
        return "-" if not best else f"{_fmt(best['objective_mean'])} ± {_fmt(best['objective_std'])}"
    return "-" if not sweep.get("best") else _fmt(sweep["best"]["objective"])


def cmd_sweeps(args: argparse.Namespace) -> int:
    with connect(args) as bp:
        sub = args.sweeps_command
        if sub == "list":
            page = bp.list_sweeps(model_id=args.model, limit=args.limit)
            if _json(args):
                _print_json(page)
            else:
                table([(s["id"], s["name"], s["status"], len(s["trials"]), s["objective"], _best_text(s),
                        s["model_id"], _when(s["created_at"]))
                       for s in page["items"]], ("ID", "NAME", "STATUS", "TRIALS", "OBJECTIVE", "BEST", "MODEL",
                                                 "CREATED"))
            return 0
        if sub == "delete":
            bp.delete_sweep(args.id)
            print(f"sweep {args.id}: deleted (its jobs and versions stay)")
            return 0
        if sub == "refit":
            job = bp.refit_sweep(args.id)
            if _json(args):
                _print_json(job)
            else:
                print(f"{job['id']}  queued: the best point trained on every row (backprop jobs watch {job['id']})")
            return 0
        sweep = dict(bp.cancel_sweep(args.id) if sub == "cancel" else bp.get_sweep(args.id))
    if _json(args):
        _print_json(sweep)
    else:
        _print_sweep(sweep)
    return 0


def _read_rows(args: argparse.Namespace) -> list[Any]:
    if args.input:
        data = _load_json(args.input, "the input rows")
        rows = data.get("inputs") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise CliError(f"{args.input}: give a JSON list of rows, or {{\"inputs\": [...]}}")
        return rows
    drop = {c.strip() for c in (args.drop or "").split(",") if c.strip()}
    try:
        with open(args.csv, newline="") as fh:
            reader = csv.DictReader(fh)
            return [{k: _number(v) for k, v in row.items() if k is not None and k not in drop} for row in reader]
    except OSError as exc:
        raise CliError(f"cannot read {args.csv}: {exc.strerror or exc}") from None


def _number(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def cmd_evaluate(args: argparse.Namespace) -> int:
    with connect(args) as bp:
        out = bp.evaluate(args.model_id, args.dataset, rows=args.rows, version=args.version, loss=args.loss,
                          metrics=args.metric)
    if _json(args):
        _print_json(out)
        return 0
    table([(name, _fmt(value) if value is not None else "-") for name, value in out["metrics"].items()],
          ("METRIC", "VALUE"))
    confusion = out.get("confusion")
    if confusion:
        print()
        table([(c["label"], _fmt(c["precision"]), _fmt(c["recall"]), _fmt(c["f1"]), c["support"])
               for c in confusion["per_class"]], ("LABEL", "PRECISION", "RECALL", "F1", "SUPPORT"))
        if confusion.get("matrix") is not None:
            print()
            labels = [str(c) for c in confusion["classes"]]
            table([[label, *row] for label, row in zip(labels, confusion["matrix"])],
                  ["TRUE/PREDICTED", *labels])
    which = "" if out.get("rows", "all") == "all" else f" ({out['rows']} rows of its job)"
    print(f"model {out['model_id']} version {out['version']} on dataset {out['dataset_id']}{which}: "
          f"{out['n_samples']} rows, loss {out['loss']}", file=sys.stderr)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.npy:
        try:
            rows: Any = Path(args.npy).read_bytes()     # sent as it is: the server checks it
        except OSError as exc:
            raise CliError(f"cannot read {args.npy}: {exc.strerror or exc}") from None
    else:
        rows = _read_rows(args)
    with connect(args) as bp:
        out = (bp.predict_npy if args.npy else bp.predict)(args.model_id, rows, version=args.version)
    if _json(args):
        _print_json(out)
        return 0
    probs = out.get("probabilities")
    classes = out.get("classes")
    if probs and classes and out["task"] == "classification":
        table([(i, _fmt(p), _fmt(max(pr))) for i, (p, pr) in enumerate(zip(out["predictions"], probs))],
              ("ROW", "PREDICTION", "PROBABILITY"))
    else:
        table([(i, json.dumps(p) if isinstance(p, list) else _fmt(p)) for i, p in enumerate(out["predictions"])],
              ("ROW", "PREDICTION"))
    print(f"model {out['model_id']} version {out['version']}", file=sys.stderr)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    rows = _read_rows(args)
    with connect(args) as bp:
        out = bp.explain(args.model_id, rows, target=_number(args.target) if args.target is not None else None,
                         steps=args.steps, version=args.version)
    if _json(args):
        _print_json(out)
        return 0
    names = out["feature_names"]
    table([(i, _fmt(t), _fmt(o), _fmt(b), *(_fmt(a) for a in attrs))
           for i, (t, o, b, attrs) in enumerate(zip(out["targets"], out["outputs"], out["baseline_outputs"],
                                                    out["attributions"]))],
          ("ROW", "TARGET", "OUTPUT", "BASELINE", *names))
    print(f"model {out['model_id']} version {out['version']}: integrated gradients over {out['steps']} steps from "
          f"the baseline row [{', '.join(_fmt(v) for v in out['baseline'])}]; each row's attributions add up to "
          "OUTPUT - BASELINE",
          file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    ext = {"keras": "json", "onnx": "onnx"}.get(args.format, "npz")
    out = args.output or f"model-{args.model_id}.{ext}"
    with connect(args) as bp:
        content = bp.export(args.model_id, args.format, version=args.version)
    Path(out).write_bytes(content)
    print(f"wrote {out} ({len(content)} bytes)", file=sys.stderr)
    return 0


def _json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


# --------------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------------


def _conn_parent() -> argparse.ArgumentParser:
    # SUPPRESS: an option given before a nested subcommand (``jobs --url X show ID``) is not overwritten by
    # the nested parser's default.
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument("--url", default=argparse.SUPPRESS, help=f"server URL (BACKPROP_URL; default {DEFAULT_URL})")
    g.add_argument("--api-key", default=argparse.SUPPRESS,
                   help="API key (BACKPROP_API_KEY; default: the file $BACKPROP_DATA_DIR/api-key)")
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the API's JSON")
    return p


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the errors a user can cause into a message and exit code 1 (no traceback)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except ApiError as exc:
            print(f"error: {exc.status} {exc.title}: {exc.detail}", file=sys.stderr)
            for e in exc.errors:
                loc = ".".join(str(p) for p in e.get("loc", []))
                if loc and e.get("msg") != exc.detail:
                    print(f"  {loc}: {e.get('msg')}", file=sys.stderr)
            return 1
        except CliError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except httpx.TransportError as exc:
            print(f"error: cannot reach {resolve_url(args)} ({exc}); is the service running? (backprop up)",
                  file=sys.stderr)
            return 1

    run.__name__ = fn.__name__
    return run


def _add_list_and_show(sub: Any, conn: argparse.ArgumentParser, things: str, show_help: str) -> None:
    """``list [--limit N]`` and ``show ID`` under a command group (``datasets``, ``models``)."""
    lst = sub.add_parser("list", parents=[conn], help=f"list {things}")
    lst.add_argument("--limit", type=int, default=50)
    show = sub.add_parser("show", parents=[conn], help=show_help)
    show.add_argument("id")


def _add_fit_options(p: argparse.ArgumentParser) -> None:
    """The model, the dataset and the fit configuration (what :func:`job_body` reads): ``train``'s options, and
    ``sweep``'s for the base config of its trials."""
    p.add_argument("--model", help="model id")
    p.add_argument("--dataset", help="dataset id")
    p.add_argument("--loss", help="e.g. categorical_crossentropy, mean_squared_error")
    p.add_argument("--optimizer", help="sgd, rmsprop, adam, adamw, adagrad, adadelta, nadam")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", help="an integer, or 'full'")
    p.add_argument("--validation-split", type=float)
    p.add_argument("--validation-rows", choices=("last", "random", "stratified"),
                   help="which rows the split holds out: the last ones (Keras, the default), a random draw, or "
                        "each class's share")
    p.add_argument("--validation-dataset", dest="validation_dataset_id", metavar="DATASET_ID",
                   help="validate on a held-out dataset instead of a split")
    p.add_argument("--seed", type=int)
    p.add_argument("--metric", action="append", help="a metric to track (repeatable), e.g. accuracy")
    p.add_argument("--class-weight", metavar="WEIGHTS",
                   help='balanced, or a JSON object of the dataset\'s labels and weights, e.g. \'{"yes": 5}\'')
    p.add_argument("--diagnostics", action="store_true",
                   help="measure each layer's weight change and each hidden relu/sigmoid/tanh layer's inactive "
                        "units (dead relus, saturated sigmoid and tanh units) every epoch; shown when the job ends")
    p.add_argument("--config", metavar="JOB.json", help="the job's JSON (options on the command line win)")


def add_client_commands(subparsers: Any) -> None:
    """Register the user commands on ``subparsers`` (``parser.add_subparsers()``); each sets ``func``."""
    conn = _conn_parent()

    ds = subparsers.add_parser("datasets", help="upload and list datasets")
    dsub = ds.add_subparsers(dest="datasets_command", required=True)
    up = dsub.add_parser("upload", parents=[conn],
                         help="upload a CSV file (with a header row) or a .npz archive (features, targets)")
    up.add_argument("file", help="FILE.csv, or FILE.npz from numpy.savez(FILE, features=X, targets=y)")
    up.add_argument("--target", help="CSV: the target column (or comma-separated columns); required")
    up.add_argument("--name", help="default: the file name")
    up.add_argument("--task", choices=("classification", "multilabel", "regression"),
                    help="default: inferred from the targets")
    up.add_argument("--input-shape", help="e.g. 28,28 (default: the number of features)")
    _add_list_and_show(dsub, conn, "datasets", "one dataset as JSON")
    dx = dsub.add_parser("export", parents=[conn], help="download a dataset as it can be uploaded again")
    dx.add_argument("id")
    dx.add_argument("--format", choices=("npz", "csv"), default="npz")
    dx.add_argument("-o", "--output", metavar="FILE", help="default: dataset-<id>.<format>")
    ds.set_defaults(func=_guard(cmd_datasets))

    ms = subparsers.add_parser("models", help="create and list models")
    msub = ms.add_subparsers(dest="models_command", required=True)
    mc = msub.add_parser("create", parents=[conn], help="create a model from a JSON spec (or Keras JSON)")
    mc.add_argument("spec", metavar="SPEC.json")
    mc.add_argument("--name", help="default: the spec's name, else the file name")
    _add_list_and_show(msub, conn, "models", "a model's layers and parameters")
    serve = msub.add_parser("serve", parents=[conn],
                            help="pin the version that predict, evaluate and export use when they name none")
    serve.add_argument("id")
    serve.add_argument("version", type=int, nargs="?", help="the version to pin")
    serve.add_argument("--latest", action="store_true", help="unpin: the latest version serves, as it did")
    rename = msub.add_parser("rename", parents=[conn], help="rename a model")
    rename.add_argument("id")
    rename.add_argument("name")
    ms.set_defaults(func=_guard(cmd_models))

    tr = subparsers.add_parser("train", parents=[conn], help="train a model on a dataset, with live progress")
    _add_fit_options(tr)
    tr.add_argument("--no-wait", action="store_true", help="print the job id and return")
    tr.set_defaults(func=_guard(cmd_train))

    jb = subparsers.add_parser("jobs", parents=[conn], help="list, show, watch, cancel and continue training jobs")
    jb.add_argument("--status", choices=("queued", "running", "succeeded", "failed", "cancelled"))
    jb.add_argument("--model", help="only this model's jobs")
    jb.add_argument("--limit", type=int, default=50)
    jsub = jb.add_subparsers(dest="jobs_command")
    for name, text in (("show", "a job's status, config and history"), ("watch", "follow a job live"),
                       ("cancel", "cancel a job"),
                       ("continue", "carry a finished job's fit on from its latest checkpoint (a new job)")):
        p = jsub.add_parser(name, parents=[conn], help=text)
        p.add_argument("id")
        if name == "continue":
            p.add_argument("--epochs", type=int, help="epochs of the whole fit (default: the job's own)")
    jb.set_defaults(func=_guard(cmd_jobs))

    sw = subparsers.add_parser("sweep", parents=[conn],
                               help="try a grid of hyperparameters: one training job per combination")
    _add_fit_options(sw)
    sw.add_argument("--grid", required=True, metavar="JSON",
                    help='dotted job-config paths and their values, e.g. \'{"optimizer.learning_rate": [0.001, 0.01], '
                         '"batch_size": [16, 64]}\'; optimizer.* paths with no --optimizer tune adam')
    sw.add_argument("--objective", help="what ranks the trials, e.g. val_accuracy (default: val_loss with "
                                        "validation data, else loss)")
    sw.add_argument("--mode", choices=("auto", "min", "max"), help="lower or higher is better (default: auto)")
    sw.add_argument("--name", help="default: the grid's keys")
    sw.add_argument("--folds", type=int, help="k-fold cross-validation of every grid point, ranked by the mean "
                                              "over its folds (--validation-rows deals the rows to the folds)")
    sw.add_argument("--wait", action="store_true", help="follow the trials until the sweep ends, then show it")
    sw.set_defaults(func=_guard(cmd_sweep))

    sws = subparsers.add_parser("sweeps", help="list, show, cancel and delete hyperparameter sweeps")
    swsub = sws.add_subparsers(dest="sweeps_command", required=True)
    swl = swsub.add_parser("list", parents=[conn], help="list sweeps")
    swl.add_argument("--model", help="only this model's sweeps")
    swl.add_argument("--limit", type=int, default=50)
    for name, text in (("show", "a sweep's trials, their objectives and the best"),
                       ("cancel", "cancel every unfinished trial"),
                       ("refit", "train a cross-validation sweep's best point on every row"),
                       ("delete", "delete a sweep (its jobs and versions stay)")):
        p = swsub.add_parser(name, parents=[conn], help=text)
        p.add_argument("id")
    sws.set_defaults(func=_guard(cmd_sweeps))

    pr = subparsers.add_parser("predict", parents=[conn], help="predict with a trained model")
    pr.add_argument("model_id")
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", metavar="ROWS.json", help="a JSON list of rows (lists or objects by feature)")
    src.add_argument("--csv", metavar="FILE", help="a CSV with a header row naming the features")
    src.add_argument("--npy", metavar="ROWS.npy", help="one array saved by numpy.save: fastest for big batches")
    pr.add_argument("--drop", help="CSV columns to leave out (e.g. the target), comma-separated")
    pr.add_argument("--version", type=int, help="default: the latest")
    pr.set_defaults(func=_guard(cmd_predict))

    xp = subparsers.add_parser("explain", parents=[conn],
                               help="each feature's share of a prediction (integrated gradients)")
    xp.add_argument("model_id")
    xsrc = xp.add_mutually_exclusive_group(required=True)
    xsrc.add_argument("--input", metavar="ROWS.json", help="a JSON list of rows (lists or objects by feature)")
    xsrc.add_argument("--csv", metavar="FILE", help="a CSV with a header row naming the features")
    xp.add_argument("--drop", help="CSV columns to leave out (e.g. the target), comma-separated")
    xp.add_argument("--target", help="the class, label or target column to explain (default: the prediction)")
    xp.add_argument("--steps", type=int, help="points of the integral (default 64)")
    xp.add_argument("--version", type=int, help="default: the latest")
    xp.set_defaults(func=_guard(cmd_explain))

    ev = subparsers.add_parser("evaluate", parents=[conn], help="loss and metrics of a model on a dataset")
    ev.add_argument("model_id")
    ev.add_argument("--dataset", help="the dataset's id (rows held out of training, say)")
    ev.add_argument("--rows", choices=("all", "validation", "training"),
                    help="validation or training: the rows the version's own job validated or trained on "
                         "(no --dataset needed); all (the default): every row of --dataset")
    ev.add_argument("--version", type=int, help="default: the latest")
    ev.add_argument("--loss", help="default: the loss the version was trained with")
    ev.add_argument("--metric", action="append", help="repeat for several (default: the training job's)")
    ev.set_defaults(func=_guard(cmd_evaluate))

    ex = subparsers.add_parser("export", parents=[conn], help="download a trained model")
    ex.add_argument("model_id")
    ex.add_argument("--format", choices=("npz", "keras", "onnx"), default="npz")
    ex.add_argument("-o", "--output", metavar="FILE", help="default: model-<id>.<ext>")
    ex.add_argument("--version", type=int, help="default: the latest")
    ex.set_defaults(func=_guard(cmd_export))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backprop", description="The Backprop client: train networks over HTTP.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

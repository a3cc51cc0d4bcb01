"""The fit loop: validation split, shuffling, augmentation, callbacks, early stopping, plateau,
divergence, checkpoints and resume.

Determinism: every random draw of epoch e comes from generators seeded by (seed, e, stream)
(stream 0: the shuffle, 1: dropout and noise layers, 2: augmentation), so no generator state has to
be carried across epochs and a fit resumed after epoch k redraws exactly what the uninterrupted fit
draws. Together with the checkpointed weights, moving statistics, optimizer state, callback state and
history, a resumed fit ends bit-identical to the uninterrupted one.
"""
from __future__ import annotations

import math
import time

import numpy as np

from . import class_weight as class_weight_mod
from . import holdout
from . import losses as losses_mod
from .augmentation import Augmenter, active as augmentation_active
from .config import loss_name, monitor_mode, normalize_fit_config, normalize_loss
from .diagnostics import ActivationMonitor, WeightChanges
from .errors import ConfigError, Diverged
from .metrics import MetricAccumulator

STANDARDIZE_CHUNK = 8192


def _rng(*words: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(w) for w in words])))


# -- events handed to callbacks --------------------------------------------------------------------
class EpochEvent:
    """After each epoch: ``.epoch`` (1-based), ``.row`` (the history row), ``.checkpoint() -> bytes``,
    ``.stop()`` (end the fit after this epoch)."""

    def __init__(self, trainer: "_Trainer", epoch: int, row: dict):
        self._trainer = trainer
        self.epoch = epoch
        self.row = row
        self.stopped = False

    def checkpoint(self) -> bytes:
        from .serialization import checkpoint_to_bytes
        return checkpoint_to_bytes(self._trainer.state())

    def stop(self) -> None:
        self.stopped = True


class BatchEvent:
    """After each batch: ``.epoch``, ``.batch`` (1-based), ``.stop()`` (end the fit now)."""
    __slots__ = ("epoch", "batch", "stopped")

    def __init__(self, epoch: int, batch: int):
        self.epoch = epoch
        self.batch = batch
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


# -- compatibility of a config with a model and data ---------------------------------------------------
def check_compatible(model, config: dict, x_shape: tuple, y) -> None:
    """Raise ConfigError (field "input_shape", "loss", "class_weight[.<class>]" or "validation_rows") when the
    data, the loss, the class weights or a stratified validation split cannot fit the model: a Model, or the
    ``engine.shapes(spec)`` of one (all it reads)."""
    _check_targets(model, config, x_shape, y)
    name = loss_name(normalize_loss(config.get("loss")))
    weights = class_weight_mod.normalize(config.get("class_weight"), name)
    class_weight_mod.check(weights, name, model.output_units)
    holdout.check_stratifiable(config.get("validation_rows", "last"), name, model.output_units)


def _check_targets(model, config: dict, x_shape: tuple, y) -> None:
    x_shape = tuple(x_shape)
    if len(x_shape) < 1:
        raise ConfigError("input_shape", "the inputs must have one row per sample")
    row = x_shape[1:] if len(x_shape) > 1 else (1,)
    if math.prod(row) != model.input_size:
        raise ConfigError("input_shape", f"rows of shape {list(row)} ({math.prod(row)} values) do not fit the "
                                         f"model's input_shape {list(model.input_shape)} ({model.input_size} values)")
    loss = normalize_loss(config.get("loss"))
    name = loss_name(loss)
    units = model.output_units
    y = np.asarray(y)
    if y.shape[0] != x_shape[0]:
        raise ConfigError("loss", f"{x_shape[0]} input rows but {y.shape[0]} targets")
    width = 1 if y.ndim == 1 else math.prod(y.shape[1:])
    if name == "sparse_categorical_crossentropy":
        if width != 1:
            raise ConfigError("loss", "sparse_categorical_crossentropy takes one integer label per row; "
                                      "use categorical_crossentropy for one-hot targets")
        if units < 2:
            raise ConfigError("loss", f"sparse_categorical_crossentropy needs one output unit per class; the "
                                      f"model has {units}")
        if y.size:
            if not np.all(np.isfinite(y)) or not np.all(np.asarray(y) == np.round(y)):
                raise ConfigError("loss", "sparse_categorical_crossentropy needs integer labels")
            lo, hi = float(np.min(y)), float(np.max(y))
            if lo < 0 or hi >= units:
                raise ConfigError("loss", f"labels run from {lo:g} to {hi:g} but the model has {units} output "
                                          f"units (labels must be in [0, {units - 1}])")
        return
    if name == "categorical_crossentropy":
        if units < 2:
            raise ConfigError("loss", f"categorical_crossentropy needs one output unit per class (at least 2); "
                                      f"the model has {units}")
        if y.ndim == 1:
            raise ConfigError("loss", "categorical_crossentropy takes one-hot targets; use "
                                      "sparse_categorical_crossentropy for integer labels")
        if width != units:
            raise ConfigError("loss", f"the targets have {width} classes but the model has {units} output units")
        return
    if width != units:
        raise ConfigError("loss", f"the targets have {width} columns but the model has {units} output units")
    if name == "binary_crossentropy" and y.size and (np.min(y) < 0 or np.max(y) > 1):
        raise ConfigError("loss", "binary_crossentropy needs targets in [0, 1]")


# -- which rows a validation_split or a validation_fold holds out -------------------------------------------
def _split(cfg: dict, loss_name_: str, targets: np.ndarray) -> tuple[int, np.ndarray | None]:
    """(training rows, row order) of a fit of ``cfg``: the order puts the training rows first and the held-out
    rows after them (engine/holdout.py), drawn from stream 3 of the fit's seed; None when the rows stay where
    they are (no validation, or Keras's "last" rows of a validation_split)."""
    n = len(targets)
    mode = cfg.get("validation_rows", "last")
    classes = holdout.class_of_rows(loss_name_, targets) if mode == "stratified" else None
    fold = cfg.get("validation_fold")
    if fold:
        if fold["folds"] > n:
            raise ConfigError("validation_fold.folds", f"{fold['folds']} folds of {n} rows: at most one per row")
        folds = holdout.fold_of_rows(mode, n, fold["folds"], _rng(cfg["seed"], 0, 3), classes)
        order, n_train = holdout.fold_order(folds, fold["fold"] - 1)
        return n_train, order
    fraction = float(cfg.get("validation_split") or 0.0)
    n_train = int(math.floor(n * (1.0 - fraction))) if fraction > 0 else n
    if mode == "last" or n_train == n:
        return n_train, None
    return n_train, holdout.row_order(mode, n, n_train, _rng(cfg["seed"], 0, 3), classes)


def split_rows(config: dict, y, dtype="float32") -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of a fit of ``config`` (a normalized fit config, as a job stores it)
    on targets ``y`` (in the loss's form, as the fit takes them): indices into the dataset, each in dataset
    order, exactly the rows that fit trained and validated on. No validation_split or fold: every row trains."""
    loss = losses_mod.get(normalize_loss(config.get("loss")))
    targets = loss.prepare_targets(y, np.dtype(dtype))
    n_train, order = _split(config, loss.name, targets)
    rows = np.arange(len(targets)) if order is None else order
    return rows[:n_train], rows[n_train:]


# -- the trainer --------------------------------------------------------------------------------------
class _Trainer:
    def __init__(self, model, cfg: dict, state: dict | None):
        from . import optimizers
        self.model = model
        self.cfg = cfg
        self.loss, self.fused = model._configure_loss(cfg["loss"])
        model._configure_regularization(cfg["regularization"])
        self.metric_names = cfg["metrics"]
        self.opt = optimizers.get(cfg["optimizer"])
        self.opt.build(model.params, model.segments)
        self.history: list[dict] = []
        self.epoch = 0
        self.finished = False
        es = cfg["early_stopping"]
        self.es = None if es is None else {"wait": 0, "best": None, "best_epoch": 0, "stopped_epoch": 0}
        self.best_weights: list[np.ndarray] | None = None
        pl = cfg["reduce_lr_on_plateau"]
        self.plateau = None if pl is None else {
            "wait": 0, "cooldown_counter": 0, "best": math.inf if monitor_mode(pl) == "min" else -math.inf}
        if state is not None:
            self.load(state)

    # checkpoint state
    def state(self) -> dict:
        m = self.model
        return {"spec": m.spec, "config": self.cfg, "model_seed": m.seed, "dtype": m.dtype.name,
                "epoch": self.epoch, "finished": self.finished, "history": self.history,
                "early_stopping": self.es, "plateau": self.plateau,
                "weights": m.get_weights(), "optimizer": self.opt.state(),
                "best_weights": self.best_weights, "standardization": m.standardization}

    def load(self, state: dict) -> None:
        self.model.set_weights(state["weights"])
        self.opt.load_state(state["optimizer"])
        self.history = list(state["history"])
        self.epoch = state["epoch"]
        self.finished = state["finished"]
        self.es = state["early_stopping"]
        self.plateau = state["plateau"]
        self.best_weights = state["best_weights"]

    # callbacks of the config
    def _early_stopping(self, epoch: int, row: dict) -> bool:
        cfg, st = self.cfg["early_stopping"], self.es
        e0 = epoch - 1                             # Keras counts epochs from 0
        current = row.get(cfg["monitor"])
        if current is None or e0 < cfg["start_from_epoch"]:
            return False
        sign = -1.0 if monitor_mode(cfg) == "min" else 1.0

        def improves(value, reference):
            if reference is None:
                return True
            # min mode: value < reference - |min_delta|; max mode: value > reference + |min_delta|
            return sign * (value - reference) > abs(cfg["min_delta"])

        if cfg["restore_best_weights"] and self.best_weights is None:
            self.best_weights = self.model.get_weights()
            st["best_epoch"] = epoch
        st["wait"] += 1
        if improves(current, st["best"]):
            st["best"] = current
            st["best_epoch"] = epoch
            if cfg["restore_best_weights"]:
                self.best_weights = self.model.get_weights()
            if cfg["baseline"] is None or improves(current, cfg["baseline"]):
                st["wait"] = 0
            return False
        if st["wait"] >= cfg["patience"] and e0 > 0:
            st["stopped_epoch"] = epoch
            return True
        return False

    def _reduce_on_plateau(self, row: dict) -> None:
        cfg, st = self.cfg["reduce_lr_on_plateau"], self.plateau
        current = row.get(cfg["monitor"])
        if current is None:
            return
        in_cooldown = st["cooldown_counter"] > 0
        if in_cooldown:
            st["cooldown_counter"] -= 1
            st["wait"] = 0
        better = (current < st["best"] - cfg["min_delta"]) if monitor_mode(cfg) == "min" \
            else (current > st["best"] + cfg["min_delta"])
        if better:
            st["best"] = current
            st["wait"] = 0
        elif not st["cooldown_counter"] > 0:
            st["wait"] += 1
            if st["wait"] >= cfg["patience"]:
                old = float(self.opt.learning_rate)
                if old > float(np.float32(cfg["min_lr"])):
                    self.opt.learning_rate = max(old * cfg["factor"], cfg["min_lr"])
                    st["cooldown_counter"] = cfg["cooldown"]
                    st["wait"] = 0

    def run(self, X, y, validation_data, callbacks, batch_callbacks, standardization) -> list[dict]:
        model, cfg = self.model, self.cfg
        dt = model.dtype
        X = model._as_input(X)
        n = X.shape[0]
        yt = self.loss.prepare_targets(y, dt)
        if validation_data is None:
            holdout.check_stratifiable(cfg.get("validation_rows", "last"), self.loss.name, model.output_units)
            split, order = _split(cfg, self.loss.name, yt)
        elif cfg.get("validation_fold"):
            raise ConfigError("validation_fold", "give validation data or a validation_fold, not both")
        else:
            split, order = n, None
        if split < 1:
            raise ConfigError("validation_split", f"leaves no training rows out of {n}")
        if order is not None:
            yt = yt[order]
        # standardization: statistics from the training part only; the one copy of the data
        if standardization is None and cfg["standardize"]:
            standardization = _fit_standardization(X, dt, None if order is None else order[:split], split)
        model.standardization = standardization
        Xs = _standardize_into(X, standardization, dt, order)
        Xtr, ytr = Xs[:split], yt[:split]
        # class weights: each training row's weight, once per fit ("balanced" counts the training part only);
        # validation rows are not weighted, as in Keras
        wtr = class_weight_mod.sample_weights(cfg.get("class_weight"), self.loss.name, ytr, model.output_units, dt)
        if validation_data is not None:
            Xval = model._standardize(validation_data[0])
            yval = self.loss.prepare_targets(validation_data[1], dt)
        elif split < n:
            Xval, yval = Xs[split:], yt[split:]
        else:
            Xval = yval = None

        n_train = split
        bs = n_train if cfg["batch_size"] == "full" else min(cfg["batch_size"], n_train)
        shuffle = cfg["shuffle"]
        xbuf = np.empty((bs,) + Xtr.shape[1:], dtype=dt) if shuffle else None
        ybuf = np.empty((bs,) + ytr.shape[1:], dtype=ytr.dtype) if shuffle else None
        wbuf = np.empty(bs, dtype=dt) if shuffle and wtr is not None else None
        aug = Augmenter(cfg["augmentation"], model.input_shape) if augmentation_active(cfg["augmentation"]) else None
        abuf = np.empty((bs,) + Xtr.shape[1:], dtype=dt) if aug else None
        acc = MetricAccumulator(self.metric_names, self.loss.name)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            # overflow on the way to a NaN loss is reported once, as Diverged, not as warnings
            return self._epochs(Xtr, ytr, wtr, Xval, yval, bs, shuffle, xbuf, ybuf, wbuf, aug, abuf, acc, callbacks,
                                batch_callbacks)

    def _epochs(self, Xtr, ytr, wtr, Xval, yval, bs, shuffle, xbuf, ybuf, wbuf, aug, abuf, acc, callbacks,
                batch_callbacks):
        model, cfg = self.model, self.cfg
        n_train = Xtr.shape[0]
        with_metrics = bool(self.metric_names)
        seed = cfg["seed"]
        ranges = [(layer.name, model.layer_ranges[layer.name]) for layer in model.layers if layer.params]
        grads = model.grads
        grad_views = [grads[s0:s1] for _, (s0, s1) in ranges]   # each layer's gradients, cut once
        opt = self.opt
        step = model._train_step
        loss, fused = self.loss, self.fused
        epoch = self.epoch
        wb = None          # the batch's sample weights, with class weights
        # a checkpoint written before the key existed has no "diagnostics": off, as then
        monitor = ActivationMonitor(model) if cfg.get("diagnostics") else None
        changes = WeightChanges(model) if monitor is not None else None
        while not self.finished and epoch < cfg["epochs"]:
            epoch += 1
            t0 = time.perf_counter()
            perm = _rng(seed, epoch, 0).permutation(n_train) if shuffle else None
            rng_layers = _rng(seed, epoch, 1)
            rng_aug = _rng(seed, epoch, 2)
            acc.reset()
            if monitor is not None:
                monitor.reset()
                changes.begin()
            loss_sum = 0.0
            norms = [0.0] * len(ranges)
            batches = 0
            for b, i in enumerate(range(0, n_train, bs), 1):
                j = min(i + bs, n_train)
                m = j - i
                if perm is not None:
                    idx = perm[i:j]
                    # a permutation of range(n_train): always in bounds, and mode="clip" skips the
                    # per-index bounds check (a third faster than the default "raise")
                    xb = np.take(Xtr, idx, axis=0, out=xbuf[:m], mode="clip")
                    yb = np.take(ytr, idx, axis=0, out=ybuf[:m], mode="clip")
                    if wtr is not None:
                        wb = np.take(wtr, idx, out=wbuf[:m], mode="clip")
                else:
                    xb, yb = Xtr[i:j], ytr[i:j]
                    if wtr is not None:
                        wb = wtr[i:j]
                if aug is not None:
                    xb = aug(xb, rng_aug, abuf[:m])
                if wb is None:
                    value, out = step(xb, yb, loss, fused, rng_layers)
                else:
                    value, out = step(xb, yb, loss, fused, rng_layers, sample_weight=wb)
                if not math.isfinite(value):
                    raise Diverged(epoch, b, value)
                loss_sum += value * m     # the epoch's loss: the batch losses' mean weighted by batch size
                if with_metrics:
                    acc.update(out, yb, wb)
                if monitor is not None:
                    monitor.update()
                for k, g in enumerate(grad_views):
                    norms[k] += math.sqrt(np.dot(g, g))
                batches += 1
                opt.step(model.params, grads)
                if batch_callbacks:
                    event = BatchEvent(epoch, b)
                    for cb in batch_callbacks:
                        cb(event)
                    if event.stopped:
                        model._plan = None
                        return self.history
            model._plan = None
            row = {"epoch": epoch, "loss": loss_sum / n_train}
            row.update(acc.result())
            if Xval is not None:
                ev = model._evaluate_prepared(Xval, yval, loss, self.metric_names)
                row.update({f"val_{k}": v for k, v in ev.items()})
            row["learning_rate"] = float(opt.learning_rate)
            row["grad_norms"] = {name: norms[k] / batches for k, (name, _) in enumerate(ranges)}
            if monitor is not None:
                row["weight_changes"] = changes.result()
                row["activations"] = monitor.result()
            row["seconds"] = time.perf_counter() - t0
            row = {k: (v if isinstance(v, (int, dict)) else float(v)) for k, v in row.items()}
            self.history.append(row)
            model.weights_epoch = epoch
            if self.plateau is not None:
                self._reduce_on_plateau(row)
            stop = self.es is not None and self._early_stopping(epoch, row)
            self.epoch = epoch
            # "finished": early stopping ended the fit; one at its last epoch may still be carried on (resume)
            self.finished = stop
            user_stop = False
            if callbacks:
                event = EpochEvent(self, epoch, row)
                for cb in callbacks:
                    cb(event)
                user_stop = event.stopped
            if user_stop:
                return self.history
        if self.es is not None and self.best_weights is not None and cfg["early_stopping"]["restore_best_weights"]:
            model.set_weights(self.best_weights)
            model.weights_epoch = self.es["best_epoch"]
        model._plan = None
        return self.history


def _rows(X: np.ndarray, rows: np.ndarray | None, i: int, j: int) -> np.ndarray:
    """Rows i..j of X, or of X taken in the order ``rows`` (a copy of those rows only)."""
    return X[i:j] if rows is None else X[rows[i:j]]


def _fit_standardization(X: np.ndarray, dtype, rows: np.ndarray | None = None,
                         n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (ddof 0) of the training rows (the first ``n`` rows of X, or the rows ``rows``),
    in float64 by chunks; std 0 -> 1."""
    n = X.shape[0] if n is None else n
    width = math.prod(X.shape[1:])
    total = np.zeros(width)
    for i in range(0, n, STANDARDIZE_CHUNK):
        total += _rows(X, rows, i, min(i + STANDARDIZE_CHUNK, n)).reshape(-1, width).sum(axis=0, dtype=np.float64)
    mean = total / n
    sq = np.zeros(width)
    for i in range(0, n, STANDARDIZE_CHUNK):
        d = _rows(X, rows, i, min(i + STANDARDIZE_CHUNK, n)).reshape(-1, width) - mean
        sq += np.einsum("ij,ij->j", d, d)
    std = np.sqrt(sq / n)
    std[std == 0] = 1.0
    return mean.astype(dtype), std.astype(dtype)


def _standardize_into(X: np.ndarray, standardization, dtype, order: np.ndarray | None = None) -> np.ndarray:
    """The fit's one copy of the data, its rows in ``order`` when given (none when it is already contiguous in
    the model's dtype, in order, and standardization is off)."""
    if standardization is None and order is None:
        return np.ascontiguousarray(X, dtype=dtype)
    out = np.empty(X.shape, dtype=dtype)
    mean, std = (None, None) if standardization is None else (a.reshape(X.shape[1:]) for a in standardization)
    for i in range(0, X.shape[0], STANDARDIZE_CHUNK):
        chunk = out[i:i + STANDARDIZE_CHUNK]
        rows = _rows(X, order, i, i + STANDARDIZE_CHUNK)
        if mean is None:
            np.copyto(chunk, rows, casting="unsafe")
        else:
            np.subtract(rows, mean, out=chunk, casting="unsafe")
            chunk /= std
    return out


def fit(model, X, y, config: dict, *, callbacks=(), batch_callbacks=(), state: dict | None = None,
        validation_data=None) -> list[dict]:
    """Train ``model`` in place and return its history (see Model.fit)."""
    if state is None:
        config = dict(config)
        validation_data = config.pop("validation_data", validation_data)
        raw = dict(config)
        if validation_data is not None:
            raw["validation_data"] = validation_data
        cfg = normalize_fit_config(raw, input_rank=len(model.input_shape))
        cfg.pop("validation_data", None)
    else:
        cfg = state["config"]
    X = np.asarray(X)
    check_compatible(model, cfg, X.shape, y)
    if validation_data is not None:
        validation_data = (np.asarray(validation_data[0]), np.asarray(validation_data[1]))
        check_compatible(model, cfg, validation_data[0].shape, validation_data[1])
    trainer = _Trainer(model, cfg, state)
    model.fit_config = cfg
    standardization = state["standardization"] if state is not None else None
    history = trainer.run(X, y, validation_data, tuple(callbacks), tuple(batch_callbacks), standardization)
    model.history = history
    return history


def resume(checkpoint: bytes, X, y, *, callbacks=(), batch_callbacks=(), validation_data=None,
           epochs: int | None = None):
    """Continue the fit saved in ``checkpoint`` to its configured end, or to ``epochs`` in all when given (a
    finished fit carried on): (model, whole history). A fit of N epochs carried on to M ends bit-identical to a
    fit of M epochs: nothing an epoch draws or schedules depends on the total."""
    from .model import Model
    from .serialization import checkpoint_from_bytes
    state = checkpoint_from_bytes(checkpoint)
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < state["epoch"]:
            raise ConfigError("epochs", f"must be an integer of at least {state['epoch']}, the checkpoint's epoch")
        if state["finished"] and epochs > state["epoch"]:
            raise ConfigError("epochs", f"early stopping ended this fit at epoch {state['epoch']}: it cannot be "
                                        "carried on")
        state["config"] = {**state["config"], "epochs": epochs}
    model = Model(state["spec"], seed=state["model_seed"], dtype=state["dtype"], _normalized=True)
    history = fit(model, X, y, state["config"], callbacks=callbacks, batch_callbacks=batch_callbacks,
                  state=state, validation_data=validation_data)
    return model, history


__all__ = ["fit", "resume", "check_compatible", "EpochEvent", "BatchEvent", "losses_mod"]

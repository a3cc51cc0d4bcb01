"""Backprop's training engine: dense networks in pure NumPy, Keras semantics.

Public API::

    build(spec, seed=None, dtype="float32") -> Model
    normalize_spec(spec) -> dict                       # SpecError(layer_index, field, message)
    shapes(spec) -> Shapes                             # input/output shapes, no weights allocated
    summarize(spec) -> dict                            # Model.summary() without building the model
    normalize_fit_config(config) -> dict               # ConfigError(field, message)
    check_compatible(model, config, x_shape, y)        # ConfigError(field "loss" | "input_shape" | ...);
                                                       # ``model`` may be a Model or shapes(spec)
    split_rows(config, y) -> (train_rows, val_rows)    # the rows a fit of config trains and validates on
    Model.fit(X, y, *, callbacks=(), batch_callbacks=(), **config) -> history
    Model.predict(X, batch_size=None), Model.evaluate(X, y), Model.summary(),
    Model.get_weights(), Model.set_weights(ws),
    Model.loss_and_gradients(X, y, loss, regularization, training, class_weight),
    Model.attributions(X, target=None, baseline=None, steps=64)   # integrated gradients
    Model.to_bytes() / from_bytes(b)
    resume(checkpoint, X, y, *, callbacks=(), batch_callbacks=()) -> (Model, history)
    Diverged(epoch, batch)
"""
from __future__ import annotations

from .config import normalize_fit_config
from .errors import ConfigError, Diverged, EngineError, SpecError
from .model import Model, Shapes, shapes, summarize
from .serialization import model_from_bytes as from_bytes
from .spec import normalize_spec
from .training import BatchEvent, EpochEvent, check_compatible, resume, split_rows


def build(spec: dict, seed: int | None = None, dtype: str = "float32") -> Model:
    """A freshly initialized model for an API spec or ``{"keras": <Sequential JSON>}``."""
    return Model(spec, seed=seed, dtype=dtype)


__all__ = ["build", "shapes", "Shapes", "summarize", "normalize_spec", "normalize_fit_config", "check_compatible",
           "resume", "split_rows", "from_bytes", "Model", "SpecError", "ConfigError", "Diverged", "EngineError",
           "EpochEvent", "BatchEvent"]

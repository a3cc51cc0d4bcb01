"""The engine's three errors: a bad model spec, a bad training config, and a fit that diverged."""
from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class SpecError(EngineError, ValueError):
    """An impossible model spec.

    ``layer_index`` is the 0-based index in ``layers`` (None for a top-level field such as
    ``input_shape``); ``field`` names the offending key.
    """

    def __init__(self, layer_index: int | None, field: str, message: str):
        self.layer_index = layer_index
        self.field = field
        self.message = message
        where = field if layer_index is None else f"layers[{layer_index}].{field}"
        super().__init__(f"{where}: {message}")


class ConfigError(EngineError, ValueError):
    """An invalid training config; ``field`` is dotted, e.g. ``optimizer.learning_rate``."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class Diverged(EngineError, ArithmeticError):
    """The training loss became NaN or infinite at ``epoch`` (1-based), ``batch`` (1-based)."""

    def __init__(self, epoch: int, batch: int, loss: float | None = None):
        self.epoch = epoch
        self.batch = batch
        self.loss = loss
        super().__init__(
            f"the loss became {loss} at epoch {epoch}, batch {batch}: "
            "try a lower learning rate or gradient clipping (clipnorm, clipvalue, global_clipnorm)"
        )

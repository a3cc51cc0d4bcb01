"""Training diagnostics (``diagnostics: true``): where a network stops learning.

The per-layer gradient norms of every history row show *that* gradients vanish. These figures show what the
course says follows, and why:

- ``weight_changes``: each layer's relative change over the epoch, ||w_end - w_start|| / ||w_start|| over all
  its trainable variables. Vanishing gradients "leave the weights of the initial or lower layers nearly
  unchanged": this is that change, measured.
- ``activations``: how much of each hidden layer passes (almost) no gradient, the two causes the course names:
  ReLU units that never fire ("dead") and sigmoid or tanh units pinned at a bound of their range, where the
  derivative is nearly zero ("saturation").

A unit is *inactive* on a row when its derivative there is zero or nearly so:

- relu: its output is 0 (z <= 0: the derivative is exactly 0);
- sigmoid: its output is within 0.01 of 0 or 1 (derivative below 0.0099, against 0.25 at most);
- tanh: its output is within 0.01 of -1 or 1 (derivative below 0.0199, against 1 at most).

For each hidden dense or activation layer with one of these activations (the network's last layer is left out:
a confident output is what training is for), an epoch's figures are

- ``inactive``: the share of the epoch's (training row, unit) pairs at which the unit was inactive;
- ``dead_units``: the share of the layer's units that were inactive on every training row of the epoch, so that
  (almost) no gradient reached their incoming weights (a dead relu's get none at all: only weight decay or a
  penalty still moves them).

They are counted on the training batches as the fit saw them, in training mode (dropout, noise and augmentation
included), while the weights move through the epoch, exactly: counts of rows and units, no sampling. Off by
default; the counting costs a few passes over each monitored layer's output per batch, the weight changes one
copy of the parameters per epoch.
"""
from __future__ import annotations

import math

import numpy as np

#: Activations whose inactive rows are counted, and the distance from a bound of the range that counts as
#: saturated (None: relu's exact zero).
MONITORED = {"relu": None, "sigmoid": 0.01, "tanh": 0.01}
#: The centre and the half-width of each saturating activation's range.
_RANGE = {"sigmoid": (0.5, 0.5), "tanh": (0.0, 1.0)}


def monitored_layers(model) -> list:
    """The hidden dense and activation layers whose activation is relu, sigmoid or tanh, in order."""
    return [layer for layer in model.layers[:-1]
            if layer.type in ("dense", "activation") and layer.activation.name in MONITORED]


class _LayerCounts:
    """One layer's counts over an epoch."""

    def __init__(self, layer):
        self.layer = layer
        self.name = layer.name
        self.kind = layer.activation.name
        self.units = int(np.prod(layer.output_shape))
        if self.kind != "relu":
            centre, half = _RANGE[self.kind]
            self.centre = np.array(centre, layer.dtype)
            self.edge = np.array(half - MONITORED[self.kind], layer.dtype)   # |a - centre| >= edge: saturated
        self.live = np.zeros(self.units, np.bool_)       # active on some row this epoch
        self.rows_live = np.zeros(self.units, np.bool_)  # active on some row of the batch
        self.inactive = 0
        self.total = 0

    def reset(self) -> None:
        self.live.fill(False)
        self.inactive = 0
        self.total = 0

    def update(self) -> None:
        """Count the batch the layer has just seen (its forward pass's output, kept for backward)."""
        layer = self.layer
        a = layer.a.reshape(layer.a.shape[0], -1)
        n = a.shape[0]
        # scratch from the layer's own work arrays (the keys are this module's)
        if self.kind == "relu":
            active = layer.mask.reshape(n, -1) if layer.mask is not None else np.greater(
                a, 0, out=layer._buf("diagnostics_active", a.shape, np.bool_))
        else:
            dist = np.subtract(a, self.centre, out=layer._buf("diagnostics_distance", a.shape, a.dtype))
            np.abs(dist, out=dist)
            active = np.less(dist, self.edge, out=layer._buf("diagnostics_active", a.shape, np.bool_))
        n_active = int(np.count_nonzero(active))
        self.inactive += active.size - n_active
        self.total += active.size
        if n_active:
            np.logical_or.reduce(active, axis=0, out=self.rows_live)
            self.live |= self.rows_live

    def result(self) -> dict[str, float]:
        if not self.total:
            return {"inactive": 0.0, "dead_units": 0.0}
        dead = self.units - int(np.count_nonzero(self.live))
        return {"inactive": self.inactive / self.total, "dead_units": dead / self.units}


class ActivationMonitor:
    """Counts every monitored layer's inactive rows and units over one epoch of training batches."""

    def __init__(self, model):
        self.layers = [_LayerCounts(layer) for layer in monitored_layers(model)]

    def reset(self) -> None:
        for counts in self.layers:
            counts.reset()

    def update(self) -> None:
        for counts in self.layers:
            counts.update()

    def result(self) -> dict[str, dict[str, float]]:
        """{layer name: {"inactive": share of (row, unit) pairs, "dead_units": share of units}}."""
        return {counts.name: counts.result() for counts in self.layers}


class WeightChanges:
    """Each trainable layer's relative weight change over one epoch."""

    def __init__(self, model):
        self.params = model.params
        self.start = np.empty_like(model.params)
        self.diff = np.empty_like(model.params)
        self.ranges = [(layer.name, model.layer_ranges[layer.name]) for layer in model.layers if layer.params]

    def begin(self) -> None:
        """Remember the weights the epoch starts from."""
        np.copyto(self.start, self.params)

    def result(self) -> dict[str, float | None]:
        """{layer name: ||w_end - w_start|| / ||w_start||}; None for a layer whose weights started all zero."""
        np.subtract(self.params, self.start, out=self.diff)
        out: dict[str, float | None] = {}
        for name, (s0, s1) in self.ranges:
            d, w = self.diff[s0:s1], self.start[s0:s1]
            before = math.sqrt(float(np.dot(w, w)))
            out[name] = math.sqrt(float(np.dot(d, d))) / before if before > 0 else None
        return out

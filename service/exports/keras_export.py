"""Keras 3 export of a trained Backprop model.

``export_keras(model_bytes) -> bytes`` returns a **zip archive** with

* ``model.json`` — a Keras 3 ``Sequential`` config in the shape ``model.to_json()`` writes
  (``{"module", "class_name", "config", "registered_name"}`` objects, an ``InputLayer`` with
  ``batch_shape`` first). ``keras.models.model_from_json(text)`` rebuilds it.
* ``model.weights.npz`` — the weights, ``arr_0 … arr_{k-1}``, in the exported model's
  ``get_weights()`` order (kernel, bias per Dense; gamma, beta, moving_mean, moving_variance per
  BatchNormalization). Plain numeric arrays: loads with ``np.load(..., allow_pickle=False)``.
  This order is also exactly the engine's ``Model.get_weights()`` order.
* ``weights.json`` — a manifest: for each array its layer, variable name, shape and dtype.
* ``README.md`` and ``load_model.py`` — how to load it (three lines, see below).

Why a zip of JSON + npz rather than a native ``.keras`` file: the native format stores weights in
HDF5, which would make h5py a server dependency; JSON + npz needs nothing but NumPy to write and
loads in any Keras 3 release on any backend::

    import json, zipfile, numpy as np, keras
    with zipfile.ZipFile("export.zip") as z:
        model = keras.models.model_from_json(z.read("model.json").decode())
        with np.load(z.open("model.weights.npz"), allow_pickle=False) as w:
            model.set_weights([w[f"arr_{i}"] for i in range(len(w.files))])
    model.predict(raw_rows)          # raw rows in, as POST /v1/models/{id}/predict takes them

Mapping (inference behaviour is identical to ``Model.predict``):

* Standardization (the per-feature ``(x - mean) / std`` learned at training time) is the first
  layer: a ``Normalization`` with ``mean`` and ``variance = std²`` in its config, over every
  non-batch axis, so the Keras model takes raw rows and carries no extra weights. Keras computes
  ``(x - mean) / max(sqrt(variance), 1e-7)``: the same as the engine for any std above 1e-7 (the
  engine replaces a zero std by 1 before storing it).
* Dense keeps its activation by Keras name (``silu`` for silu/swish; ``gelu`` is Keras's exact erf
  form, as in the engine). ``leaky_relu`` becomes a linear Dense followed by a
  ``LeakyReLU(negative_slope=alpha)`` layer (Keras's ``"leaky_relu"`` activation string would use
  slope 0.2, not the model's alpha); an ``elu`` whose alpha is not 1 likewise becomes an ``ELU``
  layer. Activation layers map the same way.
* BatchNormalization, Dropout, Flatten and GaussianNoise map one to one (Dropout and GaussianNoise
  are the identity at inference in both).
* Layer dtypes are plain strings (``"float32"``, or ``"float64"`` for a float64 model), which every
  Keras 3 release accepts. (Keras turns the Normalization config's lists into float32 tensors before
  casting, so a float64 model's export matches to ~1e-7 relative rather than to float64 precision;
  the service's models are float32.)
"""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np

import engine
from service.exports.names import UniqueNames

KERAS_ACTIVATION = {"linear": "linear", "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh",
                    "softmax": "softmax", "elu": "elu", "selu": "selu", "gelu": "gelu", "silu": "silu",
                    "swish": "silu", "softplus": "softplus"}

README = """\
# Backprop model: Keras 3 export

Files:
- `model.json`: the Keras 3 Sequential config (what `model.to_json()` writes).
- `model.weights.npz`: the weights `arr_0 ... arr_{{k-1}}` in `model.get_weights()` order (no pickle).
- `weights.json`: which layer and variable each array is.
- `load_model.py`: the loader below as a script (`python load_model.py`).

The model takes raw feature rows of shape {input_shape} (standardization, if the model was trained with
it, is the leading `Normalization` layer) and outputs what Backprop's predict endpoint computes as
probabilities/values.

```python
import json, zipfile, numpy as np, keras      # any Keras 3 backend: numpy, jax, torch, tensorflow

ARCHIVE = "{archive}"                        # the downloaded file
with zipfile.ZipFile(ARCHIVE) as z:
    model = keras.models.model_from_json(z.read("model.json").decode("utf-8"))
    with np.load(z.open("model.weights.npz"), allow_pickle=False) as w:
        model.set_weights([w[f"arr_{{i}}"] for i in range(len(w.files))])

print(model.predict(np.zeros((1, {shape_args}), dtype="float32")))
```

After unzipping, `model.save("model.keras")` gives Keras's native single-file format.
Exported from Backprop (Keras export format 1).
"""

LOAD_SCRIPT = '''\
"""Load this Backprop export into Keras 3: ``python load_model.py [ZIP_OR_FOLDER]`` (default: the folder
this script is in, i.e. the unzipped archive); from Python, ``load(path)`` returns the Keras model."""
import os
import sys
import zipfile

import numpy as np


def load(path="."):
    import keras

    if os.path.isdir(path):
        with open(os.path.join(path, "model.json"), encoding="utf-8") as f:
            model = keras.models.model_from_json(f.read())
        weights = np.load(os.path.join(path, "model.weights.npz"), allow_pickle=False)
    else:
        with zipfile.ZipFile(path) as z:
            model = keras.models.model_from_json(z.read("model.json").decode("utf-8"))
            weights = np.load(z.open("model.weights.npz"), allow_pickle=False)
    with weights:
        model.set_weights([weights[f"arr_{i}"] for i in range(len(weights.files))])
    return model


if __name__ == "__main__":
    m = load(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
    m.summary()
'''


def _obj(class_name: str, config: dict, module: str = "keras.layers", build_shape=None) -> dict:
    out = {"module": module, "class_name": class_name, "config": config, "registered_name": None}
    if build_shape is not None:
        out["build_config"] = {"input_shape": [None, *build_shape]}
    return out


def _initializer(class_name: str, config: dict | None = None) -> dict:
    return _obj(class_name, config or {}, module="keras.initializers")


_INIT_CLASS = {"zeros": "Zeros", "ones": "Ones", "random_normal": "RandomNormal", "random_uniform": "RandomUniform",
               "truncated_normal": "TruncatedNormal", "glorot_normal": "GlorotNormal",
               "glorot_uniform": "GlorotUniform", "he_normal": "HeNormal", "he_uniform": "HeUniform",
               "lecun_normal": "LecunNormal", "lecun_uniform": "LecunUniform"}


def _keras_initializer(init: dict | None, default: str) -> dict:
    """The engine's normalized initializer as a Keras one (informative only: weights are loaded)."""
    kind = (init or {}).get("type", default)
    cls = _INIT_CLASS.get(kind)
    if cls is None:
        cls, kind = _INIT_CLASS[default], default
    params = {k: v for k, v in (init or {}).items() if k != "type"} if init and init.get("type") == kind else {}
    if kind in ("zeros", "ones"):
        return _initializer(cls)
    params.setdefault("seed", None)
    return _initializer(cls, params)


def _regularizer(reg: dict | None):
    if not reg:
        return None
    l1, l2 = float(reg.get("l1", 0.0) or 0.0), float(reg.get("l2", 0.0) or 0.0)
    if l1 and l2:
        return _obj("L1L2", {"l1": l1, "l2": l2}, module="keras.regularizers")
    if l1:
        return _obj("L1", {"l1": l1}, module="keras.regularizers")
    if l2:
        return _obj("L2", {"l2": l2}, module="keras.regularizers")
    return None


def _activation_layers(activation: str, alpha, dtype: str, make_name) -> tuple[str, list[dict]]:
    """(the activation string for a Dense/Activation layer, dedicated layers that follow it).

    ``make_name()`` names the dedicated layer, when one is needed."""
    if activation == "leaky_relu":
        slope = 0.01 if alpha is None else float(alpha)
        return "linear", [_obj("LeakyReLU", {"name": make_name(), "trainable": True, "dtype": dtype,
                                             "negative_slope": slope})]
    if activation == "elu" and alpha is not None and float(alpha) != 1.0:
        return "linear", [_obj("ELU", {"name": make_name(), "trainable": True, "dtype": dtype,
                                       "alpha": float(alpha)})]
    if activation not in KERAS_ACTIVATION:
        raise ValueError(f"activation {activation!r} has no Keras equivalent")
    return KERAS_ACTIVATION[activation], []


def keras_config(model) -> dict:
    """The Keras 3 Sequential ``to_json()`` document for an engine ``Model`` (weights not included)."""
    dtype = model.dtype.name
    input_shape = [int(d) for d in model.input_shape]
    names = UniqueNames()
    layers: list[dict] = [_obj("InputLayer", {"batch_shape": [None, *input_shape], "dtype": dtype,
                                              "sparse": False, "name": names("input_layer")})]
    if model.standardization is not None:
        mean, std = (np.asarray(a, dtype=np.float64).reshape(input_shape) for a in model.standardization)
        axis = -1 if len(input_shape) == 1 else list(range(1, len(input_shape) + 1))
        layers.append(_obj("Normalization", {
            "name": names("standardization"), "trainable": False, "dtype": dtype, "axis": axis,
            "invert": False, "mean": mean.tolist(), "variance": (std * std).tolist()},
            build_shape=input_shape))
    shape = tuple(input_shape)
    for layer, cfg in zip(model.layers, model.spec["layers"]):
        kind = cfg["type"]
        name = names(cfg.get("name") or kind)
        common = {"name": name, "trainable": True, "dtype": dtype}
        if kind == "dense":
            act, extra = _activation_layers(cfg.get("activation", "linear"), cfg.get("alpha"), dtype,
                                            lambda: names(f"{name}_{cfg.get('activation')}"))
            layers.append(_obj("Dense", {
                **common, "units": int(cfg["units"]), "activation": act, "use_bias": bool(cfg.get("use_bias", True)),
                "kernel_initializer": _keras_initializer(cfg.get("kernel_initializer"), "glorot_uniform"),
                "bias_initializer": _keras_initializer(cfg.get("bias_initializer"), "zeros"),
                "kernel_regularizer": _regularizer(cfg.get("kernel_regularizer")), "bias_regularizer": None,
                "kernel_constraint": None, "bias_constraint": None},
                build_shape=shape))
            layers.extend(extra)
        elif kind == "batch_normalization":
            layers.append(_obj("BatchNormalization", {
                **common, "axis": -1, "momentum": float(cfg.get("momentum", 0.99)),
                "epsilon": float(cfg.get("epsilon", 1e-3)), "center": True, "scale": True,
                "beta_initializer": _initializer("Zeros"), "gamma_initializer": _initializer("Ones"),
                "moving_mean_initializer": _initializer("Zeros"),
                "moving_variance_initializer": _initializer("Ones"),
                "beta_regularizer": None, "gamma_regularizer": None, "beta_constraint": None,
                "gamma_constraint": None, "synchronized": False}, build_shape=shape))
        elif kind == "dropout":
            layers.append(_obj("Dropout", {**common, "rate": float(cfg["rate"]), "seed": None, "noise_shape": None}))
        elif kind == "gaussian_noise":
            layers.append(_obj("GaussianNoise", {**common, "stddev": float(cfg["stddev"]), "seed": None}))
        elif kind == "flatten":
            layers.append(_obj("Flatten", {**common, "data_format": "channels_last"}, build_shape=shape))
        elif kind == "activation":
            act, extra = _activation_layers(cfg["activation"], cfg.get("alpha"), dtype, lambda: name)
            if extra:
                layers.extend(extra)
            else:
                layers.append(_obj("Activation", {**common, "activation": act}))
        else:
            raise ValueError(f"layer type {kind!r} has no Keras export")
        shape = tuple(layer.output_shape)
    return {"module": "keras", "class_name": "Sequential",
            "config": {"name": "backprop_model", "trainable": True, "dtype": dtype, "layers": layers,
                       "build_input_shape": [None, *input_shape]},
            "registered_name": None, "build_config": {"input_shape": [None, *input_shape]}}


def weight_manifest(model) -> list[dict]:
    out = []
    for layer in model.layers:
        for var, trainable in layer.weight_order():
            arr = (layer.params if trainable else layer.buffers)[var]
            out.append({"layer": layer.name, "variable": var, "shape": list(arr.shape), "dtype": arr.dtype.name,
                        "trainable": bool(trainable)})
    return out


def export_keras(model_bytes: bytes) -> bytes:
    """A zip of ``model.json`` (Keras 3 Sequential config), ``model.weights.npz`` (get_weights() order),
    ``weights.json``, ``README.md`` and ``load_model.py``; see the module docstring."""
    model = engine.from_bytes(model_bytes)
    config = keras_config(model)
    weights = model.get_weights()
    wbuf = io.BytesIO()
    np.savez(wbuf, *[np.ascontiguousarray(w) for w in weights])
    manifest = {"format": "backprop-keras-export", "version": 1, "input_shape": list(model.input_shape),
                "standardized": model.standardization is not None, "weights": weight_manifest(model)}
    shape_args = ", ".join(str(d) for d in model.input_shape)
    readme = README.format(input_shape=list(model.input_shape), archive="model-keras.zip", shape_args=shape_args)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.json", json.dumps(config, indent=1))
        z.writestr("model.weights.npz", wbuf.getvalue())
        z.writestr("weights.json", json.dumps(manifest, indent=1))
        z.writestr("README.md", readme)
        z.writestr("load_model.py", LOAD_SCRIPT)
    return out.getvalue()


__all__ = ["export_keras", "keras_config"]

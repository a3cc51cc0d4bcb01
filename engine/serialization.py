"""Byte formats of trained models and fit checkpoints: an uncompressed ``.npz`` archive (NumPy's zip of
``.npy`` files) whose ``header`` entry is a UTF-8 JSON document stored as a uint8 array. Nothing is
pickled and every load passes ``allow_pickle=False``.

Model (``Model.to_bytes``): header ``{"format": "backprop-model", "version": 1, "spec", "dtype",
"seed", "fit_config", "standardized"}``; arrays ``w_0 … w_{k-1}`` (get_weights() order) and, when
standardized, ``std_mean`` / ``std_std``.

Checkpoint: header ``{"format": "backprop-checkpoint", "version": 1, "spec", "config", "model_seed",
"dtype", "epoch", "finished", "history", "early_stopping", "plateau", "n_weights", "has_best",
"standardized", "optimizer_keys"}``; arrays ``w_i``, ``best_i`` (early stopping's best weights),
``opt_<j>`` (optimizer state, in ``optimizer_keys`` order), ``std_mean`` / ``std_std``.
"""
from __future__ import annotations

import io
import json

import numpy as np

MODEL_FORMAT = "backprop-model"
CHECKPOINT_FORMAT = "backprop-checkpoint"
VERSION = 1


def _pack(header: dict, arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    payload = np.frombuffer(json.dumps(header, separators=(",", ":")).encode("utf-8"), dtype=np.uint8)
    np.savez(buf, header=payload, **arrays)
    return buf.getvalue()


def _unpack(data: bytes, expected: str) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except Exception as exc:      # not a zip, truncated, or an object array
        raise ValueError(f"not a {expected} archive: {exc}") from None
    if "header" not in arrays:
        raise ValueError(f"not a {expected} archive: no header")
    header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    if header.get("format") != expected:
        raise ValueError(f"expected a {expected} archive, got {header.get('format')!r}")
    if header.get("version", 0) > VERSION:
        raise ValueError(f"{expected} version {header['version']} is newer than this engine ({VERSION})")
    return header, arrays


def _std_arrays(standardization) -> dict[str, np.ndarray]:
    if standardization is None:
        return {}
    return {"std_mean": standardization[0], "std_std": standardization[1]}


def model_to_bytes(model) -> bytes:
    header = {"format": MODEL_FORMAT, "version": VERSION, "spec": model.spec, "dtype": model.dtype.name,
              "seed": model.seed, "fit_config": model.fit_config,
              "standardized": model.standardization is not None}
    arrays = {f"w_{i}": w for i, w in enumerate(model.get_weights())}
    arrays.update(_std_arrays(model.standardization))
    return _pack(header, arrays)


def model_from_bytes(data: bytes):
    from .model import Model
    header, arrays = _unpack(data, MODEL_FORMAT)
    model = Model(header["spec"], seed=header["seed"], dtype=header["dtype"], _normalized=True)
    n = sum(1 for k in arrays if k.startswith("w_"))
    model.set_weights([arrays[f"w_{i}"] for i in range(n)])
    if header["standardized"]:
        model.standardization = (arrays["std_mean"], arrays["std_std"])
    model.fit_config = header.get("fit_config")
    model._build_plan()
    return model


def checkpoint_to_bytes(state: dict) -> bytes:
    opt_keys = list(state["optimizer"].keys())
    header = {"format": CHECKPOINT_FORMAT, "version": VERSION,
              **{k: state[k] for k in ("spec", "config", "model_seed", "dtype", "epoch", "finished", "history",
                                       "early_stopping", "plateau")},
              "n_weights": len(state["weights"]), "has_best": state["best_weights"] is not None,
              "standardized": state["standardization"] is not None, "optimizer_keys": opt_keys}
    arrays = {f"w_{i}": w for i, w in enumerate(state["weights"])}
    if state["best_weights"] is not None:
        arrays.update({f"best_{i}": w for i, w in enumerate(state["best_weights"])})
    arrays.update({f"opt_{j}": np.asarray(state["optimizer"][k]) for j, k in enumerate(opt_keys)})
    arrays.update(_std_arrays(state["standardization"]))
    return _pack(header, arrays)


def checkpoint_from_bytes(data: bytes) -> dict:
    header, arrays = _unpack(data, CHECKPOINT_FORMAT)
    n = header["n_weights"]
    state = {k: header[k] for k in ("spec", "config", "model_seed", "dtype", "epoch", "finished", "history",
                                    "early_stopping", "plateau")}
    state["weights"] = [arrays[f"w_{i}"] for i in range(n)]
    state["best_weights"] = [arrays[f"best_{i}"] for i in range(n)] if header["has_best"] else None
    state["optimizer"] = {k: arrays[f"opt_{j}"] for j, k in enumerate(header["optimizer_keys"])}
    state["standardization"] = (arrays["std_mean"], arrays["std_std"]) if header["standardized"] else None
    return state

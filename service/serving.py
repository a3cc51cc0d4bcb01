"""Serving trained versions: an LRU cache of loaded engine models and the mapping of outputs to labels.

A version is loaded (``engine.from_bytes``) once and kept, keyed by ``(model_id, version)``: a version's bytes
never change, so the cache is never stale. The cache is bounded by the stored size of the versions it holds
(``Settings.model_cache_bytes``), a close proxy for their weights in memory.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Key = tuple[str, int]


@dataclass
class Loaded:
    model: Any  # engine model
    size: int


@dataclass(frozen=True)
class Served:
    """A loaded version with what predictions need besides the network, so that a cached version is served
    without reading its row again (a version never changes once written)."""

    net: Any  # engine model
    task: str
    classes: list[Any] | None
    feature_names: list[str]
    input_shape: tuple[int, ...]
    width: int
    n_params: int = 0


class ModelCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(int(max_bytes), 0)
        self._items: OrderedDict[Key, Loaded] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._loading: dict[Key, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def _hit(self, key: Key) -> Loaded | None:
        """The cached item for ``key``, made the most recently used and counted as a hit (under ``_lock``)."""
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            self.hits += 1
        return item

    def get(self, key: Key, load: Callable[[], tuple[Any, int]]) -> Any:
        """The model for ``key``; ``load() -> (model, size_bytes)`` runs once per key even under concurrency."""
        with self._lock:
            item = self._hit(key)
            if item is not None:
                return item.model
            key_lock = self._loading.setdefault(key, threading.Lock())
        try:
            with key_lock:
                with self._lock:
                    item = self._hit(key)  # loaded by another thread while this one waited for key_lock
                if item is not None:
                    return item.model
                self.misses += 1
                model, size = load()
                with self._lock:
                    if size <= self.max_bytes:
                        self._items[key] = Loaded(model, size)
                        self._bytes += size
                        while self._bytes > self.max_bytes and self._items:
                            _, old = self._items.popitem(last=False)
                            self._bytes -= old.size
                return model
        finally:
            # Dropped on every path (a failed load, or a load done by another thread): the per-key lock
            # exists only while somebody is loading.
            with self._lock:
                if self._loading.get(key) is key_lock and not key_lock.locked():
                    self._loading.pop(key, None)

    def peek(self, key: Key) -> Any | None:
        """The cached value for ``key`` or None; never loads (the hot path of predictions)."""
        item = self._items.get(key)  # a dict read is atomic; the LRU order is refreshed under the lock
        if item is None:
            return None
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
        self.hits += 1
        return item.model

    def evict_model(self, model_id: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == model_id]:
                self._bytes -= self._items.pop(key).size

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def forward(model: Any, X: np.ndarray) -> np.ndarray:
    """Inference in float32 (the engine applies the stored standardization)."""
    out = model.predict(np.ascontiguousarray(X, dtype=np.float32))
    out = np.asarray(out, dtype=np.float64)
    return out.reshape(out.shape[0], -1)


def _to_distribution(out: np.ndarray) -> np.ndarray:
    # np.allclose(sums, 1.0, atol=1e-3) without its overhead (rtol 1e-5 included; NaN is never close)
    if np.all(out >= 0) and bool(np.all(np.abs(out.sum(axis=1) - 1.0) <= 1e-3 + 1e-5)):
        p = out
    else:  # not probabilities (e.g. a linear output layer): softmax them
        z = out - out.max(axis=1, keepdims=True)
        p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def class_probabilities(out: np.ndarray, n_classes: int) -> np.ndarray:
    """Raw output units of a classifier -> one probability per class (one sigmoid unit on two classes gives
    P(second class)); the predicted class of a row is its argmax."""
    if out.shape[1] == 1 and n_classes == 2:
        p1 = np.clip(out[:, 0], 0.0, 1.0)
        return np.stack([1.0 - p1, p1], axis=1)
    return _to_distribution(out)


def labels_on(out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw output units of a multilabel model -> (probabilities, which labels are predicted: p >= 0.5)."""
    probs = np.clip(out, 0.0, 1.0)
    return probs, probs >= 0.5


def map_outputs(out: np.ndarray, task: str, classes: Sequence[Any] | None) -> dict[str, Any]:
    """Raw output units -> ``predictions`` (+ ``probabilities`` and ``classes``) as the API returns them."""
    if task == "classification":
        labels = list(classes or [])
        probs = class_probabilities(out, len(labels))
        idx = probs.argmax(axis=1)
        return {
            "predictions": [labels[i] if i < len(labels) else int(i) for i in idx.tolist()],
            "probabilities": probs.tolist(),
            "classes": labels,
        }
    if task == "multilabel":
        labels = list(classes or [])
        probs, on = labels_on(out)
        return {
            "predictions": [[labels[j] for j in np.flatnonzero(row).tolist()] for row in on],
            "probabilities": probs.tolist(),
            "classes": labels,
        }
    values = out.tolist()
    return {"predictions": [v[0] for v in values] if out.shape[1] == 1 else values}

"""A stored dataset given back in the forms it can be uploaded in: a ``.npz`` archive or a CSV file.

Either one, uploaded again with the dataset's task, gives the same dataset: the same features to the bit
(float32, written as their shortest exact decimal in CSV), the same labels, names and input shape. Targets go
back to what the client sent, not the stored canonical form (see service.training_data): class labels for
classification, 0/1 columns for multilabel, numbers for regression.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import numpy as np

from service.training_data import unpack_arrays

MEDIA_TYPES = {"npz": "application/octet-stream", "csv": "text/csv; charset=utf-8"}
CSV_ROWS_PER_CHUNK = 1000


def _arrays(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """(features shaped (n, *input_shape), targets as uploaded) of a ``service.db.models.Dataset`` row."""
    X, y = unpack_arrays(dataset.data)
    X = X.reshape((X.shape[0], *[int(d) for d in dataset.input_shape]))
    if dataset.task == "classification":
        targets = np.asarray(dataset.classes)[y]
    elif dataset.task == "multilabel":
        targets = y.astype(np.uint8)
    else:
        targets = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
    return X, targets


def to_npz(dataset: Any) -> bytes:
    """The archive ``POST /v1/datasets`` takes: features, targets, feature_names, target_names."""
    X, targets = _arrays(dataset)
    buf = io.BytesIO()
    np.savez(buf, features=X, targets=targets, feature_names=np.asarray(dataset.feature_names, dtype=str),
             target_names=np.asarray(dataset.target_names, dtype=str))
    return buf.getvalue()


def csv_chunks(dataset: Any) -> Iterator[bytes]:
    """A header row of the feature then the target names, one row per sample; in chunks of rows, so that a
    large dataset is never held as text whole. Upload it back with ``target`` = the target names. The arrays
    are read from ``dataset`` here, at the call, so that the chunks can be sent after its session has ended."""
    X, targets = _arrays(dataset)
    return _csv_rows(X.reshape(X.shape[0], -1), targets.reshape(targets.shape[0], -1),
                     [*dataset.feature_names, *dataset.target_names])


def _csv_rows(X: np.ndarray, targets: np.ndarray, header: list[str]) -> Iterator[bytes]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for start in range(0, X.shape[0], CSV_ROWS_PER_CHUNK):
        stop = start + CSV_ROWS_PER_CHUNK
        # numpy's float-to-string cast writes the shortest decimal that reads back to the same float32
        cells = np.concatenate([X[start:stop].astype(str), targets[start:stop].astype(str)], axis=1)
        writer.writerows(cells.tolist())
        yield out.getvalue().encode()
        out.seek(0)
        out.truncate()

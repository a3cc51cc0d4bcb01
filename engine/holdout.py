"""Which rows a ``validation_split`` holds out: ``validation_rows`` = "last", "random" or "stratified".

"last" is Keras's rule: the last ``n - floor(n * (1 - split))`` rows, chosen before any shuffling. On a
dataset sorted by class (iris as scikit-learn ships it, most exports of a database) that holds out one class
and never trains on most of it, so two other rules are offered; both hold out exactly as many rows as "last":

- "random": that many rows drawn uniformly without replacement;
- "stratified" (classification losses only): each class gives its share of them, ``n_c * n_val / n``, rounded
  by largest remainder (ties to the lower class index), so the held-out rows have the classes' proportions
  to within one row per class; which rows of a class are held out is drawn at random.

``validation_fold: {"fold": i, "folds": k}`` holds out fold i of k instead of a fraction (k-fold
cross-validation, one job per fold: a sweep's ``folds``); the same three modes deal the rows to the folds
(``fold_of_rows``).

All draw from the fit's seed alone (stream 3 of ``training._rng``), so a resumed or continued fit holds out
the same rows, and the k jobs of one cross-validation, which share a seed, deal the same folds. The training
rows keep their order in the dataset (``shuffle: false`` still means dataset order), and the held-out rows
too.
"""
from __future__ import annotations

import numpy as np

from .errors import ConfigError

MODES = ("last", "random", "stratified")
#: losses whose targets name a class per row, and so can be stratified
CLASS_LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy")


def check_stratifiable(mode: str, loss_name: str, output_units: int) -> None:
    """ConfigError("validation_rows") when ``mode`` is "stratified" and the targets are not one class per row."""
    if mode != "stratified":
        return
    if loss_name not in CLASS_LOSSES:
        raise ConfigError("validation_rows", f"stratified needs a classification loss (one of "
                                             f"{', '.join(CLASS_LOSSES)}), not {loss_name}; use random")
    if loss_name == "binary_crossentropy" and output_units != 1:
        raise ConfigError("validation_rows", f"stratified needs one class per row, but binary_crossentropy over "
                                             f"{output_units} outputs is multi-label; use random")


def class_of_rows(loss_name: str, y: np.ndarray) -> np.ndarray:
    """Each row's class index, as the loss reads its (prepared) targets."""
    y = np.asarray(y)
    if loss_name == "sparse_categorical_crossentropy":
        return y.reshape(len(y)).astype(np.intp)
    if loss_name == "categorical_crossentropy":
        return np.argmax(y.reshape(len(y), -1), axis=1)
    return (y.reshape(len(y)) >= 0.5).astype(np.intp)       # binary, one output: the side of 0.5


def fold_of_rows(mode: str, n: int, folds: int, rng: np.random.Generator,
                 classes: np.ndarray | None = None) -> np.ndarray:
    """Each row's fold (0 .. folds-1) for k-fold cross-validation (``validation_fold``), dealt by ``mode``:

    - "last": contiguous blocks in dataset order, the first ``n % folds`` one row longer (scikit-learn's
      KFold without shuffling);
    - "random": the same block sizes over a random permutation of the rows;
    - "stratified": each class's rows, in a random order, dealt to the folds in turn, the deal carrying on from
      one class to the next, so that fold sizes differ by at most one row, and so do a class's rows per fold.
    """
    if mode == "stratified":
        if classes is None:
            raise ValueError("stratified needs each row's class")
        fold = np.empty(n, dtype=np.intp)
        dealt = 0
        for label in np.unique(classes):
            rows = rng.permutation(np.flatnonzero(classes == label))
            fold[rows] = (dealt + np.arange(len(rows))) % folds
            dealt += len(rows)
        return fold
    sizes = np.full(folds, n // folds)
    sizes[:n % folds] += 1
    blocks = np.repeat(np.arange(folds), sizes)
    if mode == "last":
        return blocks
    if mode == "random":
        fold = np.empty(n, dtype=np.intp)
        fold[rng.permutation(n)] = blocks
        return fold
    raise ValueError(f"unknown validation_rows {mode!r}")


def fold_order(fold: np.ndarray, held_fold: int) -> tuple[np.ndarray, int]:
    """The rows with every fold but ``held_fold`` (0-based) first and that fold after them, each part in dataset
    order, and the number of training rows."""
    held = fold == held_fold
    return np.concatenate([np.flatnonzero(~held), np.flatnonzero(held)]), int(np.count_nonzero(~held))


def row_order(mode: str, n: int, n_train: int, rng: np.random.Generator,
              classes: np.ndarray | None = None) -> np.ndarray | None:
    """The dataset's row indices with the ``n_train`` training rows first and the held-out rows after them,
    each part in dataset order; None for "last" (the rows stay where they are)."""
    n_val = n - n_train
    if mode == "last" or n_val == 0:
        return None
    held = np.zeros(n, dtype=bool)
    if mode == "random":
        held[rng.choice(n, size=n_val, replace=False)] = True
    elif mode == "stratified":
        if classes is None:
            raise ValueError("stratified needs each row's class")
        labels, counts = np.unique(classes, return_counts=True)
        quota = counts * (n_val / n)
        take = np.floor(quota).astype(np.int64)
        # largest remainder; a stable sort keeps ties in class order
        short = n_val - int(take.sum())
        take[np.argsort(-(quota - take), kind="stable")[:short]] += 1
        for label, k in zip(labels, take):
            if k:
                rows = np.flatnonzero(classes == label)
                held[rng.choice(rows, size=int(k), replace=False)] = True
    else:
        raise ValueError(f"unknown validation_rows {mode!r}")
    return np.concatenate([np.flatnonzero(~held), np.flatnonzero(held)])

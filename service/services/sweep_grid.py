"""A sweep's grid: dotted job-config paths with their values, expanded into one job config per combination.

``{"optimizer.learning_rate": [0.001, 0.01], "batch_size": [16, 32]}`` is four trials, the cartesian product with
the keys in the order given and the last one varying fastest: (0.001, 16), (0.001, 32), (0.01, 16), (0.01, 32).
Trial ``i``'s values follow from ``i`` alone (:func:`value_indices`), so a stored sweep needs only its grid and
each job's trial number to say which values the job trained with.

A trial's config is the base config with each of the trial's values set at its path (:func:`trial_config`),
creating the objects on the way. A name met on the way (``"optimizer": "adam"``) becomes ``{"type": "adam"}`` so
that ``optimizer.learning_rate`` can sit beside it, and ``true``/``false``/``null`` (``"early_stopping": true``,
a callback with its defaults) become ``{}``. Shorter paths are set first, so ``"optimizer": ["adam", "sgd"]`` and
``"optimizer.learning_rate"`` combine whatever their order in the grid.
"""
from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from service.errors import Invalid

#: Dotted paths: at most this many characters and segments.
MAX_PATH_CHARS = 200
MAX_PATH_SEGMENTS = 8
#: The grid key a sweep's ``folds`` adds: each grid point is trained once per fold (service.services.sweeps).
FOLD_KEY = "validation_fold.fold"
#: Keys of one grid. Each key with two values or more doubles the trials at least; max_sweep_trials caps them.
MAX_KEYS = 16


def paths(grid: Mapping[str, Any], fields: Collection[str]) -> dict[str, list[str]]:
    """Each grid key split into its path segments; Invalid at ``["body", "grid", key]`` for a key that is not a
    dotted path starting with one of the job config's ``fields``."""
    if len(grid) > MAX_KEYS:
        raise Invalid(f"grid: at most {MAX_KEYS} keys, got {len(grid)}", loc=["body", "grid"])
    out: dict[str, list[str]] = {}
    for key in grid:
        segments = key.split(".")
        where = ["body", "grid", key]
        if len(key) > MAX_PATH_CHARS or len(segments) > MAX_PATH_SEGMENTS:
            raise Invalid(f"grid: {key[:40]!r}... is longer than a job-config path can be ({MAX_PATH_CHARS} "
                          f"characters, {MAX_PATH_SEGMENTS} segments)", loc=where)
        if any(not s or any(ord(c) < 32 for c in s) for s in segments):
            raise Invalid(f"grid: {key!r} is not a dotted path of a job-config field (e.g. optimizer.learning_rate)",
                          loc=where)
        if segments[0] not in fields:
            raise Invalid(f"grid: {segments[0]!r} is not a job-config field; expected one of "
                          f"{', '.join(sorted(fields))}", loc=where)
        out[key] = segments
    return out


def count(grid: Mapping[str, list[Any]]) -> int:
    """How many trials the grid expands to."""
    return math.prod(len(values) for values in grid.values())


def value_indices(grid: Mapping[str, list[Any]], trial: int) -> dict[str, int]:
    """The index into each key's values of trial number ``trial`` (0-based, expansion order)."""
    out: dict[str, int] = {}
    rest = trial
    for key in reversed(list(grid)):            # the last key varies fastest
        rest, out[key] = divmod(rest, len(grid[key]))
    return {key: out[key] for key in grid}


def params(grid: Mapping[str, list[Any]], trial: int) -> dict[str, Any]:
    """``{path: value}`` of trial number ``trial``."""
    return {key: grid[key][i] for key, i in value_indices(grid, trial).items()}


def trials(grid: Mapping[str, list[Any]]) -> Iterator[dict[str, Any]]:
    """``{path: value}`` of every trial, in expansion order."""
    keys = list(grid)
    for combination in itertools.product(*(grid[key] for key in keys)):
        yield dict(zip(keys, combination))


def trial_config(base: Mapping[str, Any], trial_params: Mapping[str, Any],
                 key_paths: Mapping[str, list[str]]) -> dict[str, Any]:
    """The base config with each of ``trial_params`` set at its path (a new object: neither the base nor the
    grid's values are changed). Invalid at ``["body", "grid", key]`` when the path goes through a value that
    cannot hold fields (a number, a list)."""
    config = copy.deepcopy(dict(base))
    for key in sorted(trial_params, key=lambda k: len(key_paths[k])):     # stable: same depth keeps grid order
        segments = key_paths[key]
        node = config
        for depth, segment in enumerate(segments[:-1]):
            child = node.get(segment)
            if isinstance(child, str):
                child = {"type": child}
            elif child is None or isinstance(child, bool):
                child = {}
            elif not isinstance(child, dict):
                where = ".".join(segments[:depth + 1])
                raise Invalid(f"grid: {key} sets a field inside {where}, which is {type(child).__name__} "
                              f"{_short(child)}, not an object", loc=["body", "grid", key])
            node[segment] = child
            node = child
        node[segments[-1]] = copy.deepcopy(trial_params[key])
    return config


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."

"""Explain predictions: each feature's integrated gradient (engine/attribution.py) for one output of a version.

The rows and the baseline are read as predict reads rows. The output is named in the version's terms: a class or
label by value (as class weights match labels), a target column by name. A binary classifier with one sigmoid
output explains P(class) for the class asked: the attributions of P(classes[0]) = 1 - P(classes[1]) are those of
P(classes[1]) with the sign turned. The work runs on the version's cached copy, the one predict serves
(attributions leave its inference plan alone and free their work arrays afterwards), or on a fresh copy
while another explanation runs on the cached one; at most MAX_POINTS path points per request.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from service.config import Settings
from service.errors import Invalid
from service.serving import ModelCache
from service.services import dataset_matching as matching
from service.services import models as models_service
from service.services.predictions import check_rows, load_version, served_version, to_matrix

#: rows x steps per request: each point is one row through the network forward and backward.
MAX_POINTS = 262_144


def explain(session: Session, settings: Settings, cache: ModelCache, owner_id: str, model_id: str,
            body: Any) -> dict[str, Any]:
    model, version = models_service.get_version(session, owner_id, model_id, body.version)
    check_rows(settings, body.inputs)          # 413 past max_predict_rows, as predict
    shape = tuple(int(d) for d in model.input_shape)
    width = math.prod(shape)
    names = list(version.feature_names)
    X = to_matrix(body.inputs, names, width, shape)
    if X.shape[0] * body.steps > MAX_POINTS:
        raise Invalid(f"{X.shape[0]} rows x {body.steps} steps is over {MAX_POINTS:,} path points per request: "
                      "send fewer rows or fewer steps", loc=["body", "steps"])
    baseline = None
    if body.baseline is not None:
        try:
            baseline = to_matrix([body.baseline], names, width, shape)[0]
        except Invalid as exc:
            why = exc.detail.removeprefix("row 1").lstrip(": ")      # the message names the one row it read
            raise Invalid(f"baseline: {why}", loc=["body", "baseline"]) from None
    net = served_version(session, cache, model, version).net
    if net.explaining:     # rather than wait for another request's explanation: a copy of this request's own
        net, _ = load_version(session, model, version)
    binary = version.task == "classification" and int(net.output_units) == 1   # one sigmoid: P(classes[1])
    target = _target(version, body.target)
    # a binary model's one output is P(classes[1]): explain it, then turn it to the class asked (or predicted)
    result = net.attributions(X.reshape((X.shape[0], *shape)), target=0 if binary else target,
                              baseline=baseline, steps=body.steps)
    outputs, base_out, attributions = result["outputs"], result["baseline_outputs"], result["attributions"]
    if binary:
        picked = np.full(X.shape[0], target) if target is not None else (outputs >= 0.5).astype(np.int64)
        sign = np.where(picked == 1, 1.0, -1.0)     # P(classes[0]) = 1 - P(classes[1]): the signs turn
        outputs = np.where(sign < 0, 1.0 - outputs, outputs)
        base_out = np.where(sign < 0, 1.0 - base_out, base_out)
        attributions = attributions * sign[:, None]
    else:
        picked = result["target"]
    names_of = version.target_names if version.task == "regression" else version.classes
    return {
        "model_id": model.id, "version": version.version, "task": version.task, "feature_names": names,
        "baseline": [float(v) for v in result["baseline"]],
        "targets": [names_of[int(k)] for k in picked],
        "outputs": [float(v) for v in outputs], "baseline_outputs": [float(v) for v in base_out],
        "attributions": attributions.tolist(), "steps": body.steps,
    }


def _target(version: Any, asked: Any) -> int | None:
    """The output index ``asked`` names (a target column by name, a class or label by value); None: each
    row's largest output (regression: the only column)."""
    loc = ["body", "target"]
    if version.task == "regression":
        columns = list(version.target_names)
        if asked is None:
            if len(columns) > 1:
                raise Invalid(f"target: the model predicts {len(columns)} columns; name one of "
                              f"{', '.join(map(repr, columns))}", loc=loc)
            return 0
        if str(asked) not in columns:
            raise Invalid(f"target {asked!r} is not one of the model's target columns "
                          f"({', '.join(map(repr, columns))})", loc=loc)
        return columns.index(str(asked))
    if asked is None:
        return None
    classes = list(version.classes or [])
    index = matching.label_index(classes, str(asked))
    if index is None:
        raise Invalid(f"target {asked!r} is not one of the model's classes ({', '.join(map(repr, classes))})",
                      loc=loc)
    return index

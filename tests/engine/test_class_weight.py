"""class_weight, Keras 3's way: config forms and refusals, gradients against finite differences and PyTorch, a
few Adam steps beside PyTorch, "balanced" against scikit-learn, what it does for a minority class on real data,
resume bit-identity, and validation left unweighted."""
import json
import math

import numpy as np
import pytest

import engine
from engine import class_weight as cw
from engine import losses
from engine.gradcheck import check_model
from tests.engine.test_training import ALL_FEATURES as TWO_CLASS_NET
from tests.engine.test_training import checkpoint_of_a_fit_stopped_after, strip_seconds

TOL = 1e-6
RNG = np.random.default_rng(0)
X = RNG.standard_normal((9, 5))
LABELS = np.array([0, 1, 2, 2, 0, 2, 1, 2, 2])          # class 2 is the majority
WEIGHTS = {0: 2.5, "1": 0.4}                              # class 2 left out: it weighs 1.0


def net(out_units, out_act, *tail, dtype="float64", seed=1):
    return engine.build({"input_shape": [5], "layers": [
        {"type": "dense", "units": 6, "activation": "tanh"},
        {"type": "dense", "units": out_units, "activation": out_act}, *tail]}, seed=seed, dtype=dtype)


# -- the config ------------------------------------------------------------------------------------------
def test_normalized_forms():
    cfg = engine.normalize_fit_config({"loss": "sparse_categorical_crossentropy",
                                       "class_weight": {"10": 1, 2: 0.5, "0": 3}})
    assert cfg["class_weight"] == {"0": 3.0, "2": 0.5, "10": 1.0}          # string keys in index order
    assert list(cfg["class_weight"]) == ["0", "2", "10"]
    assert engine.normalize_fit_config(cfg) == cfg and json.loads(json.dumps(cfg)) == cfg
    assert engine.normalize_fit_config({"loss": "binary_crossentropy", "class_weight": "balanced"}
                                       )["class_weight"] == "balanced"
    assert engine.normalize_fit_config({"loss": "categorical_crossentropy"})["class_weight"] is None
    np_keys = engine.normalize_fit_config({"loss": "categorical_crossentropy",
                                           "class_weight": {np.int64(1): np.float32(2.0)}})
    assert np_keys["class_weight"] == {"1": 2.0}


@pytest.mark.parametrize("config,field", [
    ({"loss": "mean_squared_error", "class_weight": {"0": 1.0}}, "class_weight"),
    ({"loss": "huber", "class_weight": "balanced"}, "class_weight"),
    ({"loss": "binary_crossentropy", "class_weight": "sometimes"}, "class_weight"),
    ({"loss": "binary_crossentropy", "class_weight": [1.0, 2.0]}, "class_weight"),
    ({"loss": "binary_crossentropy", "class_weight": {"-1": 1.0}}, "class_weight.-1"),
    ({"loss": "binary_crossentropy", "class_weight": {"a": 1.0}}, "class_weight.a"),
    ({"loss": "binary_crossentropy", "class_weight": {"1.5": 1.0}}, "class_weight.1.5"),
    ({"loss": "binary_crossentropy", "class_weight": {True: 1.0}}, "class_weight.True"),
    ({"loss": "binary_crossentropy", "class_weight": {"1": -0.5}}, "class_weight.1"),
    ({"loss": "binary_crossentropy", "class_weight": {"1": math.nan}}, "class_weight.1"),
    ({"loss": "binary_crossentropy", "class_weight": {"1": math.inf}}, "class_weight.1"),
    ({"loss": "binary_crossentropy", "class_weight": {"1": "2"}}, "class_weight.1"),
    ({"loss": "binary_crossentropy", "class_weight": {"1": 1.0, 1: 2.0}}, "class_weight.1"),
])
def test_refusals_name_the_field(config, field):
    with pytest.raises(engine.ConfigError) as e:
        engine.normalize_fit_config(config)
    assert e.value.field == field


def test_refusals_when_the_fit_starts():
    three = net(3, "softmax")
    y3 = LABELS
    with pytest.raises(engine.ConfigError) as e:       # a class the model's output does not have
        three.fit(X, y3, loss="sparse_categorical_crossentropy", class_weight={"3": 2.0})
    assert e.value.field == "class_weight.3" and "out of range" in e.value.message
    # several independent binary labels (multilabel): no one class per row to weigh
    multilabel = RNG.integers(0, 2, (9, 3)).astype(float)
    with pytest.raises(engine.ConfigError) as e:
        net(3, "sigmoid").fit(X, multilabel, loss="binary_crossentropy", class_weight="balanced")
    assert e.value.field == "class_weight" and "multilabel" in e.value.message
    with pytest.raises(engine.ConfigError) as e:       # a single binary column has classes 0 and 1
        engine.check_compatible(net(1, "sigmoid"), {"loss": "binary_crossentropy", "class_weight": {"2": 1}},
                                X.shape, (LABELS == 2).astype(float))
    assert e.value.field == "class_weight.2"
    engine.check_compatible(three, {"loss": "categorical_crossentropy", "class_weight": {"2": 1}}, X.shape,
                            np.eye(3)[y3])


# -- gradients: finite differences in float64, every classification loss, fused and not -------------------
# the flatten layer after the output ends the model on a layer with no activation: the loss is then
# differentiated through the softmax or sigmoid, not in the fused form
CASES = {
    "categorical, fused softmax": ("categorical_crossentropy", 3, "softmax", (), "onehot"),
    "categorical, softmax not fused": ("categorical_crossentropy", 3, "softmax", ({"type": "flatten"},), "onehot"),
    "categorical, smoothed": ({"type": "categorical_crossentropy", "label_smoothing": 0.1}, 3, "softmax", (),
                              "onehot"),
    "sparse, fused softmax": ("sparse_categorical_crossentropy", 3, "softmax", (), "labels"),
    "sparse, softmax not fused": ("sparse_categorical_crossentropy", 3, "softmax", ({"type": "flatten"},),
                                  "labels"),
    "binary, fused sigmoid": ("binary_crossentropy", 1, "sigmoid", (), "binary"),
    "binary, sigmoid not fused": ("binary_crossentropy", 1, "sigmoid", ({"type": "flatten"},), "binary"),
}


def targets(kind):
    return {"onehot": np.eye(3)[LABELS], "labels": LABELS, "binary": (LABELS == 2).astype(float)}[kind]


@pytest.mark.parametrize("weights", [WEIGHTS, "balanced"], ids=["mapping", "balanced"])
@pytest.mark.parametrize("case", CASES)
def test_weighted_gradients_match_finite_differences(case, weights):
    loss, units, act, tail, kind = CASES[case]
    model = net(units, act, *tail)
    errors = check_model(model, X, targets(kind), loss, class_weight=weights)
    assert max(errors.values()) <= TOL, errors
    assert model.layers[-1].fused == (not tail)


@pytest.mark.parametrize("case", CASES)
def test_the_weighted_loss_divides_by_the_batch_size(case):
    """Σ w_i·ℓ_i / N with w_i the weight of row i's class (1.0 for a class left out), not / Σ w_i."""
    loss, units, act, tail, kind = CASES[case]
    model = net(units, act, *tail)
    y = targets(kind)
    value, _ = model.loss_and_gradients(X, y, loss, class_weight=WEIGHTS)
    plain, _ = model.loss_and_gradients(X, y, loss)
    loss_obj = losses.get(engine.normalize_fit_config({"loss": loss})["loss"])
    per_row = loss_obj.per_sample(model.predict(X), loss_obj.prepare_targets(y, np.float64))
    labels = LABELS if kind != "binary" else (LABELS == 2).astype(int)
    w = np.array([{0: 2.5, 1: 0.4}.get(c, 1.0) for c in labels])
    assert math.isclose(plain, per_row.mean(), rel_tol=1e-12)
    assert math.isclose(value, (w * per_row).sum() / len(X), rel_tol=1e-12)
    assert not math.isclose(value, (w * per_row).sum() / w.sum(), rel_tol=1e-3)


# -- against PyTorch ------------------------------------------------------------------------------------------
def _torch_logits(torch, model, x):
    """The model's output layer before its softmax/sigmoid, on torch tensors of the same weights."""
    W1, b1, W2, b2 = (torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in model.get_weights())
    logits = torch.tanh(torch.tensor(x) @ W1 + b1) @ W2 + b2
    return logits, [W1, b1, W2, b2]


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["labels", "onehot", "binary"])
def test_weighted_loss_and_gradients_match_torch(kind):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    units, act, loss = {"labels": (3, "softmax", "sparse_categorical_crossentropy"),
                        "onehot": (3, "softmax", "categorical_crossentropy"),
                        "binary": (1, "sigmoid", "binary_crossentropy")}[kind]
    model = net(units, act)
    y = targets(kind)
    value, grads = model.loss_and_gradients(X, y, loss, class_weight=WEIGHTS)
    logits, tensors = _torch_logits(torch, model, X)
    table = torch.tensor([2.5, 0.4, 1.0], dtype=torch.float64)
    n = len(X)
    if kind == "binary":
        labels = torch.tensor((LABELS == 2).astype(int))
        per_row = F.binary_cross_entropy_with_logits(logits[:, 0], labels.double(), weight=table[labels],
                                                     reduction="none")
    else:
        target = torch.tensor(y) if kind == "onehot" else torch.tensor(LABELS)
        per_row = torch.nn.CrossEntropyLoss(weight=table, reduction="none")(logits, target)
        # torch's reduction="mean" is the weighted mean Σ w_i·ℓ_i / Σ w_i; Keras's sum_over_batch_size divides
        # by the batch size N: the engine follows Keras, so the torch side sums and divides by N itself
        if kind == "labels":
            torch_mean = torch.nn.CrossEntropyLoss(weight=table)(logits, target).item()
            assert math.isclose(torch_mean, per_row.sum().item() / table[target].sum().item(), rel_tol=1e-12)
            assert not math.isclose(torch_mean, value, rel_tol=1e-3)
    keras_loss = per_row.sum() / n
    keras_loss.backward()
    assert math.isclose(value, keras_loss.item(), rel_tol=1e-12)
    for g, t in zip(grads, tensors):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.torch
def test_adam_steps_with_class_weights_match_torch():
    """Two epochs of three batches (no shuffle) with Adam, float64: the same weights as torch's loop with
    CrossEntropyLoss(weight=w, reduction="none").sum() / batch size and Keras's epsilon."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((24, 5))
    y = rng.integers(0, 3, 24)
    weights = {"0": 0.5, "2": 3.0}
    lr, eps, b2 = 0.01, 1e-7, 0.999
    model = net(3, "softmax")
    start = model.get_weights()
    model.fit(x, y, loss="sparse_categorical_crossentropy", optimizer={"type": "adam", "learning_rate": lr},
              epochs=2, batch_size=8, shuffle=False, standardize=False, seed=0, class_weight=weights)

    reference = net(3, "softmax")
    reference.set_weights(start)
    _, tensors = _torch_logits(torch, reference, x[:1])
    opt = torch.optim.Adam(tensors, lr=lr, eps=eps, foreach=False)
    table = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    t = 0
    for _ in range(2):
        for i in range(0, 24, 8):
            t += 1
            W1, b1, W2, b2_ = tensors
            logits = torch.tanh(torch.tensor(x[i:i + 8]) @ W1 + b1) @ W2 + b2_
            loss = torch.nn.CrossEntropyLoss(weight=table, reduction="none")(logits, torch.tensor(y[i:i + 8]))
            opt.zero_grad()
            (loss.sum() / 8).backward()
            opt.param_groups[0]["eps"] = eps / math.sqrt(1 - b2 ** t)   # Keras adds epsilon before bias correction
            opt.step()
    for mine, theirs in zip(model.get_weights(), tensors):
        np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-9, atol=1e-12)
    plain = net(3, "softmax")
    plain.fit(x, y, loss="sparse_categorical_crossentropy", optimizer={"type": "adam", "learning_rate": lr},
              epochs=2, batch_size=8, shuffle=False, standardize=False, seed=0)
    assert not np.allclose(plain.get_weights()[2], model.get_weights()[2], rtol=1e-4)   # the weights mattered


# -- "balanced" ------------------------------------------------------------------------------------------------
def test_balanced_is_sklearns_rule_on_the_training_part():
    from sklearn.utils.class_weight import compute_class_weight
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 5))
    # 30 training rows of classes 0, 1 and 3 (3 rare); class 2 only in the 10 validation rows: it does not count
    y = np.concatenate([rng.choice([0, 0, 0, 1, 1, 3], 30), np.full(10, 2)])
    y_train = y[:30]
    expected = compute_class_weight("balanced", classes=np.unique(y_train), y=y_train)
    table = cw.class_table("balanced", y_train, 4)
    assert np.array_equal(table[np.unique(y_train)], expected) and table[2] == 1.0
    # the fit uses those: its first (full-batch) loss is the loss with sklearn's weights as a mapping
    config = dict(loss="sparse_categorical_crossentropy", epochs=1, batch_size="full", shuffle=False,
                  standardize=False, validation_split=0.25, seed=0)
    history = net(4, "softmax").fit(x, y, class_weight="balanced", **config)
    mapping = {int(c): float(w) for c, w in zip(np.unique(y_train), expected)}
    value, _ = net(4, "softmax").loss_and_gradients(x[:30], y_train, "sparse_categorical_crossentropy",
                                                    class_weight=mapping)
    assert math.isclose(history[0]["loss"], value, rel_tol=1e-12)
    every_class = {i: float(len(y_train) / (4 * max(np.sum(y_train == i), 1))) for i in range(4)}
    other, _ = net(4, "softmax").loss_and_gradients(x[:30], y_train, "sparse_categorical_crossentropy",
                                                    class_weight=every_class)
    assert not math.isclose(history[0]["loss"], other, rel_tol=1e-6)   # n_classes counts present classes only


def test_balanced_raises_the_minority_recall_on_held_out_digits():
    """Digits as "is it a 9" (one row in ten is a nine), logistic regression, 5 epochs."""
    from sklearn.datasets import load_digits
    X_all, digit = load_digits(return_X_y=True)
    y_all = (digit == 9).astype(float)
    perm = np.random.default_rng(0).permutation(len(X_all))
    cut = int(len(X_all) * 0.7)
    train, test = perm[:cut], perm[cut:]
    spec = {"input_shape": [64], "layers": [{"type": "dense", "units": 1, "activation": "sigmoid"}]}
    recall, accuracy = {}, {}
    for weights in (None, "balanced"):
        model = engine.build(spec, seed=0)
        model.fit(X_all[train], y_all[train], loss="binary_crossentropy",
                  optimizer={"type": "adam", "learning_rate": 0.01}, epochs=5, batch_size=32, seed=0,
                  class_weight=weights)
        said_nine = model.predict(X_all[test])[:, 0] > 0.5
        recall[weights] = said_nine[y_all[test] == 1].mean()
        accuracy[weights] = (said_nine == (y_all[test] == 1)).mean()
    # 56 held-out nines: unweighted 47 found (0.839), balanced 54 (0.964). Over five random splits the gain was
    # 0.08-0.13, so 0.05 (three more nines found) is a margin well clear of split-to-split noise; the price,
    # more false alarms among the 484 other digits, keeps the accuracy above 0.85 (0.89-0.91 measured)
    assert recall["balanced"] >= recall[None] + 0.05, recall
    assert recall["balanced"] >= 0.9 and accuracy["balanced"] >= 0.85, (recall, accuracy)


# -- resume, metrics, validation ------------------------------------------------------------------------------------
# test_training's network with every layer kind, given three classes
ALL_FEATURES = {**TWO_CLASS_NET, "layers": [*TWO_CLASS_NET["layers"][:-1],
                                            {"type": "dense", "units": 3, "activation": "softmax"}]}
XS = RNG.standard_normal((120, 6)).astype(np.float32)
YS = np.where(XS[:, 0] > 0.8, 2, np.where(XS[:, 1] > 0.3, 1, 0))          # imbalanced: 2 is the rarest


@pytest.mark.parametrize("weights", ["balanced", {"2": 4.0, "0": 0.5}], ids=["balanced", "mapping"])
@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy"])
def test_resume_with_class_weights_is_bit_identical(weights, loss):
    y = YS if loss.startswith("sparse") else np.eye(3)[YS]
    cfg = dict(loss=loss, optimizer="adam", epochs=4, batch_size=16, validation_split=0.25, seed=11,
               metrics=["accuracy", "mae"], class_weight=weights,
               early_stopping={"patience": 10, "restore_best_weights": True})
    full = engine.build(ALL_FEATURES, seed=5)
    history = full.fit(XS, y, **cfg)
    checkpoint = checkpoint_of_a_fit_stopped_after(2, ALL_FEATURES, 5, XS, y, cfg)
    resumed, resumed_history = engine.resume(checkpoint, XS, y)
    assert resumed.fit_config["class_weight"] == cw.normalize(weights, loss)
    assert all(np.array_equal(a, b) for a, b in zip(full.get_weights(), resumed.get_weights()))
    assert strip_seconds(resumed_history) == strip_seconds(history)
    unweighted = engine.build(ALL_FEATURES, seed=5).fit(XS, y, **{**cfg, "class_weight": None})
    assert strip_seconds(unweighted) != strip_seconds(history)


def test_training_metrics_are_weighted_and_validation_is_not():
    """One full batch, no shuffle, SGD: the epoch's loss and accuracy are those of the starting weights, the
    loss Σ w·ℓ / N and the accuracy Σ w·hit / Σ w over the training rows; val_* are plain means."""
    spec = {"input_shape": [6], "layers": [{"type": "dense", "units": 3, "activation": "softmax"}]}
    weights = {"0": 0.2, "1": 1.0, "2": 5.0}
    config = dict(loss="sparse_categorical_crossentropy", optimizer={"type": "sgd", "learning_rate": 0.5},
                  epochs=1, batch_size="full", shuffle=False, standardize=False, validation_split=0.25, seed=0,
                  metrics=["accuracy", "mse"])
    start = engine.build(spec, seed=3, dtype="float64")
    model = engine.build(spec, seed=3, dtype="float64")
    row = model.fit(XS, YS, class_weight=weights, **config)[0]
    x_train, y_train, x_val, y_val = XS[:90], YS[:90], XS[90:], YS[90:]
    w = np.array([0.2, 1.0, 5.0])[y_train]
    p = start.predict(x_train)
    per_row = -np.log(p[np.arange(90), y_train])
    hits = p.argmax(axis=1) == y_train
    squared = ((p - np.eye(3)[y_train]) ** 2).mean(axis=1)
    assert math.isclose(row["loss"], (w * per_row).sum() / 90, rel_tol=1e-12)
    assert math.isclose(row["accuracy"], (w * hits).sum() / w.sum(), rel_tol=1e-12)
    assert not math.isclose(row["accuracy"], hits.mean(), rel_tol=1e-3)
    assert math.isclose(row["mse"], (w * squared).sum() / w.sum(), rel_tol=1e-12)
    # validation: the trained model's plain loss and accuracy on the last quarter, the same as evaluate's
    scores = model.evaluate(x_val, y_val)
    assert (row["val_loss"], row["val_accuracy"]) == (scores["loss"], scores["accuracy"])
    p_val = model.predict(x_val)
    assert math.isclose(row["val_loss"], -np.log(p_val[np.arange(30), y_val]).mean(), rel_tol=1e-12)


def test_weights_of_one_are_the_unweighted_fit():
    """The weighted path with every weight 1.0 is the plain mean: the same fit to float32 rounding."""
    config = dict(loss="sparse_categorical_crossentropy", optimizer="adam", epochs=3, batch_size=16,
                  validation_split=0.25, seed=11, metrics=["accuracy"])
    plain = engine.build(ALL_FEATURES, seed=5)
    ones = engine.build(ALL_FEATURES, seed=5)
    a = plain.fit(XS, YS, **config)
    b = ones.fit(XS, YS, class_weight={"0": 1, "1": 1, "2": 1}, **config)
    for ra, rb in zip(a, b):
        assert math.isclose(ra["loss"], rb["loss"], rel_tol=1e-5) and ra["accuracy"] == rb["accuracy"]
    for wa, wb in zip(plain.get_weights(), ones.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-6)

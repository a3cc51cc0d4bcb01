"""validation_rows: which rows a validation_split holds out ("last" as Keras, "random", "stratified")."""
from __future__ import annotations

import math

import numpy as np
import pytest

import engine
from engine import holdout
from engine.errors import ConfigError
from tests.engine.test_training import checkpoint_of_a_fit_stopped_after, strip_seconds

RNG = np.random.default_rng(23)
# sorted by class, as iris is: Keras's rule holds out only class 2
X_SORTED = RNG.standard_normal((90, 5)).astype(np.float32) + np.repeat(np.arange(3), 30)[:, None]
Y_SORTED = np.repeat(np.arange(3), 30)
NET = {"input_shape": [5], "layers": [{"type": "dense", "units": 8, "activation": "relu"},
                                      {"type": "dense", "units": 3, "activation": "softmax"}]}
FIT = dict(loss="sparse_categorical_crossentropy", optimizer="adam", epochs=3, batch_size=16, seed=4,
           validation_split=0.2, metrics=["accuracy"])


def keras_n_train(n, split):
    return int(math.floor(n * (1.0 - split)))


@pytest.mark.parametrize("n,split", [(90, 0.2), (150, 0.2), (7, 0.5), (10, 0.99), (1000, 0.013), (3, 0.34)])
@pytest.mark.parametrize("mode", ["random", "stratified"])
def test_as_many_rows_as_keras_each_part_in_dataset_order(n, split, mode):
    n_train = keras_n_train(n, split)
    classes = np.arange(n) % 4
    order = holdout.row_order(mode, n, n_train, np.random.default_rng(1), classes)
    assert sorted(order.tolist()) == list(range(n))          # every row once
    train, held = order[:n_train], order[n_train:]
    assert len(held) == n - n_train
    assert np.all(np.diff(train) > 0) and np.all(np.diff(held) > 0)


def test_last_keeps_the_rows_where_they_are():
    assert holdout.row_order("last", 90, 72, np.random.default_rng(1), Y_SORTED) is None
    assert holdout.row_order("random", 90, 90, np.random.default_rng(1)) is None   # nothing held out


def test_stratified_shares_by_largest_remainder():
    # 10 rows of classes 0 (5), 1 (3), 2 (2); 3 held out: quotas 1.5, 0.9, 0.6 -> floors 1, 0, 0, and the two
    # largest remainders (class 1's 0.9, class 2's 0.6) get one more each
    classes = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
    order = holdout.row_order("stratified", 10, 7, np.random.default_rng(0), classes)
    assert np.bincount(classes[order[7:]], minlength=3).tolist() == [1, 1, 1]
    # ties go to the lower class index: 4 classes of 2 rows, 2 held out -> classes 0 and 1
    classes = np.repeat(np.arange(4), 2)
    order = holdout.row_order("stratified", 8, 6, np.random.default_rng(0), classes)
    assert np.bincount(classes[order[6:]], minlength=4).tolist() == [1, 1, 0, 0]


@pytest.mark.parametrize("seed", range(5))
def test_stratified_keeps_each_class_within_one_row_of_its_share(seed):
    rng = np.random.default_rng(seed)
    classes = rng.choice(5, size=537, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    n_train = keras_n_train(537, 0.3)
    order = holdout.row_order("stratified", 537, n_train, rng, classes)
    held = np.bincount(classes[order[n_train:]], minlength=5)
    share = np.bincount(classes, minlength=5) * (537 - n_train) / 537
    assert held.sum() == 537 - n_train
    assert np.all(np.abs(held - share) < 1)


def test_the_draw_follows_the_seed():
    a = holdout.row_order("random", 200, 150, np.random.default_rng(5))
    b = holdout.row_order("random", 200, 150, np.random.default_rng(5))
    c = holdout.row_order("random", 200, 150, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def held_out_rows(mode, seed=FIT["seed"], X=X_SORTED, y=Y_SORTED, split=0.2):
    """The rows the engine's fit trains and validates on, as engine.split_rows answers them for its config."""
    config = engine.normalize_fit_config({**FIT, "seed": seed, "validation_split": split, "validation_rows": mode})
    return engine.split_rows(config, y)


def test_split_rows_of_keras_rule_and_of_no_split():
    train, held = held_out_rows("last")
    assert train.tolist() == list(range(72)) and held.tolist() == list(range(72, 90))
    train, held = engine.split_rows(engine.normalize_fit_config({"loss": "mse", "seed": 1}), np.zeros(90))
    assert train.tolist() == list(range(90)) and held.size == 0
    # a draw from the seed's own stream (3): not the order of any other generator seeded the same way
    from engine.training import _rng
    train, held = held_out_rows("random")
    n_train = keras_n_train(90, 0.2)
    assert np.array_equal(np.concatenate([train, held]),
                          holdout.row_order("random", 90, n_train, _rng(FIT["seed"], 0, 3)))


@pytest.mark.parametrize("mode", ["random", "stratified"])
def test_the_fit_validates_on_the_held_out_rows_and_standardizes_by_the_rest(mode):
    train, held = held_out_rows(mode)
    model = engine.build(NET, seed=2)
    history = model.fit(X_SORTED, Y_SORTED, validation_rows=mode, **FIT)
    # the standardization is the training rows' (float64 statistics, as the engine computes them)
    mean, std = model.standardization
    np.testing.assert_allclose(mean, X_SORTED[train].astype(np.float64).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, X_SORTED[train].astype(np.float64).std(axis=0), rtol=1e-6)
    # the last row's validation figures are the final model's on exactly those rows
    scores = model.evaluate(X_SORTED[held], Y_SORTED[held], metrics=["accuracy"])
    assert scores["loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-6)
    assert scores["accuracy"] == pytest.approx(history[-1]["val_accuracy"], abs=1e-12)
    if mode == "stratified":
        assert np.bincount(Y_SORTED[held], minlength=3).tolist() == [6, 6, 6]


def test_last_is_keras_and_the_default():
    default = engine.build(NET, seed=2)
    h_default = default.fit(X_SORTED, Y_SORTED, **FIT)
    last = engine.build(NET, seed=2)
    h_last = last.fit(X_SORTED, Y_SORTED, validation_rows="last", **FIT)
    assert strip_seconds(h_default) == strip_seconds(h_last)
    assert all(np.array_equal(a, b) for a, b in zip(default.get_weights(), last.get_weights()))
    assert last.fit_config["validation_rows"] == "last"
    # Keras's rule on data sorted by class: the held-out rows are all of class 2 (what the other modes fix)
    scores = last.evaluate(X_SORTED[72:], Y_SORTED[72:], metrics=["accuracy"])
    assert scores["loss"] == pytest.approx(h_last[-1]["val_loss"], rel=1e-6)


def test_one_hot_and_binary_targets_stratify_by_their_class():
    one_hot = np.eye(3)[Y_SORTED]
    net = engine.build(NET, seed=2)
    history = net.fit(X_SORTED, one_hot, **{**FIT, "loss": "categorical_crossentropy"}, validation_rows="stratified")
    _, held = held_out_rows("stratified")
    scores = net.evaluate(X_SORTED[held], one_hot[held])
    assert scores["loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-6)
    assert holdout.class_of_rows("binary_crossentropy", np.array([0.0, 1.0, 0.7, 0.2])).tolist() == [0, 1, 1, 0]


def test_resume_and_continue_hold_out_the_same_rows():
    cfg = {**FIT, "epochs": 4, "validation_rows": "stratified", "early_stopping": {"patience": 10}}
    full = engine.build(NET, seed=3)
    history = full.fit(X_SORTED, Y_SORTED, **cfg)
    checkpoint = checkpoint_of_a_fit_stopped_after(2, NET, 3, X_SORTED, Y_SORTED, cfg)
    resumed, resumed_history = engine.resume(checkpoint, X_SORTED, Y_SORTED)
    assert strip_seconds(resumed_history) == strip_seconds(history)
    assert all(np.array_equal(a, b) for a, b in zip(full.get_weights(), resumed.get_weights()))


@pytest.mark.parametrize("config,field", [
    ({"validation_split": 0.2, "validation_rows": "shuffled"}, "validation_rows"),
    ({"validation_rows": "random"}, "validation_rows"),                 # nothing to hold out
    ({"validation_split": 0.0, "validation_rows": "stratified"}, "validation_rows"),
    ({"validation_split": 0.2, "validation_rows": ["random"]}, "validation_rows"),
])
def test_config_refusals_name_the_field(config, field):
    with pytest.raises(ConfigError) as err:
        engine.normalize_fit_config({"loss": "mse", **config})
    assert err.value.field == field


@pytest.mark.parametrize("loss,units", [("mse", 3), ("binary_crossentropy", 3), ("huber", 1)])
def test_stratified_needs_one_class_per_row(loss, units):
    net = {"input_shape": [5], "layers": [{"type": "dense", "units": units, "activation": "sigmoid"}]}
    config = engine.normalize_fit_config({"loss": loss, "validation_split": 0.2, "validation_rows": "stratified"})
    y = np.zeros((90, units))
    for model in (engine.shapes(net), engine.build(net)):
        with pytest.raises(ConfigError) as err:
            engine.check_compatible(model, config, (90, 5), y)
        assert err.value.field == "validation_rows"
    with pytest.raises(ConfigError) as err:
        engine.build(net).fit(X_SORTED, y, **config)
    assert err.value.field == "validation_rows"
    # random has no such need
    engine.check_compatible(engine.shapes(net), {**config, "validation_rows": "random"}, (90, 5), y)


# ------------------------------------------------------------------------------------ k-fold: validation_fold
@pytest.mark.parametrize("n,k", [(90, 5), (10, 3), (7, 7), (150, 4), (23, 2)])
def test_last_folds_are_sklearns_kfold(n, k):
    from sklearn.model_selection import KFold
    fold = holdout.fold_of_rows("last", n, k, np.random.default_rng(0))
    for i, (_, test) in enumerate(KFold(n_splits=k).split(np.zeros(n))):
        assert np.flatnonzero(fold == i).tolist() == test.tolist()


@pytest.mark.parametrize("n,k", [(90, 5), (10, 3), (151, 4)])
def test_random_folds_have_kfolds_sizes_and_follow_the_seed(n, k):
    fold = holdout.fold_of_rows("random", n, k, np.random.default_rng(3))
    sizes = np.bincount(fold, minlength=k)
    assert sizes.tolist() == [n // k + (i < n % k) for i in range(k)]
    assert np.array_equal(fold, holdout.fold_of_rows("random", n, k, np.random.default_rng(3)))
    assert not np.array_equal(fold, holdout.fold_of_rows("random", n, k, np.random.default_rng(4)))


@pytest.mark.parametrize("seed", range(4))
def test_stratified_folds_are_even_in_size_and_in_each_class(seed):
    rng = np.random.default_rng(seed)
    classes = rng.choice(4, size=203, p=[0.55, 0.25, 0.15, 0.05])
    fold = holdout.fold_of_rows("stratified", 203, 5, rng, classes)
    sizes = np.bincount(fold, minlength=5)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 203
    for c in range(4):
        per_fold = np.bincount(fold[classes == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1


@pytest.mark.parametrize("mode", ["last", "random", "stratified"])
def test_the_k_fits_of_a_cross_validation_validate_on_every_row_once(mode):
    held = []
    for i in range(1, 6):
        config = engine.normalize_fit_config({**FIT, "validation_split": 0.0, "validation_rows": mode,
                                              "validation_fold": {"fold": i, "folds": 5}})
        train, val = engine.split_rows(config, Y_SORTED)
        assert sorted([*train.tolist(), *val.tolist()]) == list(range(90)) and len(val) == 18
        if mode == "stratified":
            assert np.bincount(Y_SORTED[val], minlength=3).tolist() == [6, 6, 6]
        held.append(val)
    assert sorted(np.concatenate(held).tolist()) == list(range(90))


def test_a_fold_fit_validates_on_its_fold_and_resumes_bit_identical():
    cfg = {**FIT, "validation_split": 0.0, "epochs": 4, "validation_rows": "stratified",
           "validation_fold": {"fold": 2, "folds": 3}, "early_stopping": {"patience": 10}}
    train, held = engine.split_rows(engine.normalize_fit_config(cfg), Y_SORTED)
    model = engine.build(NET, seed=3)
    history = model.fit(X_SORTED, Y_SORTED, **cfg)
    assert len(held) == 30 and model.fit_config["validation_fold"] == {"fold": 2, "folds": 3}
    scores = model.evaluate(X_SORTED[held], Y_SORTED[held], metrics=["accuracy"])
    assert scores["loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-6)
    mean, _ = model.standardization
    np.testing.assert_allclose(mean, X_SORTED[train].astype(np.float64).mean(axis=0), rtol=1e-6)
    checkpoint = checkpoint_of_a_fit_stopped_after(2, NET, 3, X_SORTED, Y_SORTED, cfg)
    resumed, resumed_history = engine.resume(checkpoint, X_SORTED, Y_SORTED)
    assert strip_seconds(resumed_history) == strip_seconds(history)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), resumed.get_weights()))


@pytest.mark.parametrize("fold,field", [
    ({"fold": 4, "folds": 3}, "validation_fold.fold"),
    ({"fold": 1, "folds": 1}, "validation_fold.folds"),
    ({"fold": 0, "folds": 3}, "validation_fold.fold"),
    ({"fold": 1}, "validation_fold.folds"),
    ({"fold": 1, "folds": 3, "shuffle": True}, "validation_fold.shuffle"),
    ([1, 3], "validation_fold"),
])
def test_fold_refusals_name_the_field(fold, field):
    with pytest.raises(ConfigError) as err:
        engine.normalize_fit_config({"loss": "mse", "validation_fold": fold})
    assert err.value.field == field


def test_a_fold_is_refused_beside_a_split_validation_data_or_more_folds_than_rows():
    with pytest.raises(ConfigError) as err:
        engine.normalize_fit_config({"loss": "mse", "validation_split": 0.2,
                                     "validation_fold": {"fold": 1, "folds": 3}})
    assert err.value.field == "validation_fold"
    fold = {**FIT, "validation_split": 0.0, "validation_fold": {"fold": 1, "folds": 3}}
    with pytest.raises(ConfigError) as err:
        engine.build(NET).fit(X_SORTED, Y_SORTED, validation_data=(X_SORTED[:5], Y_SORTED[:5]), **fold)
    assert err.value.field == "validation_fold"
    with pytest.raises(ConfigError) as err:
        engine.build(NET).fit(X_SORTED[:4], Y_SORTED[:4], **{**fold, "validation_fold": {"fold": 1, "folds": 5}})
    assert err.value.field == "validation_fold.folds"
    # a fold gives validation data: early stopping may monitor val_loss
    engine.normalize_fit_config({**fold, "early_stopping": {"monitor": "val_loss"}})

"""The course's lessons as behaviour: initialization, optimizers, regularization, batch norm."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import Dataset, Model, TrainConfig, load_dataset, train


@pytest.fixture(scope="module")
def circles() -> Dataset:
    return load_dataset({"name": "circles", "n_samples": 300, "noise": 0.1, "seed": 1})


def three_layer(init: str, **overrides: object) -> TrainConfig:
    fields: dict[str, object] = {
        "hidden_layers": [10, 5],
        "activation": "relu",
        "init": init,
        "optimizer": "adam",
        "learning_rate": 0.01,
        "epochs": 200,
    }
    return TrainConfig.model_validate({**fields, **overrides})


def test_zero_initialization_keeps_every_unit_of_a_layer_identical(circles: Dataset) -> None:
    result = train(three_layer("zeros", activation="tanh"), circles)
    for name, value in result.params.items():
        if name.startswith(("W", "b")):
            # Every row (unit) equals the first: the symmetry was never broken.
            np.testing.assert_array_equal(value, np.broadcast_to(value[:1], value.shape))
    assert abs(result.history[-1]["dev_accuracy"] - 0.5) <= 0.05  # chance on balanced data


def test_he_initialization_trains_where_zeros_cannot(circles: Dataset) -> None:
    he = train(three_layer("he"), circles).history[-1]["dev_accuracy"]
    zeros = train(three_layer("zeros"), circles).history[-1]["dev_accuracy"]
    assert he >= 0.9
    assert zeros <= 0.6


def test_he_and_xavier_scale_the_weights_by_fan_in() -> None:
    for init, gain in (("he", 2.0), ("xavier", 1.0)):
        model = Model(TrainConfig(hidden_layers=[400], init=init), n_features=500)
        assert model.params["W1"].std() == pytest.approx(np.sqrt(gain / 500), rel=0.02)
        assert not model.params["b1"].any()
    big = Model(TrainConfig(hidden_layers=[400], init="random", init_scale=10.0), 500)
    assert big.params["W1"].std() == pytest.approx(10.0, rel=0.02)


def test_adam_beats_gradient_descent_on_moons_at_the_same_epochs() -> None:
    moons = load_dataset({"name": "moons", "n_samples": 300, "noise": 0.2, "seed": 3})
    base = dict(hidden_layers=[5, 2], learning_rate=0.0007, epochs=300, batch_size=64)
    gd = train(TrainConfig(optimizer="gd", **base), moons).history[-1]["dev_accuracy"]
    adam = train(TrainConfig(optimizer="adam", **base), moons).history[-1]["dev_accuracy"]
    assert adam >= gd + 0.08, (adam, gd)


def _gaps(**regularization: float) -> list[float]:
    """Train-dev accuracy gap (inference mode) of a net that overfits small noisy moons."""
    gaps = []
    for seed in (5, 6, 7):
        ds = load_dataset(
            {"name": "moons", "n_samples": 120, "noise": 0.35, "seed": seed, "dev_fraction": 0.5}
        )
        cfg = TrainConfig(
            hidden_layers=[100, 100],
            learning_rate=0.01,
            epochs=300,
            batch_size=0,
            **regularization,
        )
        model = train(cfg, ds).model
        train_acc = model.evaluate(ds.X_train, ds.y_train)[1]
        dev_acc = model.evaluate(ds.X_dev, ds.y_dev)[1]
        assert train_acc is not None and dev_acc is not None
        gaps.append(train_acc - dev_acc)
    return gaps


def test_l2_and_dropout_each_shrink_the_train_dev_gap() -> None:
    plain = np.mean(_gaps())
    assert plain >= 0.1  # the net does overfit
    assert np.mean(_gaps(l2=2.0)) < plain / 2
    assert np.mean(_gaps(keep_prob=0.3)) < plain * 0.8


def test_batch_norm_uses_running_averages_at_inference(circles: Dataset) -> None:
    cfg = three_layer("he", batch_norm=True, epochs=30, bn_momentum=0.9)
    model = train(cfg, circles).model
    X = circles.X_dev
    batch = model.predict_proba(X)
    one_by_one = np.array([model.predict_proba(X[i : i + 1])[0] for i in range(len(X))])
    np.testing.assert_allclose(one_by_one, batch, rtol=1e-5, atol=1e-6)  # float32 GEMM rounding
    # The running mean tracks the batch means of Z = X W^T, which training normalizes away.
    Z = circles.X_train.astype(np.float32) @ model.params["W1"].T
    np.testing.assert_allclose(model.buffers["running_mean1"], Z.mean(axis=0), atol=0.15)
    # Inference differs from normalizing by the statistics of the batch at hand.
    skewed = X[circles.y_dev == 1]
    stats_of_batch = model.predict_proba(skewed)
    model.buffers["running_mean1"][...] = Z[circles.y_train == 1].mean(axis=0)
    assert not np.allclose(model.predict_proba(skewed), stats_of_batch)


def test_batch_norm_running_average_weights_the_old_value_by_bn_momentum() -> None:
    cfg = TrainConfig(hidden_layers=[3], batch_norm=True, bn_momentum=0.8, dtype="float64")
    model = Model(cfg, n_features=2)
    X = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5], [2.0, 0.0]])
    model.cost_and_grads(X, np.array([0, 1, 0, 1]))
    Z = X @ model.params["W1"].T
    np.testing.assert_allclose(model.buffers["running_mean1"], 0.2 * Z.mean(axis=0))
    np.testing.assert_allclose(model.buffers["running_var1"], 0.8 + 0.2 * Z.var(axis=0))
    assert "b1" not in model.params and {"gamma1", "beta1", "b2"} <= set(model.params)

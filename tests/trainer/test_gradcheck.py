"""Gradient checks in float64 for every layer type, activation, loss, L2, dropout and batch norm."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from trainer import Model, TrainConfig, gradient_check, load_dataset
from trainer.gradcheck import check_gradients, check_network, verdict
from trainer.layers import Dense

SMOOTH = ("tanh", "sigmoid")
KINKED = ("relu", "leaky_relu")  # ReLU's kink at 0 allows a looser bound
TASKS = (("binary", 1), ("multiclass", 3), ("regression", 2))


def make_problem(task: str, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(7, 4))
    if task == "binary":
        return X, rng.integers(0, 2, 7)
    if task == "multiclass":
        return X, rng.integers(0, k, 7)
    return X, rng.normal(size=(7, k))


def jitter(model: Model, seed: int = 1) -> None:
    """Move every parameter off its initial value: zero biases make Z land exactly on
    ReLU's kink when a whole row of inputs is zero, which would test the kink, not the code."""
    rng = np.random.default_rng(seed)
    model.vector += rng.normal(scale=0.3, size=model.vector.shape)


CASES = [
    pytest.param(act, task, k, bn, keep, l2, id=f"{act}-{task}-bn{int(bn)}-keep{keep}-l2{l2}")
    for act, (task, k), bn, keep, l2 in itertools.product(
        SMOOTH + KINKED, TASKS, (False, True), (1.0, 0.6), (0.0, 0.7)
    )
]


@pytest.mark.parametrize(("activation", "task", "k", "batch_norm", "keep_prob", "l2"), CASES)
def test_backprop_matches_two_sided_differences(
    activation: str, task: str, k: int, batch_norm: bool, keep_prob: float, l2: float
) -> None:
    cfg = TrainConfig(
        hidden_layers=[5, 3],
        activation=activation,
        batch_norm=batch_norm,
        keep_prob=keep_prob,
        l2=l2,
        init="xavier",
        dtype="float64",
    )
    model = Model(cfg, n_features=4, n_outputs=k, task=task)
    jitter(model)
    X, y = make_problem(task, k)
    before = model.vector.copy()
    diff = gradient_check(model, X, y)
    assert diff < (1e-7 if activation in SMOOTH else 1e-5), diff
    np.testing.assert_array_equal(model.vector, before)  # parameters restored exactly


def test_gradient_check_uses_one_fixed_dropout_mask() -> None:
    # Two calls give the same answer: each evaluation replays the same generator state.
    cfg = TrainConfig(hidden_layers=[6], activation="tanh", keep_prob=0.5, dtype="float64")
    model = Model(cfg, n_features=4)
    X, y = make_problem("binary", 1)
    state = model.rng.bit_generator.state
    assert gradient_check(model, X, y) == gradient_check(model, X, y)
    assert model.rng.bit_generator.state == state


def test_gradient_check_restores_batch_norm_running_averages() -> None:
    cfg = TrainConfig(hidden_layers=[4], batch_norm=True, dtype="float64")
    model = Model(cfg, n_features=4)
    before = {k: v.copy() for k, v in model.buffers.items()}
    gradient_check(model, *make_problem("binary", 1))
    for name, value in model.buffers.items():
        np.testing.assert_array_equal(value, before[name])


def test_gradient_check_catches_a_wrong_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Dense.backward

    def off_by_one_percent(self: Dense, dY: np.ndarray) -> np.ndarray:
        dX = original(self, dY)
        self.dW *= 1.01
        return dX

    monkeypatch.setattr(Dense, "backward", off_by_one_percent)
    cfg = TrainConfig(hidden_layers=[5], activation="tanh", dtype="float64")
    model = Model(cfg, n_features=4)
    assert gradient_check(model, *make_problem("binary", 1)) > 1e-3


def test_gradient_check_catches_a_cost_without_its_l2_term(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = TrainConfig(hidden_layers=[5], activation="tanh", dtype="float64", l2=0.5)
    model = Model(cfg, n_features=4)
    X, y = make_problem("binary", 1)
    assert gradient_check(model, X, y) < 1e-7
    # The gradient keeps lambda/m * W while the cost loses lambda/(2m) * sum W^2.
    monkeypatch.setattr(model, "_l2_cost", lambda m: 0.0)
    assert gradient_check(model, X, y) > 1e-3


# -- the report: per parameter, the course's verdict, a network from its config ---------------


class BrokenBackprop(Model):
    """A test double whose backward pass gets one parameter's gradient wrong (W2, by 5%)."""

    def compute_grads(self, X: np.ndarray, y: np.ndarray) -> tuple[float, int | None]:
        cost = super().compute_grads(X, y)
        self.grads["W2"][...] *= 1.05
        return cost


def test_the_verdict_follows_the_course_thresholds() -> None:
    assert [verdict(d) for d in (0.0, 5e-8, 5e-6, 5e-4, 2e-3, float("nan"))] == [
        "correct",
        "correct",
        "fine",
        "suspicious",
        "wrong",
        "wrong",
    ]


def test_the_report_names_the_parameter_whose_gradient_is_wrong() -> None:
    cfg = TrainConfig(hidden_layers=[5, 3], activation="tanh", dtype="float64")
    X, y = make_problem("binary", 1)
    right = check_gradients(Model(cfg, n_features=4), X, y)
    assert right.verdict == "correct" and right.passed, right.summary()
    assert list(right.parameters) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert right.checked == right.total == Model(cfg, n_features=4).vector.shape[0]

    broken = check_gradients(BrokenBackprop(cfg, n_features=4), X, y)
    assert broken.verdict == "wrong" and not broken.passed
    assert broken.worst() == "W2" and broken.parameters["W2"] > 1e-3
    assert all(broken.parameters[n] < 1e-7 for n in broken.parameters if n != "W2")
    assert "gradient check wrong" in broken.summary() and "worst W2" in broken.summary()


def test_a_network_is_checked_in_float64_as_its_training_starts() -> None:
    ds = load_dataset({"name": "moons", "n_samples": 200, "seed": 0})
    cfg = TrainConfig(hidden_layers=[20, 7, 5], dtype="float32", seed=3)
    report = check_network(cfg, ds, examples=8)
    assert report.verdict == "correct" and report.difference < 1e-7, report.summary()
    assert report.examples == 8 and report.shapes["W1"] == [20, 2]
    assert check_network(cfg, ds, examples=8) == report  # the config's seed: the same network


def test_a_trial_check_looks_at_a_sample_of_each_parameter() -> None:
    ds = load_dataset({"name": "digits"})
    cfg = TrainConfig(hidden_layers=[40], activation="tanh")
    report = check_network(cfg, ds, max_per_parameter=30)
    # W1 (40 x 64) and W2 (10 x 40) are sampled; b1 (40) too; b2 (10) is whole.
    assert report.checked == 30 + 30 + 30 + 10 and report.total == 40 * 64 + 40 + 10 * 40 + 10
    assert report.verdict == "correct", report.summary()


def test_a_report_that_is_not_a_number_is_wrong_and_json_safe() -> None:
    cfg = TrainConfig(hidden_layers=[3], activation="tanh", dtype="float64")
    model = Model(cfg, n_features=4)
    model.vector[0] = np.nan
    report = check_gradients(model, *make_problem("binary", 1))
    assert report.verdict == "wrong"
    assert report.to_json()["difference"] is None

"""Layers on their own: shapes, inference vs training, dropout masks, and finite values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trainer import Model, TrainConfig
from trainer.layers import Dropout, Workspace, sigmoid


def test_sigmoid_never_overflows_in_float32() -> None:
    Z = np.array([-1e4, -100.0, 0.0, 100.0, 1e4], np.float32)
    with np.errstate(all="raise"):
        A = sigmoid(Z)
    np.testing.assert_allclose(A, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)
    assert A.dtype == np.float32


def test_inverted_dropout_keeps_the_expectation_and_reuses_its_mask() -> None:
    layer = Dropout(0.8, np.random.default_rng(0), np.dtype(np.float64))
    X = np.ones((400, 50))
    out = layer.forward(X, training=True).copy()
    kept = out != 0
    assert abs(kept.mean() - 0.8) < 0.01
    np.testing.assert_allclose(out[kept], 1 / 0.8)  # survivors scaled up: E[out] = X
    assert abs(out.mean() - 1.0) < 0.02
    dX = layer.backward(np.ones((400, 50)))
    np.testing.assert_array_equal(dX != 0, kept)  # the same mask going back
    assert layer.forward(X, training=False) is X  # inference: identity


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid"])
def test_activations_match_their_definitions(activation: str) -> None:
    cfg = TrainConfig(hidden_layers=[3], activation=activation, leaky_slope=0.1, dtype="float64")
    model = Model(cfg, n_features=3)
    layer = model.layers[1]
    Z = np.array([[-2.0, 0.0, 3.0]])
    expected = {
        "relu": [0.0, 0.0, 3.0],
        "leaky_relu": [-0.2, 0.0, 3.0],
        "tanh": np.tanh([-2.0, 0.0, 3.0]),
        "sigmoid": 1 / (1 + np.exp([2.0, 0.0, -3.0])),
    }[activation]
    np.testing.assert_allclose(layer.forward(Z, training=False)[0], np.asarray(expected))


def test_workspace_reuses_arrays_per_row_count_and_forgets_old_ones() -> None:
    ws = Workspace(np.dtype(np.float32))
    a = ws.get(64, "Z", (64, 3))
    assert ws.get(64, "Z", (64, 3)) is a and a.dtype == np.float32
    for m in (10, 11, 12, 13):
        ws.get(m, "Z", (m, 3))
    assert ws.get(64, "Z", (64, 3)) is not a  # evicted after four other row counts
    assert len(ws.arrays()) == 4


bounded = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(
    X=arrays(np.float32, (6, 3), elements=bounded),
    activation=st.sampled_from(["relu", "leaky_relu", "tanh", "sigmoid"]),
    task=st.sampled_from([("binary", 1), ("multiclass", 3), ("regression", 1)]),
    batch_norm=st.booleans(),
    keep_prob=st.sampled_from([1.0, 0.5]),
)
def test_forward_and_backward_stay_finite_on_bounded_inputs(
    X: np.ndarray,
    activation: str,
    task: tuple[str, int],
    batch_norm: bool,
    keep_prob: float,
) -> None:
    name, k = task
    cfg = TrainConfig(
        hidden_layers=[8, 4], activation=activation, batch_norm=batch_norm, keep_prob=keep_prob
    )
    model = Model(cfg, n_features=3, n_outputs=k, task=name)
    y = np.array([0, 1, 0, 1, 1, 0]) if name != "regression" else np.linspace(-5, 5, 6)
    if name == "multiclass":
        y = np.array([0, 1, 2, 0, 1, 2])
    cost, grads = model.cost_and_grads(X, y)
    assert np.isfinite(cost) and cost >= 0
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    assert np.all(np.isfinite(model.predict_proba(X)))


def test_batch_norm_puts_epsilon_inside_the_square_root() -> None:
    # Epsilon inside the square root (docs/spec.md, bn_epsilon), not the course notes'
    # sqrt(var) + eps; a large eps tells the two apart.
    cfg = TrainConfig(hidden_layers=[3], batch_norm=True, bn_epsilon=0.5, dtype="float64")
    model = Model(cfg, n_features=2)
    bn = model.layers[1]
    model.params["gamma1"][...] = [1.0, 2.0, 0.5]
    model.params["beta1"][...] = [0.0, 1.0, -1.0]
    Z = np.array([[1.0, 2.0, 3.0], [3.0, -2.0, 0.0], [2.0, 0.0, 6.0]])
    out = bn.forward(Z, training=True)
    expected = (Z - Z.mean(axis=0)) / np.sqrt(Z.var(axis=0) + 0.5)
    np.testing.assert_allclose(out, expected * [1.0, 2.0, 0.5] + [0.0, 1.0, -1.0])

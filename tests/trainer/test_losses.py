"""Output heads: softmax's properties, losses' signs and known values, and accuracy counting."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trainer.losses import Head, softmax

finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False, width=64)
logits = arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(2, 6)), elements=finite)


@given(logits)
def test_softmax_rows_sum_to_one(Z: np.ndarray) -> None:
    P = softmax(Z)
    assert np.all(P >= 0)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)


@given(logits, st.floats(-1e3, 1e3, allow_nan=False))
def test_softmax_is_shift_invariant(Z: np.ndarray, c: float) -> None:
    np.testing.assert_allclose(softmax(Z + c), softmax(Z), atol=1e-9)


@given(st.data(), logits)
@settings(max_examples=60)
def test_every_loss_is_non_negative(data: st.DataObject, Z: np.ndarray) -> None:
    m, k = Z.shape
    labels = data.draw(arrays(np.intp, m, elements=st.integers(0, k - 1)))
    loss, correct, _ = Head("multiclass", k, np.dtype(np.float64)).loss(Z, labels, grad=True)
    assert loss >= 0.0 and correct is not None and 0 <= correct <= m
    y01 = data.draw(arrays(np.float64, m, elements=st.sampled_from([0.0, 1.0])))
    loss, _, _ = Head("binary", 1, np.dtype(np.float64)).loss(Z[:, :1].copy(), y01, grad=True)
    assert loss >= 0.0
    targets = data.draw(arrays(np.float64, (m, k), elements=finite))
    loss, _, _ = Head("regression", k, np.dtype(np.float64)).loss(Z, targets, grad=True)
    assert loss >= 0.0


def test_binary_cross_entropy_matches_the_course_formula() -> None:
    Z = np.array([[-2.0], [0.5], [3.0]])
    y = np.array([0.0, 1.0, 0.0])
    A = 1 / (1 + np.exp(-Z[:, 0]))
    expected = -np.mean(y * np.log(A) + (1 - y) * np.log(1 - A))
    loss, correct, dZ = Head("binary", 1, np.dtype(np.float64)).loss(Z, y, grad=True)
    assert np.isclose(loss, expected)
    assert correct == 2
    assert dZ is not None
    np.testing.assert_allclose(dZ[:, 0], (A - y) / 3)


def test_binary_loss_stays_finite_for_saturated_float32_logits() -> None:
    # log(sigmoid(z)) computed naively is log(0) = -inf for z = -200 in float32.
    Z = np.array([[-200.0], [200.0]], np.float32)
    y = np.array([1.0, 0.0], np.float32)
    loss, _, dZ = Head("binary", 1, np.dtype(np.float32)).loss(Z, y, grad=True)
    assert np.isclose(loss, 200.0, rtol=1e-6)
    assert dZ is not None and dZ.dtype == np.float32 and np.all(np.isfinite(dZ))


def test_softmax_cross_entropy_and_gradient() -> None:
    Z = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    y = np.array([1, 0])
    P = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
    loss, correct, dZ = Head("multiclass", 3, np.dtype(np.float64)).loss(Z, y, grad=True)
    assert np.isclose(loss, -np.mean(np.log(P[[0, 1], y])))
    assert correct == 1
    expected = P.copy()
    expected[[0, 1], y] -= 1
    assert dZ is not None
    np.testing.assert_allclose(dZ, expected / 2)


def test_mean_squared_error_averages_examples_and_outputs() -> None:
    Z = np.array([[1.0, 2.0], [3.0, 4.0]])
    y = np.array([[0.0, 2.0], [3.0, 2.0]])
    loss, correct, dZ = Head("regression", 2, np.dtype(np.float64)).loss(Z, y, grad=True)
    assert loss == (1 + 0 + 0 + 4) / 4 and correct is None
    assert dZ is not None
    np.testing.assert_allclose(dZ, 2 * (Z - y) / 4)

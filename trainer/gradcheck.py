"""Gradient checking: backpropagation against two-sided differences over the whole parameter vector.

``gradient_check(model, X, y)`` returns ``||g - g_approx|| / (||g|| + ||g_approx||)``, with
``g`` from backpropagation and ``g_approx[i] = (J(theta + eps e_i) - J(theta - eps e_i)) /
(2 eps)`` for every component of the model's parameter vector. In float64, values around
1e-7 or below mean the gradient is right; 1e-3 or above means a bug. It is meant for small
models and a handful of examples (two cost evaluations per parameter); in float32 the
differences drown in rounding, so build the model with ``dtype="float64"``.

The cost is evaluated in training mode, so dropout and batch statistics are part of what
is checked. Every evaluation restarts the model's generator from the same state, so each
one draws the same dropout mask; batch norm's running averages, which a training pass
updates, are restored afterwards, and the parameters are left exactly as they were.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from trainer.model import Model


def gradient_check(model: Model, X: Any, y: Any, epsilon: float = 1e-7) -> float:
    """Relative difference between the analytic and the numerical gradient.

    Parameters
    ----------
    model : Model
        Its parameters are perturbed in place and restored.
    X : array_like, shape (m, n_features)
    y : array_like, shape (m,) (or (m, k) for regression)
    epsilon : float
        Half the width of the two-sided difference.

    Returns
    -------
    float
        ``||g - g_approx|| / (||g|| + ||g_approx||)``; 0.0 when both gradients are zero.
    """
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    X = model.prepare_inputs(X)
    y = model.prepare_targets(y, X.shape[0])
    theta = model.vector
    saved_theta = theta.copy()
    saved_buffers = {name: buf.copy() for name, buf in model.buffers.items()}
    rng_state = copy.deepcopy(model.rng.bit_generator.state)

    def cost() -> float:
        model.rng.bit_generator.state = copy.deepcopy(rng_state)
        return model.loss(X, y, training=True)[0]

    try:
        model.rng.bit_generator.state = copy.deepcopy(rng_state)
        model.compute_grads(X, y)
        analytic = model.grad_vector.astype(np.float64)
        numeric = np.empty_like(analytic)
        for i in range(theta.shape[0]):
            original = theta[i]
            theta[i] = original + epsilon
            plus = cost()
            theta[i] = original - epsilon
            minus = cost()
            theta[i] = original
            numeric[i] = (plus - minus) / (2.0 * epsilon)
    finally:
        theta[...] = saved_theta
        for name, buf in model.buffers.items():
            buf[...] = saved_buffers[name]
        model.rng.bit_generator.state = rng_state
    denominator = float(np.linalg.norm(analytic) + np.linalg.norm(numeric))
    if denominator == 0.0:
        return 0.0
    return float(np.linalg.norm(analytic - numeric)) / denominator

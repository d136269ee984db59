"""Update rules against the course's per-parameter formulas; state by name; bias correction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer import TrainConfig
from trainer.optimizers import Adam, make_optimizer

LAYOUT = [("W1", 0, (3, 2)), ("b1", 6, (3,)), ("W2", 9, (1, 3)), ("b2", 12, (1,))]
N = 13


def reference_step(
    kind: str, params: dict, grads: dict, state: dict, t: int, cfg: TrainConfig, lr: float
) -> None:
    """The course's formulas, one parameter at a time (RMSprop's b uses its own Sdb)."""
    b1, b2, eps = cfg.beta1, cfg.beta2, cfg.epsilon
    for name, g in grads.items():
        v = state.setdefault(("v", name), np.zeros_like(g))
        s = state.setdefault(("s", name), np.zeros_like(g))
        if kind == "gd":
            params[name] = params[name] - lr * g
        elif kind == "momentum":
            state[("v", name)] = v = b1 * v + (1 - b1) * g
            params[name] = params[name] - lr * v
        elif kind == "rmsprop":
            state[("s", name)] = s = b2 * s + (1 - b2) * g**2
            params[name] = params[name] - lr * g / (np.sqrt(s) + eps)
        else:
            state[("v", name)] = v = b1 * v + (1 - b1) * g
            state[("s", name)] = s = b2 * s + (1 - b2) * g**2
            v_hat, s_hat = v / (1 - b1**t), s / (1 - b2**t)
            params[name] = params[name] - lr * v_hat / (np.sqrt(s_hat) + eps)


def views(vector: np.ndarray) -> dict[str, np.ndarray]:
    return {n: vector[o : o + math.prod(s)].reshape(s) for n, o, s in LAYOUT}


@pytest.mark.parametrize("kind", ["gd", "momentum", "rmsprop", "adam"])
def test_update_rules_follow_the_course(kind: str) -> None:
    cfg = TrainConfig(optimizer=kind, beta1=0.8, beta2=0.95, epsilon=1e-6, dtype="float64")
    rng = np.random.default_rng(0)
    vector, grad = rng.normal(size=N), np.zeros(N)
    opt = make_optimizer(cfg, vector, grad, LAYOUT)
    expected = {k: v.copy() for k, v in views(vector).items()}
    state: dict = {}
    for t in range(1, 6):
        grad[...] = rng.normal(size=N)
        lr = 0.1 / t
        reference_step(kind, expected, views(grad), state, t, cfg, lr)
        opt.step(lr)
        for name, value in views(vector).items():
            np.testing.assert_allclose(value, expected[name], rtol=1e-12, atol=1e-14)
    assert opt.t == 5


def test_state_is_keyed_by_parameter_name_and_shares_the_buffer() -> None:
    cfg = TrainConfig(optimizer="adam", dtype="float64")
    vector, grad = np.zeros(N), np.ones(N)
    opt = make_optimizer(cfg, vector, grad, LAYOUT)
    assert set(opt.state) == {"W1", "b1", "W2", "b2"}
    assert opt.state["W1"]["v"].shape == (3, 2) and opt.state["b2"]["s"].shape == (1,)
    opt.step(0.01)
    np.testing.assert_allclose(opt.state["W1"]["v"], 0.1)  # (1 - beta1) * g
    np.testing.assert_allclose(opt.state["b1"]["s"], 1e-3)  # (1 - beta2) * g^2


def test_rmsprop_divides_each_parameter_by_its_own_mean_square() -> None:
    # Course slip: b divided by sqrt(SdW). Here dW is large and db small: if b used SdW,
    # its step would be tiny; with its own Sdb both first steps are about lr.
    cfg = TrainConfig(optimizer="rmsprop", beta2=0.9, dtype="float64")
    vector, grad = np.zeros(N), np.zeros(N)
    p, g = views(vector), views(grad)
    g["W1"][...] = 100.0
    g["b1"][...] = 0.01
    make_optimizer(cfg, vector, grad, LAYOUT).step(0.001)
    np.testing.assert_allclose(p["W1"], -0.001 / math.sqrt(0.1), rtol=1e-6)
    np.testing.assert_allclose(p["b1"], -0.001 / math.sqrt(0.1), rtol=1e-4)


def test_bias_correction_matters_in_adams_first_steps() -> None:
    cfg = TrainConfig(optimizer="adam", dtype="float64")
    vector, grad = np.zeros(N), np.full(N, 0.5)
    opt = Adam(vector, grad, LAYOUT, cfg)
    opt.step(0.01)
    # Corrected, the first step is lr * g / |g| = lr: v_hat = g and s_hat = g^2 exactly.
    np.testing.assert_allclose(vector, -0.01, rtol=1e-6)
    # Uncorrected it would be lr * 0.1 g / (sqrt(0.001) |g|) = 3.16 lr: the averages start
    # at zero and the two moments are biased by different factors.
    uncorrected = 0.01 * (0.1 * 0.5) / (math.sqrt(0.001 * 0.25) + 1e-8)
    assert abs(uncorrected / 0.01 - 3.162) < 1e-3
    # After many steps the corrections fade: (1 - beta^t) -> 1.
    for _ in range(5000):
        opt.step(0.01)
    assert 1 - cfg.beta1**opt.t > 0.999999 and abs(1 - (1 - cfg.beta2**opt.t)) < 0.01


@pytest.mark.parametrize("kind", ["gd", "momentum", "rmsprop", "adam"])
def test_float32_updates_stay_float32_in_place(kind: str) -> None:
    n = 1000
    cfg = TrainConfig(optimizer=kind)
    vector = np.ones(n, np.float32)
    grad = np.linspace(-1, 1, n, dtype=np.float32)
    opt = make_optimizer(cfg, vector, grad, [("W1", 0, (n,))])
    before = vector.ctypes.data
    opt.step(0.01)
    assert vector.dtype == np.float32 and vector.ctypes.data == before
    assert all(buf.dtype == np.float32 for buf in opt.buffers.values())
    assert np.all(vector[grad != 0] != 1.0)

"""The trainer's edges: a cost that explodes, a float32 sigmoid far below 0, what a
gradient pass does to batch norm's running averages."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import Dataset, TrainConfig, load_dataset, train
from trainer.checkpoint import Checkpoint
from trainer.layers import sigmoid
from trainer.model import Model
from trainer.training import EXPLODED


@pytest.fixture(scope="module")
def moons() -> Dataset:
    return load_dataset({"name": "moons", "n_samples": 1000, "seed": 1})


@pytest.mark.parametrize(
    ("optimizer", "learning_rate"), [("rmsprop", 3.0), ("adam", 100.0), ("gd", 1000.0)]
)
def test_a_run_whose_cost_explodes_ends_diverged(
    moons: Dataset, optimizer: str, learning_rate: float
) -> None:
    """These ran to their last epoch, "completed" at chance with costs up to 1e22."""
    cfg = TrainConfig(
        hidden_layers=[20, 7, 5], optimizer=optimizer, learning_rate=learning_rate, epochs=30
    )
    saved: list[Checkpoint] = []
    result = train(cfg, moons, checkpoint_every=1, on_checkpoint=saved.append)
    assert result.status == "diverged"
    assert result.divergence is not None and "exploded" in result.divergence
    assert result.history[-1]["train_cost"] is None  # the epoch it exploded in
    assert [c.epoch for c in saved] == list(range(1, len(result.history)))
    fine = train(cfg.model_copy(update={"learning_rate": 0.01}), moons)
    assert fine.status == "completed" and fine.divergence is None
    assert max(r["train_cost"] for r in fine.history) < EXPLODED  # nowhere near


def test_the_float32_sigmoid_keeps_small_probabilities() -> None:
    z = np.array([-80.0, -40.0, -30.0, -20.0, -5.0, 0.0, 5.0, 30.0])
    s32 = sigmoid(z.astype(np.float32))
    expected = 1 / (1 + np.exp(-z))
    assert (s32 > 0).all(), s32  # it was exactly 0 below z = -17
    np.testing.assert_allclose(s32, expected, rtol=1e-6)
    inplace = z.astype(np.float32)
    assert sigmoid(inplace, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, s32)
    # float64 as it was, to the bit: the tanh form the PyTorch tests were checked against.
    np.testing.assert_array_equal(sigmoid(z), (1 + np.tanh(z / 2)) / 2)


def test_predict_proba_in_float32_is_not_0_far_from_the_boundary() -> None:
    cfg = TrainConfig(hidden_layers=[3], dtype="float32")
    model = Model(cfg, 2, 1, "binary", rng=np.random.default_rng(0))
    params = model.get_params()
    params = {k: np.zeros_like(v) for k, v in params.items()}
    params["b2"] = np.full_like(params["b2"], -25.0)  # every logit -25
    model.set_params(params)
    proba = model.predict_proba(np.zeros((4, 2)))
    assert proba.dtype == np.float32 and (proba > 0).all(), proba
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(25.0)), rtol=1e-5)


def test_cost_and_grads_moves_batch_norm_averages_unless_told_not_to() -> None:
    cfg = TrainConfig(hidden_layers=[4], batch_norm=True, dtype="float64")
    model = Model(cfg, 2, 1, "binary", rng=np.random.default_rng(0))
    X = np.random.default_rng(1).normal(3.0, 2.0, size=(16, 2))
    y = (X[:, 0] > 3).astype(float)
    before = {k: v.copy() for k, v in model.buffers.items()}
    cost, grads = model.cost_and_grads(X, y, update_averages=False)
    for name, value in model.buffers.items():
        np.testing.assert_array_equal(value, before[name])
    again, _ = model.cost_and_grads(X, y)  # as a training step: the averages move
    assert again == cost
    assert any(not np.array_equal(v, before[k]) for k, v in model.buffers.items())
    assert set(grads) == set(model.params)

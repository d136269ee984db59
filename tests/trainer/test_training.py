"""The training loop: metrics, stopping, divergence, determinism, dtypes, batches and memory."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from trainer import Dataset, Model, TrainConfig, dataset_from_arrays, load_dataset, train
from trainer.optimizers import make_optimizer
from trainer.training import _Loop

KEYS = {
    "epoch",
    "train_cost",
    "train_accuracy",
    "dev_cost",
    "dev_accuracy",
    "learning_rate",
    "seconds",
}


@pytest.fixture(scope="module")
def moons() -> Dataset:
    return load_dataset(
        {"name": "moons", "n_samples": 300, "noise": 0.2, "dev_fraction": 0.2, "seed": 3}
    )


def test_history_has_one_json_safe_dict_per_epoch(moons: Dataset) -> None:
    result = train(TrainConfig(hidden_layers=[5, 2], epochs=4), moons)
    assert result.status == "completed"
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    for h in result.history:
        assert set(h) == KEYS
        assert 0 <= h["train_accuracy"] <= 1 and 0 <= h["dev_accuracy"] <= 1
        assert h["seconds"] > 0 and h["learning_rate"] == 0.001
    json.dumps(result.history, allow_nan=False)
    assert set(result.params) == set(result.model.params)


def test_train_cost_is_the_mean_of_mini_batch_costs(moons: Dataset) -> None:
    # With lr tiny the weights barely move, so the epoch's mean of mini-batch costs equals
    # the full-batch training-mode cost of the initial weights.
    cfg = TrainConfig(hidden_layers=[4], epochs=1, learning_rate=1e-12, dtype="float64")
    result = train(cfg, moons)
    fresh = train(cfg.model_copy(update={"epochs": 1, "batch_size": 0}), moons)
    assert result.history[0]["train_cost"] == pytest.approx(fresh.history[0]["train_cost"])


@pytest.mark.parametrize("answer", [True, "stop", {"stop": True}])
def test_on_epoch_can_stop_the_run(moons: Dataset, answer: object) -> None:
    seen: list[dict] = []

    def on_epoch(metrics: dict) -> object:
        seen.append(metrics)
        return answer if metrics["epoch"] == 3 else None

    result = train(TrainConfig(hidden_layers=[3], epochs=50), moons, on_epoch=on_epoch)
    assert result.status == "stopped" and len(result.history) == 3 and len(seen) == 3
    assert seen == result.history


@pytest.mark.parametrize("answer", [False, None, {"stop": False}, "continue"])
def test_falsy_answers_do_not_stop(moons: Dataset, answer: object) -> None:
    result = train(TrainConfig(hidden_layers=[3], epochs=3), moons, on_epoch=lambda m: answer)
    assert result.status == "completed" and len(result.history) == 3


def test_divergence_ends_the_run_with_nulls_not_nans(moons: Dataset) -> None:
    cfg = TrainConfig(
        hidden_layers=[10],
        optimizer="gd",
        learning_rate=1e8,
        init="random",
        init_scale=10.0,
        epochs=30,
    )
    result = train(cfg, moons)
    assert result.status == "diverged"
    assert len(result.history) < 30
    last = result.history[-1]
    assert last["train_cost"] is None and last["dev_accuracy"] is None
    json.dumps(result.history, allow_nan=False)  # raises on NaN or inf


def test_same_config_and_seed_give_bit_identical_runs(moons: Dataset) -> None:
    cfg = TrainConfig(hidden_layers=[8, 4], keep_prob=0.8, batch_norm=True, epochs=5, seed=11)
    a, b = train(cfg, moons), train(cfg, moons)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in a.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in b.history]
    c = train(cfg.model_copy(update={"seed": 12}), moons)
    assert not np.array_equal(a.params["W1"], c.params["W1"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_no_other_float_dtype_creeps_in(moons: Dataset, dtype: str) -> None:
    cfg = TrainConfig(
        hidden_layers=[6, 3], batch_norm=True, keep_prob=0.9, l2=0.1, epochs=2, dtype=dtype
    )
    result = train(cfg, moons)
    model = result.model
    assert model.vector.dtype == dtype and model.grad_vector.dtype == dtype
    assert all(p.dtype == dtype for p in result.params.values())
    arrays = [a for layer in model.layers for a in layer.ws.arrays()] + model.head.ws.arrays()
    floats = [a for a in arrays if a.dtype.kind == "f"]
    assert floats and all(a.dtype == dtype for a in floats)
    assert model.predict_proba(moons.X_dev).dtype == dtype


def test_mini_batches_partition_the_epoch_and_the_last_may_be_smaller() -> None:
    ds = dataset_from_arrays(np.arange(20.0).reshape(10, 2), np.array([0, 1] * 5), dev_fraction=0.0)
    for batch_size, steps in [(4, 3), (5, 2), (0, 1), (64, 1)]:
        result = train(TrainConfig(hidden_layers=[2], epochs=3, batch_size=batch_size), ds)
        assert result.optimizer_state["t"] == 3 * steps
        assert result.history[0]["dev_cost"] is None  # no dev set: null, not NaN


def test_learning_rate_in_force_is_reported(moons: Dataset) -> None:
    cfg = TrainConfig(
        hidden_layers=[3], epochs=4, learning_rate=0.1, lr_decay="inverse_time", decay_rate=1.0
    )
    assert [h["learning_rate"] for h in train(cfg, moons).history] == [0.1, 0.05, 0.1 / 3, 0.025]
    # Per step: 240 examples in batches of 64 = 4 steps an epoch; epoch 1 ends at step 3.
    per_step = cfg.model_copy(update={"decay_per": "step", "epochs": 2})
    assert [h["learning_rate"] for h in train(per_step, moons).history] == [0.1 / 4, 0.1 / 8]


def test_init_params_start_the_run_from_given_weights(moons: Dataset) -> None:
    cfg = TrainConfig(hidden_layers=[6, 3], epochs=40, learning_rate=0.01, batch_norm=True)
    first = train(cfg, moons)
    again = train(cfg.model_copy(update={"epochs": 1}), moons, init_params=first.params)
    fresh = train(cfg.model_copy(update={"epochs": 1}), moons)
    assert again.history[0]["train_cost"] < fresh.history[0]["train_cost"] / 2
    with pytest.raises(ValueError, match="shape"):
        train(cfg.model_copy(update={"hidden_layers": [7, 3]}), moons, init_params=first.params)


def test_no_per_batch_allocations_after_the_first_epoch() -> None:
    rng = np.random.default_rng(0)
    ds = dataset_from_arrays(rng.normal(size=(1200, 40)), rng.integers(0, 5, 1200), seed=0)
    cfg = TrainConfig(hidden_layers=[256, 128], batch_size=256, batch_norm=True, keep_prob=0.9)

    generator = np.random.default_rng(cfg.seed)
    model = Model(cfg, ds.n_features, ds.n_outputs, ds.task, rng=generator)
    opt = make_optimizer(cfg, model.vector, model.grad_vector, model.layout)
    loop = _Loop(cfg, model, opt, ds, generator)
    loop.run_epoch(0)  # warm-up: workspaces for the full and the last batch, and the dev set
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        loop.run_epoch(1)
        loop.run_epoch(2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One (batch, 256) float32 array is 256 KiB. What remains is NumPy's own iteration
    # buffer for broadcasting ufuncs (8192 elements, freed at once), not an array of ours.
    one_activation = 256 * 256 * 4
    assert peak - base < one_activation / 2, peak - base

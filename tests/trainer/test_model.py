"""Model: parameter names and shapes, the contiguous buffer, tasks, loading and predicting."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import Model, TrainConfig


def test_params_follow_design_names_and_shapes() -> None:
    model = Model(TrainConfig(hidden_layers=[5, 2]), n_features=3, n_outputs=1)
    shapes = {k: v.shape for k, v in model.params.items()}
    assert shapes == {
        "W1": (5, 3), "b1": (5,), "W2": (2, 5), "b2": (2,), "W3": (1, 2), "b3": (1,)
    }  # fmt: skip
    assert list(model.params) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert model.task == "binary" and set(model.grads) == set(model.params)


def test_batch_norm_layers_have_gamma_beta_and_no_bias() -> None:
    model = Model(TrainConfig(hidden_layers=[4, 3], batch_norm=True), 2, 3)
    assert model.task == "multiclass"
    assert list(model.params) == ["W1", "gamma1", "beta1", "W2", "gamma2", "beta2", "W3", "b3"]
    assert set(model.buffers) == {"running_mean1", "running_var1", "running_mean2", "running_var2"}


def test_params_are_views_into_one_buffer_with_the_weights_first() -> None:
    model = Model(TrainConfig(hidden_layers=[4]), 3)
    model.vector[...] = 0.0
    model.params["b1"][...] = 7.0
    assert np.count_nonzero(model.vector) == 4
    assert model.n_weights == 4 * 3 + 1 * 4
    assert np.shares_memory(model.params["W2"], model.vector[: model.n_weights])


def test_set_params_validates_names_and_shapes() -> None:
    model = Model(TrainConfig(hidden_layers=[4]), 3)
    params = model.get_params()
    params["W1"] = params["W1"] + 1.0
    model.set_params(params)
    np.testing.assert_array_equal(model.params["W1"], params["W1"])
    with pytest.raises(ValueError, match="unknown parameter names"):
        model.set_params({**params, "W9": np.zeros(1)})
    with pytest.raises(ValueError, match=r"missing parameters \['b2'\]"):
        model.set_params({k: v for k, v in params.items() if k != "b2"})
    with pytest.raises(ValueError, match=r"W1 has shape \(3, 3\)"):
        model.set_params({**params, "W1": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="NaN"):
        model.set_params({**params, "b1": np.full(4, np.nan)})


def test_predict_shapes_per_task() -> None:
    X = np.random.default_rng(0).normal(size=(6, 3))
    binary = Model(TrainConfig(hidden_layers=[4]), 3)
    assert binary.predict_proba(X).shape == (6,) and set(binary.predict(X)) <= {0, 1}
    multi = Model(TrainConfig(hidden_layers=[4]), 3, 5)
    np.testing.assert_allclose(multi.predict_proba(X).sum(axis=1), 1.0, rtol=1e-6)
    assert multi.predict(X).shape == (6,)
    reg = Model(TrainConfig(hidden_layers=[4]), 3, 2, task="regression")
    assert reg.predict(X).shape == (6, 2)
    assert reg.evaluate(X, np.zeros((6, 2)))[1] is None
    with pytest.raises(ValueError, match=r"X must have shape \(m, 3\)"):
        binary.predict(X[:, :2])


def test_bad_task_and_labels_are_rejected() -> None:
    with pytest.raises(ValueError, match="task must be one of"):
        Model(TrainConfig(), 2, task="ranking")
    with pytest.raises(ValueError, match="one output unit"):
        Model(TrainConfig(), 2, 3, task="binary")
    multi = Model(TrainConfig(hidden_layers=[4]), 3, 3)
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        multi.cost_and_grads(np.zeros((2, 3)), np.array([0, 3]))

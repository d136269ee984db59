"""What a spec's data and largest network cost: the bounds the caps are checked against."""

from __future__ import annotations

from typing import Any

import pytest

from service.settings import Settings
from service.spec import DataShape, SpecError, builtin_shape, parse_spec
from service.spec.sizes import largest_network
from trainer import TrainConfig, load_dataset, train

SETTINGS = Settings(database_url="sqlite://")


def spec_of(**blocks: Any) -> dict[str, Any]:
    """A spec training its base model once (no space, so one trial)."""
    base = {"name": "s", "dataset": {"name": "moons", "n_samples": 300}}
    return {**base, "strategy": {"type": "random", "trials": 1}, **blocks}


@pytest.mark.parametrize(
    ("model", "dataset"),
    [
        ({"optimizer": "adam", "dtype": "float32"}, {"name": "digits"}),
        ({"optimizer": "gd", "dtype": "float64", "batch_norm": True}, {"name": "blobs"}),
        ({"optimizer": "momentum", "batch_norm": True}, {"name": "moons", "n_samples": 900}),
        ({"optimizer": "rmsprop", "dtype": "float64"}, {"name": "breast_cancer"}),
    ],
)
def test_the_bound_holds_a_real_checkpoint_and_is_tight(
    model: dict[str, Any], dataset: dict[str, Any]
) -> None:
    config = {"hidden_layers": [120, 60], "epochs": 1, **model}
    checkpoints: list[bytes] = []
    train(
        TrainConfig(**config),
        load_dataset(dataset),
        checkpoint_every=1,
        on_checkpoint=lambda c: checkpoints.append(c.to_bytes()),
    )
    stored = checkpoints[-1]
    # Stored uncompressed: its bytes are the arrays and the header, all of it.
    inflated = len(stored)
    spec = parse_spec(spec_of(dataset=dataset, model=config), settings=SETTINGS)
    assert spec.dataset is not None
    shape = builtin_shape(spec.dataset)
    network = largest_network(spec, shape)
    assert network is not None
    bound = network.checkpoint_bytes(shape)
    assert inflated <= bound <= inflated + 128 * 1024


@pytest.mark.parametrize(
    "dataset",
    [
        {"name": "moons"},
        {"name": "spirals", "n_classes": 5},
        {"name": "blobs"},
        {"name": "blobs", "task": "regression"},
        {"name": "xor", "task": "multiclass"},
        {"name": "digits"},
        {"name": "breast_cancer"},
    ],
)
def test_a_builtin_shape_is_what_the_trainer_loads(dataset: dict[str, Any]) -> None:
    spec = parse_spec(spec_of(dataset=dataset), settings=SETTINGS)
    assert spec.dataset is not None
    loaded = load_dataset(spec.dataset.loader_args())
    shape = builtin_shape(spec.dataset)
    assert (shape.features, shape.outputs) == (loaded.n_features, loaded.n_outputs)
    assert shape.train_rows >= loaded.X_train.shape[0]


def test_the_largest_network_is_the_widest_the_space_allows() -> None:
    spec = parse_spec(
        spec_of(
            model={"hidden_layers": [8, 8], "optimizer": "gd"},
            space={
                "hidden_layers.1": {"type": "int", "low": 4, "high": 300},
                "optimizer": {"type": "categorical", "choices": ["gd", "adam"]},
                "dtype": {"type": "categorical", "choices": ["float32", "float64"]},
            },
        ),
        settings=SETTINGS,
    )
    network = largest_network(spec, DataShape(features=2, outputs=1, train_rows=10))
    assert network is not None
    assert (network.hidden, network.optimizer, network.dtype) == ([8, 300], "adam", "float64")
    assert network.loc == "space.hidden_layers"


def test_caps_refuse_what_no_trial_could_store_or_finish() -> None:
    small = Settings(database_url="sqlite://", max_checkpoint_bytes=1024 * 1024, max_classes=4)
    with pytest.raises(SpecError) as wide:
        parse_spec(spec_of(model={"hidden_layers": [400, 400]}), settings=small)
    assert wide.value.errors[0]["loc"] == "model.hidden_layers"
    assert "layers 2 -> 400 -> 400 -> 1 (adam, float32)" in wide.value.errors[0]["msg"]
    with pytest.raises(SpecError) as classes:
        parse_spec(spec_of(dataset={"name": "digits"}), settings=small)
    assert classes.value.errors[0]["loc"] == "dataset.name"
    assert "10 output units" in classes.value.errors[0]["msg"]
    panda = spec_of(model={"epochs": 5000}, execution={"mode": "panda", "checkpoint_every": 2})
    with pytest.raises(SpecError) as count:
        parse_spec(panda, settings=SETTINGS)
    assert count.value.errors[0]["loc"] == "execution.checkpoint_every"
    assert "2500 checkpoints" in count.value.errors[0]["msg"]
    assert "every 5 epochs or more" in count.value.errors[0]["msg"]

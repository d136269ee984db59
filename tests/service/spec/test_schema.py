"""The spec's schema: the reference example parses, the defaults, each block's own rules."""

from __future__ import annotations

import json

import pytest

from service.search.distributions import FloatDistribution, LayersDistribution
from service.spec import SpecError, objective_direction
from tests.service.spec.examples import REFERENCE_EXAMPLE, parse, with_
from trainer.config import TrainConfig


def test_the_design_example_parses_with_its_values() -> None:
    spec = parse(REFERENCE_EXAMPLE)
    assert spec.name == "moons-adam"
    assert spec.dataset is not None
    assert spec.dataset.name == "moons" and spec.dataset.n_samples == 1000
    assert spec.model == {"hidden_layers": [20, 7, 5], "optimizer": "adam", "epochs": 200}
    assert spec.space["learning_rate"] == FloatDistribution(low=1e-4, high=1.0, scale="log")
    assert spec.strategy.type == "random" and spec.strategy.trials == 60
    assert spec.objective.direction == "maximize" and spec.objective.at == "last"
    assert spec.execution.seed == 42 and spec.execution.mode == "caviar"
    assert spec.pruning.type == "none"


def test_the_defaults_are_the_design_values() -> None:
    # A space of one field: an empty one is refused with the default 60 trials.
    space = {"learning_rate": {"type": "float", "low": 1e-4, "high": 1.0, "scale": "log"}}
    spec = parse({"name": "x", "dataset": {"name": "moons"}, "space": space})
    minimal = spec.to_json()
    full = parse(REFERENCE_EXAMPLE).to_json()
    for block in ("strategy", "objective", "execution", "pruning"):
        assert {k: minimal[block][k] for k in full[block]} == full[block], block
    assert minimal["dataset"] == full["dataset"]
    assert spec.base_config() == TrainConfig()


def test_to_json_round_trips_through_json_text() -> None:
    spec = parse(
        {
            "name": "x",
            "dataset": {"name": "ds-0123456789abcdef", "label_column": "y"},
            "space": {
                "hidden_layers": {
                    "type": "layers",
                    "depth": {"low": 1, "high": 4},
                    "units": {"low": 5, "high": 200, "scale": "log"},
                },
                "keep_prob": {"type": "float", "low": 0.5, "high": 1.0, "step": 0.1},
            },
        }
    )
    text = json.dumps(spec.to_json())
    assert parse(text) == spec
    assert isinstance(spec.space["hidden_layers"], LayersDistribution)


def test_the_direction_follows_the_metric_when_left_out() -> None:
    for metric, direction in [
        ("dev_accuracy", "maximize"),
        ("train_accuracy", "maximize"),
        ("dev_cost", "minimize"),
        ("train_cost", "minimize"),
    ]:
        spec = parse(with_(objective={"metric": metric}))
        assert objective_direction(spec) == direction == spec.objective.direction


@pytest.mark.parametrize("name", ["ds-8f3a2c0d9e1b4a57", "digits", "breast_cancer"])
def test_uploaded_dataset_ids_and_built_ins_are_accepted(name: str) -> None:
    spec = parse(with_(dataset={"name": name}))
    assert spec.dataset is not None and spec.dataset.name == name


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("mnist", "(got 'mnist')"),  # what the CLI called ok while run and the server refused it
        ("moon", "did you mean 'moons'?"),
        ("ds_8f3a2c", "ds- and 16 hex digits"),
        ("ds-8F3A2C0D9E1B4A57", "ds- and 16 hex digits"),
        ("my upload.csv", "nor an uploaded data set's id"),
    ],
)
def test_a_name_neither_built_in_nor_an_upload_id_is_refused_by_the_spec(
    name: str, hint: str
) -> None:
    """An upload's id has one form (ds- and 16 hex digits of its SHA-256), so any other
    name is refused by the spec itself: by `caviar validate` as by the server."""
    with pytest.raises(SpecError) as exc:
        parse(with_(dataset={"name": name}))
    assert [e["loc"] for e in exc.value.errors] == ["dataset.name"]
    assert hint in exc.value.errors[0]["msg"]


@pytest.mark.parametrize("name", ["moons", "spirals", "digits", "breast_cancer"])
def test_loader_args_load_every_built_in_data_set(name: str) -> None:
    from trainer import load_dataset

    drawn = {"n_samples": 200} if name in ("moons", "spirals") else {}  # refused for others
    spec = parse(with_(dataset={"name": name, "seed": 1, **drawn}))
    assert spec.dataset is not None
    args = spec.dataset.loader_args()
    # The stored spec's block is the same, and parsing it again gives the same spec
    # (n_samples and noise, which a real data set does not read, are not stored for one).
    stored = spec.model_dump(mode="json")
    assert stored["dataset"] == args
    assert parse(json.dumps(stored)).model_dump(mode="json") == stored
    assert ("n_samples" in args) == (name in ("moons", "spirals"))
    ds = load_dataset(args)
    if name in ("moons", "spirals"):
        assert len(ds.X_train) + len(ds.X_dev) == 200
    assert len(ds.X_dev) > 0


def test_n_classes_only_for_spirals_and_blobs() -> None:
    spirals = parse(with_(dataset={"name": "spirals", "n_classes": 3})).dataset
    assert spirals is not None and spirals.n_classes == 3
    with pytest.raises(SpecError) as info:
        parse(with_(dataset={"name": "moons", "n_classes": 3}))
    assert info.value.errors[0]["loc"] == "dataset.n_classes"

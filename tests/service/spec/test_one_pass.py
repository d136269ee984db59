"""One validation pass: every mistake of a spec reported at once, whichever block it is in."""

from __future__ import annotations

from typing import Any

import pytest

from service.settings import Settings
from service.spec import SpecError, parse_spec

SETTINGS = Settings(database_url="sqlite://")

FOUR_MISTAKES = """
name: four
dataset: {name: moons}
model: {hidden_layer: [5]}
space:
  learnig_rate2: {type: float, low: 1.0e-4, high: 1.0, scale: log}
strategy: {type: random, trails: 5}
objective: {metric: dev_acc}
"""


def errors_of(data: dict[str, Any] | str, settings: Settings = SETTINGS) -> list[dict[str, Any]]:
    with pytest.raises(SpecError) as exc:
        parse_spec(data, settings=settings)
    return exc.value.errors


def base(**blocks: Any) -> dict[str, Any]:
    lr = {"type": "float", "low": 1e-4, "high": 1.0, "scale": "log"}
    spec = {"name": "x", "dataset": {"name": "moons"}, "space": {"learning_rate": lr}}
    return {**spec, **blocks}


def test_four_mistakes_in_four_blocks_are_reported_at_once_in_spec_order() -> None:
    errors = errors_of(FOUR_MISTAKES)
    assert [e["loc"] for e in errors] == [
        "model.hidden_layer",
        "space.learnig_rate2",
        "strategy.trails",
        "objective.metric",
    ]
    assert "did you mean 'hidden_layers'?" in errors[0]["msg"]
    assert "did you mean 'learning_rate'?" in errors[1]["msg"]


def test_a_distribution_the_schema_refuses_still_has_its_path_checked() -> None:
    spec = base(space={"learnig_rate": {"type": "float", "low": 1.0, "high": 0.1}})
    locs = [e["loc"] for e in errors_of(spec)]
    assert "space.learnig_rate" in locs  # not a field of the model
    assert "space.learnig_rate.high" in locs  # low above high


def test_the_other_distributions_are_checked_against_the_model_beside_a_refused_one() -> None:
    space = {
        "learning_rate": {"type": "float", "low": 0.1, "high": 1.0, "step": -1},
        "keep_prob": {"type": "float", "low": 0.5, "high": 2.0},
    }
    locs = [e["loc"] for e in errors_of(base(space=space))]
    assert "space.learning_rate.step" in locs
    assert "space.keep_prob.high" in locs  # keep_prob <= 1, checked against TrainConfig


def test_caps_are_checked_beside_a_schema_error_elsewhere() -> None:
    small = Settings(database_url="sqlite://", max_trials_per_study=10)
    spec = base(strategy={"type": "random", "trials": 50}, objective={"metric": "dev_acc"})
    locs = [e["loc"] for e in errors_of(spec, small)]
    assert locs == ["strategy.trials", "objective.metric"]


def test_a_checkpoint_cap_is_checked_beside_a_model_error() -> None:
    few = Settings(database_url="sqlite://", max_checkpoints_per_trial=10)
    spec = base(
        name="",
        model={"epochs": 1000},
        execution={"mode": "panda", "checkpoint_every": 2},
    )
    locs = [e["loc"] for e in errors_of(spec, few)]
    assert locs == ["name", "execution.checkpoint_every"]


def test_a_block_that_is_not_a_mapping_leaves_the_others_checked() -> None:
    space = {"learnig_rate": {"type": "float", "low": 0.1, "high": 1.0}}
    locs = [e["loc"] for e in errors_of(base(model=[1, 2], space=space))]
    assert locs == ["model", "space.learnig_rate"]


@pytest.mark.parametrize(
    ("strategy", "refused"),
    [
        ({"type": "random"}, True),  # 60 trials by default
        ({"type": "sobol", "trials": 2}, True),
        ({"type": "coarse_to_fine", "rounds": 2, "trials_per_round": 1}, True),
        ({"type": "random", "trials": 1}, False),  # the base model, trained once
        ({"type": "grid"}, False),  # a grid of no dimensions: one point
    ],
)
def test_an_empty_space_is_refused_unless_it_trains_the_base_model_once(
    strategy: dict[str, Any], refused: bool
) -> None:
    no_space = base(strategy=strategy)
    del no_space["space"]
    for spec in (base(strategy=strategy, space={}), no_space):
        if not refused:
            assert parse_spec(spec, settings=SETTINGS).space == {}
            continue
        errors = errors_of(spec)
        assert [e["loc"] for e in errors] == ["space"]
        assert "would train the same model" in errors[0]["msg"]

"""Round planning: plans are exact, pinned across releases, and follow the history."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from service.spec import TrialPlan, plan_round, preview, total_rounds, total_trials
from tests.service.spec.examples import REFERENCE_EXAMPLE, base, parse, with_
from trainer.config import TrainConfig


def test_a_layers_space_and_a_choice_of_lists_both_search_the_depth() -> None:
    layers = parse(
        {
            "name": "x",
            "dataset": {"name": "spirals"},
            "space": {
                "hidden_layers": {
                    "type": "layers",
                    "depth": {"low": 1, "high": 4},
                    "units": {"low": 5, "high": 200, "scale": "log"},
                }
            },
            "strategy": {"type": "random", "trials": 200},
        }
    )
    _, plans = plan_round(layers, round_index=0)
    depths = {len(p.config["hidden_layers"]) for p in plans}
    assert depths == {1, 2, 3, 4}
    assert all(5 <= w <= 200 for p in plans for w in p.config["hidden_layers"])
    choice = parse(
        {
            "name": "x",
            "dataset": {"name": "spirals"},
            "space": {"hidden_layers": {"type": "categorical", "choices": [[50], [20, 7, 5]]}},
        }
    )
    _, plans = plan_round(choice, round_index=0)
    assert {tuple(p.config["hidden_layers"]) for p in plans} == {(50,), (20, 7, 5)}


def test_plans_merge_the_sampled_values_into_a_full_valid_config() -> None:
    spec = parse(REFERENCE_EXAMPLE)
    box, plans = plan_round(spec, round_index=0)
    assert box is None and len(plans) == 60
    for plan in plans:
        assert isinstance(plan, TrialPlan)
        assert set(plan.params) == set(spec.space)
        cfg = TrainConfig(**plan.config)
        assert cfg.model_dump(mode="json") == plan.config
        assert cfg.hidden_layers == [plan.params["hidden_layers.0"], 7, 5]
        assert cfg.learning_rate == plan.params["learning_rate"]
        assert cfg.epochs == 200 and cfg.optimizer == "adam"  # from the model block
        json.dumps(plan.params)
        json.dumps(plan.config)


def test_same_spec_same_seed_same_plans_and_another_seed_others() -> None:
    a = plan_round(parse(REFERENCE_EXAMPLE), round_index=0)
    b = plan_round(parse(json.dumps(base())), round_index=0)
    assert a == b
    c = plan_round(parse(with_(execution__seed=43)), round_index=0)
    assert c[1] != a[1]


def test_plans_do_not_depend_on_the_order_of_the_space_keys() -> None:
    spec = base()
    spec_reordered = dict(spec, space=dict(reversed(list(spec["space"].items()))))
    assert plan_round(parse(spec), round_index=0) == plan_round(
        parse(spec_reordered), round_index=0
    )


def test_plans_stay_the_same_across_releases() -> None:
    # A pinned sample: a change here changes the trials of studies already queued.
    spec = parse(with_(strategy__trials=2))
    _, plans = plan_round(spec, round_index=0)
    assert [round(p.params["learning_rate"], 10) for p in plans] == [0.0002380726, 0.0063320415]
    assert [p.params["hidden_layers.0"] for p in plans] == [25, 40]


def test_model_placed_rounds_stay_the_same_across_releases() -> None:
    # Pinned like the sample above: a coarse-to-fine round placed by the Gaussian process
    # (fitted hyperparameters rounded, candidates and draws from the round's seed).
    spec = parse(with_(strategy={"type": "coarse_to_fine", "rounds": 2, "trials_per_round": 8}))
    _, plans = plan_round(spec, round_index=0)
    history = [(p.params, -abs(math.log10(p.params["learning_rate"]) + 2)) for p in plans]
    _, placed = plan_round(spec, round_index=1, history=history)
    assert [p.params["learning_rate"] for p in placed[:3]] == pytest.approx(
        [0.046107126462, 0.001057810142, 0.000550656259], rel=1e-6
    )
    assert [p.params["hidden_layers.0"] for p in placed[:3]] == [26, 27, 49]


def test_coarse_to_fine_rounds_follow_the_history() -> None:
    spec = parse(
        with_(
            strategy={"type": "coarse_to_fine", "rounds": 3, "trials_per_round": 16},
            objective={"metric": "dev_cost"},
        )
    )
    assert total_rounds(spec) == 3 and total_trials(spec) == 48
    box, plans = plan_round(spec, round_index=0)
    assert box is not None and box["volume"] == 1.0
    # Lower cost near lr 1e-2; failed trials (None) count as the worst.
    history: list[tuple[dict[str, Any], float | None]] = [
        (p.params, abs(p.params["learning_rate"] - 1e-2) if i % 4 else None)
        for i, p in enumerate(plans)
    ]
    box1, plans1 = plan_round(spec, round_index=1, history=history)
    assert box1 is not None and box1["volume"] < 1.0
    lr = box1["axes"]["learning_rate"]
    finished = [(p, v) for p, v in history if v is not None]
    best = min(finished, key=lambda item: item[1])[0]["learning_rate"]
    assert lr["low"] <= best <= lr["high"] and lr["high"] - lr["low"] < 0.5
    assert all(lr["low"] <= p.params["learning_rate"] <= lr["high"] for p in plans1)
    assert plan_round(spec, round_index=1, history=history) == (box1, plans1)
    json.dumps(box1)
    with pytest.raises(ValueError, match="round_index"):
        plan_round(spec, round_index=3, history=history)


def test_only_coarse_to_fine_has_later_rounds() -> None:
    spec = parse(REFERENCE_EXAMPLE)
    assert total_rounds(spec) == 1
    with pytest.raises(ValueError, match="round_index"):
        plan_round(spec, round_index=1)


def test_grid_plans_are_the_product() -> None:
    spec = parse(
        with_(
            strategy={"type": "grid", "grid_points": 3},
            space={
                "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "scale": "log"},
                "init": {"type": "categorical", "choices": ["he", "xavier"]},
            },
        )
    )
    _, plans = plan_round(spec, round_index=0)
    got = sorted((round(p.params["learning_rate"], 12), p.params["init"]) for p in plans)
    assert got == sorted((lr, i) for lr in (1e-4, 1e-3, 1e-2) for i in ("he", "xavier"))


def test_preview_shows_where_the_first_samples_land() -> None:
    spec = parse(REFERENCE_EXAMPLE)
    shown = preview(spec, n=10)
    json.dumps(shown)
    assert shown["n"] == 10 and shown["total_trials"] == 60
    lr = shown["params"]["learning_rate"]
    assert lr["distribution"] == {"type": "float", "low": 1e-4, "high": 1.0, "scale": "log"}
    _, plans = plan_round(spec, round_index=0)
    assert lr["values"] == [p.params["learning_rate"] for p in plans[:10]]
    assert all(0.0 <= x <= 1.0 for x in lr["positions"])
    # Positions are on the scale: log10(lr) = -4 + 4 * position.
    for value, pos in zip(lr["values"], lr["positions"], strict=True):
        assert value == pytest.approx(10 ** (-4 + 4 * pos), rel=1e-4)
    grid = preview(parse(with_(strategy={"type": "grid", "grid_points": 3})), n=5)
    assert grid["params"]["init"]["levels"] == ["he", "xavier"]
    assert grid["total_trials"] == 3 * 3 * 3 * 3 * 2


def test_a_zoom_starts_coarse_to_fine_in_the_box_of_another_studys_best() -> None:
    parent = parse(REFERENCE_EXAMPLE)
    _, plans = plan_round(parent, round_index=0)
    history = [(p.params, -abs(p.params["learning_rate"] - 1e-3)) for p in plans]
    child = parse(with_(strategy={"type": "coarse_to_fine", "rounds": 2, "trials_per_round": 10}))
    box, zoomed = plan_round(child, round_index=0, history=history)
    assert box is not None and box["volume"] < 0.5
    lr = box["axes"]["learning_rate"]
    assert lr["low"] <= max(history, key=lambda h: h[1])[0]["learning_rate"] <= lr["high"]
    assert all(lr["low"] <= p.params["learning_rate"] <= lr["high"] for p in zoomed)
    assert plan_round(child, round_index=0)[0]["volume"] == 1.0  # type: ignore[index]

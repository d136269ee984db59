"""The search spec: DESIGN.md's example parses, invalid specs name their field, plans are exact."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
import yaml

from service.search.distributions import FloatDistribution, LayersDistribution
from service.settings import Settings
from service.spec import (
    SpecError,
    StudySpec,
    TrialPlan,
    objective_direction,
    parse_spec,
    plan_round,
    preview,
    total_rounds,
    total_trials,
)
from trainer.config import TrainConfig

DESIGN_EXAMPLE = """
name: moons-adam                 # required
dataset:
  name: moons
  n_samples: 1000
  noise: 0.2
  dev_fraction: 0.2
  seed: 0
model:
  hidden_layers: [20, 7, 5]
  optimizer: adam
  epochs: 200
space:
  learning_rate: {type: float, low: 1.0e-4, high: 1.0, scale: log}
  beta1:         {type: float, low: 0.9, high: 0.999, scale: one_minus_log}
  hidden_layers.0: {type: int, low: 5, high: 50}
  l2:            {type: float, low: 1.0e-5, high: 0.1, scale: log}
  init:          {type: categorical, choices: [he, xavier]}
strategy:
  type: random
  trials: 60
  grid_points: 5
  rounds: 3
  trials_per_round: 20
  keep_top: 0.25
objective:
  metric: dev_accuracy
  direction: maximize
  at: last
execution:
  mode: caviar
  max_parallel: 8
  seed: 42
  max_retries: 2
  checkpoint_every: 10
  await_review: false
pruning:
  type: none
  warmup_epochs: 10
  min_epochs: 5
  reduction_factor: 3
"""

SETTINGS = Settings(
    max_trials_per_study=500,
    max_grid_size=300,
    max_layers=6,
    max_units=256,
    max_epochs=1000,
    max_samples=5000,
)


def base() -> dict[str, Any]:
    return yaml.safe_load(DESIGN_EXAMPLE)


def with_(**changes: Any) -> dict[str, Any]:
    """The DESIGN example with dotted paths set (value DROP removes the key)."""
    spec = base()
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = spec
        for p in parents:
            node = node.setdefault(p, {})
        if value is DROP:
            node.pop(last, None)
        else:
            node[last] = value
    return spec


DROP = object()


def parse(data: Any, **kw: Any) -> StudySpec:
    return parse_spec(data, settings=SETTINGS, **kw)


# --- valid specs -----------------------------------------------------------------------


def test_the_design_example_parses_with_its_values() -> None:
    spec = parse(DESIGN_EXAMPLE)
    assert spec.name == "moons-adam"
    assert spec.dataset.name == "moons" and spec.dataset.n_samples == 1000
    assert spec.model == {"hidden_layers": [20, 7, 5], "optimizer": "adam", "epochs": 200}
    assert spec.space["learning_rate"] == FloatDistribution(low=1e-4, high=1.0, scale="log")
    assert spec.strategy.type == "random" and spec.strategy.trials == 60
    assert spec.objective.direction == "maximize" and spec.objective.at == "last"
    assert spec.execution.seed == 42 and spec.execution.mode == "caviar"
    assert spec.pruning.type == "none"


def test_the_defaults_are_the_design_values() -> None:
    spec = parse({"name": "x", "dataset": {"name": "moons"}})
    minimal = spec.to_json()
    full = parse(DESIGN_EXAMPLE).to_json()
    for block in ("strategy", "objective", "execution", "pruning"):
        assert {k: minimal[block][k] for k in full[block]} == full[block], block
    assert minimal["dataset"] == full["dataset"]
    assert spec.base_config() == TrainConfig()


@pytest.mark.parametrize("form", ["yaml", "json", "bytes", "dict", "spec"])
def test_every_form_of_input_gives_the_same_spec(form: str) -> None:
    expected = parse(DESIGN_EXAMPLE)
    data: Any = {
        "yaml": DESIGN_EXAMPLE,
        "json": json.dumps(base()),
        "bytes": DESIGN_EXAMPLE.encode(),
        "dict": base(),
        "spec": expected,
    }[form]
    assert parse(data) == expected


def test_to_json_round_trips_through_json_text() -> None:
    spec = parse(
        {
            "name": "x",
            "dataset": {"name": "ds_0123abcd", "label_column": "y"},
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


@pytest.mark.parametrize("name", ["ds_8f3a2c", "3fa85f64", "my upload.csv", "digits"])
def test_uploaded_dataset_ids_and_built_ins_are_accepted(name: str) -> None:
    assert parse(with_(dataset={"name": name})).dataset.name == name


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


# --- invalid specs ---------------------------------------------------------------------

LR = "space__learning_rate"
INVALID: list[tuple[str, dict[str, Any] | str, str, str]] = [
    # (id, spec, loc that must be named, text the message must contain)
    ("no name", with_(name=DROP), "name", "required"),
    ("empty name", with_(name=""), "name", "empty"),
    ("blank name", with_(name="   "), "name", "blank"),
    ("unknown top field", with_(tags=["a"]), "tags", "unknown field"),
    ("typo top field", with_(strategie={"type": "grid"}), "strategie", "strategy"),
    ("no dataset", with_(dataset=DROP), "dataset", "required"),
    ("dataset not a mapping", with_(dataset="moons"), "dataset", "mapping"),
    ("empty dataset name", with_(dataset={"name": ""}), "dataset.name", "uploaded"),
    ("padded dataset name", with_(dataset={"name": " moons"}), "dataset.name", "' moons'"),
    ("unknown dataset field", with_(dataset__size=10), "dataset.size", "unknown field"),
    ("too few samples", with_(dataset__n_samples=1), "dataset.n_samples", "(got 1)"),
    ("too many samples", with_(dataset__n_samples=10**6), "dataset.n_samples", "max_samples"),
    ("negative noise", with_(dataset__noise=-0.1), "dataset.noise", "(got -0.1)"),
    ("dev fraction 1", with_(dataset__dev_fraction=1.0), "dataset.dev_fraction", "< 1"),
    ("dev fraction 0", with_(dataset__dev_fraction=0), "dataset.dev_fraction", "> 0"),
    ("negative dataset seed", with_(dataset__seed=-1), "dataset.seed", "(got -1)"),
    ("label column on built-in", with_(dataset__label_column="y"), "dataset.label_column", "'y'"),
    ("model not a mapping", with_(model=[1, 2]), "model", "mapping"),
    ("unknown model field", with_(model__learning_rte=0.1), "model.learning_rte", "learning_rate"),
    ("bad model value", with_(model__learning_rate=0), "model.learning_rate", "(got 0)"),
    ("bad model literal", with_(model__optimizer="sgd"), "model.optimizer", "'sgd'"),
    ("zero-width layer", with_(model__hidden_layers=[20, 0]), "model.hidden_layers.1", "(got 0)"),
    ("too many layers", with_(model__hidden_layers=[5] * 7), "model.hidden_layers", "max_layers"),
    ("too wide", with_(model__hidden_layers=[5, 1000]), "model.hidden_layers.1", "max_units"),
    ("too many epochs", with_(model__epochs=5000), "model.epochs", "max_epochs"),
    (
        "cross-field model",
        with_(model__lr_decay="exponential", model__decay_rate=2.0),
        "model.decay_rate",
        "exponential",
    ),
    ("space not a mapping", with_(space=["learning_rate"]), "space", "mapping"),
    ("no type", with_(**{LR: {"low": 0.1, "high": 1}}), "space.learning_rate.type", "required"),
    (
        "bad type",
        with_(**{LR: {"type": "flaot", "low": 0.1, "high": 1}}),
        "space.learning_rate.type",
        "float",
    ),
    ("distribution not a mapping", with_(**{LR: [0.1, 1]}), "space.learning_rate", "[0.1, 1]"),
    (
        "unknown distribution field",
        with_(**{LR: {"type": "float", "low": 0.1, "high": 1, "log": True}}),
        "space.learning_rate.log",
        "unknown field",
    ),
    (
        "missing low",
        with_(**{LR: {"type": "float", "high": 1}}),
        "space.learning_rate.low",
        "required",
    ),
    (
        "low above high",
        with_(**{LR: {"type": "float", "low": 1, "high": 0.1}}),
        "space.learning_rate.high",
        "low=1, high=0.1",
    ),
    (
        "log from zero",
        with_(**{LR: {"type": "float", "low": 0, "high": 1, "scale": "log"}}),
        "space.learning_rate.low",
        "must be > 0 for scale log (got 0)",
    ),
    (
        "unknown scale",
        with_(**{LR: {"type": "float", "low": 0.1, "high": 1, "scale": "ln"}}),
        "space.learning_rate.scale",
        "'ln'",
    ),
    (
        "nan bound",
        with_(**{LR: {"type": "float", "low": float("nan"), "high": 1}}),
        "space.learning_rate.low",
        "finite",
    ),
    (
        "string bound",
        with_(**{LR: {"type": "float", "low": "small", "high": 1}}),
        "space.learning_rate.low",
        "'small'",
    ),
    (
        "step on log",
        with_(**{LR: {"type": "float", "low": 0.1, "high": 1, "scale": "log", "step": 0.1}}),
        "space.learning_rate.step",
        "linear",
    ),
    (
        "step off the range",
        with_(space__keep_prob={"type": "float", "low": 0.5, "high": 1, "step": 0.3}),
        "space.keep_prob.step",
        "step=0.3",
    ),
    (
        "one_minus_log to 1",
        with_(space__beta1={"type": "float", "low": 0.9, "high": 1.0, "scale": "one_minus_log"}),
        "space.beta1.high",
        "(got 1)",
    ),
    (
        "range outside the field",
        with_(space__keep_prob={"type": "float", "low": 0.5, "high": 1.5}),
        "space.keep_prob.high",
        "(got 1.5)",
    ),
    (
        "range outside the field low",
        with_(**{LR: {"type": "float", "low": -1, "high": 1}}),
        "space.learning_rate.low",
        "(got -1)",
    ),
    (
        "int log from 0",
        with_(**{"space__hidden_layers.0": {"type": "int", "low": 0, "high": 9, "scale": "log"}}),
        "space.hidden_layers.0.low",
        "(got 0)",
    ),
    (
        "int with float bound",
        with_(**{"space__hidden_layers.0": {"type": "int", "low": 1.5, "high": 9}}),
        "space.hidden_layers.0.low",
        "1.5",
    ),
    (
        "int one_minus_log",
        with_(
            **{
                "space__hidden_layers.0": {
                    "type": "int",
                    "low": 1,
                    "high": 9,
                    "scale": "one_minus_log",
                }
            }
        ),
        "space.hidden_layers.0.scale",
        "one_minus_log",
    ),
    (
        "width over the cap",
        with_(**{"space__hidden_layers.0": {"type": "int", "low": 1, "high": 300}}),
        "space.hidden_layers.0.high",
        "max_units",
    ),
    (
        "width zero",
        with_(**{"space__hidden_layers.0": {"type": "int", "low": 0, "high": 30}}),
        "space.hidden_layers.0.low",
        "(got 0)",
    ),
    (
        "epochs over the cap",
        with_(space__epochs={"type": "int", "low": 10, "high": 5000}),
        "space.epochs.high",
        "max_epochs",
    ),
    (
        "unknown path",
        with_(space__learning_rte={"type": "float", "low": 0.1, "high": 1}),
        "space.learning_rte",
        "learning_rate",
    ),
    (
        "bad path syntax",
        with_(**{"space__hidden_layers[0]": {"type": "int", "low": 1, "high": 9}}),
        "space.hidden_layers[0]",
        "path",
    ),
    (
        "index into a scalar",
        with_(**{"space__learning_rate.0": {"type": "float", "low": 0.1, "high": 1}}),
        "space.learning_rate.0",
        "not a list",
    ),
    (
        "index past the model's layers",
        with_(**{"space__hidden_layers.3": {"type": "int", "low": 1, "high": 9}}),
        "space.hidden_layers.3",
        "3 elements",
    ),
    (
        "float for an int field",
        with_(space__epochs={"type": "float", "low": 1, "high": 9}),
        "space.epochs.type",
        "int or categorical",
    ),
    (
        "float for a literal field",
        with_(space__optimizer={"type": "float", "low": 1, "high": 9}),
        "space.optimizer.type",
        "categorical",
    ),
    (
        "int for a bool field",
        with_(space__batch_norm={"type": "int", "low": 0, "high": 1}),
        "space.batch_norm.type",
        "categorical",
    ),
    (
        "layers on a scalar",
        with_(
            space__epochs={
                "type": "layers",
                "depth": {"low": 1, "high": 2},
                "units": {"low": 1, "high": 2},
            }
        ),
        "space.epochs.type",
        "layers",
    ),
    (
        "empty choices",
        with_(space__init={"type": "categorical", "choices": []}),
        "space.init.choices",
        "empty",
    ),
    (
        "repeated choice",
        with_(space__init={"type": "categorical", "choices": ["he", "he"]}),
        "space.init.choices",
        "repeats",
    ),
    (
        "choice not in the literal",
        with_(space__init={"type": "categorical", "choices": ["he", "lecun"]}),
        "space.init.choices.1",
        "'lecun'",
    ),
    (
        "choice of bad lists",
        with_(space__hidden_layers={"type": "categorical", "choices": [[5], [5, 0]]}),
        "space.hidden_layers.choices.1",
        "(got 0)",
    ),
    (
        "choice over the cap",
        with_(space__hidden_layers={"type": "categorical", "choices": [[5], [5] * 7]}),
        "space.hidden_layers.choices.1",
        "max_layers",
    ),
    (
        "choice making another field invalid",
        with_(
            model__decay_rate=2.0,
            space__lr_decay={"type": "categorical", "choices": ["none", "exponential"]},
        ),
        "space.lr_decay.choices.1",
        "decay_rate",
    ),
    (
        "layers too deep",
        with_(
            space__hidden_layers={
                "type": "layers",
                "depth": {"low": 1, "high": 7},
                "units": {"low": 1, "high": 9},
            }
        ),
        "space.hidden_layers.depth.high",
        "max_layers",
    ),
    (
        "layers too wide",
        with_(
            space__hidden_layers={
                "type": "layers",
                "depth": {"low": 1, "high": 3},
                "units": {"low": 1, "high": 999},
            }
        ),
        "space.hidden_layers.units.high",
        "max_units",
    ),
    (
        "layers of depth 0",
        with_(
            space__hidden_layers={
                "type": "layers",
                "depth": {"low": 0, "high": 3},
                "units": {"low": 1, "high": 9},
            }
        ),
        "space.hidden_layers.depth.low",
        "(got 0)",
    ),
    (
        "layers missing units",
        with_(space__hidden_layers={"type": "layers", "depth": {"low": 1, "high": 3}}),
        "space.hidden_layers.units",
        "required",
    ),
    (
        "layers and an index",
        with_(
            space__hidden_layers={
                "type": "layers",
                "depth": {"low": 1, "high": 3},
                "units": {"low": 1, "high": 9},
            }
        ),
        "space.hidden_layers.0",
        "as a whole",
    ),
    ("unknown strategy", with_(strategy__type="bayes"), "strategy.type", "'bayes'"),
    ("zero trials", with_(strategy__trials=0), "strategy.trials", "(got 0)"),
    ("too many trials", with_(strategy__trials=501), "strategy.trials", "max_trials_per_study"),
    (
        "grid too big",
        with_(strategy__type="grid", strategy__grid_points=10),
        "strategy.grid_points",
        "would have 20000 trials, over the cap of 300",
    ),
    (
        "zero grid points",
        with_(strategy__type="grid", strategy__grid_points=0),
        "strategy.grid_points",
        "(got 0)",
    ),
    (
        "too many rounds",
        with_(strategy__type="coarse_to_fine", strategy__rounds=30, strategy__trials_per_round=20),
        "strategy.trials_per_round",
        "30 x 20 = 600",
    ),
    ("keep nothing", with_(strategy__keep_top=0), "strategy.keep_top", "(got 0)"),
    ("keep more than all", with_(strategy__keep_top=1.5), "strategy.keep_top", "(got 1.5)"),
    ("unknown strategy field", with_(strategy__budget=10), "strategy.budget", "unknown field"),
    ("unknown placement", with_(strategy__placement="tpe"), "strategy.placement", "'tpe'"),
    ("unknown metric", with_(objective__metric="accuracy"), "objective.metric", "'accuracy'"),
    (
        "maximizing a cost",
        with_(objective__metric="dev_cost"),
        "objective.direction",
        "dev_cost",
    ),
    ("unknown direction", with_(objective__direction="up"), "objective.direction", "'up'"),
    ("unknown at", with_(objective__at="first"), "objective.at", "'first'"),
    ("unknown mode", with_(execution__mode="tiger"), "execution.mode", "'tiger'"),
    ("zero parallel", with_(execution__max_parallel=0), "execution.max_parallel", "(got 0)"),
    ("negative seed", with_(execution__seed=-5), "execution.seed", "(got -5)"),
    ("negative retries", with_(execution__max_retries=-1), "execution.max_retries", "(got -1)"),
    (
        "zero checkpoint",
        with_(execution__checkpoint_every=0),
        "execution.checkpoint_every",
        ">= 1 (got 0)",
    ),
    ("review in caviar", with_(execution__await_review=True), "execution.await_review", "panda"),
    (
        "review not a bool",
        with_(execution__await_review="maybe"),
        "execution.await_review",
        "'maybe'",
    ),
    ("unknown pruner", with_(pruning__type="hyperband"), "pruning.type", "'hyperband'"),
    (
        "reduction factor 1",
        with_(pruning__reduction_factor=1),
        "pruning.reduction_factor",
        "(got 1)",
    ),
    ("negative warmup", with_(pruning__warmup_epochs=-1), "pruning.warmup_epochs", "(got -1)"),
    ("a list", "[1, 2, 3]", "", "mapping"),
    ("not YAML", "name: [unclosed", "", "YAML"),
    ("a key twice", "name: a\nname: b\ndataset: {name: moons}\n", "", "twice"),
    ("not UTF-8", "name: caf\xe9".encode("latin-1"), "", "UTF-8"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(
    ("spec", "loc", "text"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_specs_raise_spec_error_naming_the_field(spec: Any, loc: str, text: str) -> None:
    with pytest.raises(SpecError) as info:
        parse(copy.deepcopy(spec))
    errors = info.value.errors
    assert errors and all(set(e) == {"loc", "msg", "input"} for e in errors)
    json.dumps(errors)  # the API sends them as they are
    matching = [e for e in errors if e["loc"] == loc]
    assert matching, f"no error at {loc!r}: {errors}"
    assert any(text in e["msg"] for e in matching), matching
    lines = {f"{e['loc']}: {e['msg']}" if e["loc"] else e["msg"] for e in errors}
    assert set(str(info.value).splitlines()) <= lines


def test_every_schema_problem_is_reported_at_once() -> None:
    spec = with_(name="", strategy__trials=0, execution__mode="tiger")
    with pytest.raises(SpecError) as info:
        parse(spec)
    assert {e["loc"] for e in info.value.errors} >= {"name", "strategy.trials", "execution.mode"}


def test_the_error_echoes_the_value_the_user_wrote() -> None:
    with pytest.raises(SpecError) as info:
        parse(with_(**{LR: {"type": "float", "low": 0, "high": 1, "scale": "log"}}))
    (error,) = info.value.errors
    assert error == {
        "loc": "space.learning_rate.low",
        "msg": "must be > 0 for scale log (got 0)",
        "input": 0,
    }
    assert str(info.value) == "space.learning_rate.low: must be > 0 for scale log (got 0)"


def test_a_sampled_trial_that_breaks_a_cross_field_rule_is_caught_before_queueing() -> None:
    # Both ends of decay_rate are fine alone; exponential decay needs it <= 1, and only
    # sampled trials combine the two.
    spec = with_(
        space__lr_decay={"type": "categorical", "choices": ["none", "exponential"]},
        space__decay_rate={"type": "float", "low": 0.5, "high": 1.0},
    )
    parse(spec)  # fine: every combination is valid
    spec["space"]["decay_rate"]["high"] = 0.99
    spec["model"]["lr_decay"] = "exponential"
    spec["space"]["decay_rate"] = {"type": "float", "low": 0.5, "high": 1.0}
    parse(spec)
    bad = with_(
        space__lr_decay={"type": "categorical", "choices": ["none", "inverse_time"]},
        space__decay_rate={"type": "float", "low": 0.5, "high": 3.0},
    )
    parse(bad)  # inverse_time accepts any rate
    bad["space"]["lr_decay"]["choices"] = ["inverse_time", "exponential"]
    with pytest.raises(SpecError) as info:
        parse(bad)
    errors = info.value.errors
    assert all(e["loc"] == "space.decay_rate" for e in errors), errors
    assert all("exponential" in e["msg"] and "trial" in e["msg"] for e in errors)
    assert all(e["input"] > 1 for e in errors)


def test_caps_come_from_the_settings() -> None:
    spec = with_(strategy__trials=400)
    parse(spec)
    with pytest.raises(SpecError, match="max_trials_per_study"):
        parse_spec(spec, settings=Settings(max_trials_per_study=100))


# --- planning --------------------------------------------------------------------------


def test_plans_merge_the_sampled_values_into_a_full_valid_config() -> None:
    spec = parse(DESIGN_EXAMPLE)
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
    a = plan_round(parse(DESIGN_EXAMPLE), round_index=0)
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
        [0.0053583986, 0.003784075, 0.0038182209], rel=1e-6
    )
    assert [p.params["hidden_layers.0"] for p in placed[:3]] == [37, 23, 37]


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
    spec = parse(DESIGN_EXAMPLE)
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
    spec = parse(DESIGN_EXAMPLE)
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


@pytest.mark.parametrize("name", ["moons", "spirals", "digits", "breast_cancer"])
def test_loader_args_load_every_built_in_data_set(name: str) -> None:
    from trainer import load_dataset

    spec = parse(with_(dataset={"name": name, "n_samples": 200, "seed": 1}))
    args = spec.dataset.loader_args()
    # The stored spec's block is the same, and parsing it again gives the same spec
    # (n_samples and noise, ignored for a real data set, are not stored for one).
    stored = spec.model_dump(mode="json")
    assert stored["dataset"] == args
    assert parse(json.dumps(stored)).model_dump(mode="json") == stored
    assert ("n_samples" in args) == (name in ("moons", "spirals"))
    ds = load_dataset(args)
    if name in ("moons", "spirals"):
        assert len(ds.X_train) + len(ds.X_dev) == 200
    assert len(ds.X_dev) > 0


def test_n_classes_only_for_spirals_and_blobs() -> None:
    assert parse(with_(dataset={"name": "spirals", "n_classes": 3})).dataset.n_classes == 3
    with pytest.raises(SpecError) as info:
        parse(with_(dataset={"name": "moons", "n_classes": 3}))
    assert info.value.errors[0]["loc"] == "dataset.n_classes"


def test_a_zoom_starts_coarse_to_fine_in_the_box_of_another_studys_best() -> None:
    parent = parse(DESIGN_EXAMPLE)
    _, plans = plan_round(parent, round_index=0)
    history = [(p.params, -abs(p.params["learning_rate"] - 1e-3)) for p in plans]
    child = parse(with_(strategy={"type": "coarse_to_fine", "rounds": 2, "trials_per_round": 10}))
    box, zoomed = plan_round(child, round_index=0, history=history)
    assert box is not None and box["volume"] < 0.5
    lr = box["axes"]["learning_rate"]
    assert lr["low"] <= max(history, key=lambda h: h[1])[0]["learning_rate"] <= lr["high"]
    assert all(lr["low"] <= p.params["learning_rate"] <= lr["high"] for p in zoomed)
    assert plan_round(child, round_index=0)[0]["volume"] == 1.0  # type: ignore[index]


def test_every_problem_past_the_schema_is_reported_at_once() -> None:
    spec = with_(
        dataset__n_samples=10**6,
        model__epochs=5000,
        space__keep_prob={"type": "float", "low": 0.5, "high": 1.5},
        space__hidden_layers={
            "type": "layers",
            "depth": {"low": 1, "high": 9},
            "units": {"low": 1, "high": 9},
        },
        **{"space__hidden_layers.0": DROP},
    )
    with pytest.raises(SpecError) as info:
        parse(spec)
    assert {e["loc"] for e in info.value.errors} == {
        "dataset.n_samples",
        "model.epochs",
        "space.keep_prob.high",
        "space.hidden_layers.depth.high",
    }

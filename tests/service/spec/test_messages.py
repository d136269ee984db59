"""The spec's error messages: a wrong field of any block is named, with the value given."""

from __future__ import annotations

from typing import Any

import pytest

from service.spec import SpecError
from tests.service.spec.examples import DROP, LR, assert_refused_at, parse, with_

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
    # Other tools' names for a field no spelling is near: the field, with what differs.
    ("model lr", with_(model__lr=0.1), "model.lr", "did you mean 'learning_rate'?"),
    ("model weight_decay", with_(model__weight_decay=0.1), "model.weight_decay", "'l2'?"),
    ("model dropout", with_(model__dropout=0.2), "model.dropout", "'keep_prob'? (the share"),
    (
        "space dropout",
        with_(space__dropout={"type": "float", "low": 0.0, "high": 0.5}),
        "space.dropout",
        # word for word as the README quotes it
        "not a field of the model; did you mean 'keep_prob'? (the share of hidden units "
        "kept, 1 - dropout; 1.0 is off) (got 'dropout')",
    ),
    (
        "space units",
        with_(space__units={"type": "int", "low": 2, "high": 64}),
        "space.units",
        "'hidden_layers'? (a list of widths: space path hidden_layers.0",
    ),
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
    (
        "trials for coarse-to-fine",
        with_(strategy__type="coarse_to_fine", strategy__trials=10),
        "strategy.trials",
        "coarse_to_fine does not read trials (only random and sobol do): it runs rounds x "
        "trials_per_round = 3 x 20 = 60 trials; remove it",
    ),
    (
        "rounds for random",
        with_(strategy__rounds=5),
        "strategy.rounds",
        "random does not read rounds (only coarse_to_fine does): it reads trials",
    ),
    (
        "grid points for sobol",
        with_(strategy__type="sobol", strategy__grid_points=7),
        "strategy.grid_points",
        "sobol does not read grid_points (only grid does)",
    ),
    (
        "warmup for ASHA",
        with_(pruning__type="asha", pruning__warmup_epochs=30),
        "pruning.warmup_epochs",
        "asha does not read warmup_epochs (only median does); remove it",
    ),
    (
        "samples of a real data set",
        with_(dataset={"name": "breast_cancer", "n_samples": 300}),
        "dataset.n_samples",
        "only the generators (moons, circles, spirals, blobs, xor) read n_samples; the "
        "built-in 'breast_cancer' is used whole",
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
]


@pytest.mark.parametrize(
    ("spec", "loc", "text"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_specs_raise_spec_error_naming_the_field(spec: Any, loc: str, text: str) -> None:
    assert_refused_at(spec, loc, text)


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


def test_a_name_of_another_tool_is_offered_only_where_its_field_belongs() -> None:
    # `lr` is the model's learning_rate; among the spec's top-level fields it is nothing.
    with pytest.raises(SpecError) as err:
        parse(with_(lr=0.1))
    (problem,) = err.value.errors
    assert problem["loc"] == "lr" and "learning_rate" not in problem["msg"]

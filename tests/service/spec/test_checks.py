"""The checks past the schema: space paths, ranges and choices against the model and caps."""

from __future__ import annotations

from typing import Any

import pytest

from service.settings import Settings
from service.spec import SpecError, parse_spec
from tests.service.spec.examples import DROP, LR, assert_refused_at, parse, with_

INVALID_SPACE: list[tuple[str, dict[str, Any] | str, str, str]] = [
    # (id, spec, loc that must be named, text the message must contain)
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
]


@pytest.mark.parametrize(
    ("spec", "loc", "text"), [c[1:] for c in INVALID_SPACE], ids=[c[0] for c in INVALID_SPACE]
)
def test_invalid_spaces_raise_spec_error_naming_the_field(spec: Any, loc: str, text: str) -> None:
    assert_refused_at(spec, loc, text)


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


def test_a_spec_written_out_whole_keeps_the_fields_its_kinds_do_not_read() -> None:
    # A zoom's preview, a stored study or the reference example hold every strategy field;
    # at their defaults the fields another type reads are no mistake. Set otherwise, they
    # are refused, each named (see test_messages for the wording).
    for kind in ("grid", "random", "sobol", "coarse_to_fine"):
        small = {"strategy__grid_points": 2} if kind == "grid" else {}  # under the grid cap
        spec = parse(with_(strategy__type=kind, **small))
        whole = spec.model_dump(mode="json")
        assert set(whole["strategy"]) >= {"trials", "rounds", "grid_points", "keep_top"}
        assert parse(whole).strategy == spec.strategy
    with pytest.raises(SpecError) as info:
        parse(with_(strategy__type="random", strategy__rounds=5, strategy__keep_top=0.5))
    assert [e["loc"] for e in info.value.errors] == ["strategy.keep_top", "strategy.rounds"]
    # Pruning off keeps its settings for later: nothing is expected of them.
    assert parse(with_(pruning__type="none", pruning__min_epochs=9)).pruning.min_epochs == 9


def test_caps_come_from_the_settings() -> None:
    spec = with_(strategy__trials=400)
    parse(spec)
    with pytest.raises(SpecError, match="max_trials_per_study"):
        parse_spec(spec, settings=Settings(max_trials_per_study=100))


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

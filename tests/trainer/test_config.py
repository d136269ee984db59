"""TrainConfig takes each number finite and as a number: what a run's knobs may hold."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from trainer import TrainConfig

INF = float("inf")


@pytest.mark.parametrize("field", ["learning_rate", "l2", "epsilon", "init_scale", "decay_rate"])
@pytest.mark.parametrize("value", [INF, -INF, float("nan")])
def test_a_rate_scale_or_penalty_must_be_finite(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match="finite"):
        TrainConfig(**{field: value})


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"learning_rate": True}, "learning_rate"),  # read as 1.0 before
        ({"epochs": "5"}, "epochs"),
        ({"hidden_layers": [8, True]}, "hidden_layers"),
        ({"batch_norm": 1}, "batch_norm"),
        ({"shuffle": "yes"}, "shuffle"),
    ],
)
def test_a_number_or_a_switch_is_taken_only_as_itself(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        TrainConfig(**fields)
    assert [e["loc"] for e in exc.value.errors()] == [(field,)]
    # A whole float is still an integer, and an int a float.
    cfg = TrainConfig(epochs=5.0, hidden_layers=[8.0, 4], learning_rate=1)
    assert (cfg.epochs, cfg.hidden_layers, cfg.learning_rate) == (5, [8, 4], 1.0)

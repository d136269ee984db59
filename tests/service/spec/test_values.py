"""Values no spec may hold anywhere: named by field, before the schema or a database sees them."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from service.settings import Settings
from service.spec import SpecError, load_spec_data, parse_spec, value_errors

SETTINGS = Settings(database_url="sqlite://")


@pytest.mark.parametrize(
    ("data", "loc", "words"),
    [
        ({"model": {"learning_rate": math.inf}}, "model.learning_rate", "finite"),
        ({"space": {"l2": {"choices": [0.1, -math.inf]}}}, "space.l2.choices.1", "finite"),
        ({"model": {"l2": math.nan}}, "model.l2", "finite"),
        ({"name": "a\x00b"}, "name", "NUL"),
        ({"dataset": {"label_column": "x\ud800"}}, "dataset.label_column", "surrogate"),
        ({"model": {"bad\x00key": 1}}, "model", "a key holds a NUL"),
    ],
)
def test_each_unstorable_value_is_named_by_its_field(data: Any, loc: str, words: str) -> None:
    errors = value_errors(data)
    assert [e["loc"] for e in errors] == [loc]
    assert words in errors[0]["msg"]
    json.dumps(errors, allow_nan=False).encode("utf-8")  # the error itself can be sent


def test_a_spec_read_from_json_text_refuses_them_before_its_schema() -> None:
    text = '{"name": "x\\ud83d", "dataset": {"name": "moons"}, "model": {"epochs": Infinity}}'
    with pytest.raises(SpecError) as refused:
        parse_spec(load_spec_data(text, json_only=True), settings=SETTINGS)
    assert [e["loc"] for e in refused.value.errors] == ["name", "model.epochs"]


def test_fine_values_pass() -> None:
    assert (
        value_errors({"name": "ünïcode ✓ 🐼", "model": {"l2": 1e-300, "hidden_layers": [1]}}) == []
    )

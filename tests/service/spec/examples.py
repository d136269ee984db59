"""The specs the spec's tests share: the reference example, edits of it, and the caps."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from service.settings import Settings
from service.spec import SpecError, StudySpec, parse_spec

REFERENCE_EXAMPLE = """
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
    return yaml.safe_load(REFERENCE_EXAMPLE)


def with_(**changes: Any) -> dict[str, Any]:
    """The reference example with dotted paths set (value DROP removes the key)."""
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


LR = "space__learning_rate"


def assert_refused_at(spec: Any, loc: str, text: str) -> None:
    """`spec` raises SpecError with an error at `loc` whose message contains `text`."""
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

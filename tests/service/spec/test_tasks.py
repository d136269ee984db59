"""The task block: a spec of the user's own function, its refusals, and its trials' params."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.app import create_app
from service.cli import app
from service.spec import SpecError, plan_round
from tests.service.spec.examples import assert_refused_at, base, parse

TASK = """
name: digits-sgd
task:
  entrypoint: mypkg.train:objective
  params: {epochs: 20, dataset: digits}
space:
  alpha: {type: float, low: 1.0e-6, high: 1.0e-2, scale: log}
  optimizer.lr: {type: float, low: 0.9, high: 0.999, scale: one_minus_log}
  loss: {type: categorical, choices: [hinge, log_loss]}
strategy: {type: random, trials: 6}
objective: {direction: maximize}
pruning: {type: asha, min_epochs: 2}
"""


def task(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(TASK)
    spec.update(changes)
    return spec


def test_a_task_spec_parses_with_free_space_keys_and_a_value_metric() -> None:
    spec = parse(TASK)
    assert spec.entrypoint == "mypkg.train:objective"
    assert spec.dataset is None and spec.model == {}
    assert spec.objective.metric == "value" and spec.objective.direction == "maximize"
    assert set(spec.space) == {"alpha", "optimizer.lr", "loss"}
    # dumped, it parses back equal, with no block of the built-in trainer's
    dumped = spec.to_json()
    assert "dataset" not in dumped and "model" not in dumped
    assert parse(dumped) == spec
    assert "dataset" not in spec.model_dump(mode="json")


def test_a_trial_gets_the_fixed_params_overlaid_by_the_sampled_ones_flat() -> None:
    spec = parse(task(task={"entrypoint": "m:f", "params": {"epochs": 20, "alpha": 5}}))
    _, plans = plan_round(spec, round_index=0)
    assert len(plans) == 6
    for plan in plans:
        assert plan.config["epochs"] == 20 and plan.config["optimizer.lr"] < 1
        assert plan.config["alpha"] == plan.params["alpha"] != 5  # the sampled one wins
        assert set(plan.config) == {"epochs", "alpha", "optimizer.lr", "loss"}


def test_a_builtin_spec_stays_as_it_was() -> None:
    spec = parse(base())
    assert spec.entrypoint is None and spec.task is None
    assert "task" not in spec.model_dump(mode="json")


@pytest.mark.parametrize(
    ("changes", "loc", "words"),
    [
        ({"dataset": {"name": "digits"}}, "dataset", "task.params"),
        ({"model": {"epochs": 5}}, "model", "task.params"),
        ({"model": {}}, "model", "not with task.entrypoint"),
        ({"task": {"entrypoint": "mypkg.train"}}, "task.entrypoint", "module.path:function"),
        ({"task": {"entrypoint": "my-pkg:obj"}}, "task.entrypoint", "got 'my-pkg:obj'"),
        ({"task": {"entrypoint": "a:b:c"}}, "task.entrypoint", "a colon"),
        ({"task": {"entrypoint": "1a:f"}}, "task.entrypoint", "module.path:function"),
        ({"space": {"1st": {"type": "int", "low": 1, "high": 3}}}, "space.1st", "a name"),
        ({"space": {"a b": {"type": "int", "low": 1, "high": 3}}}, "space.a b", "a name"),
        ({"space": {"a..b": {"type": "int", "low": 1, "high": 3}}}, "space.a..b", "dots"),
        ({"space": {"lr": {"type": "float", "low": 2, "high": 1}}}, "space.lr.high", ">= low"),
        ({"objective": {"metric": "accuracy"}}, "objective.direction", "required"),
        (
            {"objective": {"metric": "acc-1", "direction": "maximize"}},
            "objective.metric",
            "identifier",
        ),
        ({"task": {"entrypoint": "m:f", "params": {"epochs": 0}}}, "task.params.epochs", "whole"),
        ({"task": {"entrypoint": "m:f", "params": {"epochs": 2.5}}}, "task.params.epochs", "2.5"),
        (
            {"task": {"entrypoint": "m:f", "params": {"epochs": 10**9}}},
            "task.params.epochs",
            "max_epochs",
        ),
        (
            {"space": {"epochs": {"type": "float", "low": 1, "high": 9}}},
            "space.epochs",
            "whole number",
        ),
        ({"strategy": {"type": "random", "trials": 10**7}}, "strategy.trials", "max_trials"),
    ],
)
def test_a_task_spec_is_refused_naming_what_is_wrong(
    changes: dict[str, Any], loc: str, words: str
) -> None:
    assert_refused_at(task(**changes), loc, words)


@pytest.mark.parametrize(
    ("changes", "loc", "words"),
    [
        ({"dataset": None}, "dataset", "task.entrypoint"),
        ({"task": {"params": {"epochs": 3}}}, "task.params", "only with task.entrypoint"),
        (
            {"objective": {"metric": "value", "direction": "maximize"}},
            "objective.metric",
            "built-in",
        ),
        ({"objective": {"metric": "dev_acc"}}, "objective.metric", "'dev_accuracy'"),
    ],
)
def test_a_builtin_spec_without_an_entrypoint_keeps_the_trainers_rules(
    changes: dict[str, Any], loc: str, words: str
) -> None:
    spec = base()
    for key, value in changes.items():
        if value is None:
            spec.pop(key)
        else:
            spec[key] = value
    assert_refused_at(spec, loc, words)


def test_every_mistake_of_a_task_spec_is_reported_at_once() -> None:
    spec = task(
        dataset={"name": "digits"},
        model={"epochs": 3},
        space={"9x": {"type": "int", "low": 1, "high": 2}},
        task={"entrypoint": "bad syntax"},
    )
    with pytest.raises(SpecError) as info:
        parse(spec)
    locs = [e["loc"] for e in info.value.errors]
    assert locs == ["task.entrypoint", "dataset", "model", "space.9x"], locs


def test_an_empty_space_with_many_trials_is_refused_for_a_task_too() -> None:
    assert_refused_at(task(space={}), "space", "same")


# --- one loader: the CLI and the API refuse alike ------------------------------------------


@pytest.fixture
def client(sqlite_url: str, settings_for: Any) -> Any:
    with TestClient(create_app(settings_for(sqlite_url, migrate_on_start=False))) as c:
        yield c


@pytest.mark.parametrize(
    "changes",
    [
        {"dataset": {"name": "digits"}},
        {"model": {"epochs": 5}},
        {"task": {"entrypoint": "mypkg.train"}},
        {"space": {"a b": {"type": "int", "low": 1, "high": 3}}},
    ],
    ids=["dataset", "model", "entrypoint", "space"],
)
def test_the_cli_and_the_api_refuse_a_task_spec_alike(
    client: Any, tmp_path: Path, changes: dict[str, Any]
) -> None:
    text = yaml.safe_dump(task(**changes))
    with pytest.raises(SpecError) as info:
        parse(text)
    path = tmp_path / "task.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    for e in info.value.errors:
        assert f"{e['loc']}: {e['msg']}" in " ".join(result.stderr.split()), result.stderr
    r = client.post(
        "/api/specs/validate", content=text, headers={"content-type": "application/yaml"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == info.value.errors


def test_the_cli_and_the_api_accept_a_task_spec(client: Any, tmp_path: Path) -> None:
    path = tmp_path / "task.yaml"
    path.write_text(TASK)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    r = client.post(
        "/api/specs/validate", content=TASK, headers={"content-type": "application/yaml"}
    )
    assert r.status_code == 200, r.text

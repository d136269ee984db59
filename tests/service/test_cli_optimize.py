"""optimize: a study of a function object in this process; caviar run of a task spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from service.cli import app
from service.cli.optimize import optimize
from service.spec import SpecError

SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


def test_optimize_runs_a_closure_and_returns_its_best_trial(tmp_path: Path) -> None:
    seen: list[float] = []

    def loss(params: dict[str, Any], trial: Any) -> float:
        seen.append(params["x"])
        for epoch in range(1, 4):
            trial.report(epoch, loss=(params["x"] - 0.3) ** 2 + 1 / epoch)
        return (params["x"] - 0.3) ** 2

    spec = {
        "name": "closure",
        "space": SPACE,
        "strategy": {"type": "random", "trials": 6},
        "objective": {"metric": "value", "direction": "minimize"},
    }
    best = optimize(loss, spec, workers=2, db=f"sqlite:///{tmp_path / 'c.db'}")
    assert best is not None and best["status"] == "completed"
    assert len(seen) == 6  # every trial once, in this process
    assert best["value"] == pytest.approx(min((x - 0.3) ** 2 for x in seen))


def test_optimize_refuses_a_bad_spec_naming_the_field() -> None:
    with pytest.raises(SpecError, match="dataset"):
        optimize(
            lambda p, t: 0.0,
            {
                "name": "x",
                "dataset": {"name": "moons"},
                "space": SPACE,
                "objective": {"direction": "maximize"},
            },
        )


PANDA = {"mode": "panda", "await_review": True}


def test_a_study_held_for_review_is_refused_where_no_one_could_continue_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec_factory: Any
) -> None:
    """`caviar run` waited for ever at 'awaiting review' after the first trial (its service
    is on a loopback port nobody is told), and optimize() returned after one trial."""
    spec = {
        "name": "held",
        "space": SPACE,
        "strategy": {"type": "random", "trials": 3},
        "objective": {"metric": "value", "direction": "minimize"},
        "execution": PANDA,
    }
    db = tmp_path / "o.db"
    with pytest.raises(SpecError, match=r"execution\.await_review: optimize"):
        optimize(lambda p, t: 0.0, spec, db=f"sqlite:///{db}")
    assert not db.exists()
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "held.yaml"
    path.write_text(yaml.safe_dump(spec_factory(execution=PANDA)))  # the built-in trainer
    out = CliRunner().invoke(app, ["run", "held.yaml", "--db", f"sqlite:///{tmp_path / 'r.db'}"])
    assert out.exit_code == 2, out.output
    assert "held.yaml: execution.await_review: `caviar run` has no one to continue" in out.stderr
    assert "caviar serve --submit held.yaml" in out.stderr
    assert not (tmp_path / "r.db").exists()


def test_caviar_run_runs_a_task_spec_with_its_own_workers(tmp_path: Path) -> None:
    spec = {
        "name": "run-a-task",
        "task": {"entrypoint": "tests.integration.objectives:never_reports"},
        "space": SPACE,
        "strategy": {"type": "random", "trials": 4},
        "objective": {"metric": "loss", "direction": "minimize"},
    }
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(spec))
    db = f"sqlite:///{tmp_path / 'run.db'}"
    result = CliRunner().invoke(app, ["run", str(path), "--db", db, "--workers", "2", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["status"] == "completed" and answer["counts"]["completed"] == 4
    best = answer["best_trial"]
    assert best["value"] == pytest.approx((best["params"]["x"] - 0.3) ** 2)


def test_caviar_run_says_when_the_entrypoint_cannot_be_imported(tmp_path: Path) -> None:
    spec = {
        "name": "x",
        "task": {"entrypoint": "not_here_pkg:f"},
        "space": SPACE,
        "objective": {"direction": "maximize"},
    }
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["run", str(path), "--db", f"sqlite:///{tmp_path / 'r.db'}"])
    assert result.exit_code == 2
    assert "task.entrypoint" in result.stderr and "cannot import not_here_pkg" in result.stderr

"""The lessons' commands: `caviar gradcheck` proves a right backward pass, catches a wrong one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import trainer.gradcheck
from service.cli import app
from trainer import Model

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
MOONS = str(ROOT / "examples" / "moons.yaml")


def caviar(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


class BrokenBackprop(Model):
    """A test double whose backward pass gets the second layer's weights' gradient 5% wrong."""

    def compute_grads(self, X: np.ndarray, y: np.ndarray) -> tuple[float, int | None]:
        cost = super().compute_grads(X, y)
        self.grads["W2"][...] *= 1.05
        return cost


def test_gradcheck_proves_the_moons_network_right() -> None:
    result = caviar("gradcheck", MOONS)
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("relative difference ") and ": correct (" in last, last
    assert float(last.split()[2].rstrip(":")) < 1e-7
    for name in ("W1", "b1", "W2", "b2", "W3", "b3", "W4", "b4"):
        assert f" {name} " in result.output

    numbers = json.loads(caviar("gradcheck", MOONS, "--json", "--examples", "4").output)
    assert numbers["verdict"] == "correct" and numbers["difference"] < 1e-7
    assert numbers["examples"] == 4 and set(numbers["parameters"]) >= {"W1", "W4"}


def test_gradcheck_catches_a_broken_backward_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer.gradcheck, "Model", BrokenBackprop)
    result = caviar("gradcheck", MOONS)
    assert result.exit_code == 1, result.output
    assert ": wrong (" in result.output.strip().splitlines()[-1]
    w2 = next(line for line in result.output.splitlines() if " W2 " in line)
    assert "wrong" in w2
    w1 = next(line for line in result.output.splitlines() if " W1 " in line)
    assert "correct" in w1  # the report says where the bug is


def test_gradcheck_refuses_a_bad_spec_and_an_uploaded_data_set(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "dataset": {"name": "moons"}, "model": {"l2": -1}}))
    result = caviar("gradcheck", str(bad))
    assert result.exit_code == 2 and "model.l2" in result.output, result.output

    uploaded = tmp_path / "uploaded.yaml"
    spec = {"name": "x", "dataset": {"name": "ds-0123456789abcdef"}, "strategy": {"trials": 1}}
    uploaded.write_text(yaml.safe_dump(spec))
    result = caviar("gradcheck", str(uploaded))
    assert result.exit_code == 2 and "uploaded data set" in result.output, result.output


def test_importance_ranks_a_studys_hyperparameters_beside_the_course(
    sqlite_url, live_service
) -> None:
    from service.db import get_database
    from tests.service.test_importance import run_synthetic

    svc = live_service(sqlite_url)
    study_id = run_synthetic(get_database(sqlite_url), svc.settings, trials=120, seed=0)
    result = caviar("importance", str(study_id), "--api", svc.url)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    first = next(line for line in lines if line.lstrip("│ ").startswith("1 "))
    assert "learning_rate" in first and "first" in first, result.output
    assert "fANOVA on 120 of 120 completed trials" in result.output
    assert lines[-1].startswith("the course: first the learning rate; second momentum's beta")

    numbers = json.loads(caviar("importance", str(study_id), "--api", svc.url, "--json").output)
    assert numbers["importances"][0]["name"] == "learning_rate"
    missing = caviar("importance", "999999", "--api", svc.url)
    assert missing.exit_code == 2 and "404" in missing.output

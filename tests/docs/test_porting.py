"""Porting an Optuna objective to Caviar changes at most 10 lines: the examples' pairs are
diffed (and docs/own-code.md shows the diff as it is), and both sides run for real."""

from __future__ import annotations

import difflib
import re
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from sqlalchemy import select

from service.cli.optimize import optimize
from service.db import get_database
from service.models import Trial, TrialStatus
from tests.conftest import ROOT

OBJECTIVES = ROOT / "examples" / "objectives"
GUIDE = ROOT / "docs" / "own-code.md"
# Lines of the torch port that add checkpoints, which the Optuna original does not have.
CHECKPOINTING = ("torch_state", "trial.resume()", "trial.checkpoint(")


def objective_lines(path: Path) -> list[str]:
    """The file's lines down to its `if __name__ == "__main__":` block (Optuna's study
    settings there are the spec's blocks in Caviar)."""
    text = path.read_text(encoding="utf-8")
    return text.split('\n\nif __name__ == "__main__":')[0].rstrip("\n").splitlines()


def changed_lines(old: list[str], new: list[str]) -> tuple[int, list[str]]:
    """How many lines of code (blank lines aside) a port edits, deletes or adds: a block
    of a lines replaced by b counts max(a, b); and the new lines themselves."""
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    count, added = 0, []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        gone = [line for line in old[i1:i2] if line.strip()]
        came = [line for line in new[j1:j2] if line.strip()]
        count += max(len(gone), len(came))
        added += came
    return count, added


def port(name: str) -> tuple[list[str], list[str]]:
    return objective_lines(OBJECTIVES / f"{name}_optuna.py"), objective_lines(
        OBJECTIVES / f"{name}.py"
    )


def test_the_scikit_learn_port_changes_at_most_ten_lines() -> None:
    count, added = changed_lines(*port("digits"))
    assert 0 < count <= 10, count
    assert not any(marker in line for line in added for marker in CHECKPOINTING)


def test_the_pytorch_port_changes_at_most_ten_lines_and_three_more_add_checkpoints() -> None:
    count, added = changed_lines(*port("torch_digits"))
    checkpointing = [line for line in added if any(m in line for m in CHECKPOINTING)]
    assert len(checkpointing) == 3, checkpointing
    assert count - len(checkpointing) <= 10, count


def unified(name: str) -> str:
    old, new = port(name)
    lines = difflib.unified_diff(old, new, f"{name}_optuna.py", f"{name}.py", lineterm="", n=1)
    return "\n".join(lines)


@pytest.mark.parametrize("name", ["digits", "torch_digits"])
def test_the_guide_shows_each_port_as_it_is(name: str) -> None:
    shown = re.findall(r"```diff\n(.*?)\n```", GUIDE.read_text(encoding="utf-8"), re.S)
    assert unified(name) in shown, (
        f"docs/own-code.md: the diff of {name} is stale:\n{unified(name)}"
    )


@pytest.mark.parametrize("name", ["digits_optuna", "torch_digits_optuna"])
def test_the_optuna_originals_run_and_prune(name: str) -> None:
    module = __import__(f"examples.objectives.{name}", fromlist=["objective"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3),
    )
    study.optimize(module.objective, n_trials=6)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 1
    assert optuna.trial.TrialState.PRUNED in states
    assert 0.8 < study.best_value <= 1.0


@pytest.mark.parametrize("name", ["digits", "torch_digits"])
def test_the_caviar_ports_run_through_optimize_and_prune(name: str, tmp_path: Path) -> None:
    module = __import__(f"examples.objectives.{name}", fromlist=["objective"])
    spec = yaml.safe_load((OBJECTIVES / f"{name}.yaml").read_text(encoding="utf-8"))
    spec["strategy"] = {"type": "random", "trials": 6}
    url = f"sqlite:///{tmp_path / 'caviar.db'}"
    best = optimize(module.objective, spec, workers=1, db=url)
    assert best is not None and best["status"] == "completed"
    assert 0.8 < best["value"] <= 1.0
    with get_database(url).session(write=False) as s:
        statuses = Counter(s.scalars(select(Trial.status)).all())
    assert statuses[TrialStatus.completed] + statuses[TrialStatus.pruned] == 6, statuses
    assert statuses[TrialStatus.pruned] >= 1, statuses


def test_the_guide_shows_the_examples_code_and_spec_as_they_are() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    specs = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", guide, re.S)]
    shipped = yaml.safe_load((OBJECTIVES / "digits.yaml").read_text(encoding="utf-8"))
    assert shipped in specs
    code = re.findall(r"```python\n(.*?)```", guide, re.S)
    assert any(block in (OBJECTIVES / "digits.py").read_text(encoding="utf-8") for block in code)
    torch_lines = (OBJECTIVES / "torch_digits.py").read_text(encoding="utf-8").splitlines()
    excerpt = next(block for block in code if "trial.checkpoint(" in block)
    for line in excerpt.splitlines():
        assert line.strip() == "..." or line in torch_lines, line

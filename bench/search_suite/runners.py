"""One method on one problem for one seed, and a cache of the results under /tmp.

Methods (`METHODS`; ``/bR`` marks rounds of R trials placed without seeing each other's
results - R = budget // 3 for the plain names):
- ``c2f``: Caviar's coarse_to_fine through the real path (`parse_spec`, `plan_round`,
  each round fed the history of the finished ones), its default 3 rounds of budget/3;
  ``c2f/b10``, ``c2f/b5``: rounds of 10 or 5 trials.
- ``random``, ``tpe``, ``tpe_mv`` (multivariate), ``gp`` (GPSampler): Optuna's own
  samplers, one trial at a time (``study.optimize``), each told its result before the
  next is asked: Optuna's best case. ``tpe_mv/b``, ``gp/b``: Optuna in batches of
  budget/3 (ask R, then tell R), the same conditions as Caviar's default rounds.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from bench.search_suite.problems import BY_NAME, Objective, Problem
from service.spec import parse_spec, plan_round, total_rounds

CACHE = Path("/tmp/caviar-search-suite")
METHODS = ("c2f", "c2f/b10", "random", "tpe", "tpe_mv", "gp", "tpe_mv/b", "gp/b")
SEARCH_CODE = Path(__file__).resolve().parents[2] / "service" / "search"


def round_size(method: str, budget: int) -> int:
    """How many trials `method` places at once (1: one at a time)."""
    base, _, batch = method.partition("/")
    if batch:
        return int(batch[1:]) if batch[1:] else budget // 3
    return budget // 3 if base == "c2f" else 1


def code_version() -> str:
    """A fingerprint of Caviar's search code: a changed strategy is never read from cache."""
    h = hashlib.sha256()
    for path in sorted(SEARCH_CODE.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:10]


# Read once, when the strategy is imported: an edit made while a run is under way must
# not file that run's results under the edited code.
CODE_VERSION = code_version()


def cache_path(method: str, problem: str, seed: int, budget: int) -> Path:
    name = method.replace("/", "@")
    if method.startswith("c2f"):
        name += f"-{CODE_VERSION}"
    return CACHE / f"{budget}" / name / problem / f"{seed}.json"


def run(method: str, problem: str, seed: int, budget: int) -> dict[str, Any]:
    """{"best": the scored value of the best trial seen, "seconds": ...}, cached."""
    path = cache_path(method, problem, seed, budget)
    if path.exists():
        return dict(json.loads(path.read_text()))
    objective = Objective(BY_NAME[problem], seed)
    start = time.perf_counter()
    runner = run_caviar if method.startswith("c2f") else run_optuna
    pairs = runner(method, objective, seed=seed, budget=budget)
    seconds = time.perf_counter() - start
    seen, scored = max(pairs, key=lambda p: p[0])
    result = {"best": scored, "best_seen": seen, "trials": len(pairs), "seconds": seconds}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)
    return result


def caviar_spec(problem: Problem, *, seed: int, budget: int, per_round: int) -> Any:
    return parse_spec(
        {
            "name": f"suite-{problem.name}",
            "dataset": problem.dataset or {"name": "moons"},
            "model": problem.model,
            "space": problem.space,
            "strategy": {
                "type": "coarse_to_fine",
                "rounds": budget // per_round,
                "trials_per_round": per_round,
            },
            "execution": {"seed": seed},
        }
    )


def run_caviar(
    method: str, objective: Objective, *, seed: int, budget: int
) -> list[tuple[float, float]]:
    spec = caviar_spec(
        objective.problem, seed=seed, budget=budget, per_round=round_size(method, budget)
    )
    history: list[tuple[dict[str, Any], float | None]] = []
    pairs: list[tuple[float, float]] = []
    for r in range(total_rounds(spec)):
        _, plans = plan_round(spec, round_index=r, history=history)
        for plan in plans:
            seen, scored = objective(plan.params)
            history.append((plan.params, seen))
            pairs.append((seen, scored))
    return pairs


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Parameters for `space` (spec distribution JSON) on the same ranges and scales."""
    params: dict[str, Any] = {}
    for path, d in sorted(space.items()):
        params[path] = _suggest_one(trial, path, d)
    return params


def _suggest_one(trial: optuna.Trial, path: str, d: dict[str, Any]) -> Any:
    kind, scale, step = d["type"], d.get("scale", "linear"), d.get("step")
    if kind == "categorical":
        return trial.suggest_categorical(path, d["choices"])
    if kind == "layers":
        units = d["units"]
        depth = trial.suggest_int(f"{path}.depth", d["depth"]["low"], d["depth"]["high"])
        log = units.get("scale") == "log"
        return [
            trial.suggest_int(f"{path}.units.{i}", units["low"], units["high"], log=log)
            for i in range(depth)
        ]
    if kind == "int":
        return trial.suggest_int(path, d["low"], d["high"], log=scale == "log", step=step or 1)
    if scale == "one_minus_log":  # Optuna has no such scale: 1 - x on a log scale is the same
        return 1.0 - trial.suggest_float(f"1-{path}", 1.0 - d["high"], 1.0 - d["low"], log=True)
    return trial.suggest_float(path, d["low"], d["high"], log=scale == "log", step=step)


def sampler_for(base: str, seed: int) -> optuna.samplers.BaseSampler:
    makers: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "tpe_mv": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True),
        # A layers field's widths exist or not by its depth: GPSampler samples them at
        # random, and would say so for every trial (the same for both runs of a seed).
        "gp": lambda: optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False),
    }
    if base not in makers:
        raise ValueError(f"unknown method {base!r}; known: {', '.join(METHODS)}")
    return makers[base]()


def run_optuna(
    method: str, objective: Objective, *, seed: int, budget: int
) -> list[tuple[float, float]]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = method.partition("/")[0]
    study = optuna.create_study(direction="maximize", sampler=sampler_for(base, seed))
    per_round = round_size(method, budget)
    pairs: list[tuple[float, float]] = []
    while len(pairs) < budget:
        n = min(per_round, budget - len(pairs))
        trials = [study.ask() for _ in range(n)]
        results = [objective(suggest(t, objective.problem.space)) for t in trials]
        for t, (seen, scored) in zip(trials, results, strict=True):
            study.tell(t, seen)
            pairs.append((seen, scored))
    return pairs

"""Seed a large, finished coarse-to-fine study straight into the database, for page timing.

Running 50,000 trials through workers would take hours; the dashboard only reads rows,
so the test writes them with SQLAlchemy through service.models, shaped as the service
writes them: a valid stored spec, one row per round with its box, trials whose params lie
in their round's box on each hyperparameter's scale, and learning curves.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sqlalchemy import insert

from service.db import get_database
from service.models import Metric, Round, Study, StudyStatus, Trial, TrialStatus
from service.settings import Settings
from service.spec import parse_spec

ROUNDS = 5


def big_spec(trials: int) -> dict[str, Any]:
    return {
        "name": "fifty-thousand",
        "dataset": {"name": "moons", "n_samples": 1000, "noise": 0.2},
        "model": {"hidden_layers": [20, 7, 5], "optimizer": "adam", "epochs": 60},
        "space": {
            "learning_rate": {"type": "float", "low": 1e-4, "high": 1.0, "scale": "log"},
            "beta1": {"type": "float", "low": 0.8, "high": 0.999, "scale": "one_minus_log"},
            "hidden_layers.0": {"type": "int", "low": 5, "high": 50},
            "l2": {"type": "float", "low": 1e-5, "high": 0.1, "scale": "log"},
            "init": {"type": "categorical", "choices": ["he", "xavier"]},
        },
        "strategy": {
            "type": "coarse_to_fine",
            "rounds": ROUNDS,
            "trials_per_round": trials // ROUNDS,
        },
        "objective": {"metric": "dev_accuracy", "direction": "maximize", "at": "last"},
        "execution": {"mode": "caviar", "max_parallel": 8, "seed": 1},
    }


# Each numeric axis: (to the unit interval, from it), on the axis's own scale.
def _scale(low: float, high: float, scale: str) -> tuple[Any, Any]:
    if scale == "log":
        a, b = math.log10(low), math.log10(high)
        return (lambda x: (np.log10(x) - a) / (b - a)), (lambda u: 10 ** (a + u * (b - a)))
    if scale == "one_minus_log":
        a, b = math.log10(1 - low), math.log10(1 - high)
        return (lambda x: (np.log10(1 - x) - a) / (b - a)), (lambda u: 1 - 10 ** (a + u * (b - a)))
    return (lambda x: (x - low) / (high - low)), (lambda u: low + u * (high - low))


def seed_big_study(
    db_url: str, *, trials: int = 50_000, curves: int = 400, epochs: int = 60, seed: int = 0
) -> int:
    """Insert a completed study of `trials` trials; returns its id.

    The best trial sits near learning_rate 0.01, beta1 0.99, 30 units, l2 1e-4, `he`,
    and each round's box shrinks around it, as coarse-to-fine does. `curves` trials
    (the best ones among them) get `epochs` epochs of metrics each.
    """
    rng = np.random.default_rng(seed)
    raw = big_spec(trials)
    # Over the default cap of trials per study, on purpose: the page must cope anyway.
    spec = parse_spec(raw, settings=Settings(max_trials_per_study=trials), check_trials=False)
    stored = spec.model_dump(mode="json")
    space = stored["space"]
    numeric = {k: v for k, v in space.items() if v["type"] in ("float", "int")}
    target_u = {}
    for path, d in numeric.items():
        to_u, _ = _scale(d["low"], d["high"], d["scale"])
        target_u[path] = float(
            to_u(
                np.array(
                    {"learning_rate": 0.01, "beta1": 0.99, "hidden_layers.0": 30, "l2": 1e-4}[path]
                )
            )
        )
    base = spec.base_config().model_dump(mode="json")
    per_round = trials // ROUNDS
    db = get_database(db_url)
    with db.session() as s:
        study = Study(
            name=raw["name"],
            spec=stored,
            status=StudyStatus.completed,
            strategy="coarse_to_fine",
            mode="caviar",
            max_parallel=8,
            max_retries=2,
            metric="dev_accuracy",
            direction="maximize",
            total_rounds=ROUNDS,
            current_round=ROUNDS - 1,
            spec_sha256="0" * 64,
        )
        s.add(study)
        s.flush()
        study_id = study.id
        rows: list[dict[str, Any]] = []
        number = 0
        for r in range(ROUNDS):
            half = 0.5 * 0.55**r  # each round keeps about half the width of the one before
            box: dict[str, Any] = {"axes": {}, "volume": 1.0}
            u = {}
            for path, d in numeric.items():
                lo = max(0.0, target_u[path] - half)
                hi = min(1.0, target_u[path] + half)
                _, from_u = _scale(d["low"], d["high"], d["scale"])
                box["axes"][path] = {
                    "unit": [[lo, hi]],
                    "low": float(from_u(lo)),
                    "high": float(from_u(hi)),
                }
                box["volume"] *= hi - lo
                u[path] = rng.uniform(lo, hi, per_round)
            box["axes"]["init"] = {"unit": [[0.0, 1.0]], "choices": ["he", "xavier"]}
            s.add(Round(study_id=study_id, index=r, box=box))
            init = rng.choice(["he", "xavier"], per_round)
            distance = sum((u[p] - target_u[p]) ** 2 for p in numeric)
            value = np.clip(
                0.955 - 0.6 * distance - 0.02 * (init == "xavier") + rng.normal(0, 0.01, per_round),
                0.3,
                0.995,
            )
            for i in range(per_round):
                params: dict[str, Any] = {}
                for path, d in numeric.items():
                    _, from_u = _scale(d["low"], d["high"], d["scale"])
                    x = float(from_u(u[path][i]))
                    params[path] = round(x) if d["type"] == "int" else x
                params["init"] = str(init[i])
                config = dict(base, **{k: v for k, v in params.items() if "." not in k})
                config["hidden_layers"] = [params["hidden_layers.0"], *base["hidden_layers"][1:]]
                rows.append(
                    {
                        "study_id": study_id,
                        "number": number,
                        "round_index": r,
                        "params": params,
                        "config": config,
                        "status": TrialStatus.completed,
                        "attempt": 1,
                        "retries": 0,
                        "stop_requested": False,
                        "value": float(value[i]),
                        "epochs_done": epochs,
                        "outcome": "completed",
                        "worker_id": f"seed-{number % 8}",
                    }
                )
                number += 1
        s.execute(insert(Trial), rows)
        s.flush()
        # Curves for the best trials (the page plots the top ones) and a spread of others.
        ranked = sorted(range(len(rows)), key=lambda i: -rows[i]["value"])
        chosen = ranked[: curves // 2] + ranked[curves // 2 :: max(1, len(rows) // curves)]
        ids = dict(
            s.execute(
                Trial.__table__.select()
                .with_only_columns(Trial.number, Trial.id)
                .where(Trial.study_id == study_id)
            ).all()
        )
        metrics: list[dict[str, Any]] = []
        for i in chosen[:curves]:
            final = rows[i]["value"]
            lr = rows[i]["params"]["learning_rate"]
            e = np.arange(1, epochs + 1)
            acc = 0.5 + (final - 0.5) * (1 - np.exp(-e / 8))
            cost = 0.7 * np.exp(-e / 10) + (1 - final)
            for k in range(epochs):
                metrics.append(
                    {
                        "trial_id": ids[rows[i]["number"]],
                        "attempt": 1,
                        "epoch": int(e[k]),
                        "train_cost": float(cost[k] * 0.9),
                        "train_accuracy": float(min(1.0, acc[k] + 0.01)),
                        "dev_cost": float(cost[k]),
                        "dev_accuracy": float(acc[k]),
                        "learning_rate": lr,
                        "seconds": 0.01,
                    }
                )
        s.execute(insert(Metric), metrics)
    if db.dialect == "sqlite":
        # Fold the 30 MB just written into the database file, as SQLite's own checkpoints
        # do in a service that has been running: reads then need not search the WAL.
        with db.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return study_id

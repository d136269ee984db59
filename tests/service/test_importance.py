"""Hyperparameter importance (fANOVA): the course's ranking is found on a synthetic study
whose objective follows it, a planted irrelevant hyperparameter ranks last, and the answer
is sampled and cached per study version."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.db import get_database
from service.importance import reads as importance_reads
from service.importance import study_importance
from service.importance.features import feature_rows, features_of
from service.queue import claim_trials, finish_trials, register_worker
from service.search.distributions import distribution_from_json
from service.studies import create_study

BATCH_EFFECT = {16: -0.04, 32: 0.0, 64: 0.01, 128: 0.0, 256: -0.05}


def course_spec(trials: int, seed: int) -> dict[str, Any]:
    """The course's list (learning rate, beta1, hidden units and layers, mini-batch size,
    decay) and `init_scale`, planted: the objective below never reads it."""
    return {
        "name": f"course-{seed}",
        "dataset": {"name": "moons", "n_samples": 200},
        "model": {"optimizer": "momentum", "lr_decay": "inverse_time", "epochs": 1},
        "space": {
            "learning_rate": {"type": "float", "low": 1e-5, "high": 1.0, "scale": "log"},
            "beta1": {"type": "float", "low": 0.8, "high": 0.999, "scale": "one_minus_log"},
            "hidden_layers": {
                "type": "layers",
                "depth": {"low": 1, "high": 3},
                "units": {"low": 5, "high": 200, "scale": "log"},
            },
            "batch_size": {"type": "categorical", "choices": list(BATCH_EFFECT)},
            "decay_rate": {"type": "float", "low": 0.0, "high": 1.0},
            "init": {"type": "categorical", "choices": ["he", "xavier", "random"]},
        },
        "strategy": {"type": "random", "trials": trials},
        "execution": {"seed": seed, "max_parallel": 100_000},
    }


def synthetic_accuracy(params: dict[str, Any], rng: np.random.Generator) -> float:
    """Shaped like the course says: the learning rate matters most (a peak on its log
    scale), then beta1, the hidden units and the batch size, then the layers and the
    decay; `init` not at all."""
    widths = params["hidden_layers"]
    units = sum(math.log10(w) for w in widths) / len(widths)
    return (
        0.95
        - 0.03 * (math.log10(params["learning_rate"]) + 2.5) ** 2
        - 0.04 * (math.log10(1 - params["beta1"]) + 1.5) ** 2
        - 0.05 * (units - 1.8) ** 2
        + BATCH_EFFECT[params["batch_size"]]
        - 0.04 * (len(widths) - 2) ** 2
        - 0.03 * params["decay_rate"]
        + rng.normal(0.0, 0.005)
    )


def run_synthetic(db: Any, settings: Any, *, trials: int, seed: int) -> int:
    """A study through the service's own functions, each trial finished by a "worker"
    that reports the synthetic accuracy instead of training."""
    study_id = create_study(db=db, data=course_spec(trials, seed), settings=settings)
    worker = register_worker(db=db, name="synthetic", host=None, pid=None)
    rng = np.random.default_rng(seed)
    while claimed := claim_trials(db=db, worker_id=worker, max_trials=500, lease_seconds=60):
        results = [
            {
                "trial_id": c.trial_id,
                "lease_token": c.lease_token,
                "outcome": "completed",
                "error": None,
                "epochs": [{"epoch": 1, "dev_accuracy": synthetic_accuracy(_params(c), rng)}],
            }
            for c in claimed
        ]
        finish_trials(db=db, results=results)
    return study_id


def _params(claimed: Any) -> dict[str, Any]:
    c = claimed.config
    return {k: c[k] for k in ("learning_rate", "beta1", "batch_size", "decay_rate", "init")} | {
        "hidden_layers": c["hidden_layers"]
    }


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    importance_reads._cache.clear()


def test_the_learning_rate_first_and_the_planted_one_last(sqlite_url, settings_for) -> None:
    db, settings = get_database(sqlite_url), settings_for(sqlite_url)
    agree = 0
    for seed in range(5):
        answer = study_importance(
            db=db, study_id=run_synthetic(db, settings, trials=300, seed=seed)
        )
        names = [i["name"] for i in answer["importances"]]
        assert sorted(names) == sorted(
            [
                "learning_rate",
                "beta1",
                "hidden_layers.depth",
                "hidden_layers.units",
                "batch_size",
                "decay_rate",
                "init",
            ]
        )
        assert math.isclose(sum(i["importance"] for i in answer["importances"]), 1.0)
        agree += names[0] == "learning_rate" and names[-1] == "init"
    assert agree >= 4


def test_sampled_and_cached_per_study_version(sqlite_url, settings_for, monkeypatch) -> None:
    db, settings = get_database(sqlite_url), settings_for(sqlite_url)
    monkeypatch.setattr(importance_reads, "SAMPLE", 60)
    study_id = run_synthetic(db, settings, trials=80, seed=3)
    first = study_importance(db=db, study_id=study_id)
    assert first["completed_trials"] == 80 and first["trials_used"] == 60 and first["sampled"]
    assert not first["cached"]
    again = study_importance(db=db, study_id=study_id)
    assert again["cached"] and again["importances"] == first["importances"]
    # A new version (more completed trials, beyond the reuse margin) is computed afresh.
    monkeypatch.setattr(importance_reads, "REUSE_GROWTH", 0.0)
    importance_reads._cache[(str(db.engine.url), study_id)] = importance_reads._Entry(79, first)
    assert not study_importance(db=db, study_id=study_id)["cached"]


def test_the_route_and_its_answers_before_enough_trials(sqlite_url, settings_for) -> None:
    settings = settings_for(sqlite_url)
    with TestClient(create_app(settings)) as client:
        db = get_database(sqlite_url)
        study_id = create_study(db=db, data=course_spec(20, 0), settings=settings)
        early = client.get(f"/api/studies/{study_id}/importance").json()
        assert early["importances"] == [] and "needs 8 completed trials" in early["note"]
        assert [t["tier"] for t in early["course"]] == [1, 2, 3]
        assert client.get("/api/studies/999999/importance").status_code == 404
        done = run_synthetic(db, settings, trials=40, seed=1)
        answer = client.get(f"/api/studies/{done}/importance").json()
        tiers = {i["name"]: i["course_tier"] for i in answer["importances"]}
        assert tiers["learning_rate"] == 1 and tiers["hidden_layers.units"] == 2
        assert tiers["hidden_layers.depth"] == 3 and tiers["init"] is None
        assert answer["importances"][0]["rank"] == 1


def test_features_sit_on_each_hyperparameter_scale() -> None:
    space = {
        "learning_rate": distribution_from_json(
            {"type": "float", "low": 1e-4, "high": 1.0, "scale": "log"}
        ),
        "beta1": distribution_from_json(
            {"type": "float", "low": 0.9, "high": 0.999, "scale": "one_minus_log"}
        ),
        "hidden_layers": distribution_from_json(
            {
                "type": "layers",
                "depth": {"low": 1, "high": 3},
                "units": {"low": 10, "high": 1000, "scale": "log"},
            }
        ),
        "init": distribution_from_json({"type": "categorical", "choices": ["he", "xavier"]}),
    }
    names = [f.name for f in features_of(space)]
    assert names == ["learning_rate", "beta1", "hidden_layers.depth", "hidden_layers.units", "init"]
    rows, kept = feature_rows(
        space,
        [
            {"learning_rate": 1e-2, "beta1": 0.99, "hidden_layers": [10, 1000], "init": "xavier"},
            {"learning_rate": 5.0, "beta1": 0.99, "hidden_layers": [10], "init": "he"},  # outside
            {"learning_rate": 1e-2, "hidden_layers": [10], "init": "he"},  # a path missing
        ],
    )
    assert kept == [0]
    lr, beta1, depth, units, init = rows[0]
    assert lr == pytest.approx(0.5)  # 1e-2 is half way from 1e-4 to 1 in decades
    assert beta1 == pytest.approx(0.5)  # 1 - 0.99 is half way from 1e-1 to 1e-3
    # the mean of the two widths' coordinates: about 0 and 1 (an int owns [v, v + 1))
    assert depth == pytest.approx(0.5) and units == pytest.approx(0.5, abs=0.01)
    assert init == 1.0


def test_a_real_small_study_ranks_its_learning_rate_first(db_url, live_service) -> None:
    from tests.conftest import small_spec
    from worker.runner import Worker

    svc = live_service(db_url)
    spec = small_spec(
        name="real-importance",
        model={"hidden_layers": [8], "optimizer": "adam", "epochs": 15, "batch_size": 32},
        space={
            "learning_rate": {"type": "float", "low": 1e-5, "high": 1.0, "scale": "log"},
            "hidden_layers.0": {"type": "int", "low": 6, "high": 10},
            "batch_size": {"type": "categorical", "choices": [32, 48]},
        },
        strategy={"type": "random", "trials": 24},
    )
    with TestClient(create_app(svc.settings)) as client:
        study_id = client.post("/api/studies", json=spec).json()["id"]
        Worker(svc.url, exit_when_idle=True, claim_batch=8).run()
        answer = client.get(f"/api/studies/{study_id}/importance").json()
    assert answer["completed_trials"] == 24 and not answer["sampled"]
    assert answer["importances"][0]["name"] == "learning_rate", answer

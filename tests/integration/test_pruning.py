"""Pruning decided by the service from stored curves, with real workers."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from worker.pool import Pool, PoolOptions


def run_study(url: str, spec: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    api = httpx.Client(base_url=url, timeout=60)
    study_id = api.post("/api/studies", json=spec).json()["id"]
    pool = Pool(PoolOptions(api_url=url, processes=2, exit_when_idle=True))
    pool.start()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            study = api.get(f"/api/studies/{study_id}").json()
            if study["status"] in ("completed", "failed"):
                break
            time.sleep(0.3)
    finally:
        pool.stop()
    trials = api.get(f"/api/studies/{study_id}/trials", params={"limit": 1000}).json()["items"]
    return study, trials


@pytest.mark.parametrize("kind", ["asha", "median"])
def test_pruning_stops_most_trials_early_and_keeps_the_best(
    kind, sqlite_url, live_service, spec_factory
) -> None:
    svc = live_service(sqlite_url)
    base = spec_factory(
        dataset={"name": "moons", "n_samples": 1000, "noise": 0.25, "seed": 2},
        model={"hidden_layers": [16, 8], "epochs": 27, "batch_size": 16},
        space={"learning_rate": {"type": "float", "low": 1e-5, "high": 1.0, "scale": "log"}},
        strategy={"type": "random", "trials": 16},
        objective={"metric": "dev_accuracy", "direction": "maximize", "at": "best"},
        execution={"max_parallel": 2, "seed": 11},
    )
    pruning = (
        {"type": "asha", "min_epochs": 3, "reduction_factor": 3}
        if kind == "asha"
        else {"type": "median", "warmup_epochs": 5}
    )
    full, full_trials = run_study(svc.url, {**base, "name": "none"})
    pruned, pruned_trials = run_study(svc.url, {**base, "name": kind, "pruning": pruning})
    assert full["status"] == pruned["status"] == "completed"
    stopped = [t for t in pruned_trials if t["status"] == "pruned"]
    assert len(stopped) >= len(pruned_trials) // 3, "pruning stopped too few trials"
    assert all(t["prune_reason"] and kind in t["prune_reason"] for t in stopped)
    assert all(t["epochs_done"] < 27 and t["value"] is not None for t in stopped)
    epochs_full = sum(t["epochs_done"] for t in full_trials)
    epochs_pruned = sum(t["epochs_done"] for t in pruned_trials)
    # the median rule waits for 5 trials to set the bar; ASHA cuts from the first rung
    assert epochs_pruned < (0.6 if kind == "asha" else 0.9) * epochs_full
    # the same seeded trials, with less training: the best found is within a point of the
    # best without pruning (which trial wins may change: two workers interleave them)
    assert pruned["best_trial"]["value"] >= full["best_trial"]["value"] - 0.01

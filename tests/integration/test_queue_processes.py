"""Worker processes against the real service: races, uploaded data sets, pool replacement."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import select

from service.db import get_database
from service.models import Event, Metric, Trial, TrialStatus
from worker.pool import Pool, PoolOptions

CAVIAR = [sys.executable, "-m", "service.cli"]


def wait_done(api: httpx.Client, study_id: int, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = api.get(f"/api/studies/{study_id}").json()
        if study["status"] in ("completed", "failed", "cancelled"):
            return study
        time.sleep(0.25)
    raise AssertionError(f"study {study_id} did not finish")


def test_eight_worker_processes_run_300_trials_exactly_once(
    db_url, live_service, spec_factory
) -> None:
    svc = live_service(db_url)
    api = httpx.Client(base_url=svc.url, timeout=60)
    spec = spec_factory(
        dataset={"name": "moons", "n_samples": 100, "seed": 1},
        model={"hidden_layers": [4], "epochs": 1, "batch_size": 0},
        strategy={"type": "random", "trials": 300},
        execution={"max_parallel": 300, "seed": 5},
    )
    study_id = api.post("/api/studies", json=spec).json()["id"]
    proc = subprocess.Popen(
        [*CAVIAR, "worker", "--api", svc.url, "--processes", "8", "--claim-batch", "4"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        study = wait_done(api, study_id)
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    assert study["status"] == "completed" and study["counts"]["completed"] == 300
    with get_database(db_url).session(write=False) as s:
        trials = s.execute(select(Trial.id, Trial.attempt, Trial.status)).all()
        assert all(t.attempt == 1 and t.status == TrialStatus.completed for t in trials)
        starts = Counter(
            s.scalars(select(Event.trial_id).where(Event.type == "trial.started")).all()
        )
        owners = set(s.scalars(select(Trial.worker_id)).all())
        metrics = s.execute(select(Metric.trial_id, Metric.attempt, Metric.epoch)).all()
    assert len(starts) == 300 and set(starts.values()) == {1}, "a trial had two owners"
    assert len(owners) >= 2, "the work was not shared between processes"
    assert len(metrics) == len(set(metrics)) == 300


def test_an_uploaded_data_set_is_fetched_once_and_trained_on(
    sqlite_url, live_service, spec_factory, tmp_path: Path
) -> None:
    svc = live_service(sqlite_url)
    api = httpx.Client(base_url=svc.url, timeout=60)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    rows = [
        "a,b,c,label",
        *(f"{a:.5f},{b:.5f},{c:.5f},{t}" for (a, b, c), t in zip(X, y, strict=True)),
    ]
    up = api.post(
        "/api/datasets",
        params={"name": "linear.csv", "label_column": "label"},
        content="\n".join(rows).encode(),
        headers={"content-type": "text/csv"},
    )
    assert up.status_code == 201, up.text
    dataset_id = up.json()["id"]
    spec = spec_factory(
        dataset={"name": dataset_id, "label_column": "label", "seed": 0},
        model={"hidden_layers": [8], "epochs": 30, "batch_size": 32, "learning_rate": 0.01},
        strategy={"type": "random", "trials": 3},
    )
    created = api.post("/api/studies", json=spec)
    assert created.status_code == 201, created.text
    cache = tmp_path / "cache"
    import os

    env_cache = {"XDG_CACHE_HOME": str(cache)}
    old = {k: os.environ.get(k) for k in env_cache}
    os.environ.update(env_cache)  # spawned pool processes read it at import
    try:
        pool = Pool(PoolOptions(api_url=svc.url, processes=1, exit_when_idle=True))
        pool.start()
        try:
            study = wait_done(api, created.json()["id"], timeout=120)
        finally:
            pool.stop()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert study["status"] == "completed", study
    assert study["best_trial"]["value"] > 0.8  # a linearly separable set
    files = list((cache / "caviar" / "datasets").iterdir())
    assert len(files) == 1 and files[0].name.startswith(dataset_id[3:])


def test_a_pool_replaces_a_process_after_its_trials(sqlite_url, live_service, spec_factory) -> None:
    svc = live_service(sqlite_url)
    api = httpx.Client(base_url=svc.url, timeout=60)
    spec = spec_factory(strategy={"type": "random", "trials": 6})
    study_id = api.post("/api/studies", json=spec).json()["id"]
    proc = subprocess.Popen(
        [*CAVIAR, "worker", "--api", svc.url, "--processes", "1", "--max-trials", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        study = wait_done(api, study_id)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert study["counts"]["completed"] == 6
    workers = api.get("/api/workers").json()
    assert len(workers) == 3 and all(w["trials_done"] == 2 for w in workers)
    # each life of the pool's process 0 has a name of its own (all three were "<host>-0")
    assert len({w["name"] for w in workers}) == 3

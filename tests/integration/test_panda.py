"""Panda through the service and real workers: pause, resume, fork, review each trial."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.integration.waiting import wait_until
from worker.pool import Pool, PoolOptions


@pytest.fixture
def panda(sqlite_url, live_service) -> Iterator[tuple[httpx.Client, Pool]]:
    svc = live_service(sqlite_url, lease_seconds=5.0, heartbeat_seconds=0.3)
    api = httpx.Client(base_url=svc.url, timeout=30)
    pool = Pool(PoolOptions(api_url=svc.url, processes=1))
    pool.start()
    yield api, pool
    pool.stop()


def slow(spec_factory: Callable[..., dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    """float64 trials of ~30 epochs of ~0.1 s, checkpointed every 5 epochs."""
    spec = spec_factory(
        dataset={"name": "moons", "n_samples": 10_000, "noise": 0.2, "seed": 1},
        model={
            "hidden_layers": [16, 8],
            "epochs": 30,
            "batch_size": 8,
            "dtype": "float64",
            "learning_rate": 0.003,
        },
        space={},
        strategy={"type": "random", "trials": 1},
        execution={"mode": "panda", "checkpoint_every": 5, "seed": 3},
    )
    spec.update(overrides)
    return spec


def trial_of(api: httpx.Client, study_id: int, number: int = 0) -> dict[str, Any]:
    items = api.get(f"/api/studies/{study_id}/trials").json()["items"]
    return next(t for t in items if t["number"] == number)


def curve(api: httpx.Client, trial_id: int) -> list[dict[str, Any]]:
    return api.get(f"/api/trials/{trial_id}/metrics").json()


def test_pause_frees_the_worker_and_resume_equals_an_uninterrupted_run(panda, spec_factory) -> None:
    api, _ = panda
    paused_study = api.post("/api/studies", json=slow(spec_factory, name="paused")).json()["id"]
    trial = wait_until(
        lambda: (t := trial_of(api, paused_study))["epochs_done"] >= 7 and t, what="7 epochs"
    )
    r = api.post(f"/api/trials/{trial['id']}/pause")
    assert r.status_code == 200, r.text
    wait_until(lambda: trial_of(api, paused_study)["status"] == "paused", what="the pause")
    assert all(w["running"] == [] for w in api.get("/api/workers").json()), "worker not freed"
    epochs = [c["epoch"] for c in api.get(f"/api/trials/{trial['id']}/checkpoints").json()]
    assert epochs[:1] == [5] and epochs[-1] >= 7  # periodic ones, and the pause's own
    assert api.post(f"/api/trials/{trial['id']}/resume").status_code == 200
    wait_until(lambda: trial_of(api, paused_study)["status"] == "completed", what="completion")
    resumed = curve(api, trial["id"])
    assert [m["epoch"] for m in resumed] == list(range(1, 31))
    assert trial_of(api, paused_study)["attempt"] == 2
    # the same trial never paused: bit for bit the same curve (float64)
    straight = api.post("/api/studies", json=slow(spec_factory, name="straight")).json()["id"]
    wait_until(lambda: trial_of(api, straight)["status"] == "completed", what="the straight run")
    uninterrupted = curve(api, trial_of(api, straight)["id"])
    keys = ("train_cost", "dev_cost", "dev_accuracy", "learning_rate")
    assert [[m[k] for k in keys] for m in resumed] == [[m[k] for k in keys] for m in uninterrupted]


def test_fork_continues_the_parent_s_curve_with_what_was_changed(panda, spec_factory) -> None:
    api, _ = panda
    study_id = api.post("/api/studies", json=slow(spec_factory)).json()["id"]
    parent = wait_until(
        lambda: (t := trial_of(api, study_id))["status"] == "completed" and t, what="the parent"
    )
    bad = api.post(
        f"/api/trials/{parent['id']}/fork",
        json={"from_epoch": 10, "changes": {"hidden_layers": [4]}},
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == "changes.hidden_layers"
    bad = api.post(f"/api/trials/{parent['id']}/fork", json={"from_epoch": 7, "changes": {}})
    assert bad.status_code == 422 and "5, 10" in bad.json()["errors"][0]["msg"]
    r = api.post(
        f"/api/trials/{parent['id']}/fork",
        json={"from_epoch": 10, "changes": {"learning_rate": 0.0003, "l2": 0.01}},
    )
    assert r.status_code == 201, r.text
    child = r.json()
    assert child["parent_trial_id"] == parent["id"] and child["fork_epoch"] == 10
    assert child["config"]["learning_rate"] == 0.0003 and child["config"]["l2"] == 0.01
    assert child["params"]["learning_rate"] == 0.0003
    wait_until(
        lambda: trial_of(api, study_id, child["number"])["status"] == "completed", what="the fork"
    )
    mine, theirs = curve(api, child["id"]), curve(api, parent["id"])
    assert [m["epoch"] for m in mine] == list(range(1, 31))
    assert mine[:10] == theirs[:10]  # the shared history
    assert mine[10]["learning_rate"] == pytest.approx(0.0003)
    assert mine[-1]["train_cost"] != theirs[-1]["train_cost"]
    # A completed trial is checkpointed at its end too: it can be trained further.
    epochs = [c["epoch"] for c in api.get(f"/api/trials/{parent['id']}/checkpoints").json()]
    assert epochs[-1] == 30
    r = api.post(
        f"/api/trials/{parent['id']}/fork", json={"from_epoch": 30, "changes": {"epochs": 33}}
    )
    assert r.status_code == 201, r.text
    longer = r.json()
    wait_until(
        lambda: trial_of(api, study_id, longer["number"])["status"] == "completed",
        what="the longer run",
    )
    extended = curve(api, longer["id"])
    assert [m["epoch"] for m in extended] == list(range(1, 34))
    assert extended[:30] == theirs
    study = api.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "completed" and study["total_trials"] == 3


def test_a_reviewed_panda_study_waits_for_the_person_after_each_trial(panda, spec_factory) -> None:
    api, _ = panda
    spec = spec_factory(
        strategy={"type": "random", "trials": 3},
        execution={"mode": "panda", "await_review": True, "seed": 1},
    )
    study_id = api.post("/api/studies", json=spec).json()["id"]
    wait_until(
        lambda: api.get(f"/api/studies/{study_id}").json()["counts"]["completed"] == 1,
        what="the first trial",
    )
    time.sleep(1.5)  # a worker is free, yet nothing more runs
    counts = api.get(f"/api/studies/{study_id}").json()["counts"]
    assert (counts["completed"], counts["queued"], counts["running"]) == (1, 2, 0)
    assert api.post(f"/api/studies/{study_id}/continue").status_code == 200
    wait_until(
        lambda: api.get(f"/api/studies/{study_id}").json()["counts"]["completed"] == 2,
        what="the second trial",
    )
    assert api.post(f"/api/studies/{study_id}/cancel").status_code == 200
    study = api.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "cancelled" and study["counts"]["stopped"] == 1


def test_a_caviar_study_checkpoints_sparingly_and_keeps_the_latest(
    sqlite_url, live_service, spec_factory
) -> None:
    # Nobody forks a caviar trial from any epoch: its checkpoints are for a requeued attempt
    # and for going on from the end. Throttled to one per 10 s (these trials take about
    # a second), only the last epoch's is sent; unthrottled, every 5 epochs, of which the
    # service keeps the two latest.
    for seconds, expected in ((10.0, [30]), (0.0, [25, 30])):
        svc = live_service(
            sqlite_url, lease_seconds=5.0, heartbeat_seconds=0.3, caviar_checkpoint_seconds=seconds
        )
        api = httpx.Client(base_url=svc.url, timeout=30)
        pool = Pool(PoolOptions(api_url=svc.url, processes=1))
        pool.start()
        try:
            spec = slow(spec_factory, name=f"many-{seconds}")
            spec["dataset"]["n_samples"] = 2_000  # trials of about a second: well under 10 s
            spec["execution"] = {"mode": "caviar", "checkpoint_every": 5, "seed": 3}
            spec["strategy"] = {"type": "random", "trials": 2}
            # Two trials need something to vary: a spec with an empty space and more than
            # one trial is refused (every trial would be the same model).
            spec["space"] = {"l2": {"type": "float", "low": 1e-6, "high": 1e-4, "scale": "log"}}
            study_id = api.post("/api/studies", json=spec).json()["id"]

            def completed(api: httpx.Client = api, study_id: int = study_id) -> bool:
                return bool(api.get(f"/api/studies/{study_id}").json()["status"] == "completed")

            wait_until(completed, what="the study")
            for number in (0, 1):
                trial = trial_of(api, study_id, number)
                checkpoints = api.get(f"/api/trials/{trial['id']}/checkpoints").json()
                assert [c["epoch"] for c in checkpoints] == expected, (seconds, checkpoints)
            # The last one is enough to go on: a longer run from the end.
            first = trial_of(api, study_id, 0)
            r = api.post(
                f"/api/trials/{first['id']}/fork",
                json={"from_epoch": 30, "changes": {"epochs": 31}},
            )
            assert r.status_code == 201, r.text
            r = api.post(f"/api/trials/{first['id']}/fork", json={"from_epoch": 10, "changes": {}})
            assert r.status_code == 422 and f"{expected[0]}" in r.json()["errors"][0]["msg"]
        finally:
            pool.stop()
            svc.stop()


def test_forks_of_a_real_run_meet_the_caps_and_the_rate_of_submissions(
    sqlite_url, live_service, spec_factory
) -> None:
    """Issue 17: 10^9 epochs, Infinity, a study grown past its cap, a burst without a 429."""
    svc = live_service(
        sqlite_url,
        lease_seconds=5.0,
        heartbeat_seconds=0.3,
        max_epochs=100,
        max_trials_per_study=4,
        submit_burst=7,
        submit_rate_per_minute=1,
    )
    api = httpx.Client(base_url=svc.url, timeout=30)
    pool = Pool(PoolOptions(api_url=svc.url, processes=1))
    pool.start()
    try:
        study_id = api.post("/api/studies", json=slow(spec_factory)).json()["id"]
        parent = wait_until(
            lambda: (t := trial_of(api, study_id))["status"] == "completed" and t,
            what="the parent",
        )
        url = f"/api/trials/{parent['id']}/fork"

        def fork(changes: str) -> httpx.Response:
            body = '{"from_epoch": 10, "changes": ' + changes + "}"
            return api.post(url, content=body, headers={"content-type": "application/json"})

        huge = fork('{"epochs": 1000000000}')
        assert huge.status_code == 422 and huge.json()["errors"][0]["loc"] == "changes.epochs"
        infinite = fork('{"learning_rate": Infinity}')
        assert infinite.status_code == 422, infinite.text
        assert infinite.json()["errors"][0]["loc"] == "changes.learning_rate"
        # 1 trial of at most 4; of 7 submissions at once, the study and 2 refusals spent 3.
        codes = [fork(f'{{"l2": 0.0{i}}}').status_code for i in range(1, 6)]
        assert codes == [201, 201, 201, 409, 429], codes
        assert api.get(f"/api/studies/{study_id}").json()["total_trials"] == 4
    finally:
        pool.stop()

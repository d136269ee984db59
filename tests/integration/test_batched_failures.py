"""Batches of short trials survive a pool killed mid-batch and a stale worker, exactly once;
a stop stores the running trial's checkpoint, and its next attempt starts there."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

import httpx
from sqlalchemy import select

from service.db import get_database
from service.models import Checkpoint, Event, Metric, Trial, TrialStatus
from tests.integration.test_worker_failures import (
    FAST_LEASE,
    assert_metrics_unique,
    running_trial,
    slow_spec,
    study_done,
    workers,
)
from tests.integration.waiting import wait_until

__all__ = ["workers"]  # the fixture, shared with test_worker_failures


def short_spec(spec_factory: Any, trials: int, epochs: int = 1, samples: int = 200) -> Any:
    """Real trials of a few milliseconds each: workers lease them in batches."""
    return spec_factory(
        dataset={"name": "moons", "n_samples": samples, "noise": 0.2, "seed": 1},
        model={"hidden_layers": [4], "epochs": epochs, "batch_size": 0},
        strategy={"type": "random", "trials": trials},
        execution={"max_parallel": 1000, "seed": 3, "max_retries": 3},
    )


def per_trial_requests(api: httpx.Client) -> float:
    """Requests about one trial the service has accepted (metrics, finish, checkpoints); a
    worker thawed after its leases expired is refused some (409), which do not count."""
    total = 0.0
    for line in api.get("/metrics").text.splitlines():
        if (
            line.startswith("caviar_http_request_duration_seconds_count")
            and 'status="200"' in line
            and any(
                f'route="/api/worker/trials/{{trial_id}}/{kind}"' in line
                for kind in ("metrics", "finish", "checkpoints")
            )
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def assert_each_trial_ended_once(db_url: str, study_id: int, trials: int) -> None:
    """Every trial completed, with one trial.finished event, one curve point per epoch of
    its final attempt, and its last checkpoint (of that attempt) stored."""
    with get_database(db_url).session(write=False) as s:
        rows = s.execute(
            select(Trial.id, Trial.status, Trial.attempt, Trial.epochs_done).where(
                Trial.study_id == study_id
            )
        ).all()
        finished = Counter(
            s.scalars(
                select(Event.trial_id).where(
                    Event.study_id == study_id, Event.type == "trial.finished"
                )
            )
        )
        points = Counter(
            (t, a)
            for t, a in s.execute(
                select(Metric.trial_id, Metric.attempt).join(Trial, Trial.id == Metric.trial_id)
            )
        )
        kept = {(t, a) for t, a in s.execute(select(Checkpoint.trial_id, Checkpoint.attempt))}
    assert len(rows) == trials
    assert {r.status for r in rows} == {TrialStatus.completed}, Counter(r.status for r in rows)
    assert set(finished.values()) == {1} and len(finished) == trials
    for r in rows:
        assert points[(r.id, r.attempt)] == r.epochs_done, r
        assert (r.id, r.attempt) in kept, r
    assert_metrics_unique(db_url)


def test_a_pool_killed_mid_batch_loses_and_doubles_nothing(
    db_url, live_service, spec_factory, workers
) -> None:
    # Two processes holding batches of leased trials, their results not yet reported,
    # are killed at once; their leases expire, another pool runs the trials again.
    svc = live_service(db_url, **FAST_LEASE)
    api = httpx.Client(base_url=svc.url, timeout=30)
    # Trials of 5 epochs, killed once a first batch is reported: results arrive a batch
    # (about half a second of work) at a time, and with 1-epoch trials and a kill after
    # 30 the whole study once ended before the kill (CI, a quiet machine).
    spec = short_spec(spec_factory, 300, epochs=5)
    study_id = api.post("/api/studies", json=spec).json()["id"]
    before = per_trial_requests(api)
    pool = workers.start(svc.url, "--processes", "2")
    wait_until(
        lambda: api.get(f"/api/studies/{study_id}").json()["counts"]["completed"] >= 1,
        what="a first batch reported",
    )
    os.killpg(pool.pid, signal.SIGKILL)
    pool.wait(timeout=10)
    held = api.get(f"/api/studies/{study_id}").json()["counts"]
    workers.start(svc.url, "--processes", "2")
    study = wait_until(lambda: study_done(api, study_id), timeout=180, what="the study")
    assert study["status"] == "completed" and study["counts"]["completed"] == 300
    assert_each_trial_ended_once(db_url, study_id, 300)
    # Results, epochs and last checkpoints all travelled with the claims.
    assert per_trial_requests(api) == before
    with get_database(db_url).session(write=False) as s:
        retried = s.scalar(select(Trial.id).where(Trial.retries > 0).limit(1))
    assert held["completed"] < 300 and (held["running"] == 0 or retried is not None)


def test_a_stale_worker_s_batch_is_refused_once_another_has_run_it(
    db_url, live_service, spec_factory, workers
) -> None:
    # A worker frozen with a batch leased (short trials of ~50 ms: several per lease)
    # loses the leases; another worker runs them; thawed, its results are refused.
    svc = live_service(db_url, **FAST_LEASE)
    api = httpx.Client(base_url=svc.url, timeout=30)
    spec = short_spec(spec_factory, 60, epochs=40, samples=400)
    study_id = api.post("/api/studies", json=spec).json()["id"]
    before = per_trial_requests(api)
    workers.start(svc.url)

    def batch_leased() -> list[dict[str, Any]] | None:
        running = api.get(f"/api/studies/{study_id}/trials", params={"status": "running"})
        items: list[dict[str, Any]] = running.json()["items"]
        return items if len(items) >= 2 else None

    wait_until(batch_leased, what="a batch of leased trials")
    frozen = int(next(w["pid"] for w in api.get("/api/workers").json()))
    # Frozen with a batch: seen two running trials, the worker may still end one and
    # report it before the signal lands, so what it holds is read once it is frozen
    # (after what it had sent is answered) and, with fewer than two, it runs on a while.
    for _ in range(50):
        os.kill(frozen, signal.SIGSTOP)
        time.sleep(0.3)  # well inside its leases (2 s; heartbeats every 0.3 s)
        held = batch_leased()
        if held is not None:
            break
        os.kill(frozen, signal.SIGCONT)
        wait_until(batch_leased, what="a batch of leased trials")
    else:
        raise AssertionError("the worker never froze with two trials leased")
    try:
        wait_until(
            lambda: api.get(f"/api/studies/{study_id}").json()["counts"]["running"] == 0,
            what="the frozen worker's leases to expire",
        )
        with get_database(db_url).session(write=False) as s:
            taken_back = s.scalars(select(Trial.id).where(Trial.retries > 0)).all()
        assert len(taken_back) >= 2  # a batch, not one trial
        assert {t["id"] for t in held} <= set(taken_back)  # every trial it held
        workers.start(svc.url)
        study = wait_until(lambda: study_done(api, study_id), timeout=180, what="the study")
    finally:
        os.kill(frozen, signal.SIGCONT)
    time.sleep(2)  # the thawed worker reports what it had; every result is refused
    assert study["status"] == "completed"
    assert_each_trial_ended_once(db_url, study_id, 60)
    assert per_trial_requests(api) == before  # everything travelled with the claims
    os.kill(frozen, 0)  # alive: refusals did not crash it


def test_a_stop_in_a_trial_s_first_seconds_stores_its_checkpoint_for_the_next_attempt(
    sqlite_url, live_service, spec_factory, workers
) -> None:
    # Ctrl-C reaches every process of the group. A caviar study keeps a periodic
    # checkpoint at most every 10 s: the stop's was skipped too within them, so the
    # trial went back with none and restarted from epoch 1.
    svc = live_service(sqlite_url, **FAST_LEASE)
    api = httpx.Client(base_url=svc.url, timeout=30)
    study_id = api.post("/api/studies", json=slow_spec(spec_factory, epochs=200)).json()["id"]
    pool = workers.start(svc.url)
    trial = wait_until(lambda: running_trial(api, study_id, 3), what="a trial 3 epochs in")
    os.killpg(pool.pid, signal.SIGINT)
    assert pool.wait(timeout=15) == 0
    back = api.get(f"/api/trials/{trial['id']}").json()
    assert back["status"] == "queued" and back["retries"] == 0
    (checkpoint,) = api.get(f"/api/trials/{trial['id']}/checkpoints").json()
    stopped_at = checkpoint["epoch"]
    assert stopped_at >= 3
    workers.start(svc.url)
    wait_until(lambda: running_trial(api, study_id, stopped_at + 1), what="the next attempt")
    api.post(f"/api/trials/{trial['id']}/stop")
    wait_until(lambda: study_done(api, study_id), what="the study to end")
    with get_database(sqlite_url).session(write=False) as s:
        points = s.execute(
            select(Metric.attempt, Metric.epoch, Metric.seconds).where(
                Metric.trial_id == trial["id"], Metric.epoch <= stopped_at
            )
        ).all()
    first = {e: sec for a, e, sec in points if a == 1}
    second = {e: sec for a, e, sec in points if a == 2}
    # The second attempt started from the checkpoint: its curve up to there is the first's.
    assert second == first and sorted(first) == list(range(1, stopped_at + 1))

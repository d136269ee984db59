"""A worker's leases: a batch is sized from observed durations, and every lease it holds,
started or still waiting in its batch, is kept alive by its heartbeats."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select

from service.db import get_database
from service.models import Event, Trial, TrialStatus
from worker import runner
from worker.runner import Worker


@dataclass
class _Done:
    status: str = "completed"


def test_trials_waiting_in_a_batch_keep_their_leases(  # type: ignore[no-untyped-def]
    db_url, live_service, spec_factory, monkeypatch
) -> None:
    # Leases much shorter than a batch: the last trial of a batch of 4 waits three
    # trials (about 2.4 s) for its turn, longer than the 1.5 s lease, and must not be
    # reclaimed, because the heartbeat thread extends every lease the worker holds.
    svc = live_service(db_url, lease_seconds=1.5, heartbeat_seconds=0.2, reap_interval_seconds=0.1)
    monkeypatch.setattr(runner, "LEASE_TARGET_SECONDS", 10.0)
    stop = threading.Event()

    def slow_train(config: Any, dataset: Any, *, on_epoch: Any = None, **_: Any) -> _Done:
        stop.wait(0.8)
        on_epoch({"epoch": 1, "dev_accuracy": 0.5})
        return _Done()

    api = httpx.Client(base_url=svc.url, timeout=30)
    spec = spec_factory(strategy={"type": "random", "trials": 5})
    study_id = api.post("/api/studies", json=spec).json()["id"]
    worker = Worker(svc.url, exit_when_idle=True, claim_batch=4, train_fn=slow_train)
    sizes: list[int] = []
    lease_size = worker.lease_size
    monkeypatch.setattr(worker, "lease_size", lambda: sizes.append(lease_size()) or sizes[-1])
    assert worker.run() == 5
    assert sizes[:2] == [1, 4]  # one to judge, then as many as fit (capped)
    study = api.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "completed" and study["counts"]["completed"] == 5
    db = get_database(db_url)
    with db.session(write=False) as s:
        attempts = s.execute(select(Trial.attempt, Trial.retries, Trial.status)).all()
        requeued = s.scalars(select(Event.id).where(Event.type == "trial.requeued")).all()
    assert requeued == []
    assert set(attempts) == {(1, 0, TrialStatus.completed)}

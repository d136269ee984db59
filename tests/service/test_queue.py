"""The queue's contract, the same on SQLite and PostgreSQL: leases, limits, reaping, races."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from sqlalchemy import select, update

from service.db import Database
from service.errors import LeaseLost
from service.models import Trial, TrialStatus
from service.queue import (
    claim_trials,
    finish_trial,
    heartbeat,
    reap_expired,
    register_worker,
    release_trial,
)
from service.settings import Settings
from service.studies import create_study, get_study

LEASE = 30.0


def make_study(db: Database, spec: dict[str, Any]) -> int:
    return create_study(db=db, data=spec, settings=Settings(database_url=db.url))


def claim(db: Database, wid: str, n: int = 1) -> list[Any]:
    return claim_trials(db=db, worker_id=wid, max_trials=n, lease_seconds=LEASE)


def expire(db: Database, trial_id: int) -> None:
    with db.session() as s:
        s.execute(update(Trial).where(Trial.id == trial_id).values(lease_expires_at=0.0))


def test_max_parallel_caps_running_trials(db: Database, spec_factory) -> None:  # type: ignore[no-untyped-def]
    make_study(
        db,
        spec_factory(
            strategy={"type": "random", "trials": 6}, execution={"max_parallel": 2, "seed": 1}
        ),
    )
    wid = register_worker(db=db, name="w", host="h", pid=1)
    first = claim(db, wid, 5)
    assert len(first) == 2
    assert claim(db, wid, 5) == []
    finish_trial(
        db=db,
        trial_id=first[0].trial_id,
        lease_token=first[0].lease_token,
        outcome="completed",
        epochs=[{"epoch": 1, "dev_accuracy": 0.5}],
    )
    assert len(claim(db, wid, 5)) == 1


def test_a_panda_study_never_runs_two_trials(db: Database, spec_factory) -> None:  # type: ignore[no-untyped-def]
    make_study(db, spec_factory(execution={"mode": "panda", "max_parallel": 8, "seed": 1}))
    wid = register_worker(db=db, name="w", host="h", pid=1)
    assert len(claim(db, wid, 8)) == 1
    assert claim(db, wid, 8) == []


def test_claims_are_fair_across_studies(db: Database, spec_factory) -> None:  # type: ignore[no-untyped-def]
    a = make_study(db, spec_factory(name="a"))
    b = make_study(db, spec_factory(name="b"))
    wid = register_worker(db=db, name="w", host="h", pid=1)
    order = [claim(db, wid)[0].study_id for _ in range(4)]
    assert order == [a, b, a, b]


def test_an_expired_lease_is_requeued_as_a_new_attempt_then_fails(  # type: ignore[no-untyped-def]
    db: Database, spec_factory
) -> None:
    make_study(
        db,
        spec_factory(
            strategy={"type": "random", "trials": 1}, execution={"max_retries": 1, "seed": 1}
        ),
    )
    wid = register_worker(db=db, name="w", host="h", pid=1)
    first = claim(db, wid)[0]
    assert first.attempt == 1
    expire(db, first.trial_id)
    assert reap_expired(db=db) == 1
    assert reap_expired(db=db) == 0  # nothing moves twice
    second = claim(db, wid)[0]
    assert (second.trial_id, second.attempt) == (first.trial_id, 2)
    try:
        heartbeat(
            db=db, trial_id=first.trial_id, lease_token=first.lease_token, lease_seconds=LEASE
        )
        raise AssertionError("the stale lease was accepted")
    except LeaseLost:
        pass
    expire(db, second.trial_id)
    assert reap_expired(db=db) == 1
    with db.session(write=False) as s:
        trial = s.scalars(select(Trial)).one()
        assert trial.status == TrialStatus.failed
        assert "lease expired" in (trial.error or "") and "max_retries is 1" in (trial.error or "")
    assert get_study(db=db, study_id=trial.study_id)["status"] == "failed"


def test_release_hands_back_without_counting_a_retry(db: Database, spec_factory) -> None:  # type: ignore[no-untyped-def]
    make_study(db, spec_factory(strategy={"type": "random", "trials": 1}))
    wid = register_worker(db=db, name="w", host="h", pid=1)
    first = claim(db, wid)[0]
    release_trial(db=db, trial_id=first.trial_id, lease_token=first.lease_token)
    with db.session(write=False) as s:
        trial = s.scalars(select(Trial)).one()
        assert (trial.status, trial.retries) == (TrialStatus.queued, 0)


def test_two_reapers_at_once_move_a_stale_trial_once(db: Database, spec_factory) -> None:  # type: ignore[no-untyped-def]
    make_study(db, spec_factory(strategy={"type": "random", "trials": 4}))
    wid = register_worker(db=db, name="w", host="h", pid=1)
    for c in claim(db, wid, 4):
        expire(db, c.trial_id)
    moved: list[int] = []
    barrier = threading.Barrier(2)

    def reap() -> None:
        barrier.wait()
        moved.append(reap_expired(db=db))

    threads = [threading.Thread(target=reap) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(moved) == 4
    with db.session(write=False) as s:
        retries = s.scalars(select(Trial.retries)).all()
    assert retries == [1, 1, 1, 1]


def test_concurrent_claims_never_hand_a_trial_out_twice(db: Database, spec_factory) -> None:  # type: ignore[no-untyped-def]
    make_study(
        db,
        spec_factory(
            strategy={"type": "random", "trials": 60}, execution={"max_parallel": 100, "seed": 3}
        ),
    )
    owners: Counter[int] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            wid = register_worker(db=db, name=f"w{i}", host="h", pid=i)
            while True:
                got = claim(db, wid, 2)
                if not got:
                    return
                with lock:
                    owners.update(c.trial_id for c in got)
                time.sleep(0.001)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(owners) == 60
    assert set(owners.values()) == {1}

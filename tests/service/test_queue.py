"""The queue's contract, the same on SQLite and PostgreSQL: leases, limits, reaping, races."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from sqlalchemy import func, select, text, update

from service.checkpoints import store_checkpoint
from service.db import Database
from service.errors import LeaseLost
from service.models import Event, Metric, Trial, TrialStatus
from service.models import Study as StudyRow
from service.models import Worker as WorkerRow
from service.queue import (
    claim_trials,
    finish_trial,
    finish_trials,
    heartbeat,
    reap_expired,
    register_worker,
    release_trial,
    report_metrics,
    trials_waiting,
)
from service.queue.leases import EXPIRED
from service.settings import Settings
from service.studies import create_study, get_study
from service.studies.rounds import plan_due_rounds
from tests.service.test_checkpoints import checkpoint_bytes

LEASE = 30.0


def make_study(db: Database, spec: dict[str, Any]) -> int:
    return create_study(db=db, data=spec, settings=Settings(database_url=db.url))


def claim(db: Database, wid: str, n: int = 1) -> list[Any]:
    return claim_trials(db=db, worker_id=wid, max_trials=n, lease_seconds=LEASE)


def expire(db: Database, trial_id: int) -> None:
    with db.session() as s:
        s.execute(update(Trial).where(Trial.id == trial_id).values(lease_expires_at=0.0))


def test_max_parallel_caps_running_trials(db: Database, spec_factory) -> None:
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


def test_an_empty_claim_says_whether_trials_wait_for_a_slot(db: Database, spec_factory) -> None:
    # A worker that leaves when its claim comes back empty (exit_when_idle) must not take
    # "every slot is taken" for "the queue is empty".
    study_id = make_study(
        db,
        spec_factory(
            strategy={"type": "random", "trials": 2}, execution={"max_parallel": 1, "seed": 1}
        ),
    )
    wid = register_worker(db=db, name="w", host="h", pid=1)
    (first,) = claim(db, wid, 5)
    assert claim(db, wid, 5) == [] and trials_waiting(db=db)
    finish_trial(db=db, trial_id=first.trial_id, lease_token=first.lease_token, outcome="completed")
    (second,) = claim(db, wid, 5)
    assert claim(db, wid, 5) == [] and not trials_waiting(db=db)  # the last one runs
    with db.session() as s:  # a study waiting for a person's review holds no slot
        s.execute(update(Trial).where(Trial.id == second.trial_id).values(status="queued"))
        s.execute(update(StudyRow).where(StudyRow.id == study_id).values(awaiting_review=True))
    assert not trials_waiting(db=db)


def test_a_panda_study_never_runs_two_trials(db: Database, spec_factory) -> None:
    make_study(db, spec_factory(execution={"mode": "panda", "max_parallel": 8, "seed": 1}))
    wid = register_worker(db=db, name="w", host="h", pid=1)
    assert len(claim(db, wid, 8)) == 1
    assert claim(db, wid, 8) == []


def test_claims_are_fair_across_studies(db: Database, spec_factory) -> None:
    a = make_study(db, spec_factory(name="a"))
    b = make_study(db, spec_factory(name="b"))
    wid = register_worker(db=db, name="w", host="h", pid=1)
    order = [claim(db, wid)[0].study_id for _ in range(4)]
    assert order == [a, b, a, b]


def test_an_expired_lease_is_requeued_as_a_new_attempt_then_fails(
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


def test_the_reaper_finds_running_trials_by_index_among_many(db: Database, spec_factory) -> None:
    # Its query reads the leases of the running trials alone, found through an index on
    # status; with no index on the lease (heartbeats would write it), it must not scan.
    make_study(db, spec_factory(strategy={"type": "random", "trials": 3000}))
    wid = register_worker(db=db, name="w", host="h", pid=1)
    for c in claim(db, wid, 2):
        expire(db, c.trial_id)
    with db.session() as s:
        s.execute(
            update(Trial)
            .where(Trial.status == TrialStatus.queued)
            .values(status=TrialStatus.completed, value=0.5)
        )
    with db.engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
        statement = EXPIRED.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        prefix = "EXPLAIN QUERY PLAN" if conn.dialect.name == "sqlite" else "EXPLAIN"
        plan = " | ".join(str(r[-1]) for r in conn.execute(text(f"{prefix} {statement}")))
    assert "SCAN trials" not in plan and "Seq Scan on trials" not in plan, plan
    # by status (PostgreSQL), or study by study and status (SQLite: studies are few)
    assert "ix_trials_status_study" in plan or "ix_trials_study_status" in plan, plan
    assert reap_expired(db=db) == 2


def test_release_hands_back_without_counting_a_retry(db: Database, spec_factory) -> None:
    make_study(db, spec_factory(strategy={"type": "random", "trials": 1}))
    wid = register_worker(db=db, name="w", host="h", pid=1)
    first = claim(db, wid)[0]
    release_trial(db=db, trial_id=first.trial_id, lease_token=first.lease_token)
    with db.session(write=False) as s:
        trial = s.scalars(select(Trial)).one()
        assert (trial.status, trial.retries) == (TrialStatus.queued, 0)


def test_two_reapers_at_once_move_a_stale_trial_once(db: Database, spec_factory) -> None:
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


def test_concurrent_claims_never_hand_a_trial_out_twice(db: Database, spec_factory) -> None:
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


def test_a_batch_of_results_is_judged_per_trial(db: Database, spec_factory) -> None:
    """One set-based finish: each result stands or falls by its own lease, once."""
    make_study(db, spec_factory(strategy={"type": "random", "trials": 5}))
    wid = register_worker(db=db, name="w", host="h", pid=1)
    t = claim(db, wid, 5)

    def result(c: Any, outcome: str, *, token: str | None = None, **more: Any) -> dict[str, Any]:
        return {
            "trial_id": c.trial_id,
            "lease_token": token or c.lease_token,
            "outcome": outcome,
            **more,
        }

    curve = [{"epoch": 1, "dev_accuracy": 0.25}, {"epoch": 2, "dev_accuracy": 0.75}]
    answers = finish_trials(
        db=db,
        results=[
            result(t[0], "completed", epochs=curve),
            result(t[1], "completed", token="stale", epochs=curve),
            result(t[2], "failed", error="ValueError: boom"),
            result(t[0], "completed", epochs=curve),  # sent twice: the second is refused
            {"trial_id": 10**9, "lease_token": "x", "outcome": "completed"},
            result(t[3], "diverged", epochs=curve[:1]),
        ],
    )
    assert [a["status"] for a in answers] == ["completed", None, "failed", None, None, "failed"]
    assert "lease" in answers[1]["error"] and "lease" in answers[3]["error"]
    assert "does not exist" in answers[4]["error"]
    with db.session(write=False) as s:
        trials = {tr.id: tr for tr in s.scalars(select(Trial))}
        metrics = s.execute(select(Metric.trial_id, Metric.attempt, Metric.epoch)).all()
        worker = s.get(WorkerRow, wid)
        finished = s.scalars(select(Event).where(Event.type == "trial.finished")).all()
    assert trials[t[0].trial_id].value == 0.75 and trials[t[0].trial_id].epochs_done == 2
    assert trials[t[0].trial_id].lease_token is None
    # the refused result changed nothing: the trial still runs under its lease
    stale = trials[t[1].trial_id]
    assert (stale.status, stale.lease_token) == (TrialStatus.running, t[1].lease_token)
    assert trials[t[2].trial_id].error == "ValueError: boom"
    assert trials[t[3].trial_id].status == TrialStatus.failed
    assert "diverged after 1 epochs" in (trials[t[3].trial_id].error or "")
    assert trials[t[3].trial_id].value is None
    assert sorted(metrics) == sorted(
        [(t[0].trial_id, 1, 1), (t[0].trial_id, 1, 2), (t[3].trial_id, 1, 1)]
    )
    assert worker is not None and worker.trials_done == 3
    assert sorted(e.trial_id or 0 for e in finished) == sorted(
        c.trial_id for c in (t[0], t[2], t[3])
    )
    assert {e.data["value"] for e in finished if e.trial_id == t[0].trial_id} == {0.75}
    # the rest still finish normally
    answers = finish_trials(db=db, results=[result(t[1], "completed"), result(t[4], "completed")])
    assert [a["status"] for a in answers] == ["completed", "completed"]
    assert get_study(db=db, study_id=t[0].study_id)["status"] == "completed"


def test_a_batch_that_closes_a_round_opens_the_next_once(db: Database, spec_factory) -> None:
    study_id = make_study(
        db,
        spec_factory(
            strategy={"type": "coarse_to_fine", "rounds": 2, "trials_per_round": 3},
            execution={"max_parallel": 8, "seed": 5},
        ),
    )
    wid = register_worker(db=db, name="w", host="h", pid=1)
    for _ in range(2):
        batch = claim(db, wid, 8)
        assert len(batch) == 3
        answers = finish_trials(
            db=db,
            results=[
                {
                    "trial_id": c.trial_id,
                    "lease_token": c.lease_token,
                    "outcome": "completed",
                    "epochs": [{"epoch": 1, "dev_accuracy": 0.1 * i}],
                }
                for i, c in enumerate(batch)
            ],
        )
        assert all(a["status"] == "completed" for a in answers)
        plan_due_rounds(db=db)  # the planner's pass, which the service runs on its own thread
    with db.session(write=False) as s:
        created = s.scalars(select(Event).where(Event.type == "round.created")).all()
        rounds = [e.data["index"] for e in created]
        ended = s.scalars(select(Event.type).where(Event.type == "study.finished")).all()
        count = s.scalar(select(func.count()).select_from(Trial))
    assert (rounds, len(ended), count) == ([0, 1], 1, 6)  # round 1 opened exactly once
    assert get_study(db=db, study_id=study_id)["status"] == "completed"


def _finish_taking(db: Database, trial: Any, seconds: float) -> None:
    """Report `trial` completed after `seconds` of running (its study's pace learns it)."""
    finish_trials(
        db=db,
        results=[
            {
                "trial_id": trial.trial_id,
                "lease_token": trial.lease_token,
                "outcome": "completed",
                "epochs": [{"epoch": 1, "dev_accuracy": 0.5}],
                "seconds": seconds,
            }
        ],
    )


def test_two_long_trials_of_a_study_go_to_two_idle_workers(db: Database, spec_factory) -> None:
    # The case: after a study of short trials, a worker leased both trials of a
    # study of two 60 s trials (from its own average, of another study's trials) while
    # the other worker sat idle. Leases are sized from each study's own durations: one
    # whose trials' length is not known yet, or is long, is leased a trial at a time.
    make_study(db, spec_factory(name="short", strategy={"type": "random", "trials": 40}))
    busy = register_worker(db=db, name="busy", host="h", pid=1)
    sizes = []
    while lease := claim_trials(
        db=db, worker_id=busy, max_trials=16, lease_seconds=LEASE, target_seconds=0.25
    ):
        sizes.append(len(lease))
        for trial in lease:
            _finish_taking(db, trial, 0.01)
    assert sizes[:2] == [1, 8]  # one to learn the pace, then all of max_parallel
    long = make_study(db, spec_factory(name="long", strategy={"type": "random", "trials": 3}))
    idle = register_worker(db=db, name="idle", host="h", pid=2)
    sized: dict[str, Any] = {"max_trials": 16, "lease_seconds": LEASE, "target_seconds": 0.25}
    first = claim_trials(db=db, worker_id=busy, **sized)
    # fair turns: the long study's first trial, then what fits behind it (nothing)
    assert [t.study_id for t in first] == [long]
    second = claim_trials(db=db, worker_id=idle, **sized)
    assert [t.study_id for t in second] == [long]  # the other long trial, for the idle one
    _finish_taking(db, first[0], 60.0)  # now the long study's trials are known to be long
    for trial in second:
        _finish_taking(db, trial, 60.0 if trial.study_id == long else 0.01)
    third = claim_trials(db=db, worker_id=idle, **sized)
    longs = [t for t in third if t.study_id == long]
    assert len(longs) <= 1 and (not longs or third[-1].study_id == long)
    assert all(t.expected_seconds == 60.0 for t in longs)


def test_no_trial_is_leased_behind_one_longer_than_the_target(db: Database, spec_factory) -> None:
    short = make_study(db, spec_factory(name="short", strategy={"type": "random", "trials": 30}))
    long = make_study(db, spec_factory(name="long", strategy={"type": "random", "trials": 30}))
    wid = register_worker(db=db, name="w", host="h", pid=1)
    sized: dict[str, Any] = {"max_trials": 64, "lease_seconds": LEASE, "target_seconds": 0.25}
    warm = claim_trials(db=db, worker_id=wid, **sized)  # a trial of each: not known yet
    assert sorted(t.study_id for t in warm) == [short] or [t.study_id for t in warm] == [long]
    for trial in warm:
        _finish_taking(db, trial, 0.02 if trial.study_id == short else 5.0)
    for _ in range(6):
        lease = claim_trials(db=db, worker_id=wid, **sized)
        assert lease
        ahead = 0.0
        for trial in lease:
            # every trial waits at most the target behind the ones before it
            assert ahead <= 0.25, [(t.study_id, t.expected_seconds) for t in lease]
            ahead += trial.expected_seconds if trial.expected_seconds is not None else 1e9
        for trial in lease:
            _finish_taking(db, trial, 0.02 if trial.study_id == short else 5.0)
    # a worker still busy for longer than the target gets nothing to queue behind it
    assert claim_trials(db=db, worker_id=wid, busy_seconds=0.3, **sized) == []
    # and one that does not size its leases gets what it asks for, as before
    assert len(claim_trials(db=db, worker_id=wid, max_trials=3, lease_seconds=LEASE)) == 3


def test_the_last_trials_of_a_queue_are_shared_out_between_workers(
    db: Database, spec_factory
) -> None:
    # Short trials share a lease, but the first worker to claim the end of a queue does
    # not take it whole while the other goes idle: at most half of what is left.
    make_study(
        db,
        spec_factory(
            strategy={"type": "random", "trials": 11}, execution={"max_parallel": 64, "seed": 1}
        ),
    )
    a = register_worker(db=db, name="a", host="h", pid=1)
    b = register_worker(db=db, name="b", host="h", pid=2)
    sized: dict[str, Any] = {"max_trials": 64, "lease_seconds": LEASE, "target_seconds": 0.5}
    [warm] = claim_trials(db=db, worker_id=a, **sized)  # one to learn the pace
    _finish_taking(db, warm, 0.001)
    first = claim_trials(db=db, worker_id=a, **sized)
    second = claim_trials(db=db, worker_id=b, **sized)
    third = claim_trials(db=db, worker_id=a, **sized)
    assert [len(first), len(second), len(third)] == [5, 3, 1]
    # and a single trial left is leased, as ever
    assert len(claim_trials(db=db, worker_id=b, **sized)) == 1
    assert claim_trials(db=db, worker_id=a, **sized) == []


def test_a_handed_back_trial_resumes_from_its_latest_checkpoint(db: Database, spec_factory) -> None:
    # A worker that stops stores the running trial's checkpoint, then hands it back: the
    # next attempt starts there (it restarted from epoch 1).
    make_study(
        db,
        spec_factory(
            strategy={"type": "random", "trials": 1}, model={"hidden_layers": [2], "epochs": 8}
        ),
    )
    wid = register_worker(db=db, name="w", host="h", pid=1)
    (trial,) = claim(db, wid)
    with db.session() as s:  # epochs 1-3 were reported
        s.add_all(
            Metric(trial_id=trial.trial_id, attempt=1, epoch=e, dev_accuracy=0.5) for e in (1, 2, 3)
        )
    store_checkpoint(
        db=db,
        trial_id=trial.trial_id,
        lease_token=trial.lease_token,
        epoch=3,
        content=checkpoint_bytes(3),
    )
    release_trial(db=db, trial_id=trial.trial_id, lease_token=trial.lease_token)
    (again,) = claim(db, wid)
    assert again.attempt == 2 and again.resume is not None and again.resume["epoch"] == 3
    with db.session(write=False) as s:
        carried = s.scalars(
            select(Metric.epoch).where(Metric.trial_id == trial.trial_id, Metric.attempt == 2)
        ).all()
        released = s.scalars(select(Event.data).where(Event.type == "trial.released")).all()
    assert sorted(carried) == [1, 2, 3] and released == [{"from_epoch": 3}]


def test_epochs_sent_again_are_stored_once_with_their_named_metrics(
    db: Database, spec_factory
) -> None:
    """A worker whose answer was lost sends the same epochs again, alone and then inside
    its result: each epoch stays one row, with what it first reported. PostgreSQL copies a
    batch straight into metrics and, when some of it is stored already, through a table
    that skips those rows."""
    make_study(db, spec_factory(strategy={"type": "random", "trials": 1}))
    wid = register_worker(db=db, name="w", host="h", pid=1)
    (t,) = claim(db, wid)
    first = {"epoch": [1, 2], "dev_accuracy": [0.25, 0.5], "extra": {"f1": [0.1, None]}}
    for _ in range(2):
        report_metrics(
            db=db,
            trial_id=t.trial_id,
            lease_token=t.lease_token,
            epochs=[],
            curve=first,
            lease_seconds=LEASE,
        )
    again = {"epoch": [2, 3], "dev_accuracy": [0.9, 0.75], "extra": {"f1": [0.9, 0.3]}}
    (answer,) = finish_trials(
        db=db,
        results=[
            {
                "trial_id": t.trial_id,
                "lease_token": t.lease_token,
                "outcome": "completed",
                "curve": again,
            }
        ],
    )
    assert answer["status"] == "completed"
    with db.session(write=False) as s:
        rows = s.execute(
            select(Metric.epoch, Metric.dev_accuracy, Metric.extra).order_by(Metric.epoch)
        ).all()
        value = s.scalar(select(Trial.value).where(Trial.id == t.trial_id))
    assert [tuple(r) for r in rows] == [
        (1, 0.25, {"f1": 0.1}),
        (2, 0.5, None),
        (3, 0.75, {"f1": 0.3}),
    ]
    assert value == 0.75

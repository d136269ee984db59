"""A worker's leases: a batch is sized from its study's observed durations, and every lease
it holds, started or still waiting in its batch, is kept alive by its heartbeats."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select

from service.db import get_database
from service.models import Event, Trial, TrialStatus
from tests.conftest import small_spec
from tests.integration.waiting import wait_until
from worker import policy
from worker.runner import Worker


@dataclass
class _Done:
    status: str = "completed"


def test_trials_waiting_in_a_batch_keep_their_leases(
    db_url, live_service, spec_factory, monkeypatch
) -> None:
    # Leases much shorter than a batch: the last trial of a batch of 4 waits three
    # trials (about 2.4 s) for its turn, longer than the 1.5 s lease, and must not be
    # reclaimed, because the heartbeat thread extends every lease the worker holds.
    svc = live_service(db_url, lease_seconds=1.5, heartbeat_seconds=0.2, reap_interval_seconds=0.1)
    monkeypatch.setattr(policy, "LEASE_TARGET_SECONDS", 10.0)
    stop = threading.Event()

    def slow_train(config: Any, dataset: Any, *, on_epoch: Any = None, **_: Any) -> _Done:
        stop.wait(0.8)
        on_epoch({"epoch": 1, "dev_accuracy": 0.5})
        return _Done()

    api = httpx.Client(base_url=svc.url, timeout=30)
    # 9: after the first, a lease takes at most half of what is queued (4 of 8)
    spec = spec_factory(strategy={"type": "random", "trials": 9})
    study_id = api.post("/api/studies", json=spec).json()["id"]
    worker = Worker(svc.url, exit_when_idle=True, claim_batch=4, train_fn=slow_train)
    sizes: list[int] = []
    claim = worker._claim

    def counted(want: int, *args: Any) -> Any:
        answer, runs = claim(want, *args)
        if want:
            sizes.append(len(runs))
        return answer, runs

    monkeypatch.setattr(worker, "_claim", counted)
    assert worker.run() == 9
    assert sizes[:2] == [1, 4]  # one to judge, then as many as fit (capped)
    study = api.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "completed" and study["counts"]["completed"] == 9
    db = get_database(db_url)
    with db.session(write=False) as s:
        attempts = s.execute(select(Trial.attempt, Trial.retries, Trial.status)).all()
        requeued = s.scalars(select(Event.id).where(Event.type == "trial.requeued")).all()
    assert requeued == []
    assert set(attempts) == {(1, 0, TrialStatus.completed)}


def test_a_worker_winding_down_lets_its_heartbeats_end_before_closing_their_client(
    sqlite_url, live_service, spec_factory, monkeypatch
) -> None:
    # A round of heartbeats can be under way when the last trial ends: the worker closed
    # the heartbeats' client under it, and the thread died with a traceback.
    svc = live_service(sqlite_url, heartbeat_seconds=0.1)
    crashed: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))

    def train(config: Any, dataset: Any, *, on_epoch: Any = None, **_: Any) -> _Done:
        time.sleep(0.25)
        on_epoch({"epoch": 1, "dev_accuracy": 0.5})
        return _Done()

    httpx.post(
        f"{svc.url}/api/studies", json=spec_factory(strategy={"type": "random", "trials": 3})
    )
    worker = Worker(svc.url, exit_when_idle=True, claim_batch=1, train_fn=train)
    post = worker.hb_client.post
    beats: list[float] = []

    def slow_beat(path: str, body: dict[str, Any]) -> Any:
        time.sleep(0.4)  # the trial ends and the worker winds down meanwhile
        beats.append(time.monotonic())
        return post(path, body)

    monkeypatch.setattr(worker.hb_client, "post", slow_beat)
    assert worker.run() == 3
    assert beats  # a beat was under way as it wound down
    assert crashed == []


def _queue(
    url: str, trials: int, *, epochs: int | None = None, execution: dict[str, Any] | None = None
) -> int:
    """Create a random study of `trials` tiny trials (`epochs` each, on a [4] network)."""
    spec = small_spec(strategy={"type": "random", "trials": trials})
    if epochs is not None:
        spec["model"] = {"hidden_layers": [4], "epochs": epochs}
    if execution is not None:
        spec["execution"] = execution
    answer = httpx.post(f"{url}/api/studies", json=spec, timeout=30)
    answer.raise_for_status()
    return int(answer.json()["id"])


def _statuses(db_url: str) -> list[str]:
    with get_database(db_url).session(write=False) as s:
        return [str(v) for v in s.scalars(select(Trial.status).order_by(Trial.id))]


def test_the_next_claim_goes_out_while_the_last_trial_trains(
    db_url, live_service, monkeypatch
) -> None:
    # A process should not wait on the service between trials: near the end of its last
    # leased trial it claims the next one, but not so early that the trial sits leased
    # while another process could run it. (Trials longer than FINISH_DELAY_SECONDS claim
    # when they end, with their result: here they count as short.)
    monkeypatch.setattr(policy, "FINISH_DELAY_SECONDS", 10.0)
    svc = live_service(db_url)
    study_id = _queue(svc.url, 2, epochs=20)
    seen: dict[str, list[str]] = {}

    def train_fn(config: Any, dataset: Any, *, on_epoch: Any = None, **_: Any) -> _Done:
        first = not seen
        for epoch in range(1, 21):  # 1.6 s: more than the longest lead (1 s) after epoch 1
            time.sleep(0.08)
            on_epoch({"epoch": epoch, "dev_accuracy": 0.5})
            if first and epoch == 1:
                seen["epoch 1"] = _statuses(db_url)
        if first:  # the last epoch is done, the trial not yet: the next one is leased now
            seen["end"] = wait_until(
                lambda: (s := _statuses(db_url)) == ["running", "running"] and s,
                timeout=10,
                what="the second trial leased while the first still trains",
            )
        return _Done()

    worker = Worker(svc.url, exit_when_idle=True, claim_batch=1, train_fn=train_fn)
    assert worker.run() == 2
    assert seen["epoch 1"] == ["running", "queued"]  # not leased at the start
    assert seen["end"] == ["running", "running"]
    study = httpx.get(f"{svc.url}/api/studies/{study_id}", timeout=30).json()
    assert study["counts"]["completed"] == 2


def test_an_idle_worker_stays_while_trials_wait_for_a_slot(db_url, live_service) -> None:
    # max_parallel 1: while one worker runs a trial, another's claim comes back empty
    # with trials still queued. A worker told to leave when idle must wait, not leave.
    svc = live_service(db_url)
    study_id = _queue(svc.url, 3, execution={"max_parallel": 1, "seed": 2})

    def slow(config: Any, dataset: Any, *, on_epoch: Any = None, **_: Any) -> _Done:
        time.sleep(0.4)
        on_epoch({"epoch": 1, "dev_accuracy": 0.5})
        return _Done()

    first = Worker(svc.url, exit_when_idle=True, claim_batch=1, train_fn=slow)
    thread = threading.Thread(target=first.run)
    thread.start()
    try:
        wait_until(lambda: "running" in _statuses(db_url), timeout=30, what="a running trial")
        second = Worker(svc.url, exit_when_idle=True, claim_batch=1, train_fn=slow)
        second.run()
        assert "queued" not in _statuses(db_url)  # it left only once the queue was empty
    finally:
        thread.join(timeout=60)
    assert not thread.is_alive()
    study = httpx.get(f"{svc.url}/api/studies/{study_id}", timeout=30).json()
    assert study["counts"]["completed"] == 3
    assert first.trials_done + second.trials_done == 3


def test_a_result_does_not_wait_for_a_long_trial_behind_it(db_url, live_service) -> None:
    # A short trial's result rides with the next claim when that comes soon; when the
    # next trial runs long, the result goes on its own within about FINISH_DELAY_SECONDS
    # (1 s) of its trial's start, not when the long trial ends.
    svc = live_service(db_url)
    _queue(svc.url, 2, epochs=40)
    calls: list[int] = []
    reported_at: list[int] = []

    def train_fn(config: Any, dataset: Any, *, on_epoch: Any = None, **_: Any) -> _Done:
        calls.append(1)
        if len(calls) == 1:  # short: the second is already leased when it ends
            time.sleep(0.2)
            for epoch in range(1, 41):
                on_epoch({"epoch": epoch, "dev_accuracy": 0.5})
            return _Done()
        for epoch in range(1, 41):  # 4 s
            time.sleep(0.1)
            on_epoch({"epoch": epoch, "dev_accuracy": 0.5})
            if not reported_at and _statuses(db_url)[0] == "completed":
                reported_at.append(epoch)
        return _Done()

    worker = Worker(svc.url, exit_when_idle=True, claim_batch=1, train_fn=train_fn)
    assert worker.run() == 2
    assert reported_at and reported_at[0] <= 25, reported_at  # about epoch 8 (of 40)


def test_a_long_trial_claims_when_it_ends_with_its_result(
    db_url, live_service, monkeypatch
) -> None:
    # Longer than FINISH_DELAY_SECONDS: an early claim would leave the result a request
    # of its own; one claim at the end carries it, and a round trip is little next to it.
    svc = live_service(db_url)
    _queue(svc.url, 2, epochs=15)
    leased_early: list[bool] = []

    def train_fn(config: Any, dataset: Any, *, on_epoch: Any = None, **_: Any) -> _Done:
        for epoch in range(1, 16):  # 1.5 s
            time.sleep(0.1)
            on_epoch({"epoch": epoch, "dev_accuracy": 0.5})
        if not leased_early:
            time.sleep(0.5)  # an early claim would have been answered by now
            leased_early.append(_statuses(db_url) == ["running", "running"])
        return _Done()

    sent: list[int] = []  # results carried by each claim
    worker = Worker(svc.url, exit_when_idle=True, claim_batch=1, train_fn=train_fn)
    claim = worker._claim

    def counted(want: int, finished: list[dict[str, Any]], *args: Any) -> Any:
        sent.append(len(finished))
        return claim(want, finished, *args)

    monkeypatch.setattr(worker, "_claim", counted)
    assert worker.run() == 2
    assert leased_early == [False]
    # The first claim, then one per trial carrying its result (the last finds the queue
    # empty): no claim without a result but the first, no result without a claim.
    assert sent == [0, 1, 1], sent


def test_a_trial_leased_early_goes_back_when_the_worker_stops(
    db_url, live_service, monkeypatch
) -> None:
    # SIGTERM while the next trial is already leased (not started): it goes back to the
    # queue without counting a retry, and the finished one is still reported.
    monkeypatch.setattr(policy, "FINISH_DELAY_SECONDS", 10.0)  # short trials: claim early
    svc = live_service(db_url)
    _queue(svc.url, 3, epochs=10)
    worker = Worker(svc.url, claim_batch=1)

    def train_fn(config: Any, dataset: Any, *, on_epoch: Any = None, **_: Any) -> _Done:
        for epoch in range(1, 11):
            time.sleep(0.05)
            on_epoch({"epoch": epoch, "dev_accuracy": 0.5})
        wait_until(
            lambda: _statuses(db_url)[:2] == ["running", "running"],
            timeout=10,
            what="the next trial leased early",
        )
        worker.shutdown.set()  # as SIGTERM does
        return _Done()

    worker.train_fn = train_fn
    assert worker.run() == 1
    with get_database(db_url).session(write=False) as s:
        rows = s.execute(select(Trial.status, Trial.retries).order_by(Trial.id)).all()
    assert [(str(st), r) for st, r in rows] == [("completed", 0), ("queued", 0), ("queued", 0)]

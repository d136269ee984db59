"""Coarse-to-fine rounds are planned by the planner thread, once, off every request path."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from service.app import create_app
from service.db import Database
from service.models import Event, Round, Trial, TrialStatus
from service.queue import claim_trials, finish_trials, register_worker, trials_waiting
from service.settings import Settings
from service.studies import create_study, get_study
from service.studies import rounds as rounds_module
from service.studies.rounds import Planner, due_studies, open_next_round, plan_due_rounds

TWO_ROUNDS = {"type": "coarse_to_fine", "rounds": 2, "trials_per_round": 3}


def make_study(db: Database, spec_factory: Callable[..., dict[str, Any]], seed: int = 5) -> int:
    spec = spec_factory(strategy=TWO_ROUNDS, execution={"max_parallel": 8, "seed": seed})
    return create_study(db=db, data=spec, settings=Settings(database_url=db.url))


def result(claimed: Any, value: float) -> dict[str, Any]:
    return {
        "trial_id": claimed.trial_id,
        "lease_token": claimed.lease_token,
        "outcome": "completed",
        "epochs": [{"epoch": 1, "dev_accuracy": value}],
    }


def finish_round(db: Database, study_id: int) -> None:
    """Claim and complete every queued trial of the study, values by trial number."""
    wid = register_worker(db=db, name="w", host="h", pid=1)
    batch = claim_trials(db=db, worker_id=wid, max_trials=8, lease_seconds=30.0)
    assert batch and all(c.study_id == study_id for c in batch)
    answers = finish_trials(db=db, results=[result(c, 0.1 * (c.number + 1)) for c in batch])
    assert all(a["status"] == "completed" for a in answers)


def round_trials(db: Database, study_id: int, index: int) -> list[dict[str, Any]]:
    with db.session(write=False) as s:
        return list(
            s.scalars(
                select(Trial.params)
                .where(Trial.study_id == study_id, Trial.round_index == index)
                .order_by(Trial.number)
            )
        )


def round_events(db: Database, study_id: int) -> list[int]:
    with db.session(write=False) as s:
        events = s.scalars(
            select(Event).where(Event.study_id == study_id, Event.type == "round.created")
        ).all()
        return [e.data["index"] for e in events]


def test_a_rounds_trials_appear_once_the_planner_runs(db: Database, spec_factory) -> None:
    study_id = make_study(db, spec_factory)
    finish_round(db, study_id)
    # The finish left the round due and planned nothing; an idle worker is told to wait.
    assert round_trials(db, study_id, 1) == [] and round_events(db, study_id) == [0]
    assert get_study(db=db, study_id=study_id)["status"] == "running"
    assert due_studies(db=db) == [study_id] and trials_waiting(db=db)
    assert plan_due_rounds(db=db) == 1
    assert len(round_trials(db, study_id, 1)) == 3 and round_events(db, study_id) == [0, 1]
    with db.session(write=False) as s:
        assert s.scalars(select(Round.index).where(Round.study_id == study_id)).all() == [0, 1]
    assert due_studies(db=db) == [] and plan_due_rounds(db=db) == 0
    finish_round(db, study_id)
    assert get_study(db=db, study_id=study_id)["status"] == "completed"


def test_two_planners_racing_create_the_round_once(db: Database, spec_factory, monkeypatch) -> None:
    study_id = make_study(db, spec_factory)
    finish_round(db, study_id)
    both_planned = threading.Barrier(2, timeout=30)
    plan = rounds_module.plan_round

    def plan_then_meet(*args: Any, **kwargs: Any) -> Any:
        planned = plan(*args, **kwargs)
        both_planned.wait()  # neither writes before both have planned from the same state
        return planned

    monkeypatch.setattr(rounds_module, "plan_round", plan_then_meet)
    opened: list[bool] = []
    threads = [
        threading.Thread(target=lambda: opened.append(open_next_round(db=db, study_id=study_id)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(opened) == [False, True]
    assert len(round_trials(db, study_id, 1)) == 3 and round_events(db, study_id) == [0, 1]
    with db.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(Round)) == 2
        numbers = s.scalars(select(Trial.number).where(Trial.study_id == study_id)).all()
    assert sorted(numbers) == list(range(6))


def test_the_same_history_plans_the_same_round(db: Database, spec_factory) -> None:
    a = make_study(db, spec_factory)
    finish_round(db, a)
    b = make_study(db, spec_factory)
    finish_round(db, b)
    assert plan_due_rounds(db=db) == 2
    assert round_trials(db, a, 0) == round_trials(db, b, 0)
    assert round_trials(db, a, 1) == round_trials(db, b, 1)


def test_a_retried_trial_since_the_plan_voids_it(db: Database, spec_factory, monkeypatch) -> None:
    study_id = make_study(db, spec_factory)
    finish_round(db, study_id)
    plan = rounds_module.plan_round

    def plan_while_a_trial_is_requeued(*args: Any, **kwargs: Any) -> Any:
        with db.session() as s:  # as retry_failed would, between the plan and its writing
            s.execute(
                update(Trial)
                .where(Trial.study_id == study_id, Trial.number == 0)
                .values(status=TrialStatus.queued)
            )
        return plan(*args, **kwargs)

    monkeypatch.setattr(rounds_module, "plan_round", plan_while_a_trial_is_requeued)
    assert open_next_round(db=db, study_id=study_id) is False
    assert round_trials(db, study_id, 1) == [] and round_events(db, study_id) == [0]


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_planner_thread_opens_a_round_left_due(db: Database, spec_factory) -> None:
    # Left due by a process that died before planning: a new planner's first pass opens it.
    study_id = make_study(db, spec_factory)
    finish_round(db, study_id)
    planner = Planner(db, interval=60.0)
    planner.start()
    try:
        wait_until(lambda: len(round_trials(db, study_id, 1)) == 3)
    finally:
        planner.close()
    assert not planner.thread.is_alive()


def test_a_claim_request_never_plans_the_round(
    db_url, settings_for, spec_factory, monkeypatch
) -> None:
    plan = rounds_module.plan_round
    planned_on: list[str] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        planned_on.append(threading.current_thread().name)
        return plan(*args, **kwargs)

    monkeypatch.setattr(rounds_module, "plan_round", recording)
    # A long scan interval: only the finish's wake-up can bring the round this soon.
    with TestClient(create_app(settings_for(db_url, reap_interval_seconds=60.0))) as client:
        study_id = client.post("/api/studies", json=spec_factory(strategy=TWO_ROUNDS)).json()["id"]
        wid = client.post("/api/worker/register", json={"name": "t", "host": "h"}).json()
        claimed = client.post(
            "/api/worker/claim", json={"worker_id": wid["worker_id"], "max_trials": 8}
        ).json()["trials"]
        finished = [
            {
                "trial_id": t["trial_id"],
                "lease_token": t["lease_token"],
                "outcome": "completed",
                "epochs": [{"epoch": 1, "dev_accuracy": 0.2 * i}],
            }
            for i, t in enumerate(claimed)
        ]
        r = client.post(
            "/api/worker/claim",
            json={"worker_id": wid["worker_id"], "max_trials": 8, "finished": finished},
        )
        assert r.status_code == 200, r.text
        wait_until(lambda: client.get(f"/api/studies/{study_id}").json()["rounds"]["current"] == 1)
        assert planned_on == ["caviar-planner"]
        again = client.post(
            "/api/worker/claim", json={"worker_id": wid["worker_id"], "max_trials": 8}
        ).json()["trials"]
        assert len(again) == 3


def test_caviar_runs_embedded_service_plans_rounds(sqlite_url, settings_for, spec_factory) -> None:
    # `caviar run` has no server of its own but the embedded one: its planner opens rounds.
    from service.cli.local import Embedded
    from service.db import get_database

    settings = settings_for(sqlite_url, reap_interval_seconds=60.0)
    db = get_database(sqlite_url)
    study_id = make_study(db, spec_factory)
    embedded = Embedded(settings, host="127.0.0.1", port=_free_port(), workers=0)
    try:
        finish_round(db, study_id)
        wait_until(lambda: len(round_trials(db, study_id, 1)) == 3)
    finally:
        embedded.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

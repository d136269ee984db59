"""What a worker offers decides what it leases: the same on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.app import create_app
from service.cli.display import shown_status
from service.db import Database
from service.models import Study, Trial, TrialStatus
from service.queue import Offers, claim_and_report, claim_trials, register_worker, trials_waiting
from service.settings import Settings
from service.studies import create_study
from service.studies.workers import list_workers

LEASE = 30.0
DIGITS = "tests.integration.objectives:sgd_digits"


def task_spec(entrypoint: str = DIGITS, trials: int = 3, **more: Any) -> dict[str, Any]:
    return {
        "name": f"task {entrypoint}",
        "task": {"entrypoint": entrypoint, "params": {"epochs": 4}},
        "space": {"alpha": {"type": "float", "low": 1e-5, "high": 1e-2, "scale": "log"}},
        "strategy": {"type": "random", "trials": trials},
        "objective": {"metric": "accuracy", "direction": "maximize"},
        **more,
    }


def make(db: Database, spec: dict[str, Any]) -> int:
    return create_study(db=db, data=spec, settings=Settings(database_url=db.url))


def worker(db: Database, *entrypoints: str, trainer: bool = True) -> str:
    offers = Offers(trainer=trainer, entrypoints=entrypoints)
    return register_worker(db=db, name="w", host="h", pid=1, offers=offers)


def studies_of(claimed: list[Any]) -> set[int]:
    return {c.study_id for c in claimed}


def test_a_worker_without_the_entrypoint_never_leases_its_trials(
    db: Database, spec_factory: Any
) -> None:
    task = make(db, task_spec())
    builtin = make(db, spec_factory())
    plain = worker(db)  # the trainer only, as every worker before tasks
    other = worker(db, "other.pkg:objective", trainer=False)
    for _ in range(3):
        assert studies_of(
            claim_trials(db=db, worker_id=plain, max_trials=64, lease_seconds=LEASE)
        ) <= {builtin}
        assert claim_trials(db=db, worker_id=other, max_trials=64, lease_seconds=LEASE) == []
    # the task's trials still wait, and only a worker offering its function gets them
    offering = worker(db, DIGITS, trainer=False)
    claimed = claim_trials(db=db, worker_id=offering, max_trials=64, lease_seconds=LEASE)
    assert studies_of(claimed) == {task} and len(claimed) == 3
    assert all(c.entrypoint == DIGITS and c.config["epochs"] == 4 for c in claimed)
    assert all(set(c.config) == {"epochs", "alpha"} for c in claimed)


def test_a_worker_offering_both_leases_both(db: Database, spec_factory: Any) -> None:
    task = make(db, task_spec())
    builtin = make(db, spec_factory())
    both = worker(db, DIGITS)
    claimed = claim_trials(db=db, worker_id=both, max_trials=64, lease_seconds=LEASE)
    assert studies_of(claimed) == {task, builtin}
    kinds = {c.study_id: c.entrypoint for c in claimed}
    assert kinds == {task: DIGITS, builtin: None}


def test_a_worker_without_the_trainer_leaves_builtin_trials_alone(
    db: Database, spec_factory: Any
) -> None:
    make(db, spec_factory())
    only_task = worker(db, DIGITS, trainer=False)
    answer = claim_and_report(
        db=db, worker_id=only_task, results=[], max_trials=8, lease_seconds=LEASE
    )
    # nothing it could run waits: a worker leaving when idle may leave
    assert answer.trials == [] and answer.waiting is False
    assert not trials_waiting(db=db, offers=Offers(trainer=False, entrypoints=(DIGITS,)))
    assert trials_waiting(db=db)  # the trainer's trials do wait, for a worker that runs them


def test_a_claim_for_one_study_leases_only_its_trials_and_waits_only_for_it(
    db: Database,
) -> None:
    older = make(db, task_spec(trials=3, name="older"))
    newer = make(db, task_spec(trials=2, name="newer", execution={"max_parallel": 1}))
    program = worker(db, DIGITS, trainer=False)
    # The older study is served first by a plain claim; a claim for the newer one
    # passes it over without leasing (and handing back) any of its trials.
    first = claim_and_report(
        db=db, worker_id=program, results=[], max_trials=8, lease_seconds=LEASE, study_id=newer
    )
    assert studies_of(first.trials) == {newer} and len(first.trials) == 1  # max_parallel 1
    second = claim_and_report(
        db=db, worker_id=program, results=[], max_trials=8, lease_seconds=LEASE, study_id=newer
    )
    # Its other trial waits for the free slot: the answer says so, although the older
    # study's three trials are free to lease.
    assert second.trials == [] and second.waiting is True
    with db.session(write=False) as s:
        attempts = s.scalars(select(Trial.attempt).where(Trial.study_id == older)).all()
    assert attempts == [0, 0, 0]
    plain = claim_trials(db=db, worker_id=program, max_trials=8, lease_seconds=LEASE)
    assert studies_of(plain) == {older} and len(plain) == 3
    assert (
        claim_trials(db=db, worker_id=program, max_trials=8, lease_seconds=LEASE, study_id=older)
        == []
    )


def test_a_task_no_live_worker_offers_stays_queued_and_waiting(db: Database) -> None:
    study = make(db, task_spec(entrypoint="nobody.has:this"))
    plain = worker(db)
    answer = claim_and_report(db=db, worker_id=plain, results=[], max_trials=8, lease_seconds=LEASE)
    assert answer.trials == [] and answer.waiting is False
    offers = Offers(entrypoints=("nobody.has:this",))
    assert trials_waiting(db=db, offers=offers)
    with db.session(write=False) as s:
        row = s.get(Study, study)
        assert row is not None and row.entrypoint == "nobody.has:this"
        statuses = set(s.scalars(select(Trial.status).where(Trial.study_id == study)))
        assert statuses == {TrialStatus.queued}


def test_the_workers_list_says_what_each_offers(db: Database) -> None:
    worker(db)
    worker(db, DIGITS, "b.c:d", trainer=False)
    offered = {
        (w["trainer"], tuple(w["entrypoints"])) for w in list_workers(db=db, lease_seconds=LEASE)
    }
    assert offered == {(True, ()), (False, (DIGITS, "b.c:d"))}


# --- the protocol: what a worker may say it offers -------------------------------------------


@pytest.fixture
def client(sqlite_url: str, settings_for: Any) -> Any:
    with TestClient(create_app(settings_for(sqlite_url, migrate_on_start=False))) as c:
        yield c


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"trainer": False}, "at least one entrypoint"),
        ({"entrypoints": ["mypkg.train"]}, "pattern"),
        ({"entrypoints": ["a:b", "a:b"]}, "at most once"),
        ({"entrypoints": "a:b"}, "list"),
        ({"trainer": "no"}, "boolean"),
    ],
)
def test_a_registration_offering_nothing_or_junk_is_refused(
    client: Any, body: dict[str, Any], words: str
) -> None:
    r = client.post("/api/worker/register", json={"name": "w", **body})
    assert r.status_code == 422, r.text
    assert words in r.text


def test_a_registration_says_what_it_offers_and_the_workers_page_shows_it(client: Any) -> None:
    r = client.post(
        "/api/worker/register", json={"name": "w", "entrypoints": [DIGITS], "trainer": False}
    )
    assert r.status_code == 200, r.text
    (shown,) = client.get("/api/workers").json()
    assert shown["entrypoints"] == [DIGITS] and shown["trainer"] is False


def test_a_study_no_live_worker_offers_says_what_it_waits_for(client: Any) -> None:
    r = client.post("/api/studies", json=task_spec(entrypoint="nobody.has:this"))
    assert r.status_code == 201, r.text
    study_id = r.json()["id"]
    said = "waiting for a worker offering nobody.has:this"
    study = client.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "queued" and study["waiting_for"] == said
    assert shown_status(study) == f"queued, {said}"  # as caviar status shows it
    page = client.get(f"/api/dashboard/studies/{study_id}").json()
    assert page["study"]["waiting_for"] == said
    # a worker that offers it arrives: nothing is said any more
    client.post("/api/worker/register", json={"name": "w", "entrypoints": ["nobody.has:this"]})
    assert client.get(f"/api/studies/{study_id}").json()["waiting_for"] is None
    assert client.get(f"/api/dashboard/studies/{study_id}").json()["study"]["waiting_for"] is None

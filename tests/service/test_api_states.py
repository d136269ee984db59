"""States people read: what retry-failed does, when a study is done, what it waits for."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.cli.display import progress_line, studies_table, study_table
from service.db import get_database
from service.models import Study
from tests.service.test_api_contract import curve


@pytest.fixture
def client(db_url: str, settings_for: Any) -> Any:
    with TestClient(create_app(settings_for(db_url, migrate_on_start=False))) as c:
        yield c


def finish(client: TestClient, finals: list[float | None]) -> None:
    """Claim as many queued trials as `finals` and finish each: a value, or None = failed.
    The others are left queued: they never run."""
    wid = client.post("/api/worker/register", json={"name": "t"}).json()["worker_id"]
    claim = {"worker_id": wid, "max_trials": len(finals)}
    trials = client.post("/api/worker/claim", json=claim).json()["trials"]
    assert len(trials) == len(finals)
    for t, final in zip(trials, finals, strict=True):
        body: dict[str, Any] = {"lease_token": t["lease_token"]}
        if final is None:
            body |= {"outcome": "failed", "error": "boom", "epochs": curve(0.1, 1)}
        else:
            body |= {"outcome": "completed", "epochs": curve(final)}
        r = client.post(f"/api/worker/trials/{t['trial_id']}/finish", json=body)
        assert r.status_code == 200, r.text


def submit(client: TestClient, spec: dict[str, Any]) -> int:
    r = client.post("/api/studies", json=spec)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def test_retry_failed_on_a_cancelled_study_is_409_and_requeues_nothing(
    client: Any, spec_factory: Any
) -> None:
    """Cancelled with 0 failed trials, it re-queued its stopped trials and ran again."""
    study_id = submit(client, spec_factory(strategy={"type": "random", "trials": 6}))
    finish(client, [0.7, 0.6])  # two ran; four never did
    client.post(f"/api/studies/{study_id}/cancel")
    r = client.post(f"/api/studies/{study_id}/retry-failed")
    assert r.status_code == 409, r.text
    assert "cancelled" in r.json()["detail"]
    study = client.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "cancelled" and study["counts"]["queued"] == 0


def test_retry_failed_requeues_failed_trials_only(client: Any, spec_factory: Any) -> None:
    study_id = submit(client, spec_factory(strategy={"type": "random", "trials": 3}))
    items = client.get(f"/api/studies/{study_id}/trials").json()["items"]
    client.post(f"/api/trials/{items[2]['id']}/stop")  # a person stopped it: not a failure
    finish(client, [0.7, None])
    r = client.post(f"/api/studies/{study_id}/retry-failed")
    assert r.status_code == 200, r.text
    counts = r.json()["counts"]
    assert (r.json()["requeued"], counts["queued"], counts["stopped"]) == (1, 1, 1)


def test_a_cancelled_study_counts_as_done_only_the_trials_that_ran(
    client: Any, spec_factory: Any
) -> None:
    """A cancelled study drew a full progress bar: 6 / 6 with 4 trials that never ran."""
    study_id = submit(client, spec_factory(strategy={"type": "random", "trials": 6}))
    finish(client, [0.7, 0.6])
    cancelled = client.post(f"/api/studies/{study_id}/cancel").json()
    read = client.get(f"/api/studies/{study_id}").json()
    listed = client.get("/api/studies").json()["items"][0]
    for study in (cancelled, read, listed):
        assert (study["finished_trials"], study["planned_trials"]) == (2, 6)
    assert progress_line(read).startswith("[cancelled] 2/6 done")


def test_a_panda_study_waiting_for_review_says_so(
    client: Any, spec_factory: Any, db_url: str
) -> None:
    spec = spec_factory(
        strategy={"type": "random", "trials": 2},
        execution={"mode": "panda", "await_review": True},
    )
    study_id = submit(client, spec)
    finish(client, [0.7])
    with get_database(db_url).session() as s:  # as the queue marks it once a trial ends
        study = s.get(Study, study_id)
        assert study is not None and study.awaiting_review
    read = client.get(f"/api/studies/{study_id}").json()
    assert progress_line(read).startswith("[awaiting review]")
    assert "awaiting review" in str(study_table(read).title)
    assert list(studies_table([read]).columns[2].cells) == ["awaiting review"]

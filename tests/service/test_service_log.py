"""The service's log: what happens to studies and trials, at INFO; nothing from a probe."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.db import get_database
from service.studies.journal import log_events
from tests.service.test_api_states import finish


@pytest.fixture
def client(db_url: str, settings_for: Any) -> Any:
    with TestClient(create_app(settings_for(db_url, migrate_on_start=False))) as c:
        yield c


def test_the_log_tells_each_study_and_trial_event_with_its_ids(
    client: Any, spec_factory: Any, db_url: str, caplog: Any
) -> None:
    spec = spec_factory(strategy={"type": "random", "trials": 3})
    study_id = client.post("/api/studies", json=spec).json()["id"]
    finish(client, [0.75, None])  # one completed, one failed
    trials = client.get(f"/api/studies/{study_id}/trials").json()["items"]
    client.post(f"/api/studies/{study_id}/cancel")
    with caplog.at_level(logging.INFO, logger="caviar.service"):
        log_events(get_database(db_url), 0, settle=0.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "caviar.service"]
    done, failed = trials[0], trials[1]
    assert f"study {study_id} created: 'tiny-moons', 3 trials in its first round" in lines
    assert f"study {study_id}: trial id {done['id']} (#0) completed, value 0.75" in lines
    assert f"study {study_id}: trial id {failed['id']} (#1) failed: boom" in lines
    assert f"study {study_id} cancelled" in lines
    assert f"study {study_id} finished: cancelled" in lines
    assert not [line for line in lines if "metrics" in line]


def test_a_round_opening_is_told_once_with_its_study(
    client: Any, spec_factory: Any, db_url: str, caplog: Any
) -> None:
    """The journal's line says which study; the planner, which opens the round first and
    used to log 'planner opened 1 rounds' before the study's own lines, says nothing."""
    spec = spec_factory(strategy={"type": "coarse_to_fine", "rounds": 2, "trials_per_round": 3})
    study_id = client.post("/api/studies", json=spec).json()["id"]
    with caplog.at_level(logging.INFO, logger="caviar.service"):
        finish(client, [0.5, 0.75, 0.6])
        deadline = time.monotonic() + 20
        while client.get(f"/api/studies/{study_id}/trials?round=1").json()["total"] < 3:
            assert time.monotonic() < deadline, "round 2 was not opened"
            time.sleep(0.05)
        log_events(get_database(db_url), 0, settle=0.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "caviar.service"]
    assert [line for line in lines if "round" in line and "opened" in line] == [
        f"study {study_id}: round 1 opened, 3 trials",
        f"study {study_id}: round 2 opened, 3 trials",
    ]


def test_readyz_logs_nothing(client: Any, caplog: Any) -> None:
    """Each probe logged Alembic's two INFO lines (its context and DDL mode)."""
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            assert client.get("/readyz").status_code == 200
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == []

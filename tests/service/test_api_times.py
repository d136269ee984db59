"""Numbers and times as people read them: trial #number and id, rounds from 1, one time format."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import text

from service.app import create_app
from service.cli.actions import trial_line
from service.cli.display import print_result, progress_line, study_table, trials_table
from service.db import get_database
from service.studies import create_study, get_study
from tests.service.test_api_states import finish

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


@pytest.fixture
def client(db_url: str, settings_for: Any) -> Any:
    with TestClient(create_app(settings_for(db_url, migrate_on_start=False))) as c:
        yield c


def times_in(document: Any) -> list[str]:
    """Every value of a key ending in _at, anywhere in `document`."""
    if isinstance(document, dict):
        found = [v for k, v in document.items() if k.endswith("_at") and v is not None]
        return found + [t for v in document.values() for t in times_in(v)]
    if isinstance(document, list):
        return [t for v in document for t in times_in(v)]
    return []


def test_every_time_is_iso_8601_in_utc_with_z_and_to_the_sub_second(
    client: Any, spec_factory: Any, db_url: str
) -> None:
    """Times came as +00:00, Z or with no zone, and SQLite kept them to the second."""
    study_id = client.post("/api/studies", json=spec_factory()).json()["id"]
    finish(client, [0.7])
    trial_id = client.get(f"/api/studies/{study_id}/trials").json()["items"][0]["id"]
    documents = [
        client.get(f"/api/studies/{study_id}").json(),  # rendered directly (orjson)
        client.get("/api/studies").json(),
        client.get(f"/api/studies/{study_id}/trials").json(),
        client.get(f"/api/trials/{trial_id}").json(),  # through its pydantic schema
        client.get(f"/api/studies/{study_id}/trials.json").json(),
        client.get(f"/api/dashboard/studies/{study_id}").json(),
        client.post(f"/api/studies/{study_id}/cancel").json(),
    ]
    for document in documents:
        times = times_in(document)
        assert times and all(ISO_Z.match(t) for t in times), times
    csv_text = client.get(f"/api/studies/{study_id}/trials.csv").text
    assert re.search(r",\d{4}-\d\d-\d\dT[\d:.]+Z,", csv_text), csv_text
    with get_database(db_url).engine.connect() as conn:
        started, finished = conn.execute(
            text("SELECT started_at, finished_at FROM trials WHERE id = :id"), {"id": trial_id}
        ).one()
    for stored in (started, finished):  # text on SQLite, a datetime on PostgreSQL
        assert "." in str(stored) or bool(getattr(stored, "microsecond", 0)), stored


def test_caviar_run_json_writes_times_as_the_api_does(
    sqlite_url: str, settings_for: Any, spec_factory: Any, capsys: Any
) -> None:
    db = get_database(sqlite_url)
    study_id = create_study(db=db, data=spec_factory(), settings=settings_for(sqlite_url))
    with db.session() as s:
        s.execute(text("UPDATE trials SET status = 'completed', value = 0.5"))
    print_result(get_study(db=db, study_id=study_id), as_json=True, console=Console())
    printed = json.loads(capsys.readouterr().out)
    times = times_in(printed)
    assert times and all(ISO_Z.match(t) for t in times), times


def test_trials_say_number_and_id_and_rounds_count_from_1(client: Any, spec_factory: Any) -> None:
    spec = spec_factory(
        strategy={"type": "coarse_to_fine", "rounds": 2, "trials_per_round": 2, "keep_top": 0.5}
    )
    other = client.post("/api/studies", json=spec_factory()).json()["id"]
    client.post(f"/api/studies/{other}/cancel")  # its trials take ids 1 to 4
    study_id = client.post("/api/studies", json=spec).json()["id"]
    finish(client, [0.4, 0.9])
    deadline = time.monotonic() + 20
    while (study := client.get(f"/api/studies/{study_id}").json())["rounds"]["current"] < 1:
        assert time.monotonic() < deadline, "round 2 was not opened"  # opened off the request
        time.sleep(0.05)
    best = study["best_trial"]
    assert best["round"] == 0 and best["id"] != best["number"]  # the API counts from 0
    assert f"(trial #{best['number']}, id {best['id']})" in progress_line(study)
    assert study["rounds"]["current"] == 1 and "round 2/2" in progress_line(study)
    table = study_table(study)
    assert [c.header for c in table.columns][-2:] == ["round", "best"]
    assert list(table.columns[-2].cells) == ["2/2"]
    assert f"trial #{best['number']}, id {best['id']}" in str(list(table.columns[-1].cells))
    page = client.get(f"/api/studies/{study_id}/trials").json()
    rows = trials_table(study_id, page)
    assert {t["round"] for t in page["items"]} == {0, 1}  # the API's, from 0
    assert set(rows.columns[2].cells) == {"1", "2"}  # as people count them
    assert trial_line(best) == (
        f"trial #{best['number']} of study {study_id} (id {best['id']}): completed"
    )

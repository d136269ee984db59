"""The dashboard's aggregate routes: capped samples, exact records, any-column sorting."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.app import create_app
from service.db import get_database
from service.models import Trial
from tests.browser.seed import seed_big_study

TRIALS = 3000


@pytest.fixture
def seeded(db_url: str, settings_for: Any) -> Iterator[tuple[TestClient, int, list[Any]]]:
    study_id = seed_big_study(db_url, trials=TRIALS, curves=12, epochs=30, seed=5)
    with get_database(db_url).session(write=False) as s:
        rows = s.execute(
            select(Trial.id, Trial.number, Trial.value, Trial.params)
            .where(Trial.study_id == study_id)
            .order_by(Trial.number)
        ).all()
    with TestClient(create_app(settings_for(db_url))) as client:
        yield client, study_id, list(rows)


def test_the_overview_samples_at_most_the_cap_and_always_the_best(seeded) -> None:
    client, study_id, rows = seeded
    ov = client.get(f"/api/dashboard/studies/{study_id}", params={"points": 500}).json()
    assert ov["study"]["counts"]["completed"] == TRIALS
    assert ov["planned_trials"] == ov["finished_trials"] == ov["valued_trials"] == TRIALS
    sample = ov["sample"]
    assert 400 <= len(sample["ids"]) <= 500
    best = sorted(rows, key=lambda r: (-r.value, r.number))
    assert ov["best_ids"] == [r.id for r in best[:100]]
    assert {r.id for r in best[:100]} <= set(sample["ids"])
    assert sample["numbers"] == sorted(sample["numbers"])
    # Each column lines up with the trials it samples.
    by_id = {r.id: r for r in rows}
    for i in (0, 17, len(sample["ids"]) - 1):
        trial = by_id[sample["ids"][i]]
        assert sample["numbers"][i] == trial.number
        assert sample["values"][i] == trial.value
        assert sample["params"]["learning_rate"][i] == trial.params["learning_rate"]
    assert set(sample["params"]) == {"learning_rate", "beta1", "hidden_layers.0", "l2", "init"}
    # The stride spreads the rest over every round, not just the first trials.
    assert set(sample["rounds"]) == {0, 1, 2, 3, 4}
    assert len(ov["rounds"]) == 5 and ov["rounds"][0]["box"]["axes"]["learning_rate"]["low"] > 0


def test_the_records_are_exactly_the_trials_that_improved_the_best(seeded) -> None:
    client, study_id, rows = seeded
    expected, best = [], float("-inf")
    for r in rows:
        if r.value > best:
            best = r.value
            expected.append([r.number, r.value])
    ov = client.get(f"/api/dashboard/studies/{study_id}").json()
    assert ov["records"] == expected
    assert ov["records"][-1][1] == ov["study"]["best_trial"]["value"]


def test_curves_of_the_best_trials_are_strided_and_keep_the_last_epoch(seeded) -> None:
    client, study_id, rows = seeded
    curves = client.get(
        f"/api/dashboard/studies/{study_id}/curves", params={"top": 3, "points": 10}
    ).json()
    best = sorted(rows, key=lambda r: (-r.value, r.number))
    assert [c["trial"]["id"] for c in curves] == [r.id for r in best[:3]]
    for c in curves:
        assert c["stride"] == 3
        assert c["epochs"] == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
        assert len(c["metrics"]["dev_accuracy"]) == len(c["epochs"])


@pytest.mark.parametrize(
    ("sort", "key"),
    [
        ("params.learning_rate", lambda r: r.params["learning_rate"]),
        ("-params.beta1", lambda r: -r.params["beta1"]),
        ("value", lambda r: -r.value),  # best first, whatever the direction
        ("-value", lambda r: r.value),
        ("-number", lambda r: -r.number),
    ],
)
def test_the_trials_table_sorts_by_any_column(seeded, sort, key) -> None:
    client, study_id, rows = seeded
    page = client.get(
        f"/api/dashboard/studies/{study_id}/trials",
        params={"sort": sort, "limit": 20, "offset": 40},
    ).json()
    assert page["total"] == TRIALS
    expected = sorted(rows, key=lambda r: (key(r), r.number))[40:60]
    assert [t["id"] for t in page["items"]] == [r.id for r in expected]


def test_the_trials_table_filters_by_round(seeded) -> None:
    client, study_id, _ = seeded
    page = client.get(
        f"/api/dashboard/studies/{study_id}/trials", params={"round": 2, "limit": 5}
    ).json()
    assert page["total"] == TRIALS // 5
    assert {t["round"] for t in page["items"]} == {2}


def test_a_live_trial_page_fetches_only_the_epochs_it_lacks(seeded) -> None:
    client, study_id, _ = seeded
    curves = client.get(f"/api/dashboard/studies/{study_id}/curves", params={"top": 1}).json()
    trial_id = curves[0]["trial"]["id"]
    whole = client.get(f"/api/dashboard/trials/{trial_id}/metrics").json()
    assert whole["attempt"] == 1
    assert [r["epoch"] for r in whole["rows"]] == list(range(1, 31))
    tail = client.get(f"/api/dashboard/trials/{trial_id}/metrics", params={"after": 27}).json()
    assert [r["epoch"] for r in tail["rows"]] == [28, 29, 30]
    assert tail["rows"] == whole["rows"][27:]
    assert client.get(f"/api/trials/{trial_id}/metrics").json() == whole["rows"]


def test_bad_requests_are_problems_not_crashes(seeded) -> None:
    client, study_id, _ = seeded
    r = client.get(f"/api/dashboard/studies/{study_id}/trials", params={"sort": "params.nope"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == "sort"
    r = client.get(f"/api/dashboard/studies/{study_id}/trials", params={"sort": "lease_token"})
    assert r.status_code == 422
    assert client.get("/api/dashboard/studies/999999").status_code == 404
    assert client.get("/api/dashboard/trials/999999/cursor").status_code == 404


def test_plotly_js_is_served_from_the_plotly_package(seeded) -> None:
    client, _, _ = seeded
    r = client.get("/static/vendor/plotly.min.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.headers["content-encoding"] == "gzip"  # httpx asks for it, and inflates it
    assert "plotly.js v" in r.text[:200]
    assert len(r.content) > 1_000_000
    plain = client.get("/static/vendor/plotly.min.js", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == r.content
    again = client.get("/static/vendor/plotly.min.js", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_the_page_cursor_never_passes_an_event_still_being_written(
    postgres_url: str, settings_for, spec_factory
) -> None:
    """PostgreSQL hands out event ids before commit: a later id can commit first. The cursor
    a page follows the stream from must wait for the earlier one, or it skips it for good."""
    from service.dashboard import settled_cursor
    from service.errors import Unavailable
    from service.events import emit, events_after

    with TestClient(create_app(settings_for(postgres_url))) as client:
        study_id = client.post("/api/studies", json=spec_factory()).json()["id"]
        db = get_database(postgres_url)
        with db.session(write=False) as s:
            before = max(e["id"] for e in events_after(s, study_id=study_id, after=0))
        slow = db._write()  # a transaction that takes its id first and commits last
        emit(slow, study_id=study_id, type="trial.stop_requested")
        with db.session() as s:
            emit(s, study_id=study_id, type="trial.stop_requested")
        with db.session(write=False) as s:
            seen = [e["id"] for e in events_after(s, study_id=study_id, after=before)]
        assert len(seen) == 1  # only the later id is visible: max(id) would skip the other
        with pytest.raises(Unavailable):
            settled_cursor(db, study_id, attempts=1)
        r = client.get(f"/api/dashboard/studies/{study_id}")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        slow.commit()
        slow.close()
        cursor = client.get(f"/api/dashboard/studies/{study_id}").json()["last_event_id"]
        with db.session(write=False) as s:
            both = [e["id"] for e in events_after(s, study_id=study_id, after=before, upto=cursor)]
        assert len(both) == 2 and max(both) <= cursor

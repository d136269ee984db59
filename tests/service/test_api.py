"""The REST API on the walking-skeleton path, on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.app import create_app
from service.db import get_database
from service.models import Metric, Study, StudyStatus, Trial

PROBLEM = "application/problem+json"


@pytest.fixture
def client(db_url: str, settings_for) -> Any:
    with TestClient(create_app(settings_for(db_url))) as c:
        yield c


def count(db_url: str, model: type) -> int:
    with get_database(db_url).session(write=False) as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_create_study_queues_its_trials(client, db_url, spec_factory) -> None:
    r = client.post("/api/studies", json=spec_factory())
    assert r.status_code == 201, r.text
    study = r.json()
    assert study["status"] == "queued"
    assert study["counts"]["queued"] == 4 and study["total_trials"] == 4
    assert study["best_trial"] is None
    assert count(db_url, Trial) == 4
    trials = client.get(f"/api/studies/{study['id']}/trials").json()
    lrs = [t["params"]["learning_rate"] for t in trials["items"]]
    assert len(lrs) == 4 and all(1e-4 <= lr <= 1.0 for lr in lrs)


def test_a_yaml_body_is_a_spec_too(client, spec_factory) -> None:
    r = client.post(
        "/api/studies",
        content=yaml.safe_dump(spec_factory(name="from-yaml")),
        headers={"content-type": "application/yaml"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "from-yaml"


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        (
            {"space": {"learning_rate": {"type": "float", "low": 0, "high": 1, "scale": "log"}}},
            "space.learning_rate.low",
        ),
        (
            {"space": {"no_such_field": {"type": "float", "low": 0.1, "high": 1}}},
            "space.no_such_field",
        ),
        ({"strategy": {"type": "annealing"}}, "strategy.type"),
        ({"dataset": {"name": "no-such-data-set"}}, "dataset.name"),
        ({"model": {"hidden_layers": [8, 0]}}, "model.hidden_layers.1"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_an_invalid_spec_is_422_naming_the_field_and_queues_nothing(
    client, db_url, spec_factory, change, loc
) -> None:
    r = client.post("/api/studies", json=spec_factory(**change))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == 422 and body["title"] and body["detail"]
    assert any(e["loc"] == loc for e in body["errors"]), body["errors"]
    assert count(db_url, Study) == 0 and count(db_url, Trial) == 0


def test_a_body_that_is_not_a_spec_is_422(client) -> None:
    r = client.post(
        "/api/studies", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM)
    r = client.post("/api/studies", json=[1, 2])
    assert r.status_code == 422 and "mapping" in r.json()["detail"]


def test_unknown_ids_are_404_problems(client) -> None:
    for path in ("/api/studies/999", "/api/trials/999", "/api/trials/999/metrics", "/nope"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith(PROBLEM)
        assert r.json()["status"] == 404
    assert "study 999" in client.get("/api/studies/999").json()["detail"]


def test_validate_checks_without_queueing(client, db_url, spec_factory) -> None:
    r = client.post("/api/specs/validate", json=spec_factory())
    assert r.status_code == 200 and r.json()["trials"] == 4
    assert count(db_url, Study) == 0


def worker_session(client) -> str:
    r = client.post("/api/worker/register", json={"name": "t", "host": "h", "pid": 1})
    assert r.status_code == 200, r.text
    return str(r.json()["worker_id"])


def epochs(values: list[float]) -> list[dict[str, float | int | None]]:
    return [
        {
            "epoch": i,
            "train_cost": 1 - v,
            "train_accuracy": v,
            "dev_cost": 1 - v,
            "dev_accuracy": v,
            "learning_rate": 0.01,
            "seconds": 0.01,
        }
        for i, v in enumerate(values, start=1)
    ]


def test_the_worker_protocol_completes_a_study_with_its_best_trial(
    client, db_url, spec_factory
) -> None:
    study_id = client.post("/api/studies", json=spec_factory()).json()["id"]
    wid = worker_session(client)
    claimed = client.post("/api/worker/claim", json={"worker_id": wid, "max_trials": 8}).json()
    trials = claimed["trials"]
    assert len(trials) == 4
    assert client.get(f"/api/studies/{study_id}").json()["status"] == "running"
    finals = [0.6, 0.9, 0.7, 0.8]
    for t, final in zip(trials, finals, strict=True):
        curve = epochs([0.5, final])
        r = client.post(
            f"/api/worker/trials/{t['trial_id']}/metrics",
            json={"lease_token": t["lease_token"], "epochs": curve[:1]},
        )
        assert r.status_code == 200 and r.json() == {"stop": False}
        r = client.post(
            f"/api/worker/trials/{t['trial_id']}/finish",
            json={"lease_token": t["lease_token"], "outcome": "completed", "epochs": curve},
        )
        assert r.status_code == 200, r.text
    study = client.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "completed"
    assert study["counts"]["completed"] == 4
    best = study["best_trial"]
    assert best["value"] == pytest.approx(0.9)
    assert best["id"] == trials[1]["trial_id"]
    assert best["config"]["learning_rate"] == best["params"]["learning_rate"]
    # the re-sent first epoch was stored once
    assert count(db_url, Metric) == 8
    curve = client.get(f"/api/trials/{best['id']}/metrics").json()
    assert [m["epoch"] for m in curve] == [1, 2]


def test_writes_after_the_lease_is_lost_are_409(client, spec_factory) -> None:
    client.post("/api/studies", json=spec_factory(strategy={"type": "random", "trials": 1}))
    wid = worker_session(client)
    t = client.post("/api/worker/claim", json={"worker_id": wid}).json()["trials"][0]
    path = f"/api/worker/trials/{t['trial_id']}"
    assert client.post(f"{path}/release", json={"lease_token": t["lease_token"]}).status_code == 204
    for action, body in (
        ("heartbeat", {}),
        ("metrics", {"epochs": epochs([0.5])}),
        ("finish", {"outcome": "completed"}),
    ):
        r = client.post(f"{path}/{action}", json={"lease_token": t["lease_token"], **body})
        assert r.status_code == 409, (action, r.text)
        assert r.headers["content-type"].startswith(PROBLEM)
    again = client.post("/api/worker/claim", json={"worker_id": wid}).json()["trials"][0]
    assert again["trial_id"] == t["trial_id"] and again["attempt"] == 2
    assert again["lease_token"] != t["lease_token"]


def test_a_diverged_trial_fails_with_the_reason_and_keeps_its_curve(client, spec_factory) -> None:
    client.post("/api/studies", json=spec_factory(strategy={"type": "random", "trials": 1}))
    wid = worker_session(client)
    t = client.post("/api/worker/claim", json={"worker_id": wid}).json()["trials"][0]
    curve = epochs([0.5, 0.6])
    curve[1]["train_cost"] = None
    r = client.post(
        f"/api/worker/trials/{t['trial_id']}/finish",
        json={"lease_token": t["lease_token"], "outcome": "diverged", "epochs": curve},
    )
    assert r.json()["status"] == "failed"
    trial = client.get(f"/api/trials/{t['trial_id']}").json()
    assert trial["outcome"] == "diverged" and "diverged" in trial["error"]
    assert trial["value"] is None
    assert len(client.get(f"/api/trials/{t['trial_id']}/metrics").json()) == 2
    study = client.get(f"/api/studies/{trial['study_id']}").json()
    assert study["status"] == "failed" and study["best_trial"] is None


def test_cancel_stops_waiting_trials_and_asks_running_ones_to_stop(client, spec_factory) -> None:
    study_id = client.post("/api/studies", json=spec_factory()).json()["id"]
    wid = worker_session(client)
    t = client.post("/api/worker/claim", json={"worker_id": wid}).json()["trials"][0]
    r = client.post(f"/api/studies/{study_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["counts"]["stopped"] == 3 and r.json()["counts"]["running"] == 1
    hb = client.post(
        f"/api/worker/trials/{t['trial_id']}/heartbeat", json={"lease_token": t["lease_token"]}
    )
    assert hb.json() == {"stop": True}
    assert client.post(f"/api/studies/{study_id}/cancel").status_code == 409


def test_tokens_gate_every_route_but_healthz(db_url, settings_for, spec_factory) -> None:
    tokens = "alice:read,write:alice-secret-0123456789;bot:worker:worker-secret-0123456789"
    with TestClient(create_app(settings_for(db_url, tokens=tokens))) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/api/studies")
        assert r.status_code == 401 and r.headers["content-type"].startswith(PROBLEM)
        assert c.get("/api/studies", headers={"authorization": "Bearer wrong"}).status_code == 401
        alice = {"authorization": "Bearer alice-secret-0123456789"}
        bot = {"authorization": "Bearer worker-secret-0123456789"}
        assert c.post("/api/studies", json=spec_factory(), headers=bot).status_code == 403
        assert c.post("/api/studies", json=spec_factory(), headers=alice).status_code == 201
        assert c.get("/api/studies", headers=alice).status_code == 200
        reg = {"name": "w"}
        assert c.post("/api/worker/register", json=reg, headers=alice).status_code == 403
        assert c.post("/api/worker/register", json=reg, headers=bot).status_code == 200


def test_without_tokens_only_loopback_is_served(db_url, settings_for) -> None:
    app = create_app(settings_for(db_url))
    with TestClient(app, client=("203.0.113.7", 5000)) as c:
        r = c.get("/api/studies")
        assert r.status_code == 403 and "loopback" in r.json()["detail"]
        assert c.get("/healthz").status_code == 200
    with TestClient(app, client=("127.0.0.1", 5000)) as c:
        assert c.get("/api/studies").status_code == 200


def test_results_reported_with_a_claim_are_finished_one_by_one(client, spec_factory) -> None:
    study_id = client.post("/api/studies", json=spec_factory()).json()["id"]
    wid = worker_session(client)
    trials = client.post("/api/worker/claim", json={"worker_id": wid, "max_trials": 3}).json()
    a, b, c = trials["trials"]
    client.post(
        f"/api/worker/trials/{b['trial_id']}/release", json={"lease_token": b["lease_token"]}
    )
    finished = [
        {
            "trial_id": t["trial_id"],
            "lease_token": t["lease_token"],
            "outcome": "completed",
            "epochs": epochs([0.5, 0.6 + i / 10]),
        }
        for i, t in enumerate((a, b, c))
    ]
    r = client.post(
        "/api/worker/claim", json={"worker_id": wid, "max_trials": 0, "finished": finished}
    )
    assert r.status_code == 200, r.text
    answers = {f["trial_id"]: f for f in r.json()["finished"]}
    assert r.json()["trials"] == []
    assert answers[a["trial_id"]]["status"] == "completed"
    assert answers[c["trial_id"]]["status"] == "completed"
    assert answers[b["trial_id"]]["status"] is None and "lease" in answers[b["trial_id"]]["error"]
    assert client.get(f"/api/trials/{c['trial_id']}").json()["value"] == pytest.approx(0.8)
    assert client.get(f"/api/trials/{b['trial_id']}/metrics").json() == []
    counts = client.get(f"/api/studies/{study_id}").json()["counts"]
    assert counts["completed"] == 2 and counts["queued"] == 2


def test_zoom_starts_coarse_to_fine_around_the_best_trials(client, spec_factory) -> None:
    parent = client.post(
        "/api/studies", json=spec_factory(strategy={"type": "random", "trials": 12})
    ).json()["id"]
    assert client.post(f"/api/studies/{parent}/zoom").status_code == 409  # nothing finished yet
    wid = worker_session(client)
    claimed = client.post("/api/worker/claim", json={"worker_id": wid, "max_trials": 12}).json()
    import math

    for t in claimed["trials"]:
        lr = t["config"]["learning_rate"]
        score = 1 - abs(math.log10(lr) + 2) / 4  # best at 1e-2
        client.post(
            f"/api/worker/trials/{t['trial_id']}/finish",
            json={
                "lease_token": t["lease_token"],
                "outcome": "completed",
                "epochs": epochs([score]),
            },
        )
    r = client.post(f"/api/studies/{parent}/zoom", json={"rounds": 2, "trials_per_round": 6})
    assert r.status_code == 201, r.text
    child = r.json()
    assert child["parent_study_id"] == parent and child["strategy"] == "coarse_to_fine"
    assert child["rounds"]["total"] == 2 and child["total_trials"] == 6
    box = client.get(f"/api/studies/{child['id']}/rounds").json()[0]["box"]
    lr_box = box["axes"]["learning_rate"]
    assert 1e-4 < lr_box["low"] < 1e-2 < lr_box["high"] < 1.0
    lrs = [
        t["params"]["learning_rate"]
        for t in client.get(f"/api/studies/{child['id']}/trials").json()["items"]
    ]
    assert all(lr_box["low"] <= lr <= lr_box["high"] for lr in lrs)
    assert client.post("/api/studies/999/zoom").status_code == 404


def _orm_reference(db_url: str, study_id: int) -> tuple[Any, list[Any]]:
    """The study's status and all its trial summaries, built from ORM entities (the way
    the writes' responses are), as JSON: what the hot reads must agree with."""
    import json

    from service.api.render import json_bytes
    from service.studies import study_dict, trial_dict

    with get_database(db_url).session(write=False) as s:
        study = s.get_one(Study, study_id)
        status = json.loads(json_bytes(study_dict(s, study)))
        trials = s.scalars(select(Trial).where(Trial.study_id == study_id)).all()
        summaries = [json.loads(json_bytes(trial_dict(t))) for t in trials]
    return status, summaries


def test_status_and_trials_pages_agree_with_the_entities(client, db_url, spec_factory) -> None:
    # Hot reads (service.studies "Hot reads") select raw columns instead of entities: every
    # field, filter, order and page must come out as the entities say.
    study_id = client.post(
        "/api/studies", json=spec_factory(strategy={"type": "random", "trials": 7})
    ).json()["id"]
    objective = {"metric": "dev_cost", "direction": "minimize", "at": "best"}
    other = client.post("/api/studies", json=spec_factory(objective=objective)).json()["id"]
    wid = worker_session(client)
    claimed = client.post("/api/worker/claim", json={"worker_id": wid, "max_trials": 11}).json()
    mine = [t for t in claimed["trials"] if t["study_id"] == study_id][:5]
    theirs = [t for t in claimed["trials"] if t["study_id"] == other][:2]
    for t, final in zip(theirs, [0.7, 0.9], strict=True):
        r = client.post(  # dev_cost = 1 - final: the second is best when minimizing
            f"/api/worker/trials/{t['trial_id']}/finish",
            json={
                "lease_token": t["lease_token"],
                "outcome": "completed",
                "epochs": epochs([final]),
            },
        )
        assert r.status_code == 200, r.text
    # two ties at 0.8: the first by number wins, and both keep number order
    for t, final, outcome in zip(
        mine, [0.8, 0.6, 0.8, 0.9, 0.3], ["completed"] * 3 + ["diverged", "completed"], strict=True
    ):
        r = client.post(
            f"/api/worker/trials/{t['trial_id']}/finish",
            json={"lease_token": t["lease_token"], "outcome": outcome, "epochs": epochs([final])},
        )
        assert r.status_code == 200, r.text
    with get_database(db_url).session() as s:  # a stored timestamp with microseconds
        s.get_one(Trial, mine[0]["trial_id"]).started_at = (
            s.execute(select(func.now())).scalar_one().replace(microsecond=123456)
        )
    status, summaries = _orm_reference(db_url, study_id)
    assert client.get(f"/api/studies/{study_id}").json() == status
    assert status["best_trial"]["value"] == pytest.approx(0.8)
    assert status["best_trial"]["id"] == mine[0]["trial_id"]

    by_number = sorted(summaries, key=lambda t: t["number"])
    done = [t for t in by_number if t["value"] is not None]
    best_first = sorted(done, key=lambda t: -t["value"]) + [
        t for t in by_number if t["value"] is None
    ]
    cases: list[tuple[str, list[Any]]] = [
        ("", by_number),
        ("?sort=value", best_first),
        ("?status=completed", [t for t in by_number if t["status"] == "completed"]),
        ("?status=queued&round=0", [t for t in by_number if t["status"] == "queued"]),
        ("?round=1", []),
        ("?sort=value&status=failed", [t for t in best_first if t["status"] == "failed"]),
    ]
    for query, expected in cases:
        for limit, offset in ((100, 0), (2, 1), (3, 2), (3, 6), (5, 50)):
            sep = "&" if query else "?"
            page = client.get(
                f"/api/studies/{study_id}/trials{query}{sep}limit={limit}&offset={offset}"
            ).json()
            assert page["total"] == len(expected), query
            assert page["items"] == expected[offset : offset + limit], (query, limit, offset)
    assert client.get(f"/api/studies/{other}/trials").json()["total"] == 4
    other_status, _ = _orm_reference(db_url, other)
    assert client.get(f"/api/studies/{other}").json() == other_status
    assert other_status["objective"]["at"] == "best"
    assert other_status["best_trial"]["value"] == pytest.approx(0.1)

    import json

    from service.api.render import json_bytes
    from service.studies import list_studies

    db = get_database(db_url)
    items, total = list_studies(db=db)
    assert total == 2
    assert [json.loads(json_bytes(i)) for i in items] == [other_status, status]
    items, total = list_studies(db=db, status=StudyStatus.running, limit=1, offset=0)
    assert total == 2 and len(items) == 1
    assert list_studies(db=db, name="tiny", offset=5) == ([], 2)
    assert client.get("/api/studies/999/trials").status_code == 404


def test_a_stored_nan_is_null_in_every_read(sqlite_url, settings_for, spec_factory) -> None:
    # json.dumps stores NaN as a bare token (SQLite keeps the text as written); JSON has no
    # such number, so reads answer null, as for NaN floats anywhere.
    with TestClient(create_app(settings_for(sqlite_url))) as c:
        study_id = c.post("/api/studies", json=spec_factory()).json()["id"]
        with get_database(sqlite_url).session() as s:
            trial = s.scalars(select(Trial).where(Trial.study_id == study_id)).first()
            assert trial is not None
            trial.params = {**trial.params, "odd": float("nan")}
        items = c.get(f"/api/studies/{study_id}/trials").json()["items"]
        assert items[0]["params"]["odd"] is None
        assert "learning_rate" in items[0]["params"]

"""Server-sent events: every transition of a study, in order, resumable by Last-Event-ID."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from worker.pool import Pool, PoolOptions


def parse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            fields[key] = value
        if "event" in fields:
            events.append(
                {"id": int(fields["id"]), "type": fields["event"], **json.loads(fields["data"])}
            )
    return events


@pytest.fixture
def client(db_url: str, settings_for) -> Any:
    with TestClient(create_app(settings_for(db_url))) as c:
        yield c


def run_one_trial(client: TestClient, spec: dict[str, Any]) -> int:
    study_id = int(client.post("/api/studies", json=spec).json()["id"])
    wid = client.post("/api/worker/register", json={"name": "w"}).json()["worker_id"]
    t = client.post("/api/worker/claim", json={"worker_id": wid}).json()["trials"][0]
    path = f"/api/worker/trials/{t['trial_id']}"
    epoch = {"epoch": 1, "dev_accuracy": 0.75, "train_cost": 0.5}
    client.post(f"{path}/metrics", json={"lease_token": t["lease_token"], "epochs": [epoch]})
    client.post(
        f"{path}/finish",
        json={"lease_token": t["lease_token"], "outcome": "completed", "epochs": [epoch]},
    )
    return study_id


def test_a_study_tells_its_whole_story_in_order(client, spec_factory) -> None:
    study_id = run_one_trial(client, spec_factory(strategy={"type": "random", "trials": 1}))
    r = client.get(f"/api/studies/{study_id}/events")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse(r.text)
    assert [e["type"] for e in events] == [
        "study.created",
        "round.created",
        "trial.started",
        "trial.metrics",
        "trial.finished",
        "study.finished",
    ]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert events[3]["epoch"] == 1 and events[3]["dev_accuracy"] == 0.75
    assert events[4]["status"] == "completed" and events[4]["value"] == 0.75
    assert events[5]["status"] == "completed"


def test_last_event_id_resumes_without_a_gap(client, spec_factory) -> None:
    study_id = run_one_trial(client, spec_factory(strategy={"type": "random", "trials": 1}))
    everything = parse(client.get(f"/api/studies/{study_id}/events").text)
    resumed = parse(
        client.get(
            f"/api/studies/{study_id}/events", headers={"last-event-id": str(everything[2]["id"])}
        ).text
    )
    assert resumed == everything[3:]


def test_events_of_an_unknown_study_are_404(client) -> None:
    r = client.get("/api/studies/404/events")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")


def test_a_live_stream_follows_the_study_to_its_end(sqlite_url, live_service, spec_factory) -> None:
    svc = live_service(sqlite_url)
    study_id = httpx.post(f"{svc.url}/api/studies", json=spec_factory()).json()["id"]
    received: list[str] = []

    def listen() -> None:
        with httpx.stream("GET", f"{svc.url}/api/studies/{study_id}/events", timeout=60) as r:
            received.append(r.read().decode())

    listener = threading.Thread(target=listen)
    listener.start()
    pool = Pool(PoolOptions(api_url=svc.url, processes=1, exit_when_idle=True))
    pool.start()
    try:
        listener.join(timeout=90)
    finally:
        pool.stop()
    assert not listener.is_alive(), "the stream did not end with the study"
    events = parse(received[0])
    types = [e["type"] for e in events]
    assert types[-1] == "study.finished"
    assert types.count("trial.started") == 4 and types.count("trial.finished") == 4

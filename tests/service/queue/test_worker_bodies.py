"""Worker bodies: bounded as they are read, checked against their trial once the lease holds.

Each attack here worked against the service before (issue 17): a 50 MB claim parsed whole
on the event loop, epochs past a trial's end stored (the fake one became its objective),
claims under any worker id, junk checkpoints, a lone UTF-16 surrogate, NUL characters
that PostgreSQL refuses.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.app import create_app
from service.db import get_database
from service.models import Metric, Trial, TrialStatus, Worker
from service.protocol import MAX_EPOCHS_PER_REPORT, MAX_WORKER_BODY_BYTES
from tests.conftest import small_spec
from trainer import TrainConfig, load_dataset, train

EPOCHS = 5


@pytest.fixture
def client(db_url: str, settings_for: Any) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(db_url))) as c:
        yield c


def leased(client: TestClient, n: int = 1) -> tuple[str, list[dict[str, Any]]]:
    """A registered worker and `n` trials of EPOCHS epochs leased to it."""
    spec = small_spec(
        strategy={"type": "random", "trials": n}, model={"hidden_layers": [2], "epochs": EPOCHS}
    )
    assert client.post("/api/studies", json=spec).status_code == 201
    wid = client.post("/api/worker/register", json={"name": "w"}).json()["worker_id"]
    trials = client.post("/api/worker/claim", json={"worker_id": wid, "max_trials": n}).json()
    return wid, trials["trials"]


def result(trial: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "trial_id": trial["trial_id"],
        "lease_token": trial["lease_token"],
        "outcome": "completed",
        **more,
    }


def report(client: TestClient, wid: str, *results: dict[str, Any]) -> dict[int, Any]:
    body = {"worker_id": wid, "max_trials": 0, "finished": results}
    r = client.post("/api/worker/claim", json=body)
    assert r.status_code == 200, r.text
    return {f["trial_id"]: f for f in r.json()["finished"]}


@cache
def checkpoint_b64(epoch: int) -> str:
    taken: list[Any] = []
    dataset = load_dataset({"name": "moons", "n_samples": 20, "seed": 0})
    train(
        TrainConfig(hidden_layers=[2], epochs=EPOCHS, batch_size=0),
        dataset,
        checkpoint_every=1,
        on_checkpoint=taken.append,
    )
    return base64.b64encode(taken[epoch - 1].to_bytes()).decode()


def test_a_worker_body_over_its_cap_is_refused_before_it_is_read(client: TestClient) -> None:
    # 17 MB of epochs with fake leases: under the service's 50 MB body cap, it was parsed
    # and validated whole, on the event loop, before any lease was looked at.
    wid, _ = leased(client)
    row = b'{"epoch": 1, "dev_accuracy": 0.5},'
    epochs = row * (MAX_WORKER_BODY_BYTES // len(row) + 1000)
    body = (
        b'{"worker_id": "' + wid.encode() + b'", "max_trials": 0, "finished": [{"trial_id": 1, '
        b'"lease_token": "fake", "outcome": "completed", "epochs": [' + epochs[:-1] + b"]}]}"
    )
    r = client.post("/api/worker/claim", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text[:300]


def test_results_and_epochs_are_counted_before_anything_is_validated(client: TestClient) -> None:
    wid, (trial,) = leased(client)
    rows = [{"epoch": 1}] * (MAX_EPOCHS_PER_REPORT // 2 + 1)  # each result within its own cap
    r = client.post(
        "/api/worker/claim",
        json={"worker_id": wid, "max_trials": 0, "finished": [result(trial, epochs=rows)] * 2},
    )
    assert r.status_code == 422 and "epochs in one body" in r.text
    r = client.post(
        "/api/worker/claim",
        json={"worker_id": wid, "max_trials": 0, "finished": [result(trial)] * 65},
    )
    assert r.status_code == 422 and "results in one claim" in r.text


def test_epochs_are_validated_only_once_the_lease_holds(client: TestClient) -> None:
    # Invalid epochs under a lease the worker does not hold are not even looked at: the
    # result is refused for its lease (and the claim's other results are finished).
    wid, (mine, other) = leased(client, 2)
    bad = [{"epoch": "one"}]
    answers = report(
        client,
        wid,
        {**result(other, epochs=bad), "lease_token": "not-the-lease"},
        result(mine, curve={"epoch": [1], "dev_accuracy": [0.5, 0.6]}),
    )
    assert answers[other["trial_id"]]["status"] is None
    assert "lease" in answers[other["trial_id"]]["error"]
    # Under the lease they are, and a result that does not validate is refused alone.
    assert answers[mine["trial_id"]]["status"] is None
    assert "dev_accuracy: 2 values for 1 epochs" in answers[mine["trial_id"]]["error"]
    answers = report(client, wid, result(mine, curve={"epoch": [1], "dev_accuracy": [0.5]}))
    assert answers[mine["trial_id"]]["status"] == "completed"


def test_epochs_and_checkpoints_beyond_the_trial_s_end_are_refused(
    client: TestClient, db_url: str
) -> None:
    # A fake epoch 10**6 became the trial's objective; an unbounded checkpoint epoch
    # stood in its list of checkpoints to fork from.
    wid, (trial, other, third) = leased(client, 3)
    fake = {"epoch": [1, 10**6], "dev_accuracy": [0.5, 1.0]}
    beyond = {"epoch": EPOCHS + 1, "content": checkpoint_b64(EPOCHS)}
    answers = report(
        client,
        wid,
        result(trial, curve=fake),
        result(other, epochs=[{"epoch": e, "dev_accuracy": 0.5} for e in range(1, EPOCHS + 2)]),
        result(third, checkpoint=beyond),
    )
    assert "beyond the trial's 5 epochs" in answers[trial["trial_id"]]["error"]
    assert f"{EPOCHS + 1} epochs for a trial of {EPOCHS}" in answers[other["trial_id"]]["error"]
    assert "checkpoint: epoch 6 is beyond" in answers[third["trial_id"]]["error"]
    r = client.post(
        f"/api/worker/trials/{trial['trial_id']}/metrics",
        json={"lease_token": trial["lease_token"], "curve": fake},
    )
    assert r.status_code == 422 and "beyond the trial's 5 epochs" in r.text
    r = client.post(
        f"/api/worker/trials/{trial['trial_id']}/checkpoints",
        params={"epoch": 10**6},
        content=base64.b64decode(checkpoint_b64(EPOCHS)),
        headers={"x-lease-token": trial["lease_token"]},
    )
    assert r.status_code == 422 and "beyond the trial's 5 epochs" in r.text
    with get_database(db_url).session(write=False) as s:
        assert s.scalar(select(Trial.value).where(Trial.id == trial["trial_id"])) is None
        assert s.scalars(select(Metric.epoch)).all() == []


def test_a_result_s_checkpoint_is_stored_with_it_and_junk_is_refused(
    client: TestClient,
) -> None:
    wid, (trial, junk) = leased(client, 2)
    good = {"epoch": EPOCHS, "content": checkpoint_b64(EPOCHS)}
    bad = {"epoch": EPOCHS, "content": base64.b64encode(b"PK\x03\x04 not an archive").decode()}
    curve = {"epoch": list(range(1, EPOCHS + 1)), "dev_accuracy": [0.5] * EPOCHS}
    answers = report(
        client,
        wid,
        result(trial, curve=curve, checkpoint=good, seconds=0.01),
        result(junk, curve=curve, checkpoint=bad),
    )
    assert answers[trial["trial_id"]]["status"] == "completed"
    assert "not a trainer checkpoint" in answers[junk["trial_id"]]["error"]
    stored = client.get(f"/api/trials/{trial['trial_id']}/checkpoints").json()
    assert [c["epoch"] for c in stored] == [EPOCHS]
    assert client.get(f"/api/trials/{junk['trial_id']}/checkpoints").json() == []
    assert client.get(f"/api/trials/{junk['trial_id']}").json()["status"] == "running"
    # The checkpoint is named in the trial's trial.finished, with no event of its own.
    study = client.get(f"/api/trials/{trial['trial_id']}").json()["study_id"]
    events = client.get(f"/api/studies/{study}/events?follow=false").text
    finished = [json.loads(line[6:]) for line in events.splitlines() if "checkpoint_epoch" in line]
    assert [(e["trial_id"], e["checkpoint_epoch"]) for e in finished] == [
        (trial["trial_id"], EPOCHS)
    ]
    assert "trial.checkpointed" not in events


def test_a_claim_needs_a_registered_worker(client: TestClient, db_url: str) -> None:
    leased(client)
    r = client.post("/api/worker/claim", json={"worker_id": "w-000000000000", "max_trials": 1})
    assert r.status_code == 404 and "not registered" in r.text
    r = client.post("/api/worker/claim", json={"worker_id": "w" * 100_000, "max_trials": 1})
    assert r.status_code == 422
    with get_database(db_url).session(write=False) as s:
        assert s.scalars(select(Trial.status)).all() == [TrialStatus.running]


def test_a_lone_surrogate_is_refused_as_invalid_json(client: TestClient) -> None:
    _, (trial,) = leased(client)
    for path, body in (
        ("/api/worker/claim", '{"worker_id": "w-\\ud800", "max_trials": 1}'),
        (
            f"/api/worker/trials/{trial['trial_id']}/finish",
            '{"lease_token": "x", "outcome": "failed", "error": "\\udfff"}',
        ),
    ):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (path, r.status_code, r.text)
        assert "not valid JSON" in r.text


def test_a_nul_character_never_reaches_the_database(client: TestClient, db_url: str) -> None:
    # PostgreSQL's text holds no NUL: it answered "a number ... out of range".
    r = client.post("/api/worker/register", json={"name": "w\x00", "host": "h\x00"})
    assert r.status_code == 200, r.text
    wid, (trial,) = leased(client)
    r = client.post(
        f"/api/worker/trials/{trial['trial_id']}/heartbeat", json={"lease_token": "a\x00b"}
    )
    assert r.status_code == 422
    answers = report(client, wid, {**result(trial, error="boom\x00!"), "outcome": "failed"})
    assert answers[trial["trial_id"]]["status"] == "failed"
    with get_database(db_url).session(write=False) as s:
        assert s.scalar(select(Trial.error).where(Trial.id == trial["trial_id"])) == "boom\ufffd!"
        assert "w\ufffd" in s.scalars(select(Worker.name)).all()

"""A trial's learning curve in parts: GET /api/trials/{id}/metrics honours limit and offset."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.service.test_api_states import submit


@pytest.fixture
def client(db_url: str, settings_for: Any) -> Any:
    with TestClient(create_app(settings_for(db_url, migrate_on_start=False))) as c:
        yield c


def test_metrics_take_limit_and_offset(client: Any, spec_factory: Any) -> None:
    """limit and offset were ignored: every epoch came back whatever was asked."""
    spec = spec_factory(strategy={"type": "random", "trials": 1})
    submit(client, {**spec, "model": {**spec["model"], "epochs": 10}})
    wid = client.post("/api/worker/register", json={"name": "t"}).json()["worker_id"]
    (trial,) = client.post("/api/worker/claim", json={"worker_id": wid}).json()["trials"]
    epochs = [{"epoch": e, "dev_accuracy": e / 10, "learning_rate": 0.01} for e in range(1, 11)]
    body = {"lease_token": trial["lease_token"], "outcome": "completed", "epochs": epochs}
    r = client.post(f"/api/worker/trials/{trial['trial_id']}/finish", json=body)
    assert r.status_code == 200, r.text
    url = f"/api/trials/{trial['trial_id']}/metrics"

    def epochs_of(**params: Any) -> list[int]:
        r = client.get(url, params=params)
        assert r.status_code == 200, r.text
        return [row["epoch"] for row in r.json()]

    assert epochs_of() == list(range(1, 11))  # whole by default
    assert epochs_of(limit=3) == [1, 2, 3]
    assert epochs_of(offset=8) == [9, 10]
    assert epochs_of(offset=4, limit=2) == [5, 6]
    assert epochs_of(offset=20) == []
    assert client.get(url, params={"limit": 0}).status_code == 422

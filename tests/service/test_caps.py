"""Cheap checks before expensive work: forks, specs and spec bodies within the caps and rates.

Each test is an attack that got through before (issue 17): a fork past the caps or in a
burst, a spec whose trials could never store a checkpoint, an output layer of 40,000
classes, a spec read from a text/plain body, values a database cannot store.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.app import create_app
from service.db import get_database
from service.models import Checkpoint, Study, Trial
from service.search.strategies import SearchSpace

PROBLEM = "application/problem+json"


def make_client(db_url: str, settings_for: Any, **overrides: Any) -> TestClient:
    return TestClient(create_app(settings_for(db_url, migrate_on_start=False, **overrides)))


@pytest.fixture
def client(db_url: str, settings_for) -> Any:
    with make_client(db_url, settings_for) as c:
        yield c


def panda_spec(spec_factory: Any, **model: Any) -> dict[str, Any]:
    return spec_factory(
        model={"hidden_layers": [8, 4], "epochs": 20, **model},
        space={},
        strategy={"type": "random", "trials": 1},
        execution={"mode": "panda", "checkpoint_every": 2, "seed": 3},
    )


def trial_with_checkpoint(c: TestClient, db_url: str, spec: dict[str, Any]) -> int:
    """A study's first trial, with a checkpoint at epoch 2 (stored as a worker would)."""
    study = c.post("/api/studies", json=spec)
    assert study.status_code == 201, study.text
    trial_id = c.get(f"/api/studies/{study.json()['id']}/trials").json()["items"][0]["id"]
    with get_database(db_url).session() as s:
        s.add(
            Checkpoint(
                trial_id=trial_id, attempt=1, epoch=2, size_bytes=1, content=b"c", created_at=0.0
            )
        )
    return int(trial_id)


def trials_of(db_url: str, trial_id: int) -> int:
    with get_database(db_url).session(write=False) as s:
        study_id = s.scalar(select(Trial.study_id).where(Trial.id == trial_id))
        return int(s.scalar(select(func.count()).where(Trial.study_id == study_id)) or 0)


def fork(c: TestClient, trial_id: int, **changes: Any) -> Any:
    body = json.dumps({"from_epoch": 2, "changes": changes}).replace('"INF"', "Infinity")
    return c.post(
        f"/api/trials/{trial_id}/fork",
        content=body,
        headers={"content-type": "application/json"},
    )


# -- forks --------------------------------------------------------------------------------


def test_a_fork_meets_the_epochs_cap_and_refuses_infinity(
    db_url, settings_for, spec_factory
) -> None:
    with make_client(db_url, settings_for, max_epochs=100) as c:
        trial = trial_with_checkpoint(c, db_url, panda_spec(spec_factory))
        r = fork(c, trial, epochs=1_000_000_000)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["loc"] == "changes.epochs"
        assert "max_epochs" in r.json()["errors"][0]["msg"]
        r = fork(c, trial, learning_rate="INF")  # JSON's Infinity: stored as null before
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["loc"] == "changes.learning_rate"
        assert "finite" in r.json()["errors"][0]["msg"]
        assert trials_of(db_url, trial) == 1
        assert fork(c, trial, epochs=50).status_code == 201


def test_a_fork_cannot_grow_a_study_past_max_trials(db_url, settings_for, spec_factory) -> None:
    with make_client(db_url, settings_for, max_trials_per_study=3) as c:
        trial = trial_with_checkpoint(c, db_url, panda_spec(spec_factory))
        assert [fork(c, trial, l2=0.1 * i).status_code for i in range(2)] == [201, 201]
        r = fork(c, trial, l2=0.5)
        assert r.status_code == 409, r.text
        assert "max_trials_per_study" in r.json()["detail"]
        assert trials_of(db_url, trial) == 3


def test_forks_spend_the_submission_rate(db_url, settings_for, spec_factory) -> None:
    with make_client(db_url, settings_for, submit_burst=3, submit_rate_per_minute=1) as c:
        trial = trial_with_checkpoint(c, db_url, panda_spec(spec_factory))  # one submission
        codes = [fork(c, trial, l2=0.01 * i).status_code for i in range(4)]
        assert codes == [201, 201, 429, 429]
        assert int(fork(c, trial, l2=0.5).headers["retry-after"]) >= 1


def test_a_panda_trial_keeps_at_most_the_checkpoint_cap(db_url, settings_for, spec_factory) -> None:
    with make_client(db_url, settings_for, max_checkpoints_per_trial=20) as c:
        spec = panda_spec(spec_factory)
        spec["execution"] = {**spec["execution"], "checkpoint_every": 1}
        spec["model"] = {**spec["model"], "epochs": 21}
        r = c.post("/api/studies", json=spec)
        assert r.status_code == 422, r.text
        error = r.json()["errors"][0]
        assert error["loc"] == "execution.checkpoint_every"
        assert "21 checkpoints" in error["msg"] and "max_checkpoints_per_trial" in error["msg"]
        trial = trial_with_checkpoint(c, db_url, panda_spec(spec_factory))  # 20 epochs, 10
        r = fork(c, trial, epochs=41)  # every 2: 21 checkpoints
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "changes.epochs"
        assert fork(c, trial, epochs=40).status_code == 201


# -- studies that could never finish --------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "loc", "layers"),
    [
        ({"model": {"hidden_layers": [4096, 4096], "epochs": 5}}, "model.hidden_layers", None),
        (
            {"space": {"hidden_layers": {"type": "layers", "depth": {"low": 1, "high": 3},
                                         "units": {"low": 8, "high": 4096}}}},
            "space.hidden_layers",
            "2 -> 4096 -> 4096 -> 4096 -> 1",
        ),
        (
            {"space": {"hidden_layers": {"type": "categorical", "choices": [[8], [3000, 3000]]}}},
            "space.hidden_layers",
            "2 -> 3000 -> 3000 -> 1",
        ),
    ],
)  # fmt: skip
def test_a_network_whose_checkpoint_passes_the_cap_is_refused(
    client, spec_factory, change, loc, layers
) -> None:
    spec = spec_factory(**change)
    for path in ("/api/specs/validate", "/api/studies"):
        r = client.post(path, json=spec)
        assert r.status_code == 422, r.text
        error = r.json()["errors"][0]
        assert error["loc"] == loc
        assert f"layers {layers or '2 -> 4096 -> 4096 -> 1'}" in error["msg"]
        assert "max_checkpoint_bytes" in error["msg"]


def upload(c: TestClient, content: bytes, **params: Any) -> Any:
    return c.post(
        "/api/datasets",
        content=content,
        params=params,
        headers={"content-type": "application/octet-stream"},
    )


def test_an_upload_of_many_features_caps_the_network_trained_on_it(client, spec_factory) -> None:
    header = ",".join(f"x{i}" for i in range(2000)) + ",y\n"
    rows = "".join(
        ",".join(str((i + j) % 3) for j in range(2000)) + f",{i % 2}\n" for i in range(6)
    )
    ds = upload(client, (header + rows).encode(), label_column="y")
    assert ds.status_code == 201, ds.text
    wide = spec_factory(
        dataset={"name": ds.json()["id"], "dev_fraction": 0.4},
        model={"hidden_layers": [4096], "epochs": 5},
    )
    r = client.post("/api/studies", json=wide)
    assert r.status_code == 422, r.text
    assert "layers 2000 -> 4096 -> 1" in r.json()["errors"][0]["msg"]
    narrow = {**wide, "model": {"hidden_layers": [64], "epochs": 5}}
    assert client.post("/api/studies", json=narrow).status_code == 201


def test_the_output_layer_is_capped_at_upload_and_at_validation(
    db_url, settings_for, spec_factory
) -> None:
    with make_client(db_url, settings_for, max_classes=100) as c:
        labels = "a,y\n" + "".join(f"{i % 7},class-{i}\n" for i in range(400))
        r = upload(c, labels.encode(), label_column="y")
        assert r.status_code == 422 and "max_classes" in r.json()["detail"], r.text
        # 150 integer labels as floats: regression unless a spec says multiclass.
        numbers = "a,y\n" + "".join(f"{i % 7},{i % 150}.0\n" for i in range(600))
        ds = upload(c, numbers.encode(), label_column="y")
        assert ds.status_code == 201, ds.text
        spec = spec_factory(dataset={"name": ds.json()["id"], "task": "multiclass"})
        for path in ("/api/specs/validate", "/api/studies"):
            r = c.post(path, json=spec)
            assert r.status_code == 422, r.text
            assert r.json()["errors"][0]["loc"] == "dataset.task"
            assert "150 output units" in r.json()["errors"][0]["msg"]
        blobs = spec_factory(dataset={"name": "blobs", "n_classes": 50})
        with make_client(db_url, settings_for, max_classes=20) as small:
            r = small.post("/api/studies", json=blobs)
            assert r.status_code == 422 and "max_classes" in r.text


# -- spec bodies and the values in them ------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/studies", "/api/specs/validate", "/api/specs/preview"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_spec_body_is_read_only_as_json_or_yaml(client, spec_factory, path, content_type) -> None:
    body = json.dumps(spec_factory()).encode()
    headers = {"content-type": content_type} if content_type else {}
    r = client.post(path, content=body, headers=headers)
    assert r.status_code == 415, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["accepted"] == [
        "application/json",
        "application/yaml",
        "application/x-yaml",
        "text/yaml",
        "text/x-yaml",
    ]
    ok = client.post(
        path, content=body, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert ok.status_code in (200, 201), ok.text


@pytest.mark.parametrize(
    ("text", "loc"),
    [
        ('"name": "lone \\ud800 surrogate"', "name"),
        ('"name": "nul \\u0000 here"', "name"),
        ('"name": "x", "model": {"learning_rate": Infinity, "epochs": 5}', "model.learning_rate"),
        (
            '"name": "x", "model": {"epochs": 5}, "space": {"l2": {"type": "categorical", '
            '"choices": [0.1, -Infinity]}}',
            "space.l2.choices.1",
        ),
    ],
)
def test_values_a_database_cannot_hold_are_422_naming_the_field(
    client, spec_factory, text, loc
) -> None:
    spec = {k: v for k, v in spec_factory().items() if f'"{k}"' not in text}
    body = "{" + text + ", " + json.dumps(spec)[1:]
    for path in ("/api/specs/validate", "/api/studies"):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["loc"] == loc
    with get_database(client.app.state.settings.database_url).session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(Study)) == 0


# -- validation and preview: bounded in rate and cost, off the event loop ----------------------


def big_spec(spec_factory: Any) -> dict[str, Any]:
    return spec_factory(strategy={"type": "random", "trials": 10_000})


def test_validations_and_previews_spend_a_rate_of_their_own(
    db_url, settings_for, spec_factory
) -> None:
    with make_client(db_url, settings_for, spec_check_burst=3, spec_check_rate_per_minute=1) as c:
        spec = spec_factory()
        codes = [c.post("/api/specs/validate", json=spec).status_code for _ in range(2)]
        codes += [c.post("/api/specs/preview", json=spec).status_code for _ in range(2)]
        assert codes == [200, 200, 200, 429]
        r = c.post("/api/specs/validate", json=spec)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "spec checks" in r.json()["detail"]
        assert c.post("/api/studies", json=spec).status_code == 201  # submissions: their own


def test_a_preview_draws_only_the_trials_it_shows(client, spec_factory, monkeypatch) -> None:
    decoded = []
    real = SearchSpace.decode

    def counting(self: SearchSpace, row: Any) -> Any:
        decoded.append(1)
        return real(self, row)

    monkeypatch.setattr(SearchSpace, "decode", counting)
    r = client.post("/api/specs/preview", params={"n": 20}, json=big_spec(spec_factory))
    assert r.status_code == 200 and r.json()["total_trials"] == 10_000
    assert len(decoded) == 20
    decoded.clear()
    r = client.post("/api/specs/validate", json=big_spec(spec_factory))
    assert r.status_code == 200 and r.json()["trials"] == 10_000
    assert len(decoded) == 10_000  # every trial of round 1 checked, as a submission is, once


def test_spec_work_runs_off_the_event_loop(client, spec_factory, monkeypatch) -> None:
    import service.spec.loader as loader

    on_loop = []
    real = loader.check_spec

    def watching(*args: Any, **kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return real(*args, **kwargs)

    monkeypatch.setattr(loader, "check_spec", watching)
    for path in ("/api/specs/validate", "/api/specs/preview"):
        assert client.post(path, json=spec_factory()).status_code == 200
    assert on_loop == [False, False]


def test_the_checkpoint_cap_of_the_spec_is_the_one_the_store_enforces() -> None:
    from service.checkpoints import MAX_CHECKPOINT_BYTES
    from service.settings import Settings

    assert Settings.model_fields["max_checkpoint_bytes"].default == MAX_CHECKPOINT_BYTES
    with pytest.raises(ValueError, match="max_checkpoint_bytes"):
        Settings(database_url="sqlite://", max_checkpoint_bytes=MAX_CHECKPOINT_BYTES + 1)

"""A task study's exports: its free params, the value its function returned, and a final
column per metric the function reported (on SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest

from service.db import get_database
from service.models import METRIC_FIELDS
from service.queue import Offers, claim_trials, finish_trials, register_worker
from service.studies import create_study

ENTRYPOINT = "mypkg.train:objective"
SPEC = {
    "name": "own function",
    "task": {"entrypoint": ENTRYPOINT, "params": {"epochs": 3, "data": "digits"}},
    "space": {
        "optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "scale": "log"},
        "loss_kind": {"type": "categorical", "choices": ["hinge", "log_loss"]},
    },
    "strategy": {"type": "random", "trials": 3},
    "objective": {"metric": "accuracy", "direction": "maximize"},
    "execution": {"max_parallel": 3, "seed": 4},
}


def seeded(db_url: str, settings: Any) -> tuple[int, list[int]]:
    """Three trials: one completed with a returned value and three named metrics (and a
    trainer's, train_accuracy), one failed after an epoch, one still queued."""
    db = get_database(db_url)
    study_id = create_study(db=db, data=SPEC, settings=settings)
    offers = Offers(trainer=False, entrypoints=(ENTRYPOINT,))
    worker = register_worker(db=db, name="own", host=None, pid=None, offers=offers)
    done, failed = claim_trials(db=db, worker_id=worker, max_trials=2, lease_seconds=60)
    curve = {
        "epoch": [1, 2, 3],
        "train_accuracy": [0.5, 0.7, 0.95],
        "extra": {"accuracy": [0.4, 0.6, 0.9], "loss": [1.0, 0.5, 0.25], "f1": [None, 0.5, 0.8]},
    }
    answers = finish_trials(
        db=db,
        results=[
            {
                "trial_id": done.trial_id,
                "lease_token": done.lease_token,
                "outcome": "completed",
                "error": None,
                "curve": curve,
                "value": 0.875,  # what the function returned, not the last epoch's 0.9
            },
            {
                "trial_id": failed.trial_id,
                "lease_token": failed.lease_token,
                "outcome": "failed",
                "error": "ValueError: no",
                "curve": {"epoch": [1], "extra": {"loss": [3.0]}},
            },
        ],
    )
    assert [a["status"] for a in answers] == ["completed", "failed"], answers
    return study_id, [done.trial_id, failed.trial_id]


def test_a_task_study_exports_its_params_value_and_named_metrics(
    db_url: str, live_service: Any, settings_for: Any
) -> None:
    svc = live_service(db_url)
    study_id, (done, failed) = seeded(db_url, settings_for(db_url))
    data = httpx.get(f"{svc.url}/api/studies/{study_id}/trials.json", timeout=30).json()
    finals = [c for c in data["columns"] if c.startswith("final.")]
    # the objective's first, then the others by name, then the trainer's it reported
    assert finals == ["final.accuracy", "final.f1", "final.loss", "final.train_accuracy"]
    assert {"param.optimizer.lr", "param.loss_kind", "value"} <= set(data["columns"])
    assert data["objective"]["metric"] == "accuracy"
    rows = {r["trial_id"]: r for r in data["rows"]}
    row = rows[done]
    assert row["value"] == pytest.approx(0.875) and row["status"] == "completed"
    assert row["final.accuracy"] == pytest.approx(0.9)
    assert row["final.loss"] == pytest.approx(0.25) and row["final.f1"] == pytest.approx(0.8)
    assert row["final.train_accuracy"] == pytest.approx(0.95)
    assert 1e-4 <= row["param.optimizer.lr"] <= 1e-1
    assert row["param.loss_kind"] in ("hinge", "log_loss")
    assert rows[failed]["final.loss"] == pytest.approx(3.0)
    assert rows[failed]["final.accuracy"] is None and rows[failed]["value"] is None
    queued = next(r for r in data["rows"] if r["status"] == "queued")
    assert queued["final.accuracy"] is None and "param.optimizer.lr" in queued

    text = httpx.get(f"{svc.url}/api/studies/{study_id}/trials.csv", timeout=30).text
    table = list(csv.DictReader(io.StringIO(text)))
    assert list(table[0]) == data["columns"] and len(table) == 3
    assert {r["round"] for r in table} == {"0"}  # the API's count, from 0 (docs/api.md)
    by_id = {int(r["trial_id"]): r for r in table}
    assert float(by_id[done]["value"]) == pytest.approx(0.875)
    assert float(by_id[done]["final.loss"]) == pytest.approx(0.25)
    assert float(by_id[done]["param.optimizer.lr"]) == pytest.approx(row["param.optimizer.lr"])
    assert by_id[failed]["final.accuracy"] == "" and by_id[failed]["error"] == "ValueError: no"


def test_a_trainer_study_exports_each_of_the_trainer_s_final_metrics(
    db_url: str, live_service: Any, spec_factory: Any, settings_for: Any
) -> None:
    svc = live_service(db_url)
    study_id = create_study(
        db=get_database(db_url), data=spec_factory(), settings=settings_for(db_url)
    )
    data = httpx.get(f"{svc.url}/api/studies/{study_id}/trials.json", timeout=30).json()
    finals = [c for c in data["columns"] if c.startswith("final.")]
    assert finals == [f"final.{m}" for m in METRIC_FIELDS]  # none reported yet: all of them

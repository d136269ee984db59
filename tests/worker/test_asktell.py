"""The ask/tell client against a real service: it leases a study's trials as a worker
does, ends each exactly once, loses a lease with a clear error, and asks only for the
trials of its study's function."""

from __future__ import annotations

import math
import threading
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from service.db import get_database
from service.models import Metric, Trial
from tests.conftest import small_spec
from worker.asktell import Client, LeaseLost, TrialEnded
from worker.client import ApiError

ENTRYPOINT = "tests.worker.test_asktell:objective"


def objective(params: dict[str, Any], trial: Any) -> float:
    """A quadratic with its minimum at x = 0.3, reported over `epochs` epochs."""
    value = (params["x"] - 0.3) ** 2
    for epoch in range(trial.start_epoch + 1, params.get("epochs", 1) + 1):
        trial.report(epoch, loss=value * (1 + 1 / epoch))
        if trial.should_stop():
            break
    return value


def task_spec(trials: int = 4, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "quadratic",
        "task": {"entrypoint": ENTRYPOINT, "params": {"epochs": 3}},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "strategy": {"type": "random", "trials": trials},
        "objective": {"metric": "loss", "direction": "minimize"},
        "execution": {"seed": 3},
    }
    spec.update(overrides)
    return spec


def test_a_program_asks_for_every_trial_and_tells_each_result(db_url, live_service) -> None:
    svc = live_service(db_url)
    with Client(svc.url) as client:
        study = client.create_study(task_spec(trials=5))
        seen = []
        while (trial := study.ask(timeout=30)) is not None:
            assert trial.study_id == study.id and trial.params["epochs"] == 3
            seen.append(trial.number)
            assert trial.tell(objective(trial.params, trial)) == "completed"
        document = study.read()
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert document["status"] == "completed" and document["counts"]["completed"] == 5
    best = document["best_trial"]
    assert best["value"] == pytest.approx((best["params"]["x"] - 0.3) ** 2)
    curve = httpx.get(f"{svc.url}/api/trials/{best['id']}/metrics", timeout=30).json()
    assert [row["epoch"] for row in curve] == [1, 2, 3]
    workers = httpx.get(f"{svc.url}/api/workers", timeout=30).json()
    assert [(w["trainer"], w["entrypoints"]) for w in workers] == [(False, [ENTRYPOINT])]


def test_a_yaml_file_makes_the_study_and_a_study_is_found_by_id(
    sqlite_url, live_service, tmp_path
) -> None:
    svc = live_service(sqlite_url)
    path = tmp_path / "quadratic.yaml"
    path.write_text(
        f"name: from-yaml\ntask: {{entrypoint: '{ENTRYPOINT}'}}\n"
        "space: {x: {type: float, low: 0, high: 1}}\n"
        "strategy: {type: random, trials: 2}\nobjective: {direction: minimize}\n",
        encoding="utf-8",
    )
    with Client(svc.url) as client:
        made = client.create_study(path)
        again = client.study(made.id)
        assert (again.name, again.entrypoint) == ("from-yaml", ENTRYPOINT)
        for _ in range(2):
            trial = again.ask(timeout=30)
            assert trial is not None
            assert trial.tell({"value": trial.params["x"]}) == "completed"
        assert again.ask(timeout=30) is None
        builtin = httpx.post(f"{svc.url}/api/studies", json=small_spec(), timeout=30).json()
        with pytest.raises(ValueError, match="built-in trainer"):
            client.study(builtin["id"])


def test_a_told_trial_ends_once(sqlite_url, live_service) -> None:
    svc = live_service(sqlite_url)
    with Client(svc.url) as client:
        study = client.create_study(task_spec(trials=1))
        trial = study.ask(timeout=30)
        assert trial is not None
        trial.report(1, loss=0.5)
        assert trial.tell(0.25) == "completed"
        with pytest.raises(TrialEnded, match="already ended"):
            trial.tell(0.1)
        with pytest.raises(TrialEnded):
            trial.report(2, loss=0.1)
        # The same result sent again over the wire (its answer lost) is stored once.
        resent = {"lease_token": trial.token, "outcome": "completed", "value": 0.1}
        answer = httpx.post(
            f"{svc.url}/api/worker/trials/{trial.trial_id}/finish", json=resent, timeout=30
        )
        assert answer.status_code in (200, 409)
        document = study.read()
    assert document["counts"]["completed"] == 1
    assert document["best_trial"]["value"] == 0.25
    with get_database(sqlite_url).session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(Metric)) == 1


def test_a_lost_lease_raises_on_report_and_tell_and_the_new_holder_ends_it(
    sqlite_url, live_service
) -> None:
    # Heartbeats every 10 s against a 1 s lease: each holder's lease runs out, the reaper
    # queues the trial again, and another program gets it.
    svc = live_service(
        sqlite_url, lease_seconds=1.0, heartbeat_seconds=10.0, reap_interval_seconds=0.2
    )
    with Client(svc.url) as first, Client(svc.url) as second, Client(svc.url) as third:
        study = first.create_study(task_spec(trials=1))
        stale = study.ask(timeout=30)
        assert stale is not None
        later = second.study(study.id).ask(timeout=30)  # waits for the reaper
        assert later is not None and later.trial_id == stale.trial_id
        assert later.attempt == stale.attempt + 1
        message = rf"trial {stale.trial_id} \(number 0 of study {study.id}\): its lease was lost"
        with pytest.raises(LeaseLost, match=message):
            stale.tell(0.9)
        with pytest.raises(LeaseLost, match=message):  # and again, not "already ended"
            stale.report(1, loss=1.0)
        fresh = third.study(study.id).ask(timeout=30)  # `later` lost its lease too
        assert fresh is not None and fresh.attempt == later.attempt + 1
        with pytest.raises(LeaseLost):
            later.tell(0.7)
        assert fresh.tell(0.5) == "completed"
        document = study.read()
    assert document["counts"]["completed"] == 1 and document["best_trial"]["value"] == 0.5
    with get_database(sqlite_url).session(write=False) as s:
        assert s.scalars(select(Metric.attempt)).all() == [fresh.attempt]


def test_ask_waits_while_trials_run_elsewhere_then_says_the_study_is_over(
    sqlite_url, live_service
) -> None:
    svc = live_service(sqlite_url)
    with Client(svc.url) as holder, Client(svc.url) as waiter:
        study = holder.create_study(task_spec(trials=1))
        trial = study.ask(timeout=30)
        assert trial is not None
        other = waiter.study(study.id)
        with pytest.raises(TimeoutError, match=f"study {study.id}"):
            other.ask(timeout=0.5)
        answers: list[Any] = []
        asking = threading.Thread(target=lambda: answers.append(other.ask(timeout=30)))
        asking.start()
        trial.tell(0.1)
        asking.join(timeout=30)
    assert answers == [None]


def test_a_trial_handed_back_resumes_from_its_checkpoint(sqlite_url, live_service) -> None:
    svc = live_service(sqlite_url)
    with Client(svc.url) as first:
        study = first.create_study(task_spec(trials=1))
        trial = study.ask(timeout=30)
        assert trial is not None and trial.start_epoch == 0 and trial.resume() is None
        trial.report(1, loss=0.9)
        trial.report(2, loss=0.8)
        trial.checkpoint(b"state after 2")
    # closing hands the trial back to the queue, unfinished
    with Client(svc.url) as second:
        again = second.study(study.id).ask(timeout=30)
        assert again is not None and again.trial_id == trial.trial_id
        assert again.start_epoch == 2 and again.resume() == b"state after 2"
        again.report(3, loss=0.7)
        assert again.tell(0.7) == "completed"
    curve = httpx.get(f"{svc.url}/api/trials/{trial.trial_id}/metrics", timeout=30).json()
    assert [row["epoch"] for row in curve] == [1, 2, 3]


def test_not_finite_values_and_failures_fail_the_trial_with_the_reason(
    sqlite_url, live_service
) -> None:
    svc = live_service(sqlite_url)
    with Client(svc.url) as client:
        study = client.create_study(task_spec(trials=2))
        first, second = study.ask(timeout=30), study.ask(timeout=30)
        assert first is not None and second is not None
        assert first.tell(math.nan) == "failed"
        assert second.fail("CUDA out of memory") == "failed"
    with get_database(sqlite_url).session(write=False) as s:
        errors = {row.id: row.error for row in s.execute(select(Trial.id, Trial.error))}
    assert errors[first.trial_id] == (
        "the objective returned NaN for 'loss': a trial's value must be a finite number"
    )
    assert errors[second.trial_id] == "CUDA out of memory"


def test_report_and_checkpoint_refuse_what_the_service_would(sqlite_url, live_service) -> None:
    svc = live_service(sqlite_url)
    with Client(svc.url) as client:
        study = client.create_study(task_spec(trials=1))
        trial = study.ask(timeout=30)
        assert trial is not None
        with pytest.raises(ValueError, match="report an epoch first"):
            trial.checkpoint(b"state")
        trial.report(1, loss=0.5)
        with pytest.raises(ValueError, match="epoch 1 is not after epoch 1"):
            trial.report(1, loss=0.4)
        with pytest.raises(ValueError, match=r"epoch 4 is past params\['epochs'\] = 3"):
            trial.report(4, loss=0.4)
        with pytest.raises(TypeError, match="metric loss must be a number, got str 'low'"):
            trial.report(2, loss="low")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="an identifier of at most 32 characters"):
            trial.report(2, **{"dev loss": 0.1})
        with pytest.raises(TypeError, match="a checkpoint is bytes, got str"):
            trial.checkpoint("state")  # type: ignore[arg-type]
        assert trial.tell({"loss": 0.5, "accuracy": 0.9}) == "completed"
        assert study.read()["best_trial"]["value"] == 0.5


def test_a_dict_without_the_metric_fails_and_one_never_reported_is_one_epoch(
    sqlite_url, live_service
) -> None:
    svc = live_service(sqlite_url)
    with Client(svc.url) as client:
        study = client.create_study(task_spec(trials=2))
        wrong, quiet = study.ask(timeout=30), study.ask(timeout=30)
        assert wrong is not None and quiet is not None
        assert wrong.tell({"accuracy": 0.9}) == "failed"
        assert quiet.tell({"loss": 0.25, "accuracy": 0.75}) == "completed"
    with get_database(sqlite_url).session(write=False) as s:
        error = s.scalar(select(Trial.error).where(Trial.id == wrong.trial_id))
    assert error == (
        "the objective returned a dict without 'loss' (objective.metric); it holds accuracy"
    )
    curve = httpx.get(f"{svc.url}/api/trials/{quiet.trial_id}/metrics", timeout=30).json()
    assert len(curve) == 1 and curve[0]["epoch"] == 1


def test_asha_stops_poor_trials_through_should_stop(db_url, live_service) -> None:
    svc = live_service(db_url)
    spec = task_spec(
        trials=12,
        task={"entrypoint": ENTRYPOINT, "params": {"epochs": 9}},
        pruning={"type": "asha", "min_epochs": 1, "reduction_factor": 3},
    )
    stopped_at = {}
    with Client(svc.url) as client:
        study = client.create_study(spec)
        while (trial := study.ask(timeout=30)) is not None:
            value = objective(trial.params, trial)
            if trial.should_stop():
                stopped_at[trial.trial_id] = trial.last_epoch
                assert trial.tell(None) == "pruned"
            else:
                assert trial.tell(value) == "completed"
        counts = study.read()["counts"]
    assert counts.get("pruned", 0) == len(stopped_at) >= 1
    assert set(stopped_at.values()) <= {1, 3}  # ASHA's rungs below 9 epochs


def test_ask_leases_only_its_own_studys_trials(sqlite_url, live_service) -> None:
    svc = live_service(sqlite_url)
    with Client(svc.url) as client:
        first = client.create_study(task_spec(trials=2, name="first"))
        second = client.create_study(task_spec(trials=2, name="second"))
        for _ in range(2):
            trial = second.ask(timeout=30)
            assert trial is not None and trial.study_id == second.id
            trial.tell(0.1)
        assert second.ask(timeout=30) is None
        assert first.read()["counts"].get("queued") == 2
    # The first study's trials were never leased: the claims asked for the second's only
    # (a claim by function alone leased the older study's trial first, then handed it back).
    with get_database(sqlite_url).session(write=False) as s:
        attempts = s.scalars(select(Trial.attempt).where(Trial.study_id == first.id)).all()
    assert attempts == [0, 0]


def test_with_tokens_the_client_needs_worker_and_write_scopes(sqlite_url, live_service) -> None:
    both, worker_only = "both-secret-0123456789abcdef", "worker-secret-0123456789abcdef"
    svc = live_service(sqlite_url, tokens=f"prog:write,worker:{both};pool:worker:{worker_only}")
    with Client(svc.url, token=worker_only) as client, pytest.raises(ApiError, match="403"):
        client.create_study(task_spec(trials=1))
    with Client(svc.url, token=both) as client:
        study = client.create_study(task_spec(trials=1))
        trial = study.ask(timeout=30)
        assert trial is not None and trial.tell(0.2) == "completed"


def test_coarse_to_fine_rounds_come_to_an_asking_program(db_url, live_service) -> None:
    # ask() waits while the next round is planned, then leases its trials.
    svc = live_service(db_url)
    spec = task_spec(
        space={
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "beta": {"type": "float", "low": 0.9, "high": 0.999, "scale": "one_minus_log"},
        },
        strategy={"type": "coarse_to_fine", "rounds": 2, "trials_per_round": 4},
    )
    with Client(svc.url) as client:
        study = client.create_study(spec)
        rounds = []
        while (trial := study.ask(timeout=60)) is not None:
            assert 0.9 <= trial.params["beta"] <= 0.999
            rounds.append(trial.number // 4)
            trial.tell(objective(trial.params, trial) + (1 - trial.params["beta"]))
        document = study.read()
    assert rounds == [0] * 4 + [1] * 4
    assert document["status"] == "completed" and document["counts"]["completed"] == 8
    trials = httpx.get(f"{svc.url}/api/studies/{study.id}/trials", timeout=30).json()["items"]
    assert sorted(t["round"] for t in trials) == [0] * 4 + [1] * 4

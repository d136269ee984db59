"""A task's own function on a worker: its curve, value, checkpoints and every way it ends."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from worker.objective import EntrypointError, Trial, load_entrypoint
from worker.runner import Worker

OBJ = "tests.integration.objectives"


def task_spec(fn: str, *, trials: int = 2, **more: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": f"task {fn}",
        "task": {"entrypoint": f"{OBJ}:{fn}", "params": {"epochs": 4}},
        "space": {"alpha": {"type": "float", "low": 1e-5, "high": 1e-2, "scale": "log"}},
        "strategy": {"type": "random", "trials": trials},
        "objective": {"metric": "accuracy", "direction": "maximize"},
        "execution": {"max_retries": 2, "seed": 3},
    }
    spec.update(more)
    return spec


def submit(url: str, spec: dict[str, Any]) -> int:
    r = httpx.post(f"{url}/api/studies", json=spec, timeout=30)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def trials_of(url: str, study_id: int) -> list[dict[str, Any]]:
    return httpx.get(f"{url}/api/studies/{study_id}/trials", timeout=30).json()["items"]


def run_worker(url: str, *fns: str, trainer: bool = False) -> int:
    worker = Worker(
        url, exit_when_idle=True, entrypoints=[f"{OBJ}:{f}" for f in fns], trainer=trainer
    )
    return worker.run()


def test_a_function_trains_reports_and_its_value_is_what_it_returned(
    db_url: str, live_service: Any
) -> None:
    svc = live_service(db_url)
    study = submit(svc.url, task_spec("sgd_digits"))
    assert run_worker(svc.url, "sgd_digits") == 2
    for trial in trials_of(svc.url, study):
        assert trial["status"] == "completed", trial
        curve = httpx.get(f"{svc.url}/api/trials/{trial['id']}/metrics", timeout=30).json()
        assert [e["epoch"] for e in curve] == [1, 2, 3, 4]  # once per epoch
        assert all(0 <= e["extra"]["accuracy"] <= 1 for e in curve)
        assert all(e["train_accuracy"] is not None and e["dev_cost"] is None for e in curve)
        assert trial["value"] == pytest.approx(curve[-1]["extra"]["accuracy"])


def test_a_function_that_raises_fails_its_trial_once_with_its_message(
    db_url: str, live_service: Any
) -> None:
    svc = live_service(db_url)
    study = submit(svc.url, task_spec("raises", trials=1))
    assert run_worker(svc.url, "raises") == 1  # failed, not retried
    (trial,) = trials_of(svc.url, study)
    assert trial["status"] == "failed" and trial["attempt"] == 1, trial
    assert trial["error"].startswith("ValueError: alpha ") and "is not one I take" in trial["error"]


def test_a_function_returning_nan_fails_saying_so(db_url: str, live_service: Any) -> None:
    svc = live_service(db_url)
    study = submit(svc.url, task_spec("returns_nan", trials=1))
    run_worker(svc.url, "returns_nan")
    (trial,) = trials_of(svc.url, study)
    assert trial["status"] == "failed" and "returned NaN for 'accuracy'" in trial["error"], trial


def test_a_function_that_never_reports_gets_one_epoch_of_what_it_returned(
    db_url: str, live_service: Any
) -> None:
    svc = live_service(db_url)
    spec = task_spec(
        "never_reports",
        trials=3,
        space={"x": {"type": "float", "low": 0.0, "high": 1.0}},
        objective={"metric": "loss", "direction": "minimize"},
    )
    spec["task"]["params"] = {}  # no epochs: nothing bounds the curve but the service
    study = submit(svc.url, spec)
    run_worker(svc.url, "never_reports")
    for trial in trials_of(svc.url, study):
        assert trial["status"] == "completed", trial
        assert trial["value"] == pytest.approx((trial["params"]["x"] - 0.3) ** 2)
        (epoch,) = httpx.get(f"{svc.url}/api/trials/{trial['id']}/metrics", timeout=30).json()
        assert epoch["epoch"] == 1 and epoch["extra"]["x_seen"] == trial["params"]["x"]


def test_a_dict_without_the_objective_metric_fails_naming_it(
    db_url: str, live_service: Any
) -> None:
    svc = live_service(db_url)
    spec = task_spec(
        "never_reports", trials=1, space={"x": {"type": "float", "low": 0.0, "high": 1.0}}
    )
    study = submit(svc.url, spec)  # metric accuracy: never_reports returns loss and x_seen
    run_worker(svc.url, "never_reports")
    (trial,) = trials_of(svc.url, study)
    assert trial["status"] == "failed"
    assert "without 'accuracy'" in trial["error"] and "loss, x_seen" in trial["error"]


def test_a_worker_without_the_entrypoint_leaves_the_trials_queued(
    db_url: str, live_service: Any, spec_factory: Any
) -> None:
    svc = live_service(db_url)
    study = submit(svc.url, task_spec("sgd_digits"))
    builtin = submit(svc.url, spec_factory())
    assert Worker(svc.url, exit_when_idle=True).run() == 4  # the trainer's four, none else
    assert {t["status"] for t in trials_of(svc.url, study)} == {"queued"}
    assert {t["status"] for t in trials_of(svc.url, builtin)} == {"completed"}


# --- the pieces, alone ------------------------------------------------------------------


def test_an_entrypoint_that_cannot_load_is_refused_saying_why() -> None:
    with pytest.raises(EntrypointError, match=r"module\.path:function"):
        load_entrypoint("no_colon")
    with pytest.raises(EntrypointError, match="cannot import no_such_pkg_here"):
        load_entrypoint("no_such_pkg_here.mod:f")
    with pytest.raises(EntrypointError, match="has no 'nope'; its functions: never_reports, "):
        load_entrypoint(f"{OBJ}:nope")
    with pytest.raises(EntrypointError, match=r"has no 'rasies'; did you mean 'raises'\?$"):
        load_entrypoint(f"{OBJ}:rasies")
    with pytest.raises(EntrypointError, match=r"has no 'objective' \(it defines no function\)"):
        load_entrypoint("tests.integration:objective")
    with pytest.raises(EntrypointError, match="not a function"):
        load_entrypoint("os:sep")
    assert load_entrypoint(f"{OBJ}:raises").__name__ == "raises"


def test_a_worker_that_cannot_load_its_entrypoint_fails_at_start() -> None:
    with pytest.raises(EntrypointError, match="cannot import"):
        Worker("http://127.0.0.1:9", entrypoints=["missing_pkg_x:objective"])


class _Run:
    """The part of a TrialRun a Trial handle uses, recording what it is given."""

    def __init__(self, epochs: int = 10) -> None:
        import threading

        self.epochs = epochs
        self.rows: list[dict[str, Any]] = []
        self.saved: list[Any] = []
        self.stop_asked = threading.Event()
        self.lease_lost = threading.Event()
        self.worker = type("W", (), {"shutdown": threading.Event()})()

    def on_epoch(self, row: dict[str, Any]) -> bool:
        self.rows.append(row)
        return False

    def on_checkpoint(self, state: Any) -> None:
        self.saved.append(state)


def handle(run: _Run) -> Trial:
    claimed = {"config": {"a": 1}, "number": 3, "study_id": 2, "trial_id": 9}
    return Trial(run, claimed)  # type: ignore[arg-type]


def test_reports_split_the_trainers_metrics_from_others_and_refuse_mistakes() -> None:
    run = _Run()
    trial = handle(run)
    trial.report(1, dev_accuracy=0.5, accuracy=0.7)
    assert run.rows == [{"epoch": 1, "dev_accuracy": 0.5, "extra": {"accuracy": 0.7}}]
    with pytest.raises(ValueError, match="not after epoch 1"):
        trial.report(1, accuracy=0.8)
    with pytest.raises(TypeError, match="must be a number"):
        trial.report(2, accuracy="high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="past params"):
        trial.report(11, accuracy=0.1)
    with pytest.raises(TypeError, match="epoch must be an int"):
        trial.report(2.0, accuracy=0.1)  # type: ignore[arg-type]


def test_a_checkpoint_is_the_state_after_the_last_reported_epoch() -> None:
    run = _Run()
    trial = handle(run)
    with pytest.raises(ValueError, match="report an epoch first"):
        trial.checkpoint(b"x")
    trial.report(1, accuracy=0.5)
    trial.report(2, accuracy=0.6)
    trial.checkpoint(b"model")
    (state,) = run.saved
    assert state.epoch == 2 and state.to_bytes() == b"model"  # the function's bytes, as given
    with pytest.raises(TypeError, match="bytes"):
        trial.checkpoint("model")  # type: ignore[arg-type]


def test_should_stop_follows_the_service_and_the_worker() -> None:
    run = _Run()
    trial = handle(run)
    assert not trial.should_stop()
    run.stop_asked.set()
    assert trial.should_stop()

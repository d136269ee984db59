"""A task's own function keeps state of its own making: its checkpoints are opaque bytes
that pause and resume, a dead worker's requeue, and a fork hand back exactly as kept."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.objectives import opaque_blob
from tests.integration.waiting import wait_until
from worker.runner import Worker

ENTRYPOINT = "tests.integration.objectives:opaque_state"
ROOT = Path(__file__).resolve().parents[2]  # where `tests.integration.objectives` imports from


def state_spec(
    kind: str, out_dir: Path, *, mode: str = "panda", epochs: int = 40
) -> dict[str, Any]:
    return {
        "name": f"opaque {kind}",
        "task": {
            "entrypoint": ENTRYPOINT,
            "params": {"epochs": epochs, "blob": kind, "sleep": 0.1, "out_dir": str(out_dir)},
        },
        "space": {"x": {"type": "float", "low": 0.5, "high": 1.0}},
        "strategy": {"type": "random", "trials": 1},
        "objective": {"metric": "score", "direction": "maximize"},
        "execution": {"mode": mode, "checkpoint_every": 1, "max_retries": 2, "seed": 2},
    }


@contextlib.contextmanager
def worker_thread(url: str, entrypoint: str = ENTRYPOINT) -> Iterator[Worker]:
    """A worker offering the function, in a thread of this process, until the block ends."""
    worker = Worker(url, entrypoints=[entrypoint], trainer=False)
    thread = threading.Thread(target=worker.run, name="test-worker")
    thread.start()
    try:
        yield worker
    finally:
        worker.shutdown.set()
        thread.join(timeout=30)


def only_trial(api: httpx.Client, study_id: int) -> dict[str, Any]:
    (trial,) = api.get(f"/api/studies/{study_id}/trials").json()["items"]
    return dict(trial)


def kept(api: httpx.Client, trial_id: int) -> dict[int, bytes]:
    """The trial's checkpoints by epoch, their bytes as the service hands them back."""
    listed = api.get(f"/api/trials/{trial_id}/checkpoints").json()
    return {c["epoch"]: api.get(f"/api/worker/checkpoints/{c['id']}").content for c in listed}


def resumed_with(out_dir: Path, trial_id: int, epoch: int) -> list[bytes]:
    """What `trial.resume()` gave each attempt of `trial_id` that started at `epoch`."""
    return [p.read_bytes() for p in sorted(out_dir.glob(f"{trial_id}-{epoch}-*.bin"))]


def test_a_pause_keeps_the_function_s_bytes_and_resume_hands_them_back(
    db_url: str, live_service: Any, tmp_path: Path
) -> None:
    svc = live_service(db_url, caviar_checkpoint_seconds=0.0)
    api = httpx.Client(base_url=svc.url, timeout=30)
    study_id = api.post("/api/studies", json=state_spec("zeros", tmp_path)).json()["id"]
    with worker_thread(svc.url):
        trial = wait_until(
            lambda: (t := only_trial(api, study_id))["epochs_done"] >= 3 and t, what="3 epochs"
        )
        assert api.post(f"/api/trials/{trial['id']}/pause").status_code == 200
        wait_until(lambda: only_trial(api, study_id)["status"] == "paused", what="the pause")
        stored = kept(api, trial["id"])
        paused_at = max(stored)
        assert 3 <= paused_at < 40 and set(stored.values()) == {b"\x00" * 100}
        assert api.post(f"/api/trials/{trial['id']}/resume").status_code == 200
        done = wait_until(
            lambda: (t := only_trial(api, study_id))["status"] in ("completed", "failed") and t,
            what="the resumed trial",
        )
    assert done["status"] == "completed" and done["attempt"] == 2, done
    assert resumed_with(tmp_path, trial["id"], paused_at) == [b"\x00" * 100]
    curve = api.get(f"/api/trials/{trial['id']}/metrics").json()
    assert [e["epoch"] for e in curve] == list(range(1, 41))
    assert {e["extra"]["resumed_from"] for e in curve[paused_at:]} == {paused_at}


def test_a_killed_worker_s_trial_resumes_from_the_function_s_own_bytes(
    db_url: str, live_service: Any, tmp_path: Path
) -> None:
    svc = live_service(
        db_url,
        lease_seconds=2.0,
        heartbeat_seconds=0.3,
        reap_interval_seconds=0.3,
        caviar_checkpoint_seconds=0.0,
    )
    api = httpx.Client(base_url=svc.url, timeout=30)
    spec = state_spec("zip", tmp_path, mode="caviar")
    study_id = api.post("/api/studies", json=spec).json()["id"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "service.cli", "worker", "--api", svc.url]
    proc = subprocess.Popen(
        [*command, "--entrypoint", ENTRYPOINT, "--no-trainer"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        trial = wait_until(
            lambda: (
                (t := only_trial(api, study_id))["status"] == "running"
                and max(kept(api, t["id"]), default=0) >= 3
                and t
            ),
            what="a checkpoint at epoch 3",
        )
        os.killpg(proc.pid, signal.SIGKILL)  # mid-trial, between two epochs or in one
        proc.wait(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    # An upload the killed process had sent may still be stored until the lease expires
    # and the trial is queued again; from then on, what the attempt kept is final (a late
    # upload is refused: the lease is gone).
    wait_until(lambda: only_trial(api, study_id)["status"] == "queued", what="the trial requeued")
    stored = kept(api, trial["id"])
    last = max(stored)
    assert stored[last] == opaque_blob("zip", last)
    with worker_thread(svc.url):
        done = wait_until(
            lambda: (t := only_trial(api, study_id))["status"] in ("completed", "failed") and t,
            what="the requeued trial",
        )
    assert done["status"] == "completed" and done["attempt"] == 2, done
    assert resumed_with(tmp_path, trial["id"], last) == [opaque_blob("zip", last)]
    curve = api.get(f"/api/trials/{trial['id']}/metrics").json()
    assert [e["epoch"] for e in curve] == list(range(1, 41))
    assert done["value"] == pytest.approx(40 * done["params"]["x"])


def test_a_fork_of_a_task_s_trial_gets_its_changed_params_and_the_checkpoint_s_bytes(
    db_url: str, live_service: Any, tmp_path: Path
) -> None:
    svc = live_service(db_url)
    api = httpx.Client(base_url=svc.url, timeout=30)
    spec = state_spec("zip", tmp_path, epochs=8)
    spec["task"]["params"]["sleep"] = 0.01
    study_id = api.post("/api/studies", json=spec).json()["id"]
    with worker_thread(svc.url):
        parent = wait_until(
            lambda: (t := only_trial(api, study_id))["status"] == "completed" and t,
            what="the parent",
        )
        assert sorted(kept(api, parent["id"])) == list(range(1, 9))  # panda keeps them all

        def refused(changes: dict[str, Any], from_epoch: int = 4) -> dict[str, Any]:
            r = api.post(
                f"/api/trials/{parent['id']}/fork",
                json={"from_epoch": from_epoch, "changes": changes},
            )
            assert r.status_code == 422, r.text
            (error,) = r.json()["errors"]
            return dict(error)

        error = refused({"learning_rate": 0.1})
        assert (
            error["loc"] == "changes.learning_rate" and "not a param of this study" in error["msg"]
        )
        assert "blob, epochs, out_dir, sleep, x" in error["msg"]
        error = refused({"x": 2.0})
        assert error["loc"] == "changes.x" and "a number from 0.5 to 1" in error["msg"]
        error = refused({"blob": ["zeros"]})
        assert error["loc"] == "changes.blob" and "a string, a number" in error["msg"]
        error = refused({"epochs": 4})
        assert error["loc"] == "changes.epochs" and "more than from_epoch (4)" in error["msg"]
        error = refused({"epochs": 2.5})
        assert error["loc"] == "changes.epochs" and "whole number" in error["msg"]
        error = refused({}, from_epoch=9)
        assert error["loc"] == "from_epoch" and "1, 2, 3, 4, 5, 6, 7, 8" in error["msg"]

        r = api.post(
            f"/api/trials/{parent['id']}/fork",
            json={"from_epoch": 4, "changes": {"x": 0.75, "epochs": 10}},
        )
        assert r.status_code == 201, r.text
        child = r.json()
        assert child["params"]["x"] == 0.75 and child["config"]["epochs"] == 10
        assert child["parent_trial_id"] == parent["id"] and child["fork_epoch"] == 4
        done = wait_until(
            lambda: (
                (t := api.get(f"/api/trials/{child['id']}").json())["status"]
                in ("completed", "failed")
                and t
            ),
            what="the fork",
        )
    assert done["status"] == "completed", done
    assert done["value"] == pytest.approx(10 * 0.75)  # it ran with the changed params
    assert resumed_with(tmp_path, child["id"], 4) == [opaque_blob("zip", 4)]
    mine = api.get(f"/api/trials/{child['id']}/metrics").json()
    theirs = api.get(f"/api/trials/{parent['id']}/metrics").json()
    assert [e["epoch"] for e in mine] == list(range(1, 11))
    assert [e["extra"] for e in mine[:4]] == [e["extra"] for e in theirs[:4]]  # shared history
    assert [e["extra"] for e in mine[4:]] == [
        {"score": epoch * 0.75, "resumed_from": 4.0} for epoch in range(5, 11)
    ]


def test_the_pytorch_example_forks_with_a_new_learning_rate(
    sqlite_url: str, live_service: Any
) -> None:
    """docs/own-code.md: a fork of the PyTorch example goes on from the checkpoint's
    weights, with the rate the fork changed."""
    svc = live_service(sqlite_url)
    api = httpx.Client(base_url=svc.url, timeout=30)
    entrypoint = "examples.objectives.torch_digits:objective"
    spec = {
        "name": "torch fork",
        "task": {"entrypoint": entrypoint, "params": {"epochs": 4, "hidden": 32, "dropout": 0.1}},
        "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "scale": "log"}},
        "strategy": {"type": "random", "trials": 1},
        "objective": {"metric": "accuracy", "direction": "maximize"},
        "execution": {"mode": "panda", "checkpoint_every": 1, "seed": 0},
    }
    study_id = api.post("/api/studies", json=spec).json()["id"]
    with worker_thread(svc.url, entrypoint):
        parent = wait_until(
            lambda: (t := only_trial(api, study_id))["status"] in ("completed", "failed") and t,
            timeout=120,
            what="the parent",
        )
        assert parent["status"] == "completed", parent
        bad = api.post(
            f"/api/trials/{parent['id']}/fork", json={"from_epoch": 2, "changes": {"lr": 0.5}}
        )
        assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == "changes.lr"
        lr = 0.1 if parent["params"]["lr"] < 0.01 else 1e-4  # far from the parent's
        r = api.post(
            f"/api/trials/{parent['id']}/fork", json={"from_epoch": 2, "changes": {"lr": lr}}
        )
        assert r.status_code == 201, r.text
        child = r.json()
        done = wait_until(
            lambda: (
                (t := api.get(f"/api/trials/{child['id']}").json())["status"]
                in ("completed", "failed")
                and t
            ),
            timeout=120,
            what="the fork",
        )
    assert done["status"] == "completed", done
    assert done["params"]["lr"] == lr and done["config"]["hidden"] == 32
    mine = api.get(f"/api/trials/{child['id']}/metrics").json()
    theirs = api.get(f"/api/trials/{parent['id']}/metrics").json()
    assert [e["epoch"] for e in mine] == [1, 2, 3, 4]
    assert [e["extra"] for e in mine[:2]] == [e["extra"] for e in theirs[:2]]
    assert mine[2]["extra"]["loss"] != theirs[2]["extra"]["loss"]  # another rate since

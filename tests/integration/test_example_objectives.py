"""The example objectives (examples/objectives/) through a real service and `caviar worker
--entrypoint` processes, as docs/own-code.md runs them: the scikit-learn one with ASHA
pruning, the PyTorch one paused, resumed and forked from its checkpoints."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import yaml
from sqlalchemy import select

from service.db import get_database
from service.models import Checkpoint, Metric, Trial
from tests.conftest import ROOT
from tests.integration.waiting import wait_until
from worker.asked import AskedTrial
from worker.asktell import Client

CAVIAR = [sys.executable, "-m", "service.cli"]
EXAMPLES = ROOT / "examples" / "objectives"


def example_spec(name: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text("utf-8"))
    spec.update(overrides)
    return spec


@contextmanager
def worker(url: str, entrypoint: str, processes: int = 2) -> Iterator[subprocess.Popen[str]]:
    """`caviar worker --entrypoint ... --no-trainer`, with the checkout on PYTHONPATH as
    the guide says; stopped (SIGTERM) at the end, its output checked for tracebacks."""
    command = [*CAVIAR, "worker", "--api", url, "--processes", str(processes)]
    proc = subprocess.Popen(
        [*command, "--entrypoint", entrypoint, "--no-trainer"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output


def wait_done(api: httpx.Client, study_id: int, timeout: float = 300) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        study: dict[str, Any] = api.get(f"/api/studies/{study_id}").json()
        return study if study["status"] in ("completed", "failed", "cancelled") else None

    return wait_until(done, timeout, f"study {study_id} to end")


def test_the_scikit_learn_example_runs_on_workers_and_asha_prunes_it(
    sqlite_url, live_service
) -> None:
    svc = live_service(sqlite_url)
    api = httpx.Client(base_url=svc.url, timeout=60)
    spec = example_spec("digits", strategy={"type": "random", "trials": 15})
    study_id = api.post("/api/studies", json=spec).json()["id"]
    with worker(svc.url, "examples.objectives.digits:objective"):
        study = wait_done(api, study_id)
    counts = study["counts"]
    assert study["status"] == "completed", study
    assert counts.get("completed", 0) + counts.get("pruned", 0) == 15, counts
    assert counts.get("pruned", 0) >= 1 and counts.get("completed", 0) >= 1, counts
    assert study["best_trial"]["value"] > 0.9
    trials = api.get(f"/api/studies/{study_id}/trials", params={"limit": 100}).json()["items"]
    for trial in trials:  # a pruned trial stopped at a rung: epochs 2, 6 or 18 of 20
        assert trial["epochs_done"] in ({2, 6, 18} if trial["status"] == "pruned" else {20})
    best = study["best_trial"]["id"]
    curve = api.get(f"/api/trials/{best}/metrics").json()
    assert [row["epoch"] for row in curve] == list(range(1, 21))
    assert curve[-1]["extra"]["accuracy"] == study["best_trial"]["value"]
    exported = list(
        csv.DictReader(io.StringIO(api.get(f"/api/studies/{study_id}/trials.csv").text))
    )
    assert len(exported) == 15
    columns = {"param.loss", "param.alpha", "param.eta0", "value", "final.accuracy"}
    assert columns <= set(exported[0]), exported[0].keys()
    importance = api.get(f"/api/studies/{study_id}/importance").json()
    if counts["completed"] >= 8:
        assert {i["name"] for i in importance["importances"]} == {"loss", "alpha", "eta0"}
    else:
        assert importance["importances"] == [] and importance["note"]


class PauseAfter:
    """The handle an objective gets, passed through, except that after reporting epoch
    `epoch` the program pauses the trial over the API, as a person would, and waits for
    the service's stop to reach the trial."""

    def __init__(self, trial: AskedTrial, epoch: int, api: httpx.Client) -> None:
        self.trial, self.epoch, self.api = trial, epoch, api

    def __getattr__(self, name: str) -> Any:
        return getattr(self.trial, name)

    def report(self, epoch: int, **metrics: float) -> None:
        self.trial.report(epoch, **metrics)
        if epoch == self.epoch:
            self.api.post(f"/api/trials/{self.trial.trial_id}/pause").raise_for_status()
            wait_until(self.trial.should_stop, 30, "the pause to reach the trial")


def test_the_pytorch_example_paused_or_forked_goes_on_as_if_never_stopped(
    sqlite_url, live_service
) -> None:
    from examples.objectives.torch_digits import objective

    svc = live_service(sqlite_url, heartbeat_seconds=0.2)
    api = httpx.Client(base_url=svc.url, timeout=60)
    spec = example_spec(
        "torch_digits",
        task={"entrypoint": "examples.objectives.torch_digits:objective", "params": {"epochs": 8}},
        strategy={"type": "random", "trials": 1},
    )
    del spec["pruning"]
    with Client(svc.url) as client:
        paused = client.create_study({**spec, "name": "paused"})
        straight = client.create_study({**spec, "name": "straight"})  # the same params
        trial = paused.ask(timeout=30)
        assert trial is not None
        assert trial.tell(objective(trial.params, PauseAfter(trial, 3, api))) == "paused"
    assert api.post(f"/api/trials/{trial.trial_id}/resume").status_code == 200
    ten = dict(spec, name="ten", task={**spec["task"], "params": {"epochs": 10}})
    with worker(svc.url, "examples.objectives.torch_digits:objective", processes=1):
        ends = [wait_done(api, s.id) for s in (paused, straight)]
        # A fork of the straight trial from its last epoch, 2 epochs longer, and a study
        # of the same params trained 10 epochs at once.
        fork = api.post(
            f"/api/trials/{ends[1]['best_trial']['id']}/fork",
            json={"from_epoch": 8, "changes": {"epochs": 10}},
        )
        assert fork.status_code == 201, fork.text
        ten_id = api.post("/api/studies", json=ten).json()["id"]
        longer = [wait_done(api, study_id) for study_id in (straight.id, ten_id)]
    values = [end["best_trial"]["value"] for end in ends]
    assert values[0] == values[1], values  # bit for bit: weights, moments, generator
    assert ends[0]["best_trial"]["params"] == ends[1]["best_trial"]["params"]
    forked = api.get(f"/api/trials/{fork.json()['id']}").json()
    assert forked["status"] == "completed" and forked["fork_epoch"] == 8
    assert forked["value"] == longer[1]["best_trial"]["value"]  # as if trained 10 at once
    with get_database(sqlite_url).session(write=False) as s:
        row = s.get(Trial, trial.trial_id)
        assert row is not None and row.attempt == trial.attempt + 1
        resumed_from = s.get(Checkpoint, row.resume_checkpoint_id)
        epochs = s.scalars(
            select(Metric.epoch).where(Metric.trial_id == row.id, Metric.attempt == row.attempt)
        ).all()
    # The second attempt started from the first's checkpoint of epoch 3 (a fresh start
    # would have the same value, but no checkpoint to resume from), with one curve.
    assert resumed_from is not None
    assert (resumed_from.attempt, resumed_from.epoch) == (trial.attempt, 3)
    assert sorted(epochs) == list(range(1, 9))


def test_caviar_run_runs_the_example_here_from_the_checkout(tmp_path) -> None:
    spec = example_spec("digits", strategy={"type": "random", "trials": 4})
    path = tmp_path / "digits.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'caviar.db'}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [*CAVIAR, "run", str(path), "--db", db, "--workers", "2", "--json"],
        cwd=ROOT,  # the entrypoint imports from the folder caviar run starts in
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    study = json.loads(done.stdout)
    assert study["status"] == "completed" and study["name"] == "digits-sgd"
    best = study["best_trial"]
    assert 0.8 < best["value"] <= 1.0 and set(best["params"]) == {"loss", "alpha", "eta0"}
    assert best["config"]["epochs"] == 20  # task.params, under the sampled values

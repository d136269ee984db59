"""A user's own objective end to end, as users run it: `caviar serve`, two
`caviar worker --entrypoint` processes, ASHA pruning, and one worker killed mid-trial."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from service.db import get_database
from service.models import Event, Metric, Trial
from tests.integration.waiting import wait_until

CAVIAR = [sys.executable, "-m", "service.cli"]
ROOT = Path(__file__).resolve().parents[2]  # where `tests.integration.objectives` imports from
ENTRYPOINT = "tests.integration.objectives:sgd_digits"
EPOCHS = 10
TRIALS = 12

SPEC = {
    "name": "sgd-digits",
    "task": {"entrypoint": ENTRYPOINT, "params": {"epochs": EPOCHS, "sleep": 0.12}},
    "space": {
        "alpha": {"type": "float", "low": 1e-6, "high": 1.0, "scale": "log"},
        "eta0": {"type": "float", "low": 1e-5, "high": 1.0, "scale": "log"},
    },
    "strategy": {"type": "random", "trials": TRIALS},
    "objective": {"metric": "accuracy", "direction": "maximize"},
    "execution": {"max_parallel": 4, "seed": 5, "max_retries": 3, "checkpoint_every": 1},
    "pruning": {"type": "asha", "min_epochs": 2, "reduction_factor": 3},
}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def test_an_sklearn_objective_through_serve_and_two_entrypoint_workers(tmp_path: Path) -> None:
    url_db = f"sqlite:///{tmp_path / 'caviar.db'}"
    env = {
        **os.environ,
        "CAVIAR_DATABASE_URL": url_db,
        "CAVIAR_LEASE_SECONDS": "2",
        "CAVIAR_HEARTBEAT_SECONDS": "0.3",
        "CAVIAR_REAP_INTERVAL_SECONDS": "0.3",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    port = _port()
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [*CAVIAR, *args],
            env=env,
            cwd=tmp_path,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        return proc

    try:
        start("serve", "--port", str(port))
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        wait_until(lambda: _healthy(client), what="the service to start")
        study_id = client.post("/api/studies", json=SPEC).json()["id"]
        url = f"http://127.0.0.1:{port}"
        for _ in range(2):
            start("worker", "--api", url, "--entrypoint", ENTRYPOINT, "--no-trainer")

        def busy_worker() -> dict[str, Any] | None:
            workers = client.get("/api/workers").json()
            running = [w for w in workers if w["running"] and w["alive"]]
            return running[0] if running else None

        victim = wait_until(busy_worker, what="a worker running a trial")
        assert victim["entrypoints"] == [ENTRYPOINT] and victim["trainer"] is False
        os.kill(victim["pid"], signal.SIGKILL)  # mid-trial: its pool starts a fresh process

        def done() -> dict[str, Any] | None:
            study = client.get(f"/api/studies/{study_id}").json()
            return study if study["status"] in ("completed", "failed") else None

        study = wait_until(done, timeout=120, what="the study to end")
        assert study["status"] == "completed", study
        trials = client.get(f"/api/studies/{study_id}/trials", params={"limit": 100}).json()[
            "items"
        ]
        assert len(trials) == TRIALS
        statuses = Counter(t["status"] for t in trials)
        assert set(statuses) <= {"completed", "pruned"} and statuses["pruned"] >= 1, statuses
        killed = [t for t in trials if t["id"] in victim["running"]]
        assert killed and all(t["attempt"] >= 2 for t in killed)  # retried after the kill

        database = get_database(url_db)
        with database.session(write=False) as s:
            # every trial ended exactly once
            ended = Counter(
                int(t)
                for t in s.scalars(select(Event.trial_id).where(Event.type == "trial.finished"))
                if t is not None
            )
            assert sorted(ended) == sorted(t["id"] for t in trials)
            assert set(ended.values()) == {1}
            # one metrics row per epoch per attempt, the final attempt's epochs 1..done
            for trial in s.scalars(select(Trial).where(Trial.study_id == study_id)):
                epochs = s.scalars(
                    select(Metric.epoch)
                    .where(Metric.trial_id == trial.id, Metric.attempt == trial.attempt)
                    .order_by(Metric.epoch)
                ).all()
                assert epochs == list(range(1, trial.epochs_done + 1)), (trial.id, epochs)
            rows = s.execute(
                select(Metric.trial_id, Metric.attempt, Metric.epoch, func.count())
                .group_by(Metric.trial_id, Metric.attempt, Metric.epoch)
                .having(func.count() > 1)
            ).all()
            assert rows == []

        # the curves come back from the API, the objective read from them for pruning
        best = study["best_trial"]
        curve = client.get(f"/api/trials/{best['id']}/metrics").json()
        assert [e["epoch"] for e in curve] == list(range(1, EPOCHS + 1))
        assert best["value"] == curve[-1]["extra"]["accuracy"]
        pruned = next(t for t in trials if t["status"] == "pruned")
        assert client.get(f"/api/trials/{pruned['id']}").json()["prune_reason"].startswith("asha")
        importance = client.get(f"/api/studies/{study_id}/importance")
        assert importance.status_code == 200, importance.text
        answer = importance.json()
        assert answer["metric"] == "accuracy"
        if answer["note"] is None:  # enough completed trials (pruned ones do not count)
            assert {i["name"] for i in answer["importances"]} == {"alpha", "eta0"}
        else:
            assert "completed trials" in answer["note"], answer
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

"""The whole path: spec -> service -> worker processes over HTTP -> results, on both databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml
from sqlalchemy import func, select

from service.db import get_database
from service.models import Metric, Trial
from worker.pool import Pool, PoolOptions

ROOT = Path(__file__).resolve().parents[2]
CAVIAR = [sys.executable, "-m", "service.cli"]


def wait_for(client: httpx.Client, study_id: int, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = client.get(f"/api/studies/{study_id}").json()
        if study["status"] in ("completed", "failed", "cancelled"):
            return study
        time.sleep(0.2)
    raise AssertionError(f"study {study_id} did not finish: {study}")


def test_a_study_runs_through_worker_processes(db_url, live_service, spec_factory) -> None:
    svc = live_service(db_url)
    spec = spec_factory(strategy={"type": "random", "trials": 6})
    with httpx.Client(base_url=svc.url, timeout=30) as client:
        created = client.post("/api/studies", json=spec)
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]
        pool = Pool(PoolOptions(api_url=svc.url, processes=2, exit_when_idle=True))
        pool.start()
        try:
            study = wait_for(client, study_id)
        finally:
            pool.stop()
        assert study["status"] == "completed", study
        assert study["counts"]["completed"] == 6
        best = study["best_trial"]
        assert 0.5 <= best["value"] <= 1.0
        values = [t["value"] for t in client.get(f"/api/studies/{study_id}/trials").json()["items"]]
        assert best["value"] == max(values)
        curve = client.get(f"/api/trials/{best['id']}/metrics").json()
        assert [m["epoch"] for m in curve] == list(range(1, 6))
        assert curve[-1]["dev_accuracy"] == best["value"]  # objective at: last
        workers = client.get("/api/workers").json()
        assert sum(w["trials_done"] for w in workers) == 6
    with get_database(db_url).session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(Metric)) == 6 * 5
        assert set(s.scalars(select(Trial.attempt)).all()) == {1}


def test_caviar_run_prints_the_best_trial_as_json(tmp_path: Path, spec_factory) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec_factory()))
    env = {**os.environ, "CAVIAR_DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}"}
    proc = subprocess.run(
        [*CAVIAR, "run", str(spec_path), "--json", "--workers", "2"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "completed"
    assert result["counts"]["completed"] == 4
    assert set(result["best_trial"]["params"]) == {"learning_rate"}
    assert 0.0 <= result["best_trial"]["value"] <= 1.0


def test_caviar_run_rejects_an_invalid_spec_with_one_clear_line(
    tmp_path: Path, spec_factory
) -> None:
    bad = spec_factory(
        space={"learning_rate": {"type": "float", "low": 0, "high": 1, "scale": "log"}}
    )
    spec_path = tmp_path / "bad.yaml"
    spec_path.write_text(yaml.safe_dump(bad))
    env = {**os.environ, "CAVIAR_DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}"}
    proc = subprocess.run(
        [*CAVIAR, "run", str(spec_path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2
    assert "bad.yaml" in proc.stderr and "space.learning_rate.low" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_caviar_submit_validates_a_batch_before_submitting_any(
    tmp_path: Path, sqlite_url, live_service, spec_factory
) -> None:
    svc = live_service(sqlite_url)
    folder = tmp_path / "specs"
    folder.mkdir()
    for i in range(3):
        (folder / f"s{i}.yaml").write_text(yaml.safe_dump(spec_factory(name=f"s{i}")))
    (folder / "s3.json").write_text(json.dumps(spec_factory(strategy={"type": "grdi"})))
    proc = subprocess.run(
        [*CAVIAR, "submit", str(folder), "--api", svc.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "s3.json" in proc.stderr and "strategy.type" in proc.stderr
    assert "nothing was submitted" in proc.stderr
    assert httpx.get(f"{svc.url}/api/studies").json()["total"] == 0
    (folder / "s3.json").unlink()
    proc = subprocess.run(
        [*CAVIAR, "submit", str(folder), "--api", svc.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("queued with 4 trials") == 3
    assert httpx.get(f"{svc.url}/api/studies").json()["total"] == 3


def test_the_example_spec_is_valid() -> None:
    proc = subprocess.run(
        [*CAVIAR, "validate", str(ROOT / "examples" / "moons.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ok (moons-adam" in proc.stdout

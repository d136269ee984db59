"""A trial's checkpoints go out from a thread while training goes on; the result waits
for them, so a refused upload fails the trial as it would have in line."""

from __future__ import annotations

import httpx

from worker.runner import Worker


def test_a_refused_checkpoint_fails_its_trial_and_the_worker_goes_on(
    db_url, live_service, spec_factory
) -> None:
    # Requests over 1 KiB are refused (413): a checkpoint is larger, a result is not.
    svc = live_service(db_url, max_body_bytes=1024)
    spec = spec_factory(
        strategy={"type": "random", "trials": 2},
        model={"hidden_layers": [8], "epochs": 2},
        execution={"checkpoint_every": 1, "seed": 1},
    )
    body = httpx.post(f"{svc.url}/api/studies", json=spec, timeout=30)
    assert body.status_code == 201, body.text
    study_id = body.json()["id"]
    worker = Worker(svc.url, exit_when_idle=True, claim_batch=1)
    assert worker.run() == 2
    trials = httpx.get(f"{svc.url}/api/studies/{study_id}/trials", timeout=30).json()["items"]
    assert [t["status"] for t in trials] == ["failed", "failed"]
    assert all("413" in t["error"] and "checkpoints" in t["error"] for t in trials), trials

"""A diverged trial keeps the trainer's reason: a cost that exploded is not "not finite"."""

from __future__ import annotations

import httpx

from worker.runner import Worker


def test_an_exploded_trial_is_recorded_with_the_trainers_reason(
    db_url, live_service, spec_factory
) -> None:
    svc = live_service(db_url)
    spec = spec_factory(
        dataset={"name": "moons", "n_samples": 1000, "seed": 1},
        model={
            "hidden_layers": [20, 7, 5],
            "optimizer": "adam",
            "learning_rate": 100.0,
            "epochs": 30,
        },
        strategy={"type": "random", "trials": 1},
        space={},
    )
    body = httpx.post(f"{svc.url}/api/studies", json=spec, timeout=30)
    assert body.status_code == 201, body.text
    study_id = body.json()["id"]
    assert Worker(svc.url, exit_when_idle=True, claim_batch=1).run() == 1
    (trial,) = httpx.get(f"{svc.url}/api/studies/{study_id}/trials", timeout=30).json()["items"]
    assert trial["status"] == "failed", trial
    # The service's generic words were all it said ("the cost or a gradient was not finite")
    # although every cost it saw was finite, up to 1e22.
    assert "exploded" in trial["error"] and "not finite" not in trial["error"], trial["error"]

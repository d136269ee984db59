"""execution.gradient_check: each trial's network is checked before it trains, the numbers
are kept on the trial (its document and page), and a wrong backward pass fails the trial
with them."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

import trainer.gradcheck
from tests.conftest import small_spec
from trainer import Model
from worker.runner import Worker


class BrokenBackprop(Model):
    """A test double whose backward pass gets the second layer's weights' gradient 5% wrong."""

    def compute_grads(self, X: np.ndarray, y: np.ndarray) -> tuple[float, int | None]:
        cost = super().compute_grads(X, y)
        self.grads["W2"][...] *= 1.05
        return cost


def run_study(url: str, *, gradient_check: bool) -> list[dict[str, Any]]:
    spec = small_spec(execution={"seed": 7, "gradient_check": gradient_check})
    api = httpx.Client(base_url=url, timeout=30)
    study_id = api.post("/api/studies", json=spec).json()["id"]
    Worker(url, exit_when_idle=True, claim_batch=2).run()
    page = api.get(f"/api/studies/{study_id}/trials").json()
    return [api.get(f"/api/trials/{t['id']}").json() for t in page["items"]]


def test_each_trial_keeps_its_gradient_check(db_url, live_service) -> None:
    svc = live_service(db_url)
    trials = run_study(svc.url, gradient_check=True)
    assert [t["status"] for t in trials] == ["completed"] * 4
    for t in trials:
        check = t["gradient_check"]
        assert check["verdict"] == "correct" and check["difference"] < 1e-7, check
        assert list(check["parameters"]) == ["W1", "b1", "W2", "b2", "W3", "b3"]
        assert check["examples"] == 16 and check["checked"] == check["total"]
    unchecked = run_study(svc.url, gradient_check=False)
    assert [t["gradient_check"] for t in unchecked] == [None] * 4


def test_a_wrong_backward_pass_fails_the_trial_with_the_numbers(
    db_url, live_service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trainer.gradcheck, "Model", BrokenBackprop)
    svc = live_service(db_url)
    trials = run_study(svc.url, gradient_check=True)
    assert [t["status"] for t in trials] == ["failed"] * 4
    for t in trials:
        assert t["error"].startswith("GradientCheckFailed: gradient check wrong: relative")
        assert "worst W2" in t["error"] and t["epochs_done"] == 0
        assert t["gradient_check"]["verdict"] == "wrong"
        assert t["gradient_check"]["parameters"]["W2"] > 1e-3
        assert t["gradient_check"]["parameters"]["W1"] < 1e-7

"""A study of a task's own function, read in a real browser: the trial page draws each
metric the function reported as a curve of its own, the study page draws the best trials'
curves of its metrics, and both show its free params. No console error (the `page`
fixture); screenshots land in test-output/browser/ (task-*.png)."""

from __future__ import annotations

from typing import Any

import pytest

from service.db import get_database
from service.queue import Offers, claim_trials, finish_trials, register_worker
from service.studies import create_study
from tests.browser.test_dashboard import OUTPUT, browser, page, wait_ready  # noqa: F401

pytestmark = pytest.mark.browser
ENTRYPOINT = "mypkg.train:objective"
EPOCHS = 12
SPEC = {
    "name": "own function",
    "task": {"entrypoint": ENTRYPOINT, "params": {"epochs": EPOCHS, "data": "digits"}},
    "space": {
        "optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "scale": "log"},
        "alpha": {"type": "float", "low": 1e-6, "high": 1e-2, "scale": "log"},
        "loss_kind": {"type": "categorical", "choices": ["hinge", "log_loss"]},
    },
    "strategy": {"type": "random", "trials": 3},
    "objective": {"metric": "accuracy", "direction": "maximize"},
    "execution": {"max_parallel": 3, "seed": 4},
}


def reported(top: float) -> dict[str, Any]:
    """The epochs a function reported, as a worker sends them (columns): its own names
    only, no trainer metric."""
    epochs = list(range(1, EPOCHS + 1))
    return {
        "epoch": epochs,
        "extra": {
            "accuracy": [top * (1 - 0.5**e) for e in epochs],
            "loss": [2.0 * 0.7**e for e in epochs],
            "grad_norm": [1.0 / e for e in epochs],
        },
    }


def seed(db_url: str, settings: Any) -> tuple[int, list[int]]:
    """A task study whose three trials ran to the end with reported metrics."""
    db = get_database(db_url)
    study_id = create_study(db=db, data=SPEC, settings=settings)
    offers = Offers(trainer=False, entrypoints=(ENTRYPOINT,))
    worker = register_worker(db=db, name="own", host=None, pid=None, offers=offers)
    claimed = claim_trials(db=db, worker_id=worker, max_trials=3, lease_seconds=60)
    tops = [0.9, 0.8, 0.7]
    finish_trials(
        db=db,
        results=[
            {
                "trial_id": c.trial_id,
                "lease_token": c.lease_token,
                "outcome": "completed",
                "error": None,
                "curve": reported(top),
                "value": top * (1 - 0.5**EPOCHS),
            }
            for c, top in zip(claimed, tops, strict=True)
        ],
    )
    return study_id, [c.trial_id for c in claimed]


def traces(tab: Any, selector: str) -> list[dict[str, Any]]:
    """The traces Plotly drew in the plot at `selector`: name and how many points."""
    tab.wait_for_function(
        f"document.querySelector({selector!r})?._fullData?.length > 0", timeout=20_000
    )
    return list(
        tab.evaluate(
            f"""[...document.querySelector({selector!r})._fullData].map((t) => (
                {{ name: t.name, points: t.y.filter((y) => y !== null).length,
                   title: document.querySelector({selector!r})._fullLayout.yaxis.title.text }}))"""
        )
    )


def test_a_task_trial_draws_each_of_its_metrics_and_shows_its_free_params(
    page: Any,  # noqa: F811 (the fixture imported above)
    sqlite_url: str,
    settings_for: Any,
    live_service: Any,
) -> None:
    svc = live_service(sqlite_url)
    study_id, (best, *_) = seed(sqlite_url, settings_for(sqlite_url))

    page.goto(f"{svc.url}/#/trials/{best}")
    wait_ready(page, "trial")
    page.wait_for_function("document.querySelector('.named-curves')?.dataset.points === '12'")
    names = page.locator(".named-curves [data-metric]").evaluate_all(
        "els => els.map((e) => e.dataset.metric)"
    )
    assert names == ["accuracy", "grad_norm", "loss"], names  # the objective's first
    for name in names:
        (trace,) = traces(page, f'.named-curves [data-metric="{name}"]')
        assert trace == {"name": name, "points": EPOCHS, "title": name}, trace
    assert page.locator(".trainer-curves").is_hidden()  # no cost or accuracy of the trainer's
    assert page.locator(".lr-panel").is_hidden()
    params = page.locator(".params th").all_inner_texts()
    assert set(params) == {"optimizer.lr", "alpha", "loss_kind"}, params
    cards = page.locator(".cards .k").all_inner_texts()
    assert not any("dev" in c for c in cards), cards
    page.locator(".named-curves").screenshot(path=str(OUTPUT / "task-trial-curves.png"))
    page.screenshot(path=str(OUTPUT / "task-trial.png"), full_page=True)

    page.goto(f"{svc.url}/#/studies/{study_id}")
    wait_ready(page, "study")
    headers = page.locator(".trials-panel th").all_inner_texts()
    assert {"optimizer.lr", "alpha", "loss_kind"} <= {h.strip().lower() for h in headers}, headers
    best_params = page.locator(".best-body th").all_inner_texts()
    assert set(best_params) >= {"optimizer.lr", "alpha", "loss_kind"}, best_params
    page.locator("#plot-curves-acc").scroll_into_view_if_needed()
    objective = [t for t in traces(page, "#plot-curves-acc") if "(raw)" not in t["name"]]
    assert len(objective) == 3 and {t["points"] for t in objective} == {EPOCHS}, objective
    assert objective[0]["title"] == "accuracy"
    other = [t for t in traces(page, "#plot-curves-cost") if "(raw)" not in t["name"]]
    assert len(other) == 3 and other[0]["title"] == "grad_norm", other
    page.screenshot(path=str(OUTPUT / "task-study.png"), full_page=True)

"""The course's lessons on the dashboard, in a real browser: which hyperparameters mattered,
two hyperparameters together (contour), trials compared, curves smoothed by an exponentially
weighted average, and a trial's gradient check. No console error (the `page` fixture);
screenshots land in test-output/browser/ (lessons-*.png)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from sqlalchemy import update

from service.db import get_database
from service.models import Trial
from service.queue import claim_trials, finish_trials, register_worker
from service.studies import create_study
from tests.browser.test_dashboard import OUTPUT, browser, page, wait_ready  # noqa: F401
from tests.service.test_importance import course_spec, synthetic_accuracy

pytestmark = pytest.mark.browser
EPOCHS = 60


def noisy_curve(final: float, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Epochs that climb towards `final`, with the mini-batch noise the course describes."""
    rows = []
    for e in range(1, EPOCHS + 1):
        progress = 1 - math.exp(-e / 12)
        accuracy = 0.5 + (final - 0.5) * progress + rng.normal(0, 0.03)
        cost = 0.7 * (1 - progress) + 0.15 + abs(rng.normal(0, 0.06))
        rows.append(
            {
                "epoch": e,
                "dev_accuracy": accuracy,
                "train_accuracy": accuracy + 0.01,
                "dev_cost": cost,
                "train_cost": cost * 0.9,
                "learning_rate": 0.01,
            }
        )
    return rows


def seeded_study(db_url: str, settings: Any, *, trials: int = 60) -> int:
    """A finished study over the course's list, each trial a noisy 60-epoch curve whose end
    follows the synthetic accuracy (learning rate first, `init` irrelevant)."""
    db = get_database(db_url)
    spec = course_spec(trials, seed=0)
    spec["model"] = {**spec["model"], "epochs": EPOCHS}
    study_id = create_study(db=db, data=spec, settings=settings)
    worker = register_worker(db=db, name="browser-seed", host=None, pid=None)
    rng = np.random.default_rng(0)
    while claimed := claim_trials(db=db, worker_id=worker, max_trials=100, lease_seconds=60):
        finish_trials(
            db=db,
            results=[
                {
                    "trial_id": c.trial_id,
                    "lease_token": c.lease_token,
                    "outcome": "completed",
                    "error": None,
                    "epochs": noisy_curve(synthetic_accuracy(c.config, rng), rng),
                }
                for c in claimed
            ],
        )
    return study_id


def panel_shot(tab: Any, selector: str, name: str) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    # The page's sticky header would cover a tall panel's top: it scrolls away for the shot.
    tab.add_style_tag(content="header { position: static !important; }")
    tab.locator(selector).evaluate("el => el.scrollIntoView({block: 'center'})")
    tab.locator(selector).screenshot(path=str(OUTPUT / f"lessons-{name}.png"))


def test_importance_contour_and_compare_on_the_study_page(
    page: Any,  # noqa: F811 (the fixture imported above)
    sqlite_url: str,
    live_service: Any,
) -> None:
    svc = live_service(sqlite_url)
    study_id = seeded_study(sqlite_url, svc.settings)
    page.goto(f"{svc.url}/#/studies/{study_id}")
    wait_ready(page, "study")

    # Which hyperparameters mattered: measured, beside the course's ranking.
    panel = page.locator(".importance-panel")
    panel.scroll_into_view_if_needed()
    page.locator(".importance-panel[data-ranked]").wait_for()
    ranked = (panel.get_attribute("data-ranked") or "").split(",")
    assert ranked[0] == "learning_rate" and set(ranked) >= {"init", "hidden_layers.depth"}
    assert panel.locator("tr[data-name='learning_rate'] .tier").inner_text() == "first"
    assert panel.locator("tr[data-name='init'] .tier").inner_text() == "\u2013"  # not listed
    assert panel.locator(".course li").count() == 3
    panel_shot(page, ".importance-panel", "importance")

    # Two hyperparameters together, each on its own scale.
    contour = page.locator(".contour-panel")
    contour.scroll_into_view_if_needed()
    page.locator("#plot-contour[data-pair='learning_rate,beta1']").wait_for()
    assert page.evaluate("document.querySelector('#plot-contour').data[0].type") == "contour"
    assert page.locator("#plot-contour .xtitle").text_content() == "learning_rate (log)"
    assert page.locator("#plot-contour .ytitle").text_content() == "beta1 (1\u2212x, log)"
    contour.get_by_label("y hyperparameter").select_option("batch_size")
    page.locator("#plot-contour[data-pair='learning_rate,batch_size']").wait_for()
    ticks = page.locator("#plot-contour .ytick text").all_text_contents()
    assert ticks == ["16", "32", "64", "128", "256"]  # one row per choice
    panel_shot(page, ".contour-panel", "contour")

    # Compare: tick two trials, their curves overlaid (smoothed) and configs side by side.
    boxes = page.locator("table.trials input[data-pick]")
    boxes.nth(0).check()
    page.get_by_text("Tick two or more trials").wait_for()
    boxes.nth(1).check()
    compare = page.locator(".compare-panel")
    page.locator(".compare-panel[data-drawn]").wait_for()
    picked = (compare.get_attribute("data-picked") or "").split(",")
    assert len(picked) == 2
    metas = page.evaluate(
        "document.querySelector('.compare-panel [data-metric=dev_accuracy]').data.map(t => t.meta)"
    )
    assert metas == ["raw", "smoothed", "raw", "smoothed"]
    differs = compare.locator("tr.differs th").all_text_contents()
    assert "objective" in differs and "learning_rate" in differs
    compare.scroll_into_view_if_needed()
    panel_shot(page, ".compare-panel", "compare")
    compare.get_by_role("button", name="Clear").click()
    page.get_by_text("Tick two or more trials").wait_for()
    assert boxes.nth(0).is_checked() is False


def test_the_trial_page_smooths_its_curves_and_shows_its_gradient_check(
    page: Any,  # noqa: F811 (the fixture imported above)
    sqlite_url: str,
    live_service: Any,
) -> None:
    from trainer import TrainConfig, load_dataset
    from trainer.gradcheck import check_trial

    svc = live_service(sqlite_url)
    study_id = seeded_study(sqlite_url, svc.settings, trials=12)
    db = get_database(sqlite_url)
    with db.session() as s:
        trial = s.query(Trial).filter(Trial.study_id == study_id).order_by(Trial.id).first()
        assert trial is not None
        trial_id, config = trial.id, trial.config
    report = check_trial(TrainConfig(**config), load_dataset({"name": "moons", "n_samples": 200}))
    with db.session() as s:
        s.execute(update(Trial).where(Trial.id == trial_id).values(gradient_check=report.to_json()))

    page.goto(f"{svc.url}/#/trials/{trial_id}")
    wait_ready(page, "trial")
    page.wait_for_function("Number(document.querySelector('#plot-cost').dataset.points) > 0")
    gradcheck = page.locator(".gradcheck")
    assert gradcheck.get_attribute("data-verdict") == "correct"
    assert gradcheck.locator("tbody tr").count() == len(report.parameters)
    panel_shot(page, ".gradcheck", "gradcheck")

    def traces(plot: str) -> list[dict[str, Any]]:
        script = f"document.querySelector('{plot}').data.map(t => ({{meta: t.meta, y: t.y}}))"
        return list(page.evaluate(script))

    def set_beta(value: float) -> None:
        page.get_by_label("smoothing beta").fill(str(value))
        page.wait_for_function(
            f"document.querySelector('.smoothing .beta-value').textContent === '{value:.2f}'"
        )
        page.wait_for_timeout(300)  # the plots redraw

    # The default: smoothed, the raw curve faint beside it, on every measured curve; the
    # learning rate is the schedule the trainer set, drawn as it is.
    for plot in ("#plot-cost", "#plot-accuracy"):
        assert [t["meta"] for t in traces(plot)] == ["raw", "smoothed"] * 2, plot
    assert [t["meta"] for t in traces("#plot-lr")] == [None]
    set_beta(0.9)
    raw, smoothed = traces("#plot-cost")[2:4]  # dev cost: raw, then its average
    assert smoothed["y"][0] == pytest.approx(raw["y"][0])  # bias-corrected: starts on it
    assert np.std(np.diff(smoothed["y"][10:])) < np.std(np.diff(raw["y"][10:])) / 2
    page.screenshot(path=str(OUTPUT / "lessons-smoothing.png"), full_page=True)
    page.get_by_label("bias correction").uncheck()
    page.wait_for_timeout(300)
    raw, smoothed = traces("#plot-cost")[2:4]
    assert smoothed["y"][0] == pytest.approx(0.1 * raw["y"][0])  # (1 - beta) y_1: starts low
    set_beta(0.0)
    assert all(t["meta"] is None for t in traces("#plot-cost"))  # beta 0: the raw curves
    page.get_by_label("bias correction").check()
    set_beta(0.6)  # leave the default for the other tests (localStorage is per context)

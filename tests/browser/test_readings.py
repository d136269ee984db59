"""What the dashboard's pages say, read in a real browser: log axes labelled at their
decades, accuracy axes within [0, 1], one number format, a fork's learning rate, awaiting
review, a cancelled study's progress, trial #number and id, rounds from 1. No console error
(the `page` fixture); screenshots land in test-output/browser/ (readings-*.png)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from service.db import get_database
from service.models import Checkpoint
from service.queue import claim_trials, finish_trials, register_worker
from service.studies import cancel_study, create_study
from tests.browser.test_dashboard import OUTPUT, browser, page, wait_ready  # noqa: F401

pytestmark = pytest.mark.browser
LR = {"learning_rate": {"type": "float", "low": 1e-4, "high": 1.0, "scale": "log"}}


def spec(**blocks: Any) -> dict[str, Any]:
    base = {
        "name": "readings",
        "dataset": {"name": "moons", "n_samples": 200},
        "model": {"hidden_layers": [4], "epochs": 20},
        "space": LR,
        "strategy": {"type": "random", "trials": 1},
        "execution": {"seed": 3},
    }
    return {**base, **blocks}


def rows(first: int, last: int, *, accuracy: float, rate: float) -> list[dict[str, Any]]:
    """Epochs `first` to `last`: a cost falling over two decades, accuracy near `accuracy`."""
    return [
        {
            "epoch": e,
            "train_cost": 2.0 * 0.8**e,
            "dev_cost": 2.2 * 0.8**e,
            "train_accuracy": accuracy + 0.01,
            "dev_accuracy": accuracy - 0.002 * (last - e),
            "learning_rate": rate,
        }
        for e in range(first, last + 1)
    ]


def run(db: Any, epochs: list[list[dict[str, Any]]]) -> list[int]:
    """Claim as many queued trials as `epochs` has curves and finish each with its own."""
    worker = register_worker(db=db, name="readings", host=None, pid=None)
    claimed = claim_trials(db=db, worker_id=worker, max_trials=len(epochs), lease_seconds=60)
    results = [
        {
            "trial_id": c.trial_id,
            "lease_token": c.lease_token,
            "outcome": "completed",
            "error": None,
            "epochs": curve,
        }
        for c, curve in zip(claimed, epochs, strict=True)
    ]
    finish_trials(db=db, results=results)
    return [c.trial_id for c in claimed]


def shot(tab: Any, name: str, selector: str | None = None) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = str(OUTPUT / f"readings-{name}.png")
    if selector is None:
        tab.screenshot(path=path, full_page=True)
        return
    tab.add_style_tag(content="header { position: static !important; }")
    tab.locator(selector).evaluate("el => el.scrollIntoView({block: 'center'})")
    tab.locator(selector).screenshot(path=path)


def axis(tab: Any, plot: str, name: str = "yaxis") -> dict[str, Any]:
    """The axis `name` of the plot with id `plot`, as Plotly laid it out."""
    tab.wait_for_function(f"document.getElementById({plot!r})._fullLayout !== undefined")
    return dict(
        tab.evaluate(
            f"""(() => {{ const a = document.getElementById({plot!r})._fullLayout.{name};
            return {{ type: a.type, range: a.range, tickvals: a.tickvals || null,
                      ticktext: a.ticktext || null,
                      shown: [...document.querySelectorAll('#{plot} .{name[0]}tick text')]
                        .map((t) => t.textContent) }}; }})()"""
        )
    )


def test_one_trial_plots_label_log_axes_and_keep_accuracy_in_0_1(
    page: Any,  # noqa: F811 (the fixture imported above)
    sqlite_url: str,
    settings_for: Any,
    live_service: Any,
) -> None:
    """Log axes carried only Plotly's minor "2" labels; one trial ran accuracy to 1.5."""
    svc = live_service(sqlite_url)
    db = get_database(sqlite_url)
    study_id = create_study(db=db, data=spec(), settings=settings_for(sqlite_url))
    (trial_id,) = run(db, [rows(1, 20, accuracy=0.8766, rate=0.003)])

    page.goto(f"{svc.url}/#/studies/{study_id}")
    wait_ready(page, "study")
    value = page.locator(".best-value .big").inner_text()
    assert value == "0.877", value  # 3 significant digits (it was 0.8766)
    history = axis(page, "plot-history")
    assert history["range"][0] >= 0 and history["range"][1] <= 1, history
    trials = axis(page, "plot-history", "xaxis")
    assert trials["shown"] == ["0", "1"], trials  # whole trial numbers (-1 to 1 by 0.5)
    shot(page, "study-one-trial")

    page.goto(f"{svc.url}/#/trials/{trial_id}")
    wait_ready(page, "trial")
    accuracy = axis(page, "plot-accuracy")
    assert accuracy["range"][0] >= 0 and accuracy["range"][1] <= 1, accuracy
    cost = axis(page, "plot-cost")
    assert cost["type"] == "log"
    assert {"0.1", "1"} <= set(cost["shown"]), cost  # decades, as fmt writes them
    assert not set(cost["shown"]) - {*cost["ticktext"]}, cost
    rate = axis(page, "plot-lr")
    assert "0.001" in rate["shown"] and "0.01" in rate["shown"], rate
    assert page.locator(".lr-note").inner_text() == "constant"
    shot(page, "trial-one", ".plots" if page.locator(".plots").count() else None)


def test_a_fork_shows_the_learning_rate_it_used(
    page: Any,  # noqa: F811 (the fixture imported above)
    sqlite_url: str,
    settings_for: Any,
    live_service: Any,
) -> None:
    """A fork with another rate said "constant" beside a rate that changed at the fork."""
    svc = live_service(sqlite_url)
    db = get_database(sqlite_url)
    study_id = create_study(db=db, data=spec(), settings=settings_for(sqlite_url))
    (parent,) = run(db, [rows(1, 20, accuracy=0.85, rate=0.003)])
    with db.session() as s:  # as a worker stores one every checkpoint_every epochs
        s.add(
            Checkpoint(
                trial_id=parent, attempt=1, epoch=10, size_bytes=1, content=b"c", created_at=0.0
            )
        )
    fork = httpx.post(
        f"{svc.url}/api/trials/{parent}/fork",
        json={"from_epoch": 10, "changes": {"learning_rate": 0.0005}},
    )
    assert fork.status_code == 201, fork.text
    (child,) = run(db, [rows(11, 20, accuracy=0.9, rate=0.0005)])
    assert child == fork.json()["id"]

    page.goto(f"{svc.url}/#/trials/{child}")
    wait_ready(page, "trial")
    note = page.locator(".lr-note")
    note.filter(has_text="forked").wait_for()
    assert note.inner_text() == "0.003 until epoch 10, then 5e-4 (forked)"
    page.wait_for_function(
        "(document.getElementById('plot-lr').data || [])"
        ".some((d) => d.name === 'parent learning rate')"
    )
    traces = page.evaluate(
        "document.getElementById('plot-lr').data.map((d) => [d.name, d.y[d.y.length - 1]])"
    )
    assert ["learning rate", 0.0005] in traces and ["parent learning rate", 0.003] in traces
    rate = axis(page, "plot-lr")
    assert {"1e-4", "0.001", "0.01"} & set(rate["shown"]), rate
    assert page.locator(".meta").inner_text().startswith(f"id {child}")
    assert page.locator(".title").inner_text() == "Trial #1"
    assert fork.json()["study_id"] == study_id
    shot(page, "trial-fork")


def test_states_numbers_and_rounds_read_as_people_count_them(
    page: Any,  # noqa: F811 (the fixture imported above)
    sqlite_url: str,
    settings_for: Any,
    live_service: Any,
) -> None:
    svc = live_service(sqlite_url)
    db = get_database(sqlite_url)
    settings = settings_for(sqlite_url)
    panda = create_study(
        db=db,
        data=spec(
            name="waits",
            strategy={"type": "random", "trials": 2},
            execution={"mode": "panda", "await_review": True},
        ),
        settings=settings,
    )
    run(db, [rows(1, 20, accuracy=0.8, rate=0.003)])
    cancelled = create_study(
        db=db, data=spec(name="cut", strategy={"type": "random", "trials": 6}), settings=settings
    )
    run(db, [rows(1, 20, accuracy=0.8, rate=0.003)] * 2)  # two ran, four never did
    cancel_study(db=db, study_id=cancelled)
    c2f = create_study(
        db=db,
        data=spec(
            name="rounds",
            strategy={"type": "coarse_to_fine", "rounds": 2, "trials_per_round": 2},
        ),
        settings=settings,
    )
    run(db, [rows(1, 20, accuracy=a, rate=0.003) for a in (0.7, 0.9)])

    page.goto(f"{svc.url}/")
    wait_ready(page, "studies")
    waiting = page.locator(f'tr[data-id="{panda}"] .status')
    assert waiting.inner_text() == "awaiting review"
    assert page.locator("table thead th").first.inner_text().strip().lower() == "id"
    label = page.locator(f'tr[data-id="{cancelled}"] .progress-label').inner_text()
    assert label == "2 / 6", label  # it drew 6 / 6: four trials never ran
    shot(page, "studies")

    page.goto(f"{svc.url}/#/studies/{panda}")
    wait_ready(page, "study")
    assert page.locator("h1 .status").inner_text() == "awaiting review"

    page.goto(f"{svc.url}/#/studies/{c2f}")
    wait_ready(page, "study")
    best = page.locator(".best-value .muted").inner_text()
    assert re.search(r"trial #1 · round 1$", best), best  # its first round is round 1
    assert page.locator(".meta").inner_text().startswith(f"id {c2f}")
    page.locator("table.trials tbody tr").first.wait_for()
    header = [h.strip().lower() for h in page.locator("table.trials thead th").all_inner_texts()]
    column = header.index("round")
    rounds = {
        r.locator("td").nth(column).inner_text()
        for r in page.locator("table.trials tbody tr").all()
    }
    assert rounds <= {"1", "2"} and "1" in rounds, rounds
    shot(page, "study-rounds")


def test_the_editor_opens_at_its_top_and_puts_a_syntax_error_on_its_line(
    page: Any,  # noqa: F811 (the fixture imported above)
    sqlite_url: str,
    live_service: Any,
) -> None:
    """The editor opened scrolled past name: and dataset:, and a YAML syntax error came as
    PyYAML's raw text, under the editor, on no line."""
    svc = live_service(sqlite_url)
    page.caviar_allowed_errors.append("status of 422")  # the check's answer: the spec is invalid
    page.goto(f"{svc.url}/")
    wait_ready(page, "studies")
    page.get_by_role("button", name="New study").click()
    editor = page.get_by_label("Search spec (YAML)")
    page.locator(".spec-status.ok").wait_for()
    assert editor.evaluate("ta => ta.scrollTop") == 0
    assert editor.evaluate("ta => ta.selectionStart") == 0
    assert editor.evaluate("ta => ta.scrollHeight > ta.clientHeight")  # so it could scroll
    shot(page, "editor-top", ".editor")

    text = "name: broken\ndataset: {name: moons, n_samples: 200\nspace:\n  lr: 1\n"
    editor.fill(text)
    note = page.locator(".field-error[data-loc='syntax']")
    note.wait_for()
    assert note.get_attribute("data-line") == "2"  # where the { opened
    assert note.inner_text() == "column 10: this { is never closed by a }"
    assert page.locator(".gutter .bad").inner_text() == "2"
    item = page.locator(".spec-errors li").first.inner_text()
    assert item.startswith("line 2") and "expected ','" not in item, item
    shot(page, "editor-syntax", ".editor")

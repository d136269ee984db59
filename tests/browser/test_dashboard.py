"""The dashboard in a real browser: Playwright driving Debian's headless Chromium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, missing_service
from worker.pool import Pool, PoolOptions

OUTPUT = ROOT / "test-output" / "browser"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    candidates = (os.environ.get("CAVIAR_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium")
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        missing_service("Chromium is not installed (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    external: list[str] = []
    page.on(
        "request",
        lambda r: external.append(r.url) if not r.url.startswith("http://127.0.0.1") else None,
    )
    allowed: list[str] = []
    page.caviar_allowed_errors = allowed  # a test that provokes an error names it here
    yield page
    context.close()
    unexpected = [m for m in problems if not any(a in m for a in allowed)]
    assert unexpected == [], f"console errors: {unexpected}"
    assert external == [], f"the page loaded from outside the service: {external}"


def test_studies_study_and_workers_pages_show_a_finished_search(  # type: ignore[no-untyped-def]
    page, sqlite_url, live_service, spec_factory
) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    svc = live_service(sqlite_url)
    study = httpx.post(f"{svc.url}/api/studies", json=spec_factory(name="browser-moons")).json()
    pool = Pool(PoolOptions(api_url=svc.url, processes=1, exit_when_idle=True))
    pool.start()
    try:
        page.goto(svc.url + "/")
        page.get_by_role("link", name="browser-moons").wait_for()
        # The list refreshes by itself: the study turns completed without a reload.
        page.locator("tr", has_text="browser-moons").locator(".status.completed").wait_for(
            timeout=60_000
        )
        page.screenshot(path=str(OUTPUT / "studies.png"), full_page=True)

        page.get_by_role("link", name="browser-moons").click()
        page.get_by_text("Best trial").wait_for()
        assert page.locator("tbody tr").count() == 4
        page.screenshot(path=str(OUTPUT / "study.png"), full_page=True)

        page.locator("tbody tr").first.get_by_role("link").click()
        page.get_by_role("heading", name="Config").wait_for()
        assert "learning_rate" in page.locator("pre").inner_text()
        page.screenshot(path=str(OUTPUT / "trial.png"), full_page=True)

        page.get_by_role("link", name="Workers").click()
        page.get_by_role("heading", name="Workers").wait_for()
        page.screenshot(path=str(OUTPUT / "workers.png"), full_page=True)
    finally:
        pool.stop()
    assert httpx.get(f"{svc.url}/api/studies/{study['id']}").json()["status"] == "completed"


def test_an_unknown_study_shows_the_error(page, sqlite_url, live_service) -> None:  # type: ignore[no-untyped-def]
    svc = live_service(sqlite_url)
    # The browser logs the API's 404 itself; the page must show it, and raise nothing else.
    page.caviar_allowed_errors.append("status of 404")
    page.goto(svc.url + "/#/studies/12345")
    page.locator(".error").wait_for()
    assert "study 12345 does not exist" in page.locator(".error").inner_text()

"""/docs and /redoc in a real browser with no internet: every request beyond the service is blocked.

Swagger UI and ReDoc used to load from a CDN (ReDoc with Google fonts), so offline both
pages were blank. Here each must render every operation of the OpenAPI document from
the service's own files, ask no other host for anything, and log no error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser.test_dashboard import CHROMIUM_ARGS, OUTPUT, chromium_path
from tests.conftest import missing_service

pytestmark = pytest.mark.browser

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        missing_service("Chromium is not installed (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def offline(chromium: Any) -> Iterator[tuple[Any, list[str], list[str]]]:
    """A page that reaches only loopback: (page, blocked requests, console errors)."""
    context = chromium.new_context(viewport={"width": 1366, "height": 900})
    blocked: list[str] = []
    errors: list[str] = []

    def only_loopback(route: Any) -> None:
        url = route.request.url
        if url.startswith(("http://127.0.0.1:", "http://localhost:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page, blocked, errors
    context.close()


def operations(url: str) -> int:
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    return sum(1 for item in paths.values() for method in item if method in METHODS)


def test_swagger_ui_and_redoc_render_every_operation_offline(
    offline, live_service, sqlite_url
) -> None:
    page, blocked, errors = offline
    url = live_service(sqlite_url).url
    expected = operations(url)
    assert expected > 30

    page.goto(f"{url}/docs")
    page.wait_for_selector(".opblock")
    assert page.locator(".opblock").count() == expected
    assert page.locator(".opblock-summary-path", has_text="/api/studies/{study_id}/zoom").count()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "api-docs-swagger.png"))

    page.goto(f"{url}/redoc")
    page.wait_for_selector("[data-section-id*='operation/']")
    sections = page.eval_on_selector_all(
        "[data-section-id*='operation/']",
        "els => new Set(els.map(e => e.dataset.sectionId.split('operation/')[1])).size",
    )
    assert sections == expected  # each operation's section rendered, once
    assert page.locator("[data-item-id*='operation/']").count() == expected  # and in the menu
    assert "Caviar" in page.locator("h1").first.inner_text()
    page.screenshot(path=str(OUTPUT / "api-docs-redoc.png"))

    assert blocked == [], f"the pages asked other hosts for: {blocked}"
    assert errors == [], f"console errors: {errors}"

"""With tokens configured, the dashboard, its files and the API's documents need one too.

A browser cannot send a bearer header when it navigates, so the dashboard signs in once
with a form and keeps the token in an HttpOnly, SameSite=Strict cookie; programs keep
sending `Authorization: Bearer`.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import COOKIE

READER = "reader-secret-0123456789"
WRITER = "writer-secret-0123456789"
WORKER = "worker-secret-0123456789"
TOKENS = f"ann:read:{READER};bob:write:{WRITER};w:worker:{WORKER}"
ORIGIN = {"origin": "http://testserver"}
HTML = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}

# Everything a browser or a program might fetch that is not a probe.
GUARDED = [
    "/",
    "/static/caviar.css",
    "/static/js/app.js",
    "/static/favicon.svg",
    "/static/vendor/plotly.min.js",
    "/openapi.json",
    "/docs",
    "/redoc",
    "/api/studies",
    "/api/dashboard/session",
    "/metrics",
    "/no/such/page",
    "/studies/1",
]


@pytest.fixture()
def client(sqlite_url: str, settings_for: Any) -> Any:
    app = create_app(settings_for(sqlite_url, tokens=TOKENS, migrate_on_start=False))
    with TestClient(app, follow_redirects=False) as c:
        yield c


def sign_in(client: TestClient, token: str, next_path: str = "/") -> Any:
    return client.post(
        "/login",
        content=f"token={token}&next={next_path}",
        headers={"content-type": "application/x-www-form-urlencoded", **ORIGIN},
    )


@pytest.mark.parametrize("path", GUARDED)
def test_every_page_file_and_document_needs_a_token(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == 401  # a problem document, nothing of the page itself
    r = client.get(path, headers={"authorization": f"Bearer {READER}"})
    assert r.status_code in (200, 404), (path, r.status_code)
    assert r.status_code == 404 or path != "/no/such/page"


def test_a_browser_without_a_token_gets_the_sign_in_form_with_its_401(client: TestClient) -> None:
    r = client.get("/static/js/app.js?v=2", headers=HTML)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store"
    assert '<form method="post" action="/login">' in r.text
    assert 'name="next" value="/static/js/app.js?v=2"' in r.text  # back where it was going
    # The probes stay open, and so does the form itself.
    assert client.get("/healthz").status_code == 200
    assert client.get("/login").status_code == 200


def test_signing_in_sets_a_strict_httponly_cookie_that_opens_everything(
    client: TestClient,
) -> None:
    r = sign_in(client, READER, "/#/studies/3")
    assert r.status_code == 303 and r.headers["location"] == "/#/studies/3"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={READER};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here; set on https
    for path in ("/", "/static/js/app.js", "/openapi.json", "/api/studies", "/metrics"):
        assert client.get(path).status_code == 200, path
    me = client.get("/api/dashboard/session").json()
    assert me == {"tokens_required": True, "name": "ann", "scopes": ["read"]}
    # The cookie carries its token's scopes, no more: a reader cannot cancel.
    r = client.post("/api/studies/1/cancel", headers=ORIGIN)
    assert r.status_code == 403 and "write" in r.json()["detail"]


def test_a_wrong_token_is_refused_on_the_form_and_sets_nothing(client: TestClient) -> None:
    r = sign_in(client, "not-the-token-0123456789")
    assert r.status_code == 401 and "That token is not valid." in r.text
    assert "set-cookie" not in r.headers
    assert client.get("/").status_code == 401


def test_the_next_page_is_always_one_of_this_service(client: TestClient) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x"):
        r = sign_in(client, READER, target)
        assert r.status_code == 303 and r.headers["location"] == "/", target


def test_a_cookie_signed_change_must_come_from_the_dashboard_itself(client: TestClient) -> None:
    sign_in(client, WRITER)
    # Another site's page (SameSite would already keep the cookie home in a browser).
    r = client.post("/api/studies/1/cancel", headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and "dashboard" in r.json()["detail"]
    # From the dashboard: through to the route (no study 1 here).
    r = client.post("/api/studies/1/cancel", headers=ORIGIN)
    assert r.status_code == 404
    # A program's bearer header needs no Origin.
    client.cookies.clear()
    r = client.post("/api/studies/1/cancel", headers={"authorization": f"Bearer {WRITER}"})
    assert r.status_code == 404


def test_signing_in_from_another_site_is_refused(client: TestClient) -> None:
    r = client.post(
        "/login",
        content=f"token={READER}&next=/",
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "origin": "https://evil.example",
        },
    )
    # Refused before the form is read, as every change from another site's page is.
    assert r.status_code == 403 and "set-cookie" not in r.headers


def test_signing_out_ends_the_session(client: TestClient) -> None:
    sign_in(client, WRITER)
    assert client.get("/").status_code == 200
    r = client.post("/logout", headers=ORIGIN)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert f'{COOKIE}=""' in r.headers["set-cookie"] and "Max-Age=0" in r.headers["set-cookie"]
    client.cookies.clear()  # what the browser does with Max-Age=0
    assert client.get("/").status_code == 401


def test_without_tokens_there_is_nothing_to_sign_in_to(sqlite_url: str, settings_for: Any) -> None:
    app = create_app(settings_for(sqlite_url, migrate_on_start=False))
    with TestClient(app, follow_redirects=False) as c:
        assert c.get("/login?next=/%23/workers").headers["location"] == "/#/workers"
        me = c.get("/api/dashboard/session").json()
        assert me["tokens_required"] is False
        assert c.get("/").status_code == 200


@pytest.mark.parametrize(
    ("typed", "page", "api"),
    [
        ("/studies/7", "/#/studies/7", "/api/studies/7"),
        ("/trials/12", "/#/trials/12", "/api/trials/12"),
        ("/workers", "/#/workers", "/api/workers"),
        ("/studies", "/#/", "/api/studies"),
    ],
)
def test_a_page_typed_without_its_hash_opens_in_the_dashboard(
    sqlite_url: str, settings_for: Any, typed: str, page: str, api: str
) -> None:
    app = create_app(settings_for(sqlite_url, migrate_on_start=False))
    with TestClient(app, follow_redirects=False) as c:
        r = c.get(typed, headers=HTML)
        assert r.status_code == 307 and r.headers["location"] == page
        # A program gets a 404 that says where the API and the page are.
        r = c.get(typed)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
        assert f"the API answers at {api}," in r.json()["detail"]
        assert r.json()["detail"].endswith(page)


def test_a_page_typed_without_its_hash_signs_in_first_then_opens(client: TestClient) -> None:
    r = client.get("/trials/4", headers=HTML)
    assert r.status_code == 401 and 'name="next" value="/trials/4"' in r.text
    r = sign_in(client, READER, "/trials/4")
    assert r.status_code == 303 and r.headers["location"] == "/trials/4"
    r = client.get("/trials/4", headers=HTML)
    assert r.status_code == 307 and r.headers["location"] == "/#/trials/4"

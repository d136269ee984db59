"""Schemathesis against the app's own OpenAPI document, with every check it has.

In process through ASGI, every operation is called with generated valid and invalid input,
once holding a token with every scope and once with none. Then `schemathesis run --checks
all`, as a user would run it, against a served instance with tokens on: its examples,
coverage (boundary values: the largest integers, whole floats, methods a path lacks),
fuzzing and stateful phases. The checks: no 5xx, every status, header and content type is
one the document declares, bodies match their schemas, input the schema forbids is refused
with a 4xx and input it allows is accepted (but where schemathesis.toml says why not).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import CHECKS as REGISTERED_CHECKS
from schemathesis.generation.modes import GenerationMode

from service import migrate
from service.api.docs import PUBLIC
from service.app import create_app
from service.db import forget_database
from service.settings import Settings

SECRET = "fuzz-all-scopes-0123456789"
# Every check schemathesis has (`--checks all`), not a chosen few.
CHECKS = REGISTERED_CHECKS.get_all()
# Hypothesis examples per operation and mode (valid, then invalid input).
EXAMPLES = 30


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('fuzz')) / 'caviar.db'}"
    migrate.upgrade(url)
    app = create_app(
        Settings(
            database_url=url,
            tokens=f"fuzz:read,write,worker:{SECRET}",
            migrate_on_start=False,
            submit_burst=100_000,  # the fuzzer submits far faster than any person
            allowed_hosts="testserver",  # the Host schemathesis' ASGI client sends
        )
    )
    yield app
    forget_database(url)


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Any) -> Any:
    # With tokens, the document itself needs one (7f248d1).
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", fuzz_app, headers={"Authorization": f"Bearer {SECRET}"}
    )
    # Unknown query parameters are ignored, as HTTP APIs do, not refused; and the bearer
    # token is ours to send (with it, or without it), not the generator's.
    schema.config.generation.update(allow_extra_parameters=False, with_security_parameters=False)
    return schema


def _operations() -> list[tuple[str, str]]:
    # Built from the document itself, so a new route is fuzzed without touching this file.
    # (Schemathesis' lazy pytest loader does not run under pytest 9; this parametrizes by
    # hand and drives Hypothesis per operation instead.) No database is opened for this.
    doc = create_app(Settings(database_url="sqlite://", migrate_on_start=False)).openapi()
    return [
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if not path.endswith("/events")  # a stream stays open until its study ends
    ]


OPERATIONS = _operations()


def _run(api_schema: Any, method: str, path: str, *, token: bool, examples: int) -> None:
    operation = api_schema[path][method]
    headers = {"authorization": f"Bearer {SECRET}"} if token else {}
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,  # the same examples on every run: a failure is reproducible
            database=None,
        )
        def check(case: Any) -> None:
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            if not token and path not in PUBLIC:
                assert response.status_code == 401, (method, path, response.status_code)

        try:
            check()
        except Unsatisfiable:
            # No input of this operation can break its schema (no parameters, or only free
            # strings): there is no invalid request to send, so nothing to check.
            if mode is GenerationMode.POSITIVE:
                raise


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_with_a_token(api_schema: Any, method: str, path: str) -> None:
    _run(api_schema, method, path, token=True, examples=EXAMPLES)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_without_a_token(api_schema: Any, method: str, path: str) -> None:
    _run(api_schema, method, path, token=False, examples=3)


ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_schemathesis_run_with_every_check_finds_nothing(
    live_service: Any, migrated_sqlite_url: str, tmp_path: Path
) -> None:
    svc = live_service(
        migrated_sqlite_url, tokens=f"fuzz:read,write,worker:{SECRET}", submit_burst=100_000
    )
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(ROOT / "schemathesis.toml"),
        "--no-color",
        "run",
        f"{svc.url}/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {SECRET}",
        "--exclude-path-regex",
        "/events$",  # a stream stays open until its study ends
        "--max-examples",
        "40",
        "--seed",
        "1",
        "--workers",
        "1",
    ]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]

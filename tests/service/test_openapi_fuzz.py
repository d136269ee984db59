"""Schemathesis against the app's own OpenAPI document, in process through ASGI.

Every operation is called with generated valid and invalid input, once holding a token with
every scope and once with none. The checks: no 5xx, every status and content type is one
the document declares, bodies match their schemas, and input the schema forbids is refused
with a 4xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from service import migrate
from service.api.docs import PUBLIC
from service.app import create_app
from service.db import forget_database
from service.settings import Settings

SECRET = "fuzz-all-scopes-0123456789"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
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

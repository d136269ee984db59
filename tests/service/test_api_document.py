"""The OpenAPI document says exactly what the API takes: what schemathesis --checks all found."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

SPEC_ROUTES = ("/api/studies", "/api/specs/validate", "/api/specs/preview")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(Settings(database_url="sqlite://", migrate_on_start=False)).openapi()


@pytest.fixture
def client(sqlite_url: str, settings_for: Any) -> Any:
    with TestClient(create_app(settings_for(sqlite_url, migrate_on_start=False))) as c:
        yield c


def test_every_integer_parameter_has_a_maximum(document: dict[str, Any]) -> None:
    """An integer past the database's 32 bits is refused as a parameter, not as 'out of
    range for the database' once it reaches a query."""
    unbounded = [
        f"{method.upper()} {path} {p['name']}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for p in operation.get("parameters", [])
        for schema in (p["schema"], *p["schema"].get("anyOf", []))
        if schema.get("type") == "integer" and "maximum" not in schema
    ]
    assert unbounded == []


@pytest.mark.parametrize("path", SPEC_ROUTES)
def test_a_spec_body_is_the_specs_schema_in_json_and_in_yaml(
    document: dict[str, Any], path: str
) -> None:
    content = document["paths"][path]["post"]["requestBody"]["content"]
    for media in ("application/json", "application/yaml"):
        schema = content[media]["schema"]
        # dataset is required unless a task names an entrypoint: the checks say which
        assert schema["type"] == "object" and schema["required"] == ["name"]
        assert set(schema["properties"]) >= {"dataset", "model", "space", "strategy"}
        assert "$ref" not in str(schema)  # self-contained: no reference into nothing
        model = schema["properties"]["model"]["properties"]
        assert model["learning_rate"]["type"] == "number"


def test_a_yaml_body_is_read_as_the_document_it_is(client: Any, document: dict[str, Any]) -> None:
    content = document["paths"]["/api/specs/validate"]["post"]["requestBody"]["content"]
    example = content["application/yaml"]["examples"]["random-search"]["value"]
    r = client.post(
        "/api/specs/validate",
        content=yaml.safe_dump(example),
        headers={"content-type": "application/yaml"},
    )
    assert r.status_code == 200, r.text


def test_a_405_allows_every_method_of_its_path(client: Any) -> None:
    for method, path, allowed in [
        ("OPTIONS", "/api/studies", "GET, POST"),
        ("PUT", "/api/studies", "GET, POST"),
        ("OPTIONS", "/api/datasets/ds-0123456789abcdef", "DELETE, GET"),
    ]:
        r = client.request(method, path)
        assert (r.status_code, r.headers["allow"]) == (405, allowed), (method, path)


def test_zoom_documents_its_rate_limit(document: dict[str, Any]) -> None:
    assert "429" in document["paths"]["/api/studies/{study_id}/zoom"]["post"]["responses"]


@pytest.mark.parametrize(
    ("block", "value"),
    [
        ({"pruning": {"type": "median", "warmup_epochs": False}}, "pruning.warmup_epochs"),
        ({"execution": {"max_parallel": "8"}}, "execution.max_parallel"),
        ({"strategy": {"type": "random", "trials": True}}, "strategy.trials"),
        ({"model": {"learning_rate": True}}, "model.learning_rate"),
        ({"dataset": {"name": "moons", "standardize": 0}}, "dataset.standardize"),
    ],
)
def test_a_spec_takes_numbers_and_booleans_only_as_themselves(
    client: Any, spec_factory: Any, block: dict[str, Any], value: str
) -> None:
    r = client.post("/api/specs/validate", json=spec_factory(**block))
    assert r.status_code == 422, r.text
    assert value in [e["loc"] for e in r.json()["errors"]]
    # A whole float is an integer, as JSON Schema says; a null direction is the metric's.
    spec = spec_factory(strategy={"type": "random", "trials": 4.0}, objective={"direction": None})
    r = client.post("/api/specs/validate", json=spec)
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["objective"]["direction"] == "maximize"

"""deploy/k8s/ is checked without a cluster: probes on real public routes, commands that
parse with the real CLI, and every name (Service, Secret key, port) resolving."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from service.auth import parse_tokens
from service.settings import Settings
from tests.test_compose import parse_cli, public_get_routes
from worker.client import parse_urls

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every manifest by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in found, f"{key} defined twice"
                found[key] = doc
    return found


def container(obj: dict[str, Any]) -> dict[str, Any]:
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in c.get("env", [])}


def test_the_manifests_hold_what_a_deployment_needs(objects) -> None:
    assert set(objects) == {
        ("Secret", "caviar"),
        ("Job", "caviar-migrate"),
        ("Deployment", "caviar-api"),
        ("Service", "caviar-api"),
        ("Deployment", "caviar-worker"),
    }
    assert objects[("Deployment", "caviar-api")]["spec"]["replicas"] >= 2


def test_the_service_is_ready_on_readyz_and_alive_on_healthz(objects) -> None:
    api = container(objects[("Deployment", "caviar-api")])
    serve = parse_cli(api["command"])
    assert serve.info_name == "serve" and serve.params["host"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    public = public_get_routes()
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = api[probe]["httpGet"]
        assert get["path"] == path and path in public, probe
        assert ports[get["port"]] == serve.params["port"], probe


def test_the_service_object_routes_to_the_api_pods(objects) -> None:
    deployment = objects[("Deployment", "caviar-api")]
    service = objects[("Service", "caviar-api")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    assert all(p["targetPort"] in ports for p in service["spec"]["ports"])


def test_workers_reach_the_service_by_name_with_a_worker_token(objects) -> None:
    worker = container(objects[("Deployment", "caviar-worker")])
    args = parse_cli(worker["command"])
    assert args.info_name == "worker"
    service = objects[("Service", "caviar-api")]
    for url in parse_urls(args.params["api"]):
        parts = urlsplit(url)
        assert parts.hostname == service["metadata"]["name"]
        assert parts.port in {p["port"] for p in service["spec"]["ports"]}
    env = env_of(worker)
    assert set(env) == {"CAVIAR_TOKEN"}  # never the database
    secret = objects[("Secret", "caviar")]["stringData"]
    token = secret[env["CAVIAR_TOKEN"]["valueFrom"]["secretKeyRef"]["key"]]
    workers = [t for t in parse_tokens(secret["tokens"]) if t.secret == token]
    assert workers and workers[0].scopes == {"worker"}


def test_the_migration_job_and_every_secret_reference_resolve(objects) -> None:
    job = container(objects[("Job", "caviar-migrate")])
    assert parse_cli(job["command"]).info_name == "upgrade"
    secret = objects[("Secret", "caviar")]
    settings = {f"CAVIAR_{name.upper()}" for name in Settings.model_fields}
    for kind, name in (
        ("Job", "caviar-migrate"),
        ("Deployment", "caviar-api"),
        ("Deployment", "caviar-worker"),
    ):
        for var, entry in env_of(container(objects[(kind, name)])).items():
            assert var in settings, f"{name}: {var} is not a setting"
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["stringData"], f"{name}: {ref}"
    assert secret["stringData"]["database-url"].startswith("postgresql+psycopg://")

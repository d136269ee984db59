"""docker-compose.yml is checked without Docker: real CLI commands, real routes, a proxy
that reaches every replica, and services that wait for a healthy PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml

from service.api.docs import PUBLIC
from service.app import create_app
from service.cli import app
from service.settings import Settings
from worker.client import parse_urls

ROOT = Path(__file__).resolve().parent.parent
APIS = ("api-1", "api-2")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def parse_cli(args: list[str]) -> Any:
    """Parse `args` with the real CLI, the way a run would, without running anything.

    Returns the innermost command's context; raises the CLI's UsageError on an unknown
    command or option. (Typer vendors click, so the group is recognized by what it does.)
    """
    assert args[0] == "caviar", f"not a caviar command: {args}"
    command: Any = typer.main.get_command(app)
    name, rest, ctx = "caviar", list(args[1:]), None
    while True:
        assert command is not None, f"unknown command {name!r} in {args}"
        ctx = command.make_context(name, list(rest), parent=ctx)
        if not hasattr(command, "resolve_command"):
            return ctx
        rest = [*ctx._protected_args, *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)


def raises_usage_error(args: list[str]) -> bool:
    try:
        parse_cli(args)
    except Exception as exc:
        return "UsageError" in {c.__name__ for c in type(exc).__mro__}
    return False


def public_get_routes() -> set[str]:
    """Paths the service answers to GET without a token (what probes may call)."""
    application = create_app(Settings(database_url="sqlite://", tokens=""))
    paths = application.openapi()["paths"]
    return {path for path, item in paths.items() if "get" in item and path in PUBLIC}


def test_every_caviar_command_parses_with_the_real_cli(compose: dict[str, Any]) -> None:
    commands = {
        name: svc["command"]
        for name, svc in compose["services"].items()
        if isinstance(svc.get("command"), list) and svc["command"][0] == "caviar"
    }
    assert set(commands) == {"migrate", *APIS, "worker"}
    for args in commands.values():
        parse_cli(args)  # raises UsageError on an unknown command or option
    for api in APIS:
        assert parse_cli(commands[api]).params["host"] == "0.0.0.0"


def test_the_parser_rejects_what_the_cli_would(compose: dict[str, Any]) -> None:
    assert raises_usage_error(["caviar", "serve", "--no-such-option", "1"])
    assert raises_usage_error(["caviar", "launch"])
    assert raises_usage_error(["caviar", "db", "downgrade"])
    assert not raises_usage_error(["caviar", "db", "upgrade"])


def test_workers_list_every_replica_by_its_service_name_and_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    urls = parse_urls(parse_cli(services["worker"]["command"]).params["api"])
    reached = {(urlsplit(u).hostname, urlsplit(u).port) for u in urls}
    assert reached == {(api, parse_cli(services[api]["command"]).params["port"]) for api in APIS}


def test_services_wait_for_a_healthy_postgres(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "healthcheck" in services["postgres"]
    assert any(v.endswith("/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    for name in ("migrate", *APIS, "worker"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
    for api in APIS:  # migrated once, before any replica starts
        assert services[api]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    for name in ("worker", "proxy"):
        for api in APIS:
            assert services[name]["depends_on"][api]["condition"] == "service_healthy", name


def test_replicas_are_healthy_once_ready_on_their_own_port(compose: dict[str, Any]) -> None:
    public = public_get_routes()
    assert {"/healthz", "/readyz"} <= public
    for api in APIS:
        svc = compose["services"][api]
        port = parse_cli(svc["command"]).params["port"]
        probe = " ".join(svc["healthcheck"]["test"])
        url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", probe)
        assert url, probe
        assert int(url.group(1)) == port and url.group(2) == "/readyz"


def test_the_proxy_spreads_requests_over_every_replica(compose: dict[str, Any]) -> None:
    services = compose["services"]
    proxy = services["proxy"]
    assert proxy["image"].startswith(("nginx:", "caddy:"))
    mount = next(v for v in proxy["volumes"] if v.endswith("/etc/nginx/nginx.conf:ro"))
    config_path = ROOT / mount.split(":")[0]
    assert config_path.parent == ROOT / "deploy" and config_path.is_file()
    config = config_path.read_text()
    upstream = re.search(r"upstream\s+(\w+)\s*\{(.*?)\}", config, re.S)
    assert upstream, "no upstream block"
    servers = set(re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstream.group(2), re.M))
    assert servers == {
        (api, str(parse_cli(services[api]["command"]).params["port"])) for api in APIS
    }
    assert re.search(rf"proxy_pass\s+http://{upstream.group(1)};", config)
    # server-sent events pass through unbuffered, for as long as a study runs
    events = re.search(r"location ~ \^/api/studies/\[0-9\]\+/events\$ \{(.*?)\}", config, re.S)
    assert events and "proxy_buffering off;" in events.group(1), "events must not be buffered"
    listen = re.search(r"^\s*listen\s+(\d+);", config, re.M)
    assert listen and proxy["ports"] == [f"8000:{listen.group(1)}"]


def test_the_service_uses_postgres_and_workers_need_only_url_and_token(
    compose: dict[str, Any],
) -> None:
    for api in APIS:
        api_env = compose["services"][api]["environment"]
        assert api_env["CAVIAR_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "worker" in api_env["CAVIAR_TOKENS"]
    worker_env = compose["services"]["worker"]["environment"]
    assert set(worker_env) == {"CAVIAR_TOKEN"}
    assert compose["services"]["worker"]["deploy"]["replicas"] >= 2


def test_every_caviar_variable_is_a_setting(compose: dict[str, Any]) -> None:
    fields = {f"CAVIAR_{name.upper()}" for name in Settings.model_fields}
    for name, svc in compose["services"].items():
        for key in svc.get("environment") or {}:
            if key.startswith("CAVIAR_"):
                assert key in fields, f"{name}: {key} is not a setting"

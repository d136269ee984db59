"""docker-compose.yml is checked without Docker: real CLI commands, waits on PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from service.cli import app

ROOT = Path(__file__).resolve().parent.parent


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


def test_every_caviar_command_parses_with_the_real_cli(compose: dict[str, Any]) -> None:
    commands = {
        name: svc["command"]
        for name, svc in compose["services"].items()
        if isinstance(svc.get("command"), list) and svc["command"][0] == "caviar"
    }
    assert set(commands) == {"migrate", "api", "worker"}
    for args in commands.values():
        parse_cli(args)  # raises UsageError on an unknown command or option
    assert parse_cli(commands["api"]).params["host"] == "0.0.0.0"
    assert parse_cli(commands["worker"]).params["api"] == "http://api:8000"


def test_the_parser_rejects_what_the_cli_would(compose: dict[str, Any]) -> None:
    assert raises_usage_error(["caviar", "serve", "--no-such-option", "1"])
    assert raises_usage_error(["caviar", "launch"])
    assert raises_usage_error(["caviar", "db", "downgrade"])
    assert not raises_usage_error(["caviar", "db", "upgrade"])


def test_services_wait_for_a_healthy_postgres(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "healthcheck" in services["postgres"]
    assert any(v.endswith("/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    for name in ("migrate", "api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["worker"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_the_service_uses_postgres_and_workers_need_only_url_and_token(
    compose: dict[str, Any],
) -> None:
    api_env = compose["services"]["api"]["environment"]
    assert api_env["CAVIAR_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "worker" in api_env["CAVIAR_TOKENS"]
    worker_env = compose["services"]["worker"]["environment"]
    assert set(worker_env) == {"CAVIAR_TOKEN"}
    assert compose["services"]["worker"]["deploy"]["replicas"] >= 2

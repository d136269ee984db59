"""What every command shares: the typer app, the consoles, errors as one line, spec files."""

from __future__ import annotations

import glob
import json
import sys
import time
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn

import httpx
import typer
from rich.console import Console

from service.cli.help import CaviarTyper
from service.settings import Settings, get_settings
from service.statuses import TERMINAL_STUDY


def example(*commands: str) -> str:
    """A command's epilog: the example(s) its --help ends with, one command a line."""
    label = "Example" if len(commands) == 1 else "Examples"
    return f"{label}:\n" + "\n".join(f"$ {c}" for c in commands)


app = CaviarTyper(
    help="Caviar: hyperparameter search for NumPy neural networks.",
    epilog=example("caviar run examples/moons.yaml", "caviar serve --workers 2"),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = CaviarTyper(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
datasets_app = CaviarTyper(help="Uploaded data sets: upload, list, delete.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")

# Options every command that talks to a service takes.
API = typer.Option(None, help="the service's URL (default: CAVIAR_API_URL)")
TOKEN = typer.Option(None, help="an API token (default: CAVIAR_TOKEN)")
JSON = typer.Option(False, "--json", help="print the service's JSON answer instead")


def caviar_version() -> str:
    """The installed package's version (0.0.0 in a checkout that was never installed)."""
    try:
        return version("caviar")
    except PackageNotFoundError:
        return "0.0.0"


def _print_version(value: bool) -> None:
    if value:
        out.print(f"caviar {caviar_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    show_version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_print_version,
        help="print Caviar's version and exit",
    ),
) -> None:
    """Caviar: hyperparameter search for NumPy neural networks."""


# Lines are never wrapped (soft_wrap): a message naming a long path stays one line that
# grep and scripts can read; tables still fit the terminal.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

TERMINAL = tuple(TERMINAL_STUDY)  # a study in one of these runs no more trials
USAGE = 2  # exit code of a user's mistake: a bad spec, an unknown study, a refused token


def fail(message: str, code: int = USAGE) -> NoReturn:
    """A clear message on stderr and a non-zero exit: no traceback for a user's mistake."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def json_default(value: Any) -> Any:
    """What JSON cannot hold, as the API writes it: a time in ISO 8601 with Z."""
    if isinstance(value, datetime):
        from service.schemas import utc_iso  # the models behind it: only when needed

        return utc_iso(value)
    return str(value)


def print_json(value: Any, *, indent: int | None = 2) -> None:
    """`value` as JSON on stdout (indented unless `indent` is None), for programs (`--json`)."""
    sys.stdout.write(json.dumps(value, indent=indent, default=json_default) + "\n")


def settings_with(db: str | None = None) -> Settings:
    settings = get_settings()
    if db:
        settings = settings.model_copy(update={"database_url": db})
    return settings


def read_spec_file(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A spec from a YAML or JSON file: (the mapping, None), or (None, why it is not one).

    Read by the spec's one loader, so a file gets the errors the API gives the same text.
    """
    # Imported here: the spec brings numpy and pydantic, which `caviar --help` never needs.
    from service.spec import SpecError, load_spec_data

    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    try:
        return load_spec_data(raw), None
    except SpecError as exc:
        return None, str(exc)


def load_spec_file(path: Path) -> dict[str, Any]:
    """A spec from a YAML or JSON file, or a clear error naming the file."""
    data, problem = read_spec_file(path)
    if data is None:
        fail(f"{path}: {problem}")
    return data


def expand_spec_paths(items: list[str]) -> list[Path]:
    """Files, globs and folders (their *.yaml, *.yml and *.json) as a sorted list of files."""
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = [f for ext in ("*.yaml", "*.yml", "*.json") for f in p.glob(ext)]
            if not found:
                fail(f"{item}: the folder holds no .yaml, .yml or .json spec")
            paths += sorted(found)
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(item) if Path(m).is_file())
            if not matches:
                fail(f"{item}: no file matches")
            paths += matches
        elif p.is_file():
            paths.append(p)
        else:
            fail(f"{item}: no such file")
    unique = list(dict.fromkeys(paths))  # a file named twice (a glob and itself) counts once
    return unique


def spec_errors(path: Path | str, errors: list[dict[str, Any]]) -> str:
    """One line per wrong field, each naming the file and the field: greppable, clear."""
    if not errors:
        return f"{path}: invalid spec"
    return "\n".join(f"{path}: {e.get('loc') or 'spec'}: {e.get('msg')}" for e in errors)


# -- talking to a service ------------------------------------------------------------------


def api_client(api: str | None, token: str | None, *, timeout: float = 60.0) -> httpx.Client:
    settings = get_settings()
    headers = {}
    secret = token or settings.token
    if secret:
        headers["authorization"] = f"Bearer {secret}"
    base = (api or settings.api_url).rstrip("/")
    return httpx.Client(base_url=base, headers=headers, timeout=timeout)


def call(
    client: httpx.Client, method: str, path: str, *, patience: float = 0.0, **kw: Any
) -> httpx.Response:
    """One request; connection failures are retried for `patience` seconds, then fatal."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return client.request(method, path, **kw)
        except httpx.TransportError as exc:
            if time.monotonic() >= deadline:
                fail(
                    f"cannot reach the service at {client.base_url}: {exc} "
                    "(is `caviar serve` running there? --api or CAVIAR_API_URL names another)"
                )
            time.sleep(0.5)


def problem_text(r: httpx.Response) -> str:
    """The service's own words for an error answer (a problem's detail), else its status."""
    try:
        body = r.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    return f"the service answered {r.status_code}: {detail or r.reason_phrase}"


class ServiceError(Exception):
    """The service refused a request; the message is its own words."""


def checked(r: httpx.Response, *ok: int) -> Any:
    """The JSON of an answer with one of the `ok` statuses; otherwise ServiceError."""
    if r.status_code not in (ok or (200,)):
        raise ServiceError(problem_text(r))
    return r.json() if r.content else None


def expect(r: httpx.Response, *ok: int) -> Any:
    """The JSON of an answer with one of the `ok` statuses; otherwise one line and exit 2."""
    try:
        return checked(r, *ok)
    except ServiceError as exc:
        fail(str(exc))

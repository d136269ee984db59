"""The `caviar` command line: run, serve, worker, submit, validate, status and db upgrade."""

from __future__ import annotations

import glob
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

import httpx
import typer
import yaml
from rich.console import Console
from rich.table import Table

from service.settings import Settings, get_settings

app = typer.Typer(
    help="Caviar: hyperparameter search for NumPy neural networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")

out = Console()
err = Console(stderr=True)

TERMINAL = ("completed", "cancelled", "failed")


def fail(message: str, code: int = 2) -> NoReturn:
    """One clear line on stderr and a non-zero exit: no traceback for a user's mistake."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _settings(db: str | None = None) -> Settings:
    settings = get_settings()
    if db:
        settings = settings.model_copy(update={"database_url": db})
    return settings


def load_spec_file(path: Path) -> dict[str, Any]:
    """A spec from a YAML or JSON file, or a clear error naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"{path}: cannot read: {exc.strerror or exc}")
    try:
        data = yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        fail(f"{path}: not valid YAML or JSON{where}: {getattr(exc, 'problem', exc)}")
    if not isinstance(data, dict):
        fail(f"{path}: a spec must be a mapping at the top level")
    return data


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Embedded:
    """The service on a background thread plus a worker pool: `run` and `serve`.

    Stopping stops the pool first, while the API still answers, so workers can finish
    their epoch and hand their trials back instead of leaving leases to expire.
    """

    def __init__(self, settings: Settings, *, host: str, port: int, workers: int) -> None:
        import uvicorn

        from service.app import create_app

        token, extra = _worker_token(settings)
        application = create_app(
            settings.model_copy(update={"migrate_on_start": False}), extra_tokens=extra
        )
        self.url = f"http://{host}:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(application, host=host, port=port, log_level="warning", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="caviar-api")
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                fail(f"the service could not start on {host}:{port} (is the port taken?)")
            time.sleep(0.05)
        self.pool: Any = None
        if workers > 0:
            from worker.pool import Pool, PoolOptions

            loopback = f"http://127.0.0.1:{port}"
            self.pool = Pool(
                PoolOptions(
                    api_url=loopback, token=token, processes=workers, log_level=logging.WARNING
                )
            )
            self.pool.start()
            threading.Thread(target=self.pool.supervise, daemon=True, name="caviar-pool").start()

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.stop()
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _migrate_or_fail(settings: Settings) -> None:
    from service import migrate

    try:
        migrate.upgrade(settings.database_url)
    except Exception as exc:
        fail(f"cannot open and migrate the database {settings.database_url}: {exc}")


def _worker_token(settings: Settings) -> tuple[str | None, list[Any]]:
    """An ephemeral worker token for embedded workers when the service requires tokens."""
    from service.auth import Token, parse_tokens

    try:
        configured = parse_tokens(settings.tokens)
    except ValueError as exc:
        fail(str(exc))
    if not configured:
        return None, []
    secret = secrets.token_urlsafe(32)
    return secret, [Token("embedded-workers", frozenset({"worker"}), secret)]


@app.command()
def run(
    spec: Path = typer.Argument(..., help="the search spec, YAML or JSON"),
    db: str | None = typer.Option(
        None, help="database URL (default: CAVIAR_DATABASE_URL or ./caviar.db)"
    ),
    workers: int = typer.Option(0, help="worker processes (default: one per core)"),
    as_json: bool = typer.Option(False, "--json", help="print the best trial as one JSON object"),
) -> None:
    """Run a whole study on this machine, with no server, and print the best trial."""
    from service.db import get_database
    from service.errors import InvalidSpec
    from service.studies import cancel_study, create_study, get_study

    data = load_spec_file(spec)
    settings = _settings(db)
    _migrate_or_fail(settings)
    database = get_database(settings.database_url)
    try:
        study_id = create_study(db=database, data=data, settings=settings)
    except InvalidSpec as exc:
        fail(_spec_errors(spec, exc.extra.get("errors", [])))
    n = workers or os.cpu_count() or 1
    embedded = Embedded(settings, host="127.0.0.1", port=_free_port(), workers=n)
    if not as_json:
        err.print(f"study {study_id} ({data.get('name')}): {n} worker processes", highlight=False)
    try:
        study = _wait_local(database, study_id, quiet=as_json)
    except KeyboardInterrupt:
        cancel_study(db=database, study_id=study_id)
        study = get_study(db=database, study_id=study_id)
    finally:
        embedded.stop()
    _print_result(study, as_json=as_json)
    if study["status"] != "completed":
        raise typer.Exit(1)


def _wait_local(database: Any, study_id: int, *, quiet: bool) -> dict[str, Any]:
    from service.studies import get_study

    last = ""
    while True:
        study = get_study(db=database, study_id=study_id)
        line = _progress_line(study)
        if not quiet and line != last:
            err.print(line, highlight=False, markup=False)
            last = line
        if study["status"] in TERMINAL:
            return study
        time.sleep(0.5)


def _progress_line(study: dict[str, Any]) -> str:
    c = study["counts"]
    done = c["completed"] + c["failed"] + c["pruned"] + c["stopped"]
    best = study.get("best_trial")
    best_text = f"best {best['value']:.4f} (trial {best['number']})" if best else "best -"
    rounds = study["rounds"]
    round_text = f" round {rounds['current'] + 1}/{rounds['total']}" if rounds["total"] > 1 else ""
    return (
        f"[{study['status']}]{round_text} {done}/{study['total_trials']} done, "
        f"{c['running']} running, {c['queued']} queued, {c['failed']} failed; {best_text}"
    )


def _print_result(study: dict[str, Any], *, as_json: bool) -> None:
    best = study.get("best_trial")
    if as_json:
        payload = {
            "study_id": study["id"],
            "name": study["name"],
            "status": study["status"],
            "objective": study["objective"],
            "counts": study["counts"],
            "best_trial": best,
        }
        sys.stdout.write(json.dumps(payload, default=str) + "\n")
        return
    if best is None:
        out.print(f"study {study['id']} {study['status']}: no trial produced a value")
        if study.get("error"):
            out.print(study["error"])
        return
    obj = study["objective"]
    table = Table(title=f"best trial of study {study['id']} ({study['name']})")
    table.add_column("hyperparameter")
    table.add_column("value", justify="right")
    for key, value in best["params"].items():
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    table.add_row(f"[bold]{obj['metric']} ({obj['at']})", f"[bold]{best['value']:.4f}")
    out.print(table)


def _spec_errors(path: Path | str, errors: list[dict[str, Any]]) -> str:
    lines = [f"{path}: invalid spec"]
    lines += [f"  {e.get('loc')}: {e.get('msg')}" for e in errors]
    return "\n".join(lines)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to bind; loopback unless told otherwise"),
    port: int = typer.Option(8000, help="port to listen on"),
    db: str | None = typer.Option(
        None, help="database URL (default: CAVIAR_DATABASE_URL or ./caviar.db)"
    ),
    workers: int = typer.Option(0, help="embedded worker processes"),
) -> None:
    """Serve the API and the dashboard, with N embedded workers, until SIGINT or SIGTERM."""
    import signal

    settings = _settings(db)
    _migrate_or_fail(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    embedded = Embedded(settings, host=host, port=port, workers=workers)
    err.print(
        f"Caviar on {embedded.url}/ (database {settings.database_url}, {workers} workers)",
        highlight=False,
        soft_wrap=True,
    )
    try:
        while not stop.wait(0.5):
            if not embedded.thread.is_alive():
                fail("the service stopped unexpectedly; see the log above")
    finally:
        err.print("stopping: workers hand their trials back, then the service exits")
        embedded.stop()


@app.command()
def worker(
    api: str | None = typer.Option(None, help="the service's URL (default: CAVIAR_API_URL)"),
    token: str | None = typer.Option(None, help="a worker token (default: CAVIAR_TOKEN)"),
    processes: int = typer.Option(1, help="worker processes, one BLAS thread each"),
    max_trials: int = typer.Option(200, help="trials per process before a fresh one replaces it"),
    claim_batch: int = typer.Option(1, help="trials leased per request (for short trials)"),
) -> None:
    """Lease trials from a service and train them, until SIGTERM."""
    from worker.pool import PoolOptions, run_pool

    settings = _settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    options = PoolOptions(
        api_url=api or settings.api_url,
        token=token or settings.token or None,
        processes=processes,
        max_trials_per_process=max_trials,
        claim_batch=claim_batch,
    )
    raise typer.Exit(run_pool(options))


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
            matches = sorted(Path(m) for m in glob.glob(item))
            if not matches:
                fail(f"{item}: no file matches")
            paths += matches
        elif p.exists():
            paths.append(p)
        else:
            fail(f"{item}: no such file")
    return paths


def _api_client(api: str | None, token: str | None) -> httpx.Client:
    settings = _settings()
    headers = {}
    secret = token or settings.token
    if secret:
        headers["authorization"] = f"Bearer {secret}"
    return httpx.Client(base_url=(api or settings.api_url).rstrip("/"), headers=headers, timeout=60)


def _call(
    client: httpx.Client, method: str, path: str, *, patience: float = 0.0, **kw: Any
) -> httpx.Response:
    """One request; connection failures are retried for `patience` seconds, then fatal."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return client.request(method, path, **kw)
        except httpx.TransportError as exc:
            if time.monotonic() >= deadline:
                fail(f"cannot reach the service at {client.base_url}: {exc}")
            time.sleep(0.5)


@app.command()
def submit(
    specs: list[str] = typer.Argument(..., help="spec files, globs or folders"),
    api: str | None = typer.Option(None, help="the service's URL (default: CAVIAR_API_URL)"),
    token: str | None = typer.Option(None, help="an API token (default: CAVIAR_TOKEN)"),
    wait: bool = typer.Option(False, help="wait until every study ends; exit 1 if any failed"),
    connect_timeout: float = typer.Option(
        5.0, help="seconds to keep trying to reach a service that is still starting"
    ),
) -> None:
    """Submit a batch of specs over REST: all are validated before any is submitted."""
    paths = expand_spec_paths(specs)
    loaded = [(p, load_spec_file(p)) for p in paths]
    with _api_client(api, token) as client:
        problems = []
        for path, data in loaded:
            r = _call(client, "POST", "/api/specs/validate", json=data, patience=connect_timeout)
            if r.status_code == 422:
                problems.append(_spec_errors(path, r.json().get("errors", [])))
            elif r.status_code >= 400:
                fail(f"{path}: the service answered {r.status_code}: {r.json().get('detail')}")
        if problems:
            fail("nothing was submitted\n" + "\n".join(problems))
        ids = []
        for path, data in loaded:
            r = _call(client, "POST", "/api/studies", json=data)
            if r.status_code != 201:
                fail(f"{path}: the service answered {r.status_code}: {r.json().get('detail')}")
            study = r.json()
            ids.append(study["id"])
            out.print(
                f"{path}: study {study['id']} ({study['name']}) queued with "
                f"{study['total_trials']} trials",
                highlight=False,
            )
        if not wait:
            return
        failed = False
        pending = set(ids)
        while pending:
            for study_id in sorted(pending):
                r = _call(client, "GET", f"/api/studies/{study_id}")
                study = r.json()
                if study["status"] in TERMINAL:
                    pending.discard(study_id)
                    failed |= study["status"] != "completed"
                    out.print(
                        f"study {study_id}: {_progress_line(study)}", highlight=False, markup=False
                    )
            if pending:
                time.sleep(1.0)
        if failed:
            raise typer.Exit(1)


@app.command()
def validate(specs: list[str] = typer.Argument(..., help="spec files, globs or folders")) -> None:
    """Check specs without submitting them; names every wrong field."""
    from service.errors import InvalidSpec
    from service.studies import validate_spec

    settings = _settings()
    problems = []
    for path in expand_spec_paths(specs):
        try:
            spec = validate_spec(load_spec_file(path), settings=settings)
        except InvalidSpec as exc:
            problems.append(_spec_errors(path, exc.extra.get("errors", [])))
            continue
        out.print(f"{path}: ok ({spec.name}, strategy {spec.strategy.type})", highlight=False)
    if problems:
        fail("\n".join(problems))


@app.command()
def status(
    study: int | None = typer.Argument(None, help="a study id; all studies without it"),
    api: str | None = typer.Option(None, help="the service's URL (default: CAVIAR_API_URL)"),
    token: str | None = typer.Option(None, help="an API token (default: CAVIAR_TOKEN)"),
) -> None:
    """Show one study's progress and best trial, or list the studies."""
    with _api_client(api, token) as client:
        if study is not None:
            r = _call(client, "GET", f"/api/studies/{study}")
            if r.status_code != 200:
                fail(r.json().get("detail", r.text))
            out.print(_progress_line(r.json()), highlight=False, markup=False)
            return
        r = _call(client, "GET", "/api/studies", params={"limit": 200})
        if r.status_code != 200:
            fail(r.json().get("detail", r.text))
        table = Table()
        for col in ("id", "name", "status", "strategy", "trials", "best"):
            table.add_column(col)
        for s in r.json()["items"]:
            best = s["best_trial"]
            table.add_row(
                str(s["id"]),
                s["name"],
                s["status"],
                s["strategy"],
                str(s["total_trials"]),
                f"{best['value']:.4f}" if best else "-",
            )
        out.print(table)


@db_app.command("upgrade")
def db_upgrade(db: str | None = typer.Option(None, help="database URL")) -> None:
    """Apply every migration the database lacks."""
    from service import migrate

    settings = _settings(db)
    try:
        migrate.upgrade(settings.database_url)
    except Exception as exc:
        fail(f"cannot migrate {settings.database_url}: {exc}")
    revision = migrate.current_revision(settings.database_url)
    out.print(f"database {settings.database_url} is at revision {revision}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

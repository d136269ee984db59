"""Commands that run here: run (a whole study, no server), serve, worker, validate, db upgrade."""

from __future__ import annotations

import gc
import logging
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import typer

from service.cli.common import (
    app,
    db_app,
    err,
    example,
    expand_spec_paths,
    fail,
    load_spec_file,
    out,
    settings_with,
    spec_errors,
)
from service.cli.display import print_result, watch_local
from service.settings import Settings
from worker.policy import CLAIM_BATCH


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Embedded:
    """The service on a background thread plus a worker pool: `run` and `serve`.

    Stopping stops the pool first, while the API still answers, so workers can finish
    their epoch and hand their trials back instead of leaving leases to expire.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        host: str,
        port: int,
        workers: int,
        entrypoints: tuple[str, ...] = (),
    ) -> None:
        import uvicorn

        from service.app import create_app
        from service.serving import server_config

        token, extra = _worker_token(settings)
        self.token = token  # what workers of this process present
        application = create_app(
            settings.model_copy(update={"migrate_on_start": False}), extra_tokens=extra
        )
        self.url = f"http://{host}:{port}"
        self.server = uvicorn.Server(server_config(application, settings, host=host, port=port))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="caviar-api")
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                fail(f"the service could not start on {host}:{port} (is the port taken?)")
            time.sleep(0.05)
        _freeze_heap()
        self.pool: Any = None
        if workers > 0:
            from worker.pool import Pool, PoolOptions

            loopback = f"http://127.0.0.1:{port}"
            self.pool = Pool(
                PoolOptions(
                    api_url=loopback,
                    token=token,
                    processes=workers,
                    log_level=logging.WARNING,
                    entrypoints=entrypoints,
                )
            )
            self.pool.start()
            threading.Thread(target=self.pool.supervise, daemon=True, name="caviar-pool").start()

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.stop()
        self.server.should_exit = True
        self.thread.join(timeout=10)
        gc.unfreeze()  # the process may go on (`caviar run` called from a program, tests)


def _freeze_heap() -> None:
    """Keep what exists once the service has started out of every later garbage collection.

    The modules, the app, its routes and models are a few hundred thousand objects that
    live as long as the process; a full collection walks all of them, and took 150 to 350
    ms on a 2-core machine under load: a pause of every request in flight, most of the
    API's p99 in bench/api_load.py. Frozen, they are never walked again (reference counting
    still frees what is dropped; only cycles among them would outlive the process).
    """
    gc.collect()
    gc.freeze()


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


@app.command(
    epilog=example(
        "caviar run examples/moons.yaml",
        "caviar run examples/optimizers.yaml --workers 2 --json",
    )
)
def run(
    spec: Path = typer.Argument(..., help="the search spec, YAML or JSON"),
    db: str | None = typer.Option(
        None, help="database URL (default: CAVIAR_DATABASE_URL or ./caviar.db)"
    ),
    workers: int = typer.Option(0, help="worker processes (default: one per core)"),
    as_json: bool = typer.Option(False, "--json", help="print the best trial as one JSON object"),
) -> None:
    """Run a whole study on this machine, with no server, and print the best trial."""
    from service.studies import cancel_study, get_study

    data = load_spec_file(spec)
    settings = settings_with(db)
    entrypoints = _importable_task(data)
    database, study_id = _create_here(spec, data, settings)
    n = workers or os.cpu_count() or 1
    embedded = Embedded(
        settings, host="127.0.0.1", port=_free_port(), workers=n, entrypoints=entrypoints
    )
    if not as_json:
        err.print(f"study {study_id} ({data.get('name')}): {n} worker processes", highlight=False)
    try:
        study = watch_local(database, study_id, console=None if as_json else err)
    except KeyboardInterrupt:
        cancel_study(db=database, study_id=study_id)
        study = get_study(db=database, study_id=study_id)
    finally:
        embedded.stop()
    print_result(study, as_json=as_json, console=out)
    if study["status"] != "completed":
        raise typer.Exit(1)


def _importable_task(data: dict[str, Any]) -> tuple[str, ...]:
    """The spec's task entrypoint, which the run's own workers import (from the installed
    packages or the current folder), checked here first: () for the built-in trainer."""
    task = data.get("task")
    entrypoint = task.get("entrypoint") if isinstance(task, dict) else None
    from worker.objective import ENTRYPOINT, EntrypointError, load_entrypoint

    if not isinstance(entrypoint, str) or not ENTRYPOINT.fullmatch(entrypoint):
        return ()  # none, or one the spec's checks refuse with the rest

    if os.getcwd() not in sys.path:  # the pool's processes start with this path too
        sys.path.insert(0, os.getcwd())
    try:
        load_entrypoint(entrypoint)
    except EntrypointError as exc:
        fail(f"task.entrypoint: {exc}")
    return (entrypoint,)


def no_reviewer(runner: str) -> str:
    """Why `runner`, which runs a study here with no one to review it, refuses a study held
    for review after each trial (it would wait for ever)."""
    return f"{runner} has no one to continue the study after each trial"


def _create_here(path: Path, data: dict[str, Any], settings: Settings) -> tuple[Any, int]:
    """The database and the study `run` creates in it; a spec it refuses leaves no database.

    The spec is validated before the database is opened, and a SQLite file created for a
    study the database then refuses (an uploaded data set it does not hold) is removed.
    """
    from service.db import get_database
    from service.errors import InvalidSpec
    from service.studies import create_study, validate_spec

    try:
        parsed = validate_spec(data, settings=settings)
    except InvalidSpec as exc:
        fail(spec_errors(path, exc.extra.get("errors", [])))
    if parsed.execution.await_review:  # nobody could continue it: it would wait for ever
        fail(
            f"{path}: execution.await_review: {no_reviewer('`caviar run`')}; run it with "
            f"`caviar serve --submit {path}` and continue it from the dashboard or with "
            "`caviar continue`, or set await_review: false"
        )
    new_file = _new_sqlite_file(settings.database_url)
    _migrate_or_fail(settings)
    database = get_database(settings.database_url)
    try:
        return database, create_study(db=database, data=data, settings=settings)
    except InvalidSpec as exc:
        if new_file is not None:
            from service.db import forget_database

            forget_database(settings.database_url)
            for suffix in ("", "-wal", "-shm", "-journal"):
                new_file.with_name(new_file.name + suffix).unlink(missing_ok=True)
        fail(spec_errors(path, exc.extra.get("errors", [])))


def _new_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL that does not exist yet (None for one that does, or a server)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def _served_as(settings: Settings, host: str, *, allow_no_tokens: bool) -> Settings:
    """The start checks of `serve`: no tokens on a non-loopback address only when told, and
    the Host names the service answers to (service/browsers.py) with `host` among them.

    Bound to every address (0.0.0.0, ::), the names a network calls this machine are not
    known here; with tokens it answers to any, as Jupyter Server does when it listens
    beyond loopback (a DNS-rebinding page holds no token), unless CAVIAR_ALLOWED_HOSTS
    lists them.
    """
    from service.auth import parse_tokens
    from service.browsers import host_name, is_loopback_name, names

    try:
        tokens = parse_tokens(settings.tokens)
    except ValueError as exc:
        fail(str(exc))
    bound = host_name(host)
    if not tokens and not is_loopback_name(bound) and not allow_no_tokens:
        fail(
            f"--host {host} reaches beyond this machine, but no API tokens are configured: "
            "every caller would be refused but this machine's, and its web pages could "
            "drive the service. Set CAVIAR_TOKENS (name:scopes:secret entries, see the "
            "README) to serve the network, or pass --allow-no-tokens to start anyway."
        )
    allowed = names(settings.allowed_hosts)
    if bound in ("", "0.0.0.0", "::"):
        if tokens and not allowed:
            allowed = ["*"]
            err.print(
                "answering to any Host name (tokens are required); list this service's "
                "names in CAVIAR_ALLOWED_HOSTS to refuse others",
                highlight=False,
            )
    elif not is_loopback_name(bound):
        allowed.append(bound)
    return settings.model_copy(update={"allowed_hosts": ",".join(allowed)})


@app.command(
    epilog=example(
        "caviar serve --workers 2 --submit examples/moons.yaml",
        "CAVIAR_TOKENS='me:read,write:SECRET' caviar serve --host 0.0.0.0 --port 8000",
    )
)
def serve(
    host: str = typer.Option("127.0.0.1", help="address to bind; loopback unless told otherwise"),
    port: int = typer.Option(8000, help="port to listen on"),
    db: str | None = typer.Option(
        None, help="database URL (default: CAVIAR_DATABASE_URL or ./caviar.db)"
    ),
    workers: int = typer.Option(0, help="embedded worker processes"),
    allow_no_tokens: bool = typer.Option(
        False,
        "--allow-no-tokens",
        help="serve a non-loopback --host with no CAVIAR_TOKENS anyway (only callers on "
        "this machine are answered)",
    ),
    submit: list[Path] = typer.Option(
        [],
        "--submit",
        metavar="SPEC",
        help="a spec to queue once this service listens (never into another on the port); "
        "repeatable",
    ),
) -> None:
    """Serve the API and the dashboard, with N embedded workers, until SIGINT or SIGTERM."""
    import signal

    settings = _served_as(settings_with(db), host, allow_no_tokens=allow_no_tokens)
    specs = _valid_specs(submit, settings)
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
        _queue_specs(specs, settings)
        while not stop.wait(0.5):
            if not embedded.thread.is_alive():
                fail("the service stopped unexpectedly; see the log above")
    finally:
        err.print("stopping: workers hand their trials back, then the service exits")
        embedded.stop()


def _valid_specs(paths: list[Path], settings: Settings) -> list[tuple[Path, dict[str, Any]]]:
    """The specs `serve --submit` queues, each checked before the service starts."""
    from service.errors import InvalidSpec
    from service.studies import validate_spec

    specs, problems = [], []
    for path in paths:
        data = load_spec_file(path)
        try:
            validate_spec(data, settings=settings)
        except InvalidSpec as exc:
            problems.append(spec_errors(path, exc.extra.get("errors", [])))
        specs.append((path, data))
    if problems:
        fail("\n".join(problems))
    return specs


def _queue_specs(specs: list[tuple[Path, dict[str, Any]]], settings: Settings) -> None:
    """Queue `serve --submit`'s specs: called once this process's own service listens, so a
    second `make run` whose port is taken queues nothing anywhere."""
    from service.db import get_database
    from service.errors import InvalidSpec
    from service.studies import create_study, get_study

    database = get_database(settings.database_url)
    for path, data in specs:
        try:
            study_id = create_study(db=database, data=data, settings=settings)
        except InvalidSpec as exc:  # an uploaded data set this database does not hold
            err.print(spec_errors(path, exc.extra.get("errors", [])), highlight=False)
            continue
        study = get_study(db=database, study_id=study_id)
        err.print(
            f"{path}: study {study_id} ({study['name']}) queued with "
            f"{study['planned_trials']} trials",
            highlight=False,
            soft_wrap=True,
        )


@app.command(
    epilog=example(
        "caviar worker --api http://127.0.0.1:8000 --processes 4",
        "CAVIAR_TOKEN=SECRET caviar worker --api http://a:8000,http://b:8000",
        "caviar worker --entrypoint mypkg.train:objective --no-trainer",
    )
)
def worker(
    api: str | None = typer.Option(
        None,
        help="the service's URL, or its replicas' URLs comma-separated: a worker that cannot "
        "reach one tries the next (default: CAVIAR_API_URL)",
    ),
    token: str | None = typer.Option(None, help="a worker token (default: CAVIAR_TOKEN)"),
    processes: int = typer.Option(1, help="worker processes, one BLAS thread each"),
    max_trials: int | None = typer.Option(
        None,
        help="trials per process before a fresh one replaces it (default: 200 trials and 10 "
        "minutes, so memory cannot creep and short trials do not pay for a new process)",
    ),
    claim_batch: int = typer.Option(
        CLAIM_BATCH,
        help="at most this many trials leased per request; the service sizes each lease to "
        "about half a second of work by the trials seen of each study, so only very short "
        "trials share one",
    ),
    entrypoint: list[str] = typer.Option(
        [],
        "--entrypoint",
        help="a task function installed here (module.path:function), imported at start; the "
        "worker also runs trials of studies whose task names it (repeat for several)",
    ),
    no_trainer: bool = typer.Option(
        False,
        "--no-trainer",
        help="run only trials of the --entrypoint functions, none of the built-in trainer's",
    ),
) -> None:
    """Lease trials from a service and run them (the trainer, your functions), until SIGTERM."""
    from worker.client import parse_urls
    from worker.objective import EntrypointError, load_entrypoint
    from worker.pool import PoolOptions, run_pool

    if no_trainer and not entrypoint:
        fail("--no-trainer: give at least one --entrypoint, or the worker could run nothing")
    for name in entrypoint:  # fail fast, here, rather than in every worker process
        try:
            load_entrypoint(name)
        except EntrypointError as exc:
            fail(f"--entrypoint: {exc}")
    if len(set(entrypoint)) != len(entrypoint):
        fail(f"--entrypoint: each at most once (got {', '.join(entrypoint)})")

    settings = settings_with()
    api_url = api or settings.api_url
    try:
        parse_urls(api_url)  # refused here, not in every worker process
    except ValueError as exc:
        fail(f"--api: {exc}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    options = PoolOptions(
        api_url=api_url,
        token=token or settings.token or None,
        processes=processes,
        max_trials_per_process=max_trials,
        claim_batch=claim_batch,
        entrypoints=tuple(entrypoint),
        trainer=not no_trainer,
    )
    raise typer.Exit(run_pool(options))


@app.command(epilog=example("caviar validate examples/moons.yaml", "caviar validate examples/"))
def validate(specs: list[str] = typer.Argument(..., help="spec files, globs or folders")) -> None:
    """Check specs without submitting them; names every wrong field (file: field: message)."""
    from service.errors import InvalidSpec
    from service.studies import validate_spec

    settings = settings_with()
    problems = []
    for path in expand_spec_paths(specs):
        try:
            spec = validate_spec(load_spec_file(path), settings=settings)
        except InvalidSpec as exc:
            problems.append(spec_errors(path, exc.extra.get("errors", [])))
            continue
        # An upload's id has the right form; whether the service holds it, only it can say.
        ds = spec.dataset
        upload = "" if ds is None or ds.is_builtin else f"; upload {ds.name} not checked"
        out.print(
            f"{path}: ok ({spec.name}, strategy {spec.strategy.type}{upload})", highlight=False
        )
    if problems:
        fail("\n".join(problems))


@db_app.command("upgrade", epilog=example("caviar db upgrade --db postgresql://me@db/caviar"))
def db_upgrade(db: str | None = typer.Option(None, help="database URL")) -> None:
    """Apply every migration the database lacks."""
    from service import migrate

    settings = settings_with(db)
    try:
        migrate.upgrade(settings.database_url)
    except Exception as exc:
        fail(f"cannot migrate {settings.database_url}: {exc}")
    revision = migrate.current_revision(settings.database_url)
    out.print(f"database {settings.database_url} is at revision {revision}")

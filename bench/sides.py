"""The three sides of bench/queue_vs_optuna.py, each timed from its first trial's start to
its last trial's end: bare trainer processes, Caviar through its real CLI, and Optuna.

Every side trains the same trials (the configs Caviar's planner draws for the spec) with
one BLAS thread per process. Bare processes are the physical ceiling: each trains its
share of the configs, no queue, no database, no HTTP. Caviar is `caviar serve --workers 0`
and `caviar worker --processes N`, exactly as users start them; its clock is read from the
study's own events (the database's clock). Optuna's processes wait at a start line, then
optimize one shared study in its RDB storage; its clock is read from its trials.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
CAVIAR = [sys.executable, "-m", "service.cli"]
PG_ADMIN = os.environ.get(
    "CAVIAR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def spec(trials: int, epochs: int, name: str = "bench") -> dict[str, Any]:
    """The issue's small trials: 40-point moons, one hidden layer of 2 units, full batch."""
    return {
        "name": name,
        "dataset": {"name": "moons", "n_samples": 40, "seed": 0},
        "model": {"hidden_layers": [2], "epochs": epochs, "batch_size": 0},
        "space": {"learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "scale": "log"}},
        "strategy": {"type": "random", "trials": trials},
        "execution": {"max_parallel": 10_000, "seed": 1},
    }


def planned_configs(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The trainer configs Caviar queues for `data`, in trial order."""
    from service.spec import parse_spec, plan_round

    _, plans = plan_round(parse_spec(data), round_index=0)
    return [p.config for p in plans]


@dataclass
class Run:
    """One timed run of one side: trials per second, and what it cost besides."""

    trials: int
    seconds: float
    service_cpu_ms: float | None = None  # service CPU per trial (Caviar only)
    # The share of the worker processes' time on the clock spent waiting for a lease
    # (Caviar only; from each worker process's leaving line).
    waiting: float | None = None
    # The PostgreSQL server's CPU per trial (all its processes on this machine), which
    # runs on the same cores as the workers (Caviar on PostgreSQL only).
    database_cpu_ms: float | None = None

    @property
    def rate(self) -> float:
        return self.trials / self.seconds


# --- databases ----------------------------------------------------------------------------


def fresh_database(kind: str, tmp: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp / f'{uuid.uuid4().hex[:8]}.db'}"
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"caviar_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from service.db import forget_database

    forget_database(url)
    if not url.startswith("postgresql"):
        return
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    engine.dispose()


# --- the start line -----------------------------------------------------------------------


def at_start_line(target: Any, arglist: list[tuple[Any, ...]]) -> None:
    """Run `target(*args, ready, start)` in one spawned process per args; each signals
    `ready` once imported and loaded, and all start together."""
    ctx = mp.get_context("spawn")
    ready = ctx.Semaphore(0)
    start = ctx.Event()
    procs = [ctx.Process(target=target, args=(*args, ready, start)) for args in arglist]
    for p in procs:
        p.start()
    waiting = len(procs)
    while waiting:
        if ready.acquire(timeout=1.0):
            waiting -= 1
        elif dead := [p for p in procs if p.exitcode is not None]:
            # A process that failed before the line would leave the others waiting forever.
            for p in procs:
                p.kill()
            raise RuntimeError(
                f"a benchmark process failed before the start with {dead[0].exitcode}"
            )
    start.set()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a benchmark process failed with {p.exitcode}")


# --- bare trainer processes ---------------------------------------------------------------


def _bare_proc(
    configs: list[dict[str, Any]], dataset: dict[str, Any], clocks: Any, ready: Any, start: Any
) -> None:
    from threadpoolctl import threadpool_limits

    from trainer import TrainConfig, load_dataset, train

    threadpool_limits(1)
    ds = load_dataset(dataset)
    ready.release()
    start.wait()
    began = time.time()
    for config in configs:
        train(TrainConfig(**config), ds)
    clocks.put((began, time.time()))


def bare(data: dict[str, Any], procs: int) -> Run:
    """The same trials through trainer.train in `procs` bare processes, a fixed share each."""
    configs = planned_configs(data)
    dataset = {k: v for k, v in data["dataset"].items() if v is not None}
    clocks = mp.get_context("spawn").Queue()
    at_start_line(_bare_proc, [(configs[i::procs], dataset, clocks) for i in range(procs)])
    spans = [clocks.get(timeout=10) for _ in range(procs)]
    return Run(len(configs), max(e for _, e in spans) - min(b for b, _ in spans))


# --- Caviar through its CLI ---------------------------------------------------------------


class Service:
    """`caviar serve --workers 0` in a process of its own, as users run it."""

    def __init__(self, db_url: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "CAVIAR_DATABASE_URL": db_url, "CAVIAR_TOKENS": ""}
        self.proc = subprocess.Popen(
            [*CAVIAR, "serve", "--workers", "0", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        self.api = httpx.Client(base_url=self.url, timeout=300)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.api.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the service did not start")

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until the service is idle (under 2% of a core for half a second): its
        start (imports, migrations) and a finished study's aftermath take seconds of CPU,
        which would otherwise fall on the next side's clock (bare processes measured 640
        trials/s beside a service still starting, 3,500 alone)."""
        deadline = time.monotonic() + timeout
        before = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.cpu_seconds()
            if now - before < 0.01:
                return
            before = now

    def cpu_seconds(self) -> float:
        """User + system CPU the service process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.api.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _wait_done(api: httpx.Client, study_id: int, timeout: float = 1800) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study: dict[str, Any] = api.get(f"/api/studies/{study_id}").json()
        if study["status"] in ("completed", "failed", "cancelled"):
            return study
        time.sleep(0.5)  # each look costs the service CPU, which the bench counts
    raise RuntimeError(f"study {study_id} did not finish in {timeout} s")


def study_clock(db_url: str, study_id: int) -> float:
    """Seconds from the study's first trial start to its last trial end (its events)."""
    from sqlalchemy import func, select

    from service.db import get_database
    from service.models import Event

    with get_database(db_url).session(write=False) as s:
        first = s.scalar(
            select(func.min(Event.created_at)).where(
                Event.study_id == study_id, Event.type == "trial.started"
            )
        )
        last = s.scalar(
            select(func.max(Event.created_at)).where(
                Event.study_id == study_id, Event.type == "trial.finished"
            )
        )
    if first is None or last is None:
        raise RuntimeError(f"study {study_id} has no started or no finished trial")
    return float(last - first)


def caviar(service: Service, db_url: str, data: dict[str, Any], procs: int) -> Run:
    """The study through `caviar worker --processes N` against a running `service`."""
    answer = service.api.post("/api/studies", json=data)
    answer.raise_for_status()
    study_id = answer.json()["id"]
    cpu = service.cpu_seconds()
    on_postgres = db_url.startswith("postgresql")
    database_before = postgres_cpu_seconds() if on_postgres else 0.0
    database: float | None = None
    with tempfile.TemporaryFile("w+") as log:
        pool = subprocess.Popen(
            [*CAVIAR, "worker", "--api", service.url, "--processes", str(procs)],
            env=service.env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            study = _wait_done(service.api, study_id)
            used = service.cpu_seconds() - cpu
            if on_postgres:
                database = postgres_cpu_seconds() - database_before
        finally:
            os.killpg(pool.pid, signal.SIGTERM)
            pool.wait(timeout=60)
        log.seek(0)
        waited = sum(float(m) for m in _WAITED.findall(log.read()))
    trials = int(data["strategy"]["trials"])
    if study["counts"]["completed"] != trials:
        raise RuntimeError(f"caviar: {study['counts']} of {trials} trials")
    clock = study_clock(db_url, study_id)
    return Run(
        trials,
        clock,
        1000 * used / trials,
        waiting=waited / (procs * clock),
        database_cpu_ms=None if database is None else 1000 * database / trials,
    )


def postgres_cpu_seconds() -> float:
    """User + system CPU of every `postgres` process on this machine so far (Linux /proc):
    the bench's server is local, and nothing else uses it during a run."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended meanwhile
            continue
        name, fields = stat.split("(", 1)[1].rsplit(")", 1)
        if name == "postgres":
            parts = fields.split()
            total += int(parts[11]) + int(parts[12])
    return total / os.sysconf("SC_CLK_TCK")


# A worker process's last line (worker.runner): the seconds it waited for leases. The
# process's start and its wait for the study's first lease fall outside the clock, so
# the share is an upper bound of what waiting cost on it.
_WAITED = re.compile(r"trials run, ([0-9.]+) s waiting for leases")


# --- Optuna -------------------------------------------------------------------------------


def _optuna_proc(url: str, name: str, n: int, data: dict[str, Any], ready: Any, start: Any) -> None:
    import optuna
    from threadpoolctl import threadpool_limits

    from trainer import TrainConfig, load_dataset, train

    threadpool_limits(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    configs = planned_configs(data)
    ds = load_dataset({k: v for k, v in data["dataset"].items() if v is not None})
    low = data["space"]["learning_rate"]["low"]
    high = data["space"]["learning_rate"]["high"]
    study = optuna.load_study(study_name=name, storage=url)
    ready.release()
    start.wait()

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("learning_rate", low, high, log=True)  # Optuna's own work
        config = configs[trial.number % len(configs)]  # the very trial Caviar runs
        result = train(TrainConfig(**config), ds)
        return float(result.history[-1]["dev_accuracy"] or 0.0)

    study.optimize(objective, n_trials=n)


def optuna_side(url: str, data: dict[str, Any], procs: int, trials: int) -> Run:
    """`trials` of the same trials through Optuna's RDB storage at `url`, `procs` processes."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"bench-{uuid.uuid4().hex[:6]}"
    study = optuna.create_study(
        study_name=name, storage=url, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    share = [trials // procs + (i < trials % procs) for i in range(procs)]
    at_start_line(_optuna_proc, [(url, name, n, data) for n in share])
    done = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    first = min(t.datetime_start for t in done if t.datetime_start is not None)
    last = max(t.datetime_complete for t in done if t.datetime_complete is not None)
    return Run(len(done), (last - first).total_seconds())

"""Queue throughput: Caviar (service + workers over HTTP) against Optuna's RDB storage.

Runs, side by side in one run, on the same kind of database (a fresh SQLite file, a fresh
PostgreSQL database) and with the same number of worker processes:

* no-op trials per second, Caviar against Optuna (goal: Caviar >= 10x);
* Caviar's rate with 50,000 trials already in the database against 500 (goal: within 20%);
* real CPU-bound trials through a caviar pool of 2 processes against 1 (goal: >= 1.8x),
  beside the same trials through trainer.train in 1 and 2 plain processes: the machine's
  own ceiling, so the reader sees how much of the gap is Caviar's.

Caviar's workers lease as many trials per round trip as they expect to finish in about
LEASE_TARGET_SECONDS, up to NOOP_CLAIM_CAP no-op trials, up to the pool's default cap real
ones. The service's CPU time per trial is printed too: on a shared machine it moves far
less than the rates; so is, for real trials, the time a worker waited on the service.

    python bench/queue_vs_optuna.py [--trials 2000] [--no-postgres]
        [--parts noop,many,real] [--real-trials 32] [--repeats 3]

Each worker process imports everything, then waits at a start line; the clock runs from
the start signal until the last process has finished, for Optuna and Caviar alike.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
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
PG_ADMIN = os.environ.get(
    "CAVIAR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


# --- databases ----------------------------------------------------------------------------


def fresh_sqlite(tmp: Path) -> str:
    return f"sqlite:///{tmp / f'{uuid.uuid4().hex[:8]}.db'}"


def fresh_postgres() -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"caviar_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)


def drop_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


# --- Optuna -------------------------------------------------------------------------------


def _optuna_proc(url: str, name: str, n: int, ready: Any, start: Any) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=url)
    ready.release()
    start.wait()

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("learning_rate", 1e-4, 1.0, log=True)
        return 0.0

    study.optimize(objective, n_trials=n)


def optuna_rate(url: str, trials: int, procs: int) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"bench-{uuid.uuid4().hex[:6]}"
    optuna.create_study(study_name=name, storage=url, sampler=optuna.samplers.RandomSampler())
    return _timed(_optuna_proc, [(url, name, trials // procs)] * procs) and trials / _LAST[0]


# --- Caviar -------------------------------------------------------------------------------


@dataclass
class _Done:
    status: str = "completed"


def noop_train(config: Any, dataset: Any, *, on_epoch: Any = None, **_: Any) -> _Done:
    """A trial that trains nothing: what is left to measure is the queue."""
    if on_epoch is not None:
        on_epoch({"epoch": 1, "dev_accuracy": 1.0, "train_cost": 0.0, "learning_rate": 0.1})
    return _Done()


def _caviar_proc(url: str, noop: bool, batch: int, waits: Any, ready: Any, start: Any) -> None:
    from threadpoolctl import threadpool_limits

    from worker.runner import Worker

    threadpool_limits(1)
    kwargs: dict[str, Any] = {"train_fn": noop_train} if noop else {}
    w = Worker(url, None, exit_when_idle=True, claim_batch=batch, max_trials=None, **kwargs)
    ready.release()
    start.wait()
    w.run()
    # The time the training thread waited on the service (claims), per trial it ran.
    waits.put((w.stall_seconds, w.trials_done))


def _plain_proc(
    configs: list[Any], dataset: dict[str, Any], todo: Any, ready: Any, start: Any
) -> None:
    """The machine's own ceiling: trainer.train in a bare process, no service, no HTTP."""
    from threadpoolctl import threadpool_limits

    from trainer import TrainConfig, load_dataset, train

    threadpool_limits(1)
    ds = load_dataset(dataset)
    ready.release()
    start.wait()
    # A blocking get until this process's end mark: get_nowait() raises Empty whenever
    # another process holds the queue's lock, and a process that took that for the end
    # left its trials to the other (2 processes measured barely faster than 1).
    while (i := todo.get()) is not None:
        train(TrainConfig(**configs[i]), ds)


def plain_rate(trials: int, procs: int) -> float:
    """Real trials per second of the same configs through trainer.train in `procs` plain
    processes that take the next trial from a shared queue, as Caviar's workers do."""
    from service.spec import parse_spec, plan_round

    data = spec(trials, real=True)
    _, plans = plan_round(parse_spec(data), round_index=0)
    configs = [p.config for p in plans]
    dataset = {k: v for k, v in data["dataset"].items() if v is not None}
    todo = mp.get_context("spawn").Queue()
    for i in range(len(configs)):
        todo.put(i)
    for _ in range(procs):
        todo.put(None)  # one end mark per process
    return trials / _timed(_plain_proc, [(configs, dataset, todo)] * procs)


class Service:
    """`caviar serve` in its own process, as users run it."""

    def __init__(self, db_url: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "CAVIAR_DATABASE_URL": db_url, "CAVIAR_TOKENS": ""}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the service did not start")

    def cpu_seconds(self) -> float:
        """User + system CPU the service process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def spec(trials: int, *, real: bool = False) -> dict[str, Any]:
    model = {"hidden_layers": [64, 64], "epochs": 60, "batch_size": 32} if real else {"epochs": 1}
    return {
        "name": "bench",
        "dataset": {"name": "moons", "n_samples": 4000 if real else 200, "seed": 0},
        "model": model,
        "space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "scale": "log"}},
        "strategy": {"type": "random", "trials": trials},
        "execution": {"max_parallel": 64, "seed": 1},
    }


def seed_trials(db_url: str, n: int) -> None:
    """Fill the database with `n` finished trials of another study, as a long-lived one has."""
    from sqlalchemy import insert

    from service import migrate
    from service.db import get_database
    from service.models import Study, StudyStatus, Trial, TrialStatus

    migrate.upgrade(db_url)
    db = get_database(db_url)
    with db.session() as s:
        study = Study(
            name="old",
            spec=spec(1),
            status=StudyStatus.completed,
            strategy="random",
            mode="caviar",
            max_parallel=8,
            max_retries=2,
            metric="dev_accuracy",
            direction="maximize",
            total_rounds=1,
            current_round=0,
            spec_sha256="0" * 64,
        )
        s.add(study)
        s.flush()
        rows = [
            {
                "study_id": study.id,
                "number": i,
                "round_index": 0,
                "params": {"learning_rate": 0.01},
                "config": {},
                "status": TrialStatus.completed,
                "attempt": 1,
                "retries": 0,
                "stop_requested": False,
                "epochs_done": 1,
                "value": (i % 997) / 997,
            }
            for i in range(n)
        ]
        for i in range(0, n, 5000):
            s.execute(insert(Trial), rows[i : i + 5000])
    db.dispose()


# Workers lease as many trials as they expect to finish in about a second, from the
# durations they have seen, up to this many per round trip (no-op trials: the cap).
# Two processes at the cap fill the study's max_parallel (64) and no more: a worker
# whose claim finds every slot taken would leave (exit_when_idle) before the queue is empty.
NOOP_CLAIM_CAP = 32
_SERVICE_CPU: list[float] = []  # service CPU ms per trial of each caviar_rate run
_WORKER_WAIT: list[float] = []  # ms a worker process waited on claims, per trial


def caviar_rate(db_url: str, trials: int, procs: int, *, real: bool = False) -> float:
    from worker.pool import PoolOptions

    service = Service(db_url)
    try:
        r = httpx.post(service.url + "/api/studies", json=spec(trials, real=real), timeout=120)
        r.raise_for_status()
        study_id = r.json()["id"]
        # Real trials with the pool's default cap, as `caviar worker` runs them.
        cap = PoolOptions.claim_batch if real else NOOP_CLAIM_CAP
        cpu = service.cpu_seconds()
        waits = mp.get_context("spawn").Queue()
        elapsed = _timed(_caviar_proc, [(service.url, not real, cap, waits)] * procs)
        _SERVICE_CPU.append(1000 * (service.cpu_seconds() - cpu) / trials)
        stalls = [waits.get(timeout=10) for _ in range(procs)]
        _WORKER_WAIT.append(1000 * sum(w for w, _ in stalls) / max(sum(n for _, n in stalls), 1))
        study = httpx.get(f"{service.url}/api/studies/{study_id}").json()
        assert study["counts"]["completed"] == trials, study["counts"]
        return trials / elapsed
    finally:
        service.stop()


# --- timing -------------------------------------------------------------------------------

_LAST = [0.0]


def _timed(target: Any, arglist: list[tuple[Any, ...]]) -> float:
    ctx = mp.get_context("spawn")
    ready = ctx.Semaphore(0)
    start = ctx.Event()
    procs = [ctx.Process(target=target, args=(*args, ready, start)) for args in arglist]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    t0 = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a benchmark process failed with {p.exitcode}")
    _LAST[0] = time.perf_counter() - t0
    return _LAST[0]


def _fresh(kind: str, tmp: Path) -> str:
    return fresh_sqlite(tmp) if kind == "sqlite" else fresh_postgres()


def _done(kind: str, url: str) -> None:
    if kind == "postgres":
        from service.db import forget_database

        forget_database(url)
        drop_postgres(url)


def compare_noop(kinds: list[str], trials: int, tmp: Path) -> float:
    """No-op trials per second, Caviar against Optuna; returns the worst ratio."""
    print(f"{trials} no-op trials; cpu count {os.cpu_count()}")
    print(
        f"{'database':<9} {'procs':>5} {'optuna t/s':>11} {'caviar t/s':>11} {'ratio':>7}"
        f" {'service cpu ms/trial':>21}"
    )
    ratios = []
    for kind in kinds:
        for procs in (1, 2):
            url = _fresh(kind, tmp)
            o = optuna_rate(url, trials, procs)
            _done(kind, url)
            url = _fresh(kind, tmp)
            c = caviar_rate(url, trials, procs)
            _done(kind, url)
            ratios.append(c / o)
            print(
                f"{kind:<9} {procs:>5} {o:>11.1f} {c:>11.1f} {c / o:>6.1f}x"
                f" {_SERVICE_CPU[-1]:>21.2f}",
                flush=True,
            )
    return min(ratios)


def compare_many(kinds: list[str], many: int, tmp: Path) -> None:
    """Caviar's rate with 50,000 trials already in the database against 500."""
    print(f"\nCaviar with many trials already in the database (2 worker processes, {many}")
    print("no-op trials a run, median of 3 runs each, interleaved: one run lasts a second or")
    print("two, so single rates move with the machine's load; the service CPU per trial")
    print("shows whether the queue itself slowed)")
    print(
        f"{'database':<9} {'at 500 t/s':>11} {'at 50,000 t/s':>14} {'change':>8}"
        f" {'service cpu ms/trial':>21}"
    )
    for kind in kinds:
        urls = {}
        for existing in (500, 50_000):
            urls[existing] = _fresh(kind, tmp)
            seed_trials(urls[existing], existing)
        measured: dict[int, list[tuple[float, float]]] = {500: [], 50_000: []}
        for _ in range(3):
            for existing, url in urls.items():
                # Each run queues `many` more trials in the same database: the 500 stay
                # few and the 50,000 many next to what a run adds.
                measured[existing].append((caviar_rate(url, many, 2), _SERVICE_CPU[-1]))
        for url in urls.values():
            _done(kind, url)
        rates = [statistics.median(r for r, _ in measured[e]) for e in (500, 50_000)]
        cpus = [statistics.median(c for _, c in measured[e]) for e in (500, 50_000)]
        change = rates[1] / rates[0] - 1
        cpu = f"{cpus[0]:.2f} -> {cpus[1]:.2f}"
        print(
            f"{kind:<9} {rates[0]:>11.1f} {rates[1]:>14.1f} {change:>+7.0%} {cpu:>21}",
            flush=True,
        )


def compare_real(trials: int, repeats: int, tmp: Path) -> None:
    """Real trials through a caviar pool of 2 processes against 1, beside plain processes.

    Each repetition runs all four (plain and Caviar, 1 and 2 processes) back to back, so
    a change in the machine's load falls on both sides of its ratios; the medians over
    the repetitions are printed, the 2-against-1 ratios as the median of each
    repetition's own.
    """
    print(f"\nReal trials ({trials} x moons 4000, [64, 64], 60 epochs), SQLite, median of")
    print(f"{repeats} interleaved repetitions; the same trials through trainer.train in plain")
    print("processes (one BLAS thread each, no service, no HTTP) give the machine's own")
    print("ceiling for 2 processes against 1; 'worker wait' is the time a worker process's")
    print("training thread waited on the service (claims, results) per trial")
    runs: dict[int, list[tuple[float, float, float, float]]] = {1: [], 2: []}
    for _ in range(repeats):
        for procs in (1, 2):
            plain = plain_rate(trials, procs)
            url = _fresh("sqlite", tmp)
            real = caviar_rate(url, trials, procs, real=True)
            runs[procs].append((plain, real, _SERVICE_CPU[-1], _WORKER_WAIT[-1]))
    print(
        f"{'procs':>5} {'plain t/s':>10} {'caviar t/s':>11} {'caviar/plain':>13}"
        f" {'service cpu ms/trial':>21} {'worker wait ms/trial':>21}"
    )
    for procs, rows in runs.items():
        plain, real, cpu, wait = (statistics.median(column) for column in zip(*rows, strict=True))
        print(
            f"{procs:>5} {plain:>10.2f} {real:>11.2f} {real / plain:>12.0%}"
            f" {cpu:>21.2f} {wait:>21.1f}",
            flush=True,
        )
    ratios = [(two[1] / one[1], two[0] / one[0]) for one, two in zip(runs[1], runs[2], strict=True)]
    each = ", ".join(f"{c:.2f}" for c, _ in ratios)
    print(
        f"2 processes / 1 process: Caviar {statistics.median(c for c, _ in ratios):.2f}x"
        f" (goal >= 1.8x; each repetition: {each}); plain processes"
        f" {statistics.median(p for _, p in ratios):.2f}x (the machine's ceiling)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--real-trials", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="of the real-trial comparison")
    parser.add_argument(
        "--parts",
        default="noop,many,real",
        help="the comparisons to run, comma-separated: noop, many, real (default: all)",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not parts or not parts <= {"noop", "many", "real"}:
        parser.error(f"--parts: choose among noop, many and real (got {args.parts!r})")
    kinds = ["sqlite"] + ([] if args.no_postgres else ["postgres"])
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        worst = compare_noop(kinds, args.trials, tmp) if "noop" in parts else None
        if "many" in parts:
            compare_many(kinds, 4 * args.trials, tmp)
        if "real" in parts:
            compare_real(args.real_trials, args.repeats, tmp)
        if worst is not None:
            print(f"\nworst Caviar/Optuna ratio: {worst:.1f}x (goal >= 10x)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()

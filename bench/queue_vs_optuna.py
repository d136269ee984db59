"""Real trials through Caviar, beside Optuna and bare trainer processes (the ceiling).

Each row trains the same small real trials (40-point moons, one hidden layer of 2 units,
full batch) of 1, 100 or 1,000 epochs three ways, with the same number of processes:

* bare: trainer.train in plain processes, each its share of the configs: the ceiling;
* Caviar: `caviar serve --workers 0` and `caviar worker --processes N`, as users run them;
* Optuna: its RDB storage on the same kind of database, the same trials as objective.

Every clock runs from the first trial's start to the last trial's end (Caviar's from its
study's events, Optuna's from its trials, the bare processes' own). A row's figures are
medians of interleaved repetitions (bare, Caviar on SQLite and on PostgreSQL, Optuna on
both, then again), so a change in the machine's load falls on every side; `of bare` and
`vs ref` (PostgreSQL's rate over SQLite's, a full database's over an empty one's) are
medians of the ratios within each repetition. The service's CPU per trial is read from
/proc/<pid>/stat of the `caviar serve` process, and its worker requests per trial from
its /metrics; `waiting` is the share of the workers' time on the clock they spent
waiting for a lease (each worker process's last log line); `db cpu` is the PostgreSQL
server's CPU per trial (its processes on this machine, on the same cores). The rows
marked * run the 1-epoch trials, in the same repetitions, with 50,000 finished trials of
another study already in the database.

    python bench/queue_vs_optuna.py            # SQLite and PostgreSQL, 3 repetitions
    python bench/queue_vs_optuna.py --quick    # fewer trials, 1 repetition: a minute or two
        [--procs 2] [--epochs 1,100,1000] [--repeats 3] [--no-postgres] [--no-many]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.sides import (  # noqa: E402
    Run,
    Service,
    bare,
    caviar,
    drop_database,
    fresh_database,
    optuna_side,
    spec,
)

# Trials per run for Caviar and the bare processes, and for Optuna (slower by far on
# short trials): each run lasts a few seconds on 2 cores. --quick divides them by QUICK.
TRIALS = {1: (4000, 400), 100: (800, 200), 1000: (100, 40)}
QUICK = 4
MANY = 50_000  # finished trials of another study in the database, for the last rows


def seed_trials(db_url: str, n: int) -> None:
    """Fill the database with `n` finished trials of another study, each with a metrics row
    and its started and finished events, as a long-lived database holds them."""
    from sqlalchemy import insert

    from service import migrate
    from service.db import get_database
    from service.models import Event, Metric, Study, StudyStatus, Trial, TrialStatus

    migrate.upgrade(db_url)
    db = get_database(db_url)
    with db.session() as s:
        old = Study(
            name="old",
            spec=spec(n, 1),
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
        s.add(old)
        s.flush()
        for start in range(0, n, 5000):
            numbers = range(start, min(n, start + 5000))
            ids = s.scalars(
                insert(Trial).returning(Trial.id),
                [
                    {
                        "study_id": old.id,
                        "number": i,
                        "round_index": 0,
                        "params": {"learning_rate": 0.01},
                        "config": {"epochs": 1},
                        "status": TrialStatus.completed,
                        "attempt": 1,
                        "retries": 0,
                        "stop_requested": False,
                        "epochs_done": 1,
                        "value": (i % 997) / 997,
                    }
                    for i in numbers
                ],
            ).all()
            s.execute(
                insert(Metric),
                [{"trial_id": t, "attempt": 1, "epoch": 1, "dev_accuracy": 0.5} for t in ids],
            )
            events: list[dict[str, object]] = [
                {"study_id": old.id, "type": kind, "trial_id": t, "data": {}, "created_at": 0.0}
                for t in ids
                for kind in ("trial.started", "trial.finished")
            ]
            s.execute(insert(Event), events)
    db.dispose()


def worker_requests(service: Service) -> float:
    """Worker-route requests the service has answered so far (from its /metrics)."""
    total = 0.0
    for line in service.api.get("/metrics").text.splitlines():
        if line.startswith("caviar_http_request_duration_seconds_count") and (
            'route="/api/worker/' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass(frozen=True)
class Setup:
    """One Caviar configuration of a row: its database and how many other trials it holds."""

    kind: str
    seeded: int = 0

    @property
    def label(self) -> str:
        return f"{self.kind}{'*' if self.seeded else ''}"

    @property
    def reference(self) -> Setup | None:
        """What its rate is compared with: a full database with the same kind empty,
        PostgreSQL with SQLite; SQLite empty with nothing."""
        if self.seeded:
            return Setup(self.kind)
        return Setup("sqlite") if self.kind != "sqlite" else None


def one_row(
    epochs: int, setups: list[Setup], args: argparse.Namespace, tmp: Path
) -> dict[Setup, dict[str, float]]:
    """Medians of `args.repeats` interleaved runs of every side for one number of epochs.

    Every setup's service runs for the whole row, and each repetition runs the bare
    processes, then Caviar on every setup (every other repetition in reverse order),
    then Optuna on every database, one after the other: a change in the machine's speed
    falls on all of them, so the ratios between setups (PostgreSQL to SQLite, a full
    database to an empty one) are taken within each repetition and their median reported."""
    n, n_optuna = TRIALS[epochs]
    if args.quick:
        n, n_optuna = max(n // QUICK, 8), max(n_optuna // QUICK, 8)
    bare_runs: list[Run] = []
    runs: dict[Setup, list[Run]] = {setup: [] for setup in setups}
    optuna_runs: dict[str, list[Run]] = {s.kind: [] for s in setups if not s.seeded}
    requests: dict[Setup, list[float]] = {setup: [] for setup in setups}
    services: dict[Setup, tuple[str, Service]] = {}
    try:
        for setup in setups:
            db_url = fresh_database(setup.kind, tmp)
            if setup.seeded:
                seed_trials(db_url, setup.seeded)
            services[setup] = (db_url, Service(db_url))
            # A few trials first, unmeasured: the service's first requests of each kind.
            caviar(
                services[setup][1], db_url, spec(16, epochs, name=f"warm-up-{epochs}"), args.procs
            )
        for rep in range(args.repeats):
            data = spec(n, epochs, name=f"bench-{epochs}-{rep}")
            for _, service in services.values():
                service.settle()
            bare_runs.append(bare(data, args.procs))
            # Every other repetition in the reverse order: a drift of the machine's speed
            # within a repetition then favours no setup over another.
            order = list(services.items())
            for setup, (db_url, service) in order if rep % 2 == 0 else reversed(order):
                service.settle()
                before = worker_requests(service)
                runs[setup].append(caviar(service, db_url, data, args.procs))
                requests[setup].append((worker_requests(service) - before) / n)
            for kind, kind_runs in optuna_runs.items():
                optuna_url = fresh_database(kind, tmp)
                try:
                    kind_runs.append(optuna_side(optuna_url, data, args.procs, n_optuna))
                finally:
                    drop_database(optuna_url)
    finally:
        for db_url, service in services.values():
            service.stop()
            drop_database(db_url)
    out: dict[Setup, dict[str, float]] = {}
    for setup, setup_runs in runs.items():
        row = {
            "bare": statistics.median(r.rate for r in bare_runs),
            "caviar": statistics.median(r.rate for r in setup_runs),
            "of_bare": statistics.median(
                c.rate / b.rate for c, b in zip(setup_runs, bare_runs, strict=True)
            ),
            "cpu": statistics.median(r.service_cpu_ms or 0.0 for r in setup_runs),
            "waiting": statistics.median(r.waiting or 0.0 for r in setup_runs),
            "requests": statistics.median(requests[setup]),
        }
        if not setup.seeded:
            row["optuna"] = statistics.median(r.rate for r in optuna_runs[setup.kind])
        if setup.kind == "postgres":
            row["db"] = statistics.median(r.database_cpu_ms or 0.0 for r in setup_runs)
        # The paired ratio to its reference, repetition by repetition.
        reference = setup.reference
        if reference in runs:
            row["vs"] = statistics.median(
                a.rate / b.rate for a, b in zip(setup_runs, runs[reference], strict=True)
            )
        out[setup] = row
    return out


def _print_header(args: argparse.Namespace) -> None:
    print(
        f"Real trials (moons 40 points, hidden [2], full batch), {args.procs} processes a side,"
        f" median of {args.repeats} interleaved run(s); clocks from the first trial's start"
        " to the last one's end"
    )
    print(
        f"{'database':<9} {'epochs':>6} {'bare t/s':>9} {'caviar t/s':>10} {'optuna t/s':>10}"
        f" {'of bare':>8} {'x optuna':>9} {'vs ref':>7} {'svc cpu ms/trial':>17}"
        f" {'requests/trial':>15} {'waiting':>8} {'db cpu ms/trial':>16}"
    )


def _print_row(label: str, epochs: int, row: dict[str, float]) -> None:
    optuna = row.get("optuna")
    database = f"{row['db']:.3f}" if "db" in row else "-"
    rate, ceiling = row["caviar"], row["bare"]
    versus = f"{rate / optuna:.1f}x" if optuna else "-"
    reference = f"{row['vs']:.1%}" if "vs" in row else "-"
    print(
        f"{label:<9} {epochs:>6} {ceiling:>9.1f} {rate:>10.1f}"
        f" {(f'{optuna:.1f}' if optuna else '-'):>10} {row['of_bare']:>8.1%} {versus:>9}"
        f" {reference:>7} {row['cpu']:>17.3f} {row['requests']:>15.2f} {row['waiting']:>8.1%}"
        f" {database:>16}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer trials, one repetition")
    parser.add_argument("--procs", type=int, default=2, help="processes on every side")
    parser.add_argument("--epochs", default="1,100,1000", help="rows, comma-separated")
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-many", action="store_true", help=f"skip the {MANY:,}-trial rows")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    epochs = [int(e) for e in args.epochs.split(",")]
    if not set(epochs) <= set(TRIALS):
        parser.error(f"--epochs: choose among {sorted(TRIALS)}")
    kinds = ([] if args.no_sqlite else ["sqlite"]) + ([] if args.no_postgres else ["postgres"])
    _print_header(args)
    with tempfile.TemporaryDirectory() as tmp_dir:
        for e in epochs:
            setups = [Setup(kind) for kind in kinds]
            if e == 1 and not args.no_many:
                setups += [Setup(kind, MANY) for kind in kinds]
            for setup, row in one_row(e, setups, args, Path(tmp_dir)).items():
                _print_row(setup.label, e, row)
    print(
        "vs ref: the rate over its reference's in the same repetitions (median): PostgreSQL's"
        " over SQLite's"
        + (
            ""
            if args.no_many
            else f"; * ({MANY:,} finished trials of another study already in"
            " the database) over the same database empty"
        )
    )


if __name__ == "__main__":
    main()

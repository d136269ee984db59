"""Real trials through Caviar, beside Optuna and bare trainer processes (the ceiling).

Each row trains the same small real trials (40-point moons, one hidden layer of 2 units,
full batch) of 1, 100 or 1,000 epochs three ways, with the same number of processes:

* bare: trainer.train in plain processes, each its share of the configs: the ceiling;
* Caviar: `caviar serve --workers 0` and `caviar worker --processes N`, as users run them;
* Optuna: its RDB storage on the same kind of database, the same trials as objective.

Every clock runs from the first trial's start to the last trial's end (Caviar's from its
study's events, Optuna's from its trials, the bare processes' own). A row's figures are
medians of interleaved repetitions (bare, Caviar, Optuna, then again), so a change in
the machine's load falls on every side. The service's CPU per trial is read from
/proc/<pid>/stat of the `caviar serve` process, and its worker requests per trial from
its /metrics; `waiting` is the share of the workers' time on the clock they spent
waiting for a lease (each worker process's last log line); `db cpu` is the PostgreSQL
server's CPU per trial (its processes on this machine, on the same cores). The last rows
run the 1-epoch trials with 50,000 finished trials of another study already in the
database.

    python bench/queue_vs_optuna.py            # SQLite and PostgreSQL, 3 repetitions
    python bench/queue_vs_optuna.py --quick    # fewer trials, 1 repetition: a minute or two
        [--procs 2] [--epochs 1,100,1000] [--repeats 3] [--no-postgres] [--no-many]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
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
            events = [
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


def one_row(
    kind: str, epochs: int, args: argparse.Namespace, tmp: Path, *, seeded: int = 0
) -> dict[str, float]:
    """Medians of `args.repeats` interleaved runs of the three sides for one row."""
    n, n_optuna = TRIALS[epochs]
    if args.quick:
        n, n_optuna = max(n // QUICK, 8), max(n_optuna // QUICK, 8)
    runs: dict[str, list[Run]] = {"bare": [], "caviar": [], "optuna": []}
    requests: list[float] = []
    db_url = fresh_database(kind, tmp)
    if seeded:
        seed_trials(db_url, seeded)
    service = Service(db_url)
    try:
        # A few trials first, unmeasured: the service's first requests of each kind.
        caviar(service, db_url, spec(16, epochs, name=f"warm-up-{epochs}"), args.procs)
        for rep in range(args.repeats):
            data = spec(n, epochs, name=f"bench-{epochs}-{rep}")
            service.settle()
            runs["bare"].append(bare(data, args.procs))
            before = worker_requests(service)
            service.settle()
            runs["caviar"].append(caviar(service, db_url, data, args.procs))
            requests.append((worker_requests(service) - before) / n)
            service.settle()
            if not seeded:
                optuna_url = fresh_database(kind, tmp)
                try:
                    runs["optuna"].append(optuna_side(optuna_url, data, args.procs, n_optuna))
                finally:
                    drop_database(optuna_url)
    finally:
        service.stop()
        drop_database(db_url)
    out = {side: statistics.median(r.rate for r in rs) for side, rs in runs.items() if rs}
    out["cpu"] = statistics.median(r.service_cpu_ms or 0.0 for r in runs["caviar"])
    out["waiting"] = statistics.median(r.waiting or 0.0 for r in runs["caviar"])
    if kind == "postgres":
        out["db"] = statistics.median(r.database_cpu_ms or 0.0 for r in runs["caviar"])
    out["requests"] = statistics.median(requests)
    return out


def _print_header(args: argparse.Namespace) -> None:
    print(
        f"Real trials (moons 40 points, hidden [2], full batch), {args.procs} processes a side,"
        f" median of {args.repeats} interleaved run(s); clocks from the first trial's start"
        " to the last one's end"
    )
    print(
        f"{'database':<9} {'epochs':>6} {'bare t/s':>9} {'caviar t/s':>10} {'optuna t/s':>10}"
        f" {'of bare':>8} {'x optuna':>9} {'svc cpu ms/trial':>17} {'requests/trial':>15}"
        f" {'waiting':>8} {'db cpu ms/trial':>16}"
    )


def _print_row(kind: str, label: str, row: dict[str, float]) -> None:
    optuna = row.get("optuna")
    database = f"{row['db']:.3f}" if "db" in row else "-"
    rate, ceiling = row["caviar"], row["bare"]
    versus = f"{rate / optuna:.1f}x" if optuna else "-"
    print(
        f"{kind:<9} {label:>6} {ceiling:>9.1f} {rate:>10.1f}"
        f" {(f'{optuna:.1f}' if optuna else '-'):>10} {rate / ceiling:>8.1%} {versus:>9}"
        f" {row['cpu']:>17.3f} {row['requests']:>15.2f} {row['waiting']:>8.1%}"
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
    rows: list[tuple[str, str, Callable[[Path], dict[str, float]]]] = [
        (kind, str(e), lambda tmp, k=kind, e=e: one_row(k, e, args, tmp))
        for kind in kinds
        for e in epochs
    ]
    if not args.no_many:
        rows += [
            (kind, "1*", lambda tmp, k=kind: one_row(k, 1, args, tmp, seeded=MANY))
            for kind in kinds
        ]
    _print_header(args)
    with tempfile.TemporaryDirectory() as tmp_dir:
        for kind, label, measure in rows:
            _print_row(kind, label, measure(Path(tmp_dir)))
    if not args.no_many:
        print(f"* with {MANY:,} finished trials of another study already in the database")


if __name__ == "__main__":
    main()

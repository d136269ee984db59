"""A user objective that does no work, through Caviar's service and through Optuna.

What a trial of your own function costs besides the function itself: the objective
returns a number at once, so every second measured is the search tool's. Both sides run
the same number of trials with the same number of processes, as users run them:

* Caviar: `caviar serve --workers 0` and `caviar worker --entrypoint
  bench.objective_vs_optuna:nothing --processes N`, the study submitted over REST;
* Optuna: N processes optimizing one study in its RDB storage (a SQLite file, or
  PostgreSQL with --postgres), waiting at a start line first.

Every clock runs from the first trial's start to the last trial's end (Caviar's from
its study's events, Optuna's from its trials). Figures are medians of interleaved
repetitions (Caviar, Optuna, then again), so a change in the machine's load falls on
both sides; the service's CPU per trial is read from /proc/<pid>/stat of `caviar serve`.

    python bench/objective_vs_optuna.py              # 2 processes, 1,000 trials, 3 repetitions
    python bench/objective_vs_optuna.py --quick      # 300 trials, one repetition
        [--procs 2] [--trials 2000] [--repeats 3] [--postgres]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.sides import (  # noqa: E402
    CAVIAR,
    Run,
    Service,
    at_start_line,
    drop_database,
    fresh_database,
    study_clock,
)

ENTRYPOINT = "bench.objective_vs_optuna:nothing"
TRIALS = 1000  # Optuna's side takes minutes of them on SQLite
QUICK_TRIALS = 300


def nothing(params: dict[str, Any], trial: Any) -> float:
    """The objective: no work, its value at once."""
    return float(params["x"])


def spec(trials: int, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "task": {"entrypoint": ENTRYPOINT},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "strategy": {"type": "random", "trials": trials},
        "objective": {"metric": "value", "direction": "minimize"},
        "execution": {"max_parallel": 10_000, "seed": 1},
    }


# --- Caviar -------------------------------------------------------------------------------


def caviar_side(service: Service, db_url: str, trials: int, procs: int, rep: int) -> Run:
    """One study of `trials` no-work trials through `caviar worker --entrypoint`."""
    answer = service.api.post("/api/studies", json=spec(trials, f"nothing-{rep}"))
    answer.raise_for_status()
    study_id = answer.json()["id"]
    cpu = service.cpu_seconds()
    env = {**service.env, "PYTHONPATH": str(ROOT)}
    command = [*CAVIAR, "worker", "--api", service.url, "--processes", str(procs)]
    pool = subprocess.Popen(
        [*command, "--entrypoint", ENTRYPOINT, "--no-trainer"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        study = _wait_done(service, study_id, pool)
        used = service.cpu_seconds() - cpu
    finally:
        os.killpg(pool.pid, signal.SIGTERM)
        pool.wait(timeout=60)
    if study["counts"].get("completed") != trials:
        raise RuntimeError(f"caviar: {study['counts']} of {trials} trials")
    return Run(trials, study_clock(db_url, study_id), 1000 * used / trials)


def _wait_done(service: Service, study_id: int, pool: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        study: dict[str, Any] = service.api.get(f"/api/studies/{study_id}").json()
        if study["status"] in ("completed", "failed", "cancelled"):
            return study
        if pool.poll() is not None:
            raise RuntimeError(f"caviar worker exited with {pool.returncode} mid-study")
        time.sleep(0.5)  # each look costs the service CPU, which the bench counts
    raise RuntimeError(f"study {study_id} did not finish")


# --- Optuna -------------------------------------------------------------------------------


def _optuna_proc(url: str, name: str, n: int, ready: Any, start: Any) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=url)
    ready.release()
    start.wait()

    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_float("x", 0.0, 1.0)  # the same no-work objective

    study.optimize(objective, n_trials=n)


def optuna_side(url: str, trials: int, procs: int) -> Run:
    """`trials` no-work trials through Optuna's RDB storage at `url`, `procs` processes."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"nothing-{uuid.uuid4().hex[:6]}"
    study = optuna.create_study(
        study_name=name, storage=url, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    share = [trials // procs + (i < trials % procs) for i in range(procs)]
    at_start_line(_optuna_proc, [(url, name, n) for n in share])
    done = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    first = min(t.datetime_start for t in done if t.datetime_start is not None)
    last = max(t.datetime_complete for t in done if t.datetime_complete is not None)
    return Run(len(done), (last - first).total_seconds())


# --- the table ----------------------------------------------------------------------------


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    """Medians of `args.repeats` interleaved runs of both sides."""
    kind = "postgres" if args.postgres else "sqlite"
    caviar_runs: list[Run] = []
    optuna_runs: list[Run] = []
    db_url = fresh_database(kind, tmp)
    service = Service(db_url)
    try:
        # A few trials first, unmeasured: the service's first requests of each kind.
        caviar_side(service, db_url, 16, args.procs, -1)
        for rep in range(args.repeats):
            service.settle()
            caviar_runs.append(caviar_side(service, db_url, args.trials, args.procs, rep))
            service.settle()  # its aftermath would fall on Optuna's clock
            optuna_url = fresh_database(kind, tmp)
            try:
                optuna_runs.append(optuna_side(optuna_url, args.trials, args.procs))
            finally:
                drop_database(optuna_url)
            print(
                f"  run {rep + 1}: caviar {caviar_runs[-1].rate:.1f} trials/s,"
                f" optuna {optuna_runs[-1].rate:.1f} trials/s",
                flush=True,
            )
    finally:
        service.stop()
        drop_database(db_url)
    return {
        "caviar": statistics.median(r.rate for r in caviar_runs),
        "optuna": statistics.median(r.rate for r in optuna_runs),
        "cpu": statistics.median(r.service_cpu_ms or 0.0 for r in caviar_runs),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer trials, one repetition")
    parser.add_argument("--procs", type=int, default=2, help="processes on each side")
    parser.add_argument(
        "--trials", type=int, default=None, help=f"per run and side (default {TRIALS})"
    )
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--postgres", action="store_true", help="both sides on PostgreSQL")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.trials = args.trials or (QUICK_TRIALS if args.quick else TRIALS)
    kind = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"A no-work objective, {args.trials} trials, {args.procs} processes a side, on {kind};"
        f" median of {args.repeats} interleaved run(s), clocks from the first trial's start"
        " to the last one's end",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp_dir:
        row = measure(args, Path(tmp_dir))
    print(
        f"caviar {row['caviar']:.1f} trials/s, optuna {row['optuna']:.1f} trials/s:"
        f" {row['caviar'] / row['optuna']:.1f}x Optuna's throughput;"
        f" service CPU {row['cpu']:.3f} ms per trial"
    )


if __name__ == "__main__":
    main()

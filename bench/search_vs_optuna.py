"""Benchmark: Caviar's coarse_to_fine against Optuna's samplers on a suite of problems.

Run from the repository root (Optuna and torch are the ``bench`` extra):

    nice -n 10 python bench/search_vs_optuna.py [--budget 60] [--seeds 12] [--first-seed 100]
        [--methods c2f,tpe,...] [--problems hartmann6,...] [--quick] [--fit-time]

The suite (bench/search_suite/): standard test functions of four families - multimodal
(Hartmann 6, Ackley 4, Levy 6), valleys (Branin, Rosenbrock 4, six-hump camel),
plateaus (De Jong's step over ints, a categorical and conditional layers; Hartmann 3
over a stepped float, an int and a categorical) and noisy ones (Hartmann 6, Branin) -
laid over real TrainConfig fields through the spec's scales, and the trainer on
breast_cancer, digits and generated moons with a conditional depth.

Per seed every method meets the same function, data and noise; each is seeded with the
seed. Caviar runs through the real path (`parse_spec`, `plan_round`). Optuna runs one
trial at a time (its best case) and, as ``/b``, in batches of budget/3 (ask, then tell,
as Caviar's rounds); ``c2f/b10`` is coarse_to_fine with rounds of 10. Reported: medians,
paired differences by seed with standard errors and wins/ties/losses, per problem and
per family on a normalized scale. Keep the seeds you tune on (0-35) apart from those
you report (--first-seed 100). Results are cached under /tmp/caviar-search-suite (a
change to service/search/ invalidates Caviar's), so a table can be re-printed at once.
`--fit-time` times coarse_to_fine's model for 1,000 finished trials and a 512-trial round.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import optuna
from threadpoolctl import threadpool_limits

from bench.search_suite import report, runners
from bench.search_suite.problems import PROBLEMS
from service.search.distributions import distribution_from_json
from service.search.strategies import CoarseToFineStrategy, SearchSpace

PEERS = ("random", "tpe", "tpe_mv", "gp", "tpe_mv/b", "gp/b")
# Optuna's GP is the slow one: start those jobs first so the pool ends evenly.
_COST = {"gp": 0, "gp/b": 1}


def _init_worker() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    threadpool_limits(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # GPSampler then fails with Optuna's own message
        pass


def _job(args: tuple[str, str, int, int]) -> tuple[str, str, int, dict[str, float]]:
    method, problem, seed, budget = args
    with threadpool_limits(1):
        return method, problem, seed, runners.run(method, problem, seed, budget)


def fit_time() -> None:
    """coarse_to_fine's round for 1,000 finished trials and 512 new ones, timed."""
    space = SearchSpace({p: distribution_from_json(d) for p, d in PROBLEMS[2].space.items()})
    rng = np.random.default_rng(0)
    history = []
    for _ in range(1000):
        point = space.decode(rng.random(space.dims))
        history.append((point, float(-np.sum((rng.random(3) - 0.3) ** 2))))
    strategy = CoarseToFineStrategy(
        space=space, seed=0, rounds=4, trials_per_round=512, keep_top=0.25, margin=0.1,
        direction="maximize",
    )  # fmt: skip
    # Three times: the first pays for imports and caches. CPU time beside wall time, as
    # on a shared machine the wall time says as much about the neighbours.
    for _ in range(3):
        start, cpu = time.perf_counter(), time.process_time()
        _, params = strategy.suggest(round_index=2, history=history)
        print(
            f"coarse_to_fine round: {space.dims}-d space, 1000 finished trials, "
            f"{len(params)}-trial round: {time.perf_counter() - start:.2f} s "
            f"({time.process_time() - cpu:.2f} s CPU)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=60, help="trials per run (30, 60, 120)")
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--first-seed", type=int, default=100, help="seeds first..first+seeds-1")
    parser.add_argument("--methods", default=",".join(runners.METHODS))
    parser.add_argument("--problems", default=",".join(p.name for p in PROBLEMS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4 seeds, budget 30")
    parser.add_argument("--fit-time", action="store_true", help="time the model and exit")
    a = parser.parse_args()
    if a.fit_time:
        fit_time()
        return
    if a.quick:
        a.seeds, a.budget = 4, 30
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))
    methods = a.methods.split(",")
    if "random" not in methods:
        methods.append("random")  # the normalized scale needs it
    problems = a.problems.split(",")
    jobs = sorted(
        ((m, p, s, a.budget) for m in methods for p in problems for s in seeds),
        key=lambda j: _COST.get(j[0], 2),
    )
    print(
        f"{len(problems)} problems, budget {a.budget}, seeds {seeds[0]}..{seeds[-1]}, "
        f"optuna {optuna.__version__}, search code {runners.CODE_VERSION}",
        flush=True,
    )
    results: report.Results = {m: {p: {} for p in problems} for m in methods}
    seconds: dict[str, float] = dict.fromkeys(methods, 0.0)
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=a.workers, initializer=_init_worker) as pool:
        for method, problem, seed, out in pool.map(_job, jobs):
            results[method][problem][seed] = out["best"]
            seconds[method] += out["seconds"]
    print(f"({time.perf_counter() - start:.0f} s)\n")
    print("\n".join(report.problem_table(results, methods, seeds)))
    print(
        "seconds per run: "
        + ", ".join(f"{m} {seconds[m] / (len(seeds) * len(problems)):.1f}" for m in methods)
    )
    ours = [m for m in methods if m.startswith("c2f")]
    peers = [m for m in methods if not m.startswith("c2f")]
    for mine in ours:
        print()
        print("\n".join(report.versus_table(results, mine, peers, seeds)))
    if ours:
        print()
        print("\n".join(report.family_table(results, ours, peers, seeds)))


if __name__ == "__main__":
    main()

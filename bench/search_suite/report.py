"""Tables of the suite's results: per problem, and per family on a common scale.

Every comparison is paired by seed (both methods met the same function, data and noise
seed): the mean of the differences with its standard error, and wins/ties/losses. A
family pools its problems on a normalized scale: per problem, 0 is random search's
median best and 1 the optimum (a synthetic function's known one; for the trainer, the
best any method found on any seed), so a family's mean difference is in shares of the
way from random search to the optimum.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from bench.search_suite.problems import FAMILIES, PROBLEMS

Results = dict[str, dict[str, dict[int, float]]]  # method -> problem -> seed -> best
TIE = 1e-9


def paired(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, int, int, int]:
    """Mean and standard error of a - b, and wins/ties/losses of a."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    wins = sum(d > TIE for d in diffs)
    ties = sum(abs(d) <= TIE for d in diffs)
    return statistics.mean(diffs), se, wins, ties, len(diffs) - wins - ties


def fmt(mean: float, se: float, w: int, t: int, l_: int, digits: int = 3) -> str:
    return f"{mean:+.{digits}f} ± {se:.{digits}f} ({w}/{t}/{l_})"


def normalizer(results: Results, problem: str, seeds: Sequence[int]) -> tuple[float, float]:
    p = next(q for q in PROBLEMS if q.name == problem)
    low = statistics.median(results["random"][problem][s] for s in seeds)
    top = p.best_possible()
    if top is None:
        top = max(v[problem][s] for v in results.values() for s in seeds)
    return low, (top - low) if top > low else 1.0


def family_scores(results: Results, method: str, family: str, seeds: Sequence[int]) -> list[float]:
    """`method`'s normalized bests over the family's problems x seeds, in a fixed order."""
    out = []
    for p in PROBLEMS:
        if p.family != family or p.name not in results[method]:
            continue
        low, span = normalizer(results, p.name, seeds)
        out += [(results[method][p.name][s] - low) / span for s in seeds]
    return out


def problem_table(results: Results, methods: Sequence[str], seeds: Sequence[int]) -> list[str]:
    """Median best per problem and method (raw values, higher is better)."""
    problems = [p for p in PROBLEMS if p.name in results[methods[0]]]
    lines = [
        "median best (higher is better)",
        f"{'problem':<17}" + "".join(f"{m:>11}" for m in methods),
    ]
    for p in problems:
        cells = [statistics.median(results[m][p.name][s] for s in seeds) for m in methods]
        lines.append(f"{p.name:<17}" + "".join(f"{c:>11.4g}" for c in cells))
    return lines


def versus_table(
    results: Results, ours: str, peers: Sequence[str], seeds: Sequence[int]
) -> list[str]:
    """Per problem: `ours` minus each peer, paired by seed (raw units)."""
    lines = [f"{ours} minus each peer, per problem: mean ± se (wins/ties/losses)"]
    lines.append(f"{'problem':<17}" + "".join(f"{p:>28}" for p in peers))
    for p in PROBLEMS:
        if p.name not in results[ours]:
            continue
        a = [results[ours][p.name][s] for s in seeds]
        cells = [fmt(*paired(a, [results[q][p.name][s] for s in seeds])) for q in peers]
        lines.append(f"{p.name:<17}" + "".join(f"{c:>28}" for c in cells))
    return lines


def family_table(
    results: Results, ours: Sequence[str], peers: Sequence[str], seeds: Sequence[int]
) -> list[str]:
    """Per family, normalized: each of `ours` minus each peer, and minus the better of
    tpe and gp (the one with the higher mean on that family)."""
    lines = ["per family, normalized (0 = random's median, 1 = optimum): ours minus peer"]
    for family in FAMILIES:
        if not family_scores(results, ours[0], family, seeds):
            continue
        lines.append(f"  {family}")
        for mine in ours:
            a = family_scores(results, mine, family, seeds)
            row = {q: paired(a, family_scores(results, q, family, seeds)) for q in peers}
            cells = "  ".join(f"{q} {fmt(*row[q])}" for q in peers)
            strong = [q for q in ("tpe", "gp") if q in peers]
            if not strong:  # the goal is against those two: no verdict without them
                lines.append(f"    {mine:<9} {cells}")
                continue
            better = max(
                strong, key=lambda q: statistics.mean(family_scores(results, q, family, seeds))
            )
            verdict = "ok" if row[better][0] >= -row[better][1] else "BELOW"
            lines.append(f"    {mine:<9} {cells}  | vs better ({better}): {verdict}")
    return lines

"""Pruning decisions: should a trial stop at this epoch, by the median rule or by ASHA.

Pure functions over learning curves, with no database: the service reads the stored
intermediate objective values, calls :func:`should_prune` once per reported epoch of a
running trial (in epoch order), and stops the trial when it returns a reason. A curve
is a mapping ``epoch -> objective value`` with epochs counted from 1, as the trainer's
history numbers them; ``others`` maps every other trial of the study to its curve,
whatever its status (running, completed, pruned, stopped): each one counts at the
epochs it reached. Non-finite values (a diverged trial) count as the worst possible.

Median (``pruning.type == "median"``), after Optuna's ``MedianPruner``: at every epoch
``e > warmup_epochs``, the trial's best value over epochs ``1..e`` is compared with the
median, over the other trials that reached epoch ``e``, of *their* best value over
``1..e``; the trial stops if it is strictly worse. No decision is made until at least
``n_min_trials`` (:data:`MEDIAN_MIN_TRIALS`, 5) other trials reached ``e``: a median of
two or three curves says little, and the first trials of a study must be allowed to set
the bar. (Optuna compares with the others' raw values at ``e`` and counts completed
trials only; best against best is the like-for-like comparison, and counting running
trials lets a study with few workers start pruning before five trials have finished.)

ASHA (``pruning.type == "asha"``), the asynchronous successive halving of Li et al.
(2018, arXiv:1810.05934) as Optuna's ``SuccessiveHalvingPruner`` implements it (with
``min_early_stopping_rate = 0`` and ``bootstrap_count = 0``): rungs sit at epochs
``r_k = min_epochs * reduction_factor ** k``. When a trial reaches a rung ``r`` with
value ``v`` (its value at epoch ``r``, not its best), let ``V`` be ``v`` together with
the values at ``r`` of every other trial that has reached ``r`` so far, ``n = len(V)``
and ``keep = max(1, n // reduction_factor)``; the trial is promoted (continues to the
next rung) iff ``v`` is at least as good as the ``keep``-th best of ``V``, ties
promoted. So the first trial to reach a rung is always promoted (it is the best of
one), and while fewer than ``reduction_factor`` trials have reached it only a trial
that is the best so far goes on. A decision is final: later arrivals at the rung never
revisit it, which is what makes the scheme asynchronous. Between rungs a trial is never
stopped; a rung at or beyond the trial's last epoch is no rung (the budget is spent).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal, Protocol

import numpy as np


class PruningRule(Protocol):
    """What a pruner reads of the spec's ``pruning`` block (``service.spec.PruningSpec``)."""

    @property
    def type(self) -> str: ...
    @property
    def warmup_epochs(self) -> int: ...
    @property
    def min_epochs(self) -> int: ...
    @property
    def reduction_factor(self) -> int: ...


Direction = Literal["maximize", "minimize"]
Curve = Mapping[int, float]

#: Other trials that must have reached an epoch before the median rule decides there.
MEDIAN_MIN_TRIALS = 5


def rungs(pruning: PruningRule, epochs: int) -> list[int]:
    """The epochs at which ASHA decides, for a trial of ``epochs`` epochs.

    Parameters
    ----------
    pruning : PruningRule
    epochs : int
        The trial's total epochs.

    Returns
    -------
    list of int
        ``min_epochs * reduction_factor ** k`` for k = 0, 1, ... below ``epochs`` (a rung
        at the last epoch would stop nothing), ascending; empty unless ``pruning.type``
        is "asha".
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if pruning.type != "asha":
        return []
    out: list[int] = []
    rung = pruning.min_epochs
    while rung < epochs:
        out.append(rung)
        rung *= pruning.reduction_factor
    return out


MEDIAN_DECISIONS = 10  # epochs after the warm-up at which the median rule is asked


def decision_epochs(pruning: PruningRule, epochs: int) -> list[int]:
    """The epochs a worker reports at once, so the service can decide there.

    ASHA's rungs; for the median rule, up to MEDIAN_DECISIONS evenly spaced epochs from
    ``warmup_epochs`` on (below the last). Metrics otherwise travel about once a second,
    which for trials shorter than that would be never: nothing would be pruned.
    """
    if pruning.type == "asha":
        return rungs(pruning, epochs)
    if pruning.type != "median" or epochs <= pruning.warmup_epochs:
        return []
    stride = max(1, math.ceil((epochs - pruning.warmup_epochs) / MEDIAN_DECISIONS))
    return list(range(max(1, pruning.warmup_epochs), epochs, stride))


def should_prune(
    *,
    pruning: PruningRule,
    direction: Direction,
    trial_id: int,
    curve: Curve,
    others: Mapping[int, Curve],
    epoch: int,
    epochs: int | None = None,
    n_min_trials: int = MEDIAN_MIN_TRIALS,
) -> str | None:
    """Whether trial ``trial_id`` should stop after ``epoch``, and why.

    Parameters
    ----------
    pruning : PruningRule
        The study's ``pruning`` block.
    direction : {"maximize", "minimize"}
        The objective's direction.
    trial_id : int
        The trial deciding; its own entry in ``others``, if any, is ignored.
    curve : mapping of int to float
        The trial's objective value per epoch (from 1), at least up to ``epoch``;
        values after ``epoch`` are ignored.
    others : mapping of int to (mapping of int to float)
        The other trials' curves, as stored right now.
    epoch : int
        The epoch just reported (from 1).
    epochs : int, optional
        The trial's total epochs: at its last epoch it is never pruned (it is done).
    n_min_trials : int, default :data:`MEDIAN_MIN_TRIALS`
        Median only: other trials that must have reached ``epoch`` before a decision.

    Returns
    -------
    str or None
        A short reason to stop ("median: best 0.71 at epoch 20 is below the median 0.78
        of 14 trials"), or None to go on.
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    if epoch < 1:
        raise ValueError(f"epoch must be >= 1, got {epoch}")
    if n_min_trials < 1:
        raise ValueError(f"n_min_trials must be >= 1, got {n_min_trials}")
    if pruning.type == "none" or (epochs is not None and epoch >= epochs):
        return None
    peers = [c for tid, c in others.items() if tid != trial_id]
    if pruning.type == "median":
        return _median(pruning, direction, curve, peers, epoch, n_min_trials)
    if pruning.type == "asha":
        return _asha(pruning, direction, curve, peers, epoch)
    raise ValueError(f"unknown pruning type {pruning.type!r}")


# -- the two rules ----------------------------------------------------------------------


def _median(
    pruning: PruningRule,
    direction: Direction,
    curve: Curve,
    peers: list[Curve],
    epoch: int,
    n_min_trials: int,
) -> str | None:
    if epoch <= pruning.warmup_epochs or epoch not in curve:
        return None
    best = _best_until(curve, epoch, direction)
    if best is None:
        return f"median: no finite objective value by epoch {epoch}"
    bars = [
        b
        for c in peers
        if c and max(c) >= epoch and (b := _best_until(c, epoch, direction)) is not None
    ]
    # A peer that reached the epoch with no finite value counts as the worst of all,
    # as a very bad trial would: it pulls the median toward keeping.
    n_reached = sum(1 for c in peers if c and max(c) >= epoch)
    worst = -math.inf if direction == "maximize" else math.inf
    bars += [worst] * (n_reached - len(bars))
    if n_reached < n_min_trials:
        return None
    median = float(np.median(bars))
    if _better(median, best, direction):
        word = "below" if direction == "maximize" else "above"
        return (
            f"median: best {best:.4g} by epoch {epoch} is {word} the median {median:.4g} "
            f"of {n_reached} trials"
        )
    return None


def _asha(
    pruning: PruningRule,
    direction: Direction,
    curve: Curve,
    peers: list[Curve],
    epoch: int,
) -> str | None:
    if not _is_rung(epoch, pruning.min_epochs, pruning.reduction_factor) or epoch not in curve:
        return None
    value = _score(curve[epoch], direction)
    if value == -math.inf:
        return f"asha: no finite objective value at rung {epoch}"
    # Scores: larger is better whatever the direction, non-finite values the worst.
    competing = [_score(c[epoch], direction) for c in peers if epoch in c]
    competing.append(value)
    n = len(competing)
    keep = max(1, n // pruning.reduction_factor)
    bar = sorted(competing, reverse=True)[keep - 1]
    if value >= bar:
        return None
    rank = 1 + sum(1 for v in competing if v > value)
    shown = bar if direction == "maximize" else -bar
    sign = ">=" if direction == "maximize" else "<="
    return (
        f"asha: {curve[epoch]:.4g} at rung {epoch} is not in the top 1/"
        f"{pruning.reduction_factor} of {n} trials (rank {rank}, needs {sign} {shown:.4g})"
    )


# -- helpers ----------------------------------------------------------------------------


def _is_rung(epoch: int, min_epochs: int, factor: int) -> bool:
    if epoch < min_epochs or epoch % min_epochs:
        return False
    q = epoch // min_epochs
    while q % factor == 0:
        q //= factor
    return q == 1


def _score(value: float, direction: Direction) -> float:
    """``value`` oriented so that larger is better; a non-finite value is the worst, -inf."""
    v = float(value)
    if not math.isfinite(v):
        return -math.inf
    return v if direction == "maximize" else -v


def _best_until(curve: Curve, epoch: int, direction: Direction) -> float | None:
    """The best finite value at epochs ``<= epoch``, or None if there is none."""
    values = [float(v) for e, v in curve.items() if e <= epoch and math.isfinite(float(v))]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


def _better(a: float, b: float, direction: Direction) -> bool:
    return a > b if direction == "maximize" else a < b

"""Pruning rules: the median rule and ASHA, as pure decisions over learning curves."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.search.pruners import (
    MEDIAN_MIN_TRIALS,
    Direction,
    decision_epochs,
    rungs,
    should_prune,
)
from service.spec import PruningSpec

MEDIAN = PruningSpec(type="median", warmup_epochs=3)
ASHA = PruningSpec(type="asha", min_epochs=2, reduction_factor=3)


def flat(value: float, until: int) -> dict[int, float]:
    return {e: value for e in range(1, until + 1)}


def decide(
    pruning: PruningSpec,
    curve: Mapping[int, float],
    others: Mapping[int, Mapping[int, float]],
    epoch: int,
    direction: str = "maximize",
    *,
    epochs: int | None = None,
    n_min_trials: int = MEDIAN_MIN_TRIALS,
) -> str | None:
    return should_prune(
        pruning=pruning,
        direction=cast(Direction, direction),
        trial_id=0,
        curve=curve,
        others=others,
        epoch=epoch,
        epochs=epochs,
        n_min_trials=n_min_trials,
    )


# -- rungs ------------------------------------------------------------------------------


def test_the_median_rule_decides_at_ten_spaced_epochs_after_its_warmup() -> None:
    # Reported at once: metrics otherwise travel once a second, and a trial shorter than
    # that would never be judged.
    median = PruningSpec(type="median", warmup_epochs=5)
    assert decision_epochs(median, 27) == [5, 8, 11, 14, 17, 20, 23, 26]
    assert decision_epochs(median, 12) == [5, 6, 7, 8, 9, 10, 11]
    assert decision_epochs(median, 5) == []
    assert len(decision_epochs(median, 1000)) == 10
    asha = PruningSpec(type="asha", min_epochs=5, reduction_factor=3)
    assert decision_epochs(asha, 100) == rungs(asha, 100) == [5, 15, 45]
    assert decision_epochs(PruningSpec(type="none"), 100) == []


def test_rungs_are_geometric_and_stop_before_the_last_epoch() -> None:
    spec = PruningSpec(type="asha", min_epochs=5, reduction_factor=3)
    assert rungs(spec, 100) == [5, 15, 45]
    assert rungs(spec, 45) == [5, 15]
    assert rungs(spec, 46) == [5, 15, 45]
    assert rungs(spec, 5) == []
    assert rungs(PruningSpec(type="asha", min_epochs=1, reduction_factor=2), 9) == [1, 2, 4, 8]
    assert rungs(MEDIAN, 100) == [] and rungs(PruningSpec(), 100) == []
    with pytest.raises(ValueError, match="epochs"):
        rungs(spec, 0)


def test_none_never_prunes() -> None:
    others = {i: flat(0.9, 50) for i in range(1, 20)}
    assert decide(PruningSpec(type="none"), flat(0.0, 50), others, 50) is None


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="direction"):
        decide(MEDIAN, flat(0.5, 5), {}, 5, direction="up")
    with pytest.raises(ValueError, match="epoch"):
        decide(MEDIAN, flat(0.5, 5), {}, 0)
    with pytest.raises(ValueError, match="n_min_trials"):
        decide(MEDIAN, flat(0.5, 5), {}, 5, n_min_trials=0)


# -- median -----------------------------------------------------------------------------


def test_median_prunes_a_trial_below_the_median_after_warmup_with_a_clear_reason() -> None:
    others = {i: flat(0.70 + 0.02 * i, 10) for i in range(1, 8)}  # 0.72 .. 0.84
    curve = flat(0.60, 4)
    assert decide(MEDIAN, curve, others, 3) is None  # warmup: epochs 1..3
    assert decide(MEDIAN, curve, others, 4) == (
        "median: best 0.6 by epoch 4 is below the median 0.78 of 7 trials"
    )


def test_median_waits_for_enough_trials_at_that_epoch() -> None:
    short = {i: flat(0.9, 4) for i in range(1, 10)}  # reached epoch 4, not 5
    reached = {i: flat(0.9, 5) for i in range(10, 10 + MEDIAN_MIN_TRIALS - 1)}
    curve = flat(0.1, 5)
    assert decide(MEDIAN, curve, {**short, **reached}, 5) is None
    assert decide(MEDIAN, curve, {**short, **reached, 99: flat(0.9, 5)}, 5) is not None
    assert decide(MEDIAN, curve, {**short, **reached}, 5, n_min_trials=2) is not None


def test_median_compares_best_so_far_with_best_so_far() -> None:
    # Others peaked at 0.9 on epoch 2 and sank to 0.5: their best by epoch 6 is 0.9.
    others = {i: {1: 0.6, 2: 0.9, 3: 0.5, 4: 0.5, 5: 0.5, 6: 0.5} for i in range(1, 8)}
    steady = flat(0.7, 6)
    reason = decide(MEDIAN, steady, others, 6)
    assert reason is not None and "median 0.9" in reason
    # The trial's own best counts too: a peak of 0.95 at epoch 1 keeps it.
    assert decide(MEDIAN, {**steady, 1: 0.95}, others, 6) is None
    # Values after the epoch being decided are not looked at.
    assert decide(MEDIAN, {**steady, 7: 0.99}, others, 6) is not None


def test_median_equal_to_the_median_goes_on_and_own_entry_is_ignored() -> None:
    others = {i: flat(0.8, 6) for i in range(1, 7)}
    assert decide(MEDIAN, flat(0.8, 6), others, 6) is None
    # Trial 0 listed among the others would make six 0.8s and one 0.1: still pruned.
    curve = flat(0.1, 6)
    assert decide(MEDIAN, curve, {**others, 0: curve}, 6) is not None
    assert decide(MEDIAN, curve, {**others, 0: curve}, 6, n_min_trials=7) is None


def test_median_for_a_cost_to_minimize() -> None:
    others = {i: flat(0.30 + 0.01 * i, 8) for i in range(1, 8)}  # median 0.34
    reason = decide(MEDIAN, flat(0.5, 8), others, 8, direction="minimize")
    assert reason == "median: best 0.5 by epoch 8 is above the median 0.34 of 7 trials"
    assert decide(MEDIAN, flat(0.2, 8), others, 8, direction="minimize") is None


def test_median_non_finite_values() -> None:
    others = {i: flat(0.8, 6) for i in range(1, 7)}
    assert decide(MEDIAN, flat(math.nan, 6), others, 6) == (
        "median: no finite objective value by epoch 6"
    )
    # Diverged peers count as the worst: with four of them the median is theirs.
    diverged = {i: flat(math.nan, 6) for i in range(10, 14)}
    assert decide(MEDIAN, flat(0.5, 6), {**others, **diverged}, 6) is not None
    diverged = {i: flat(math.nan, 6) for i in range(10, 17)}
    assert decide(MEDIAN, flat(0.5, 6), {**others, **diverged}, 6) is None


def test_no_pruning_at_the_trials_last_epoch() -> None:
    others = {i: flat(0.9, 10) for i in range(1, 8)}
    assert decide(MEDIAN, flat(0.1, 10), others, 10) is not None
    assert decide(MEDIAN, flat(0.1, 10), others, 10, epochs=10) is None
    asha = PruningSpec(type="asha", min_epochs=5, reduction_factor=2)
    assert decide(asha, flat(0.1, 10), others, 10) is not None
    assert decide(asha, flat(0.1, 10), others, 10, epochs=10) is None


# -- ASHA -------------------------------------------------------------------------------


def test_asha_decides_only_at_rungs() -> None:
    others = {i: flat(0.9, 20) for i in range(1, 10)}
    curve = flat(0.1, 20)
    decided = [e for e in range(1, 21) if decide(ASHA, curve, others, e) is not None]
    assert decided == [2, 6, 18]


def test_asha_the_first_to_reach_a_rung_goes_on_then_only_the_top_fraction() -> None:
    # rungs at 2, 6, 18; factor 3.
    assert decide(ASHA, flat(0.1, 2), {}, 2) is None  # best of one
    # Second and third arrivals: keep = max(1, n // 3) = 1, so only a new best goes on.
    assert decide(ASHA, flat(0.2, 2), {1: flat(0.1, 2)}, 2) is None
    assert decide(ASHA, flat(0.05, 2), {1: flat(0.1, 2)}, 2) is not None
    assert decide(ASHA, flat(0.1, 2), {1: flat(0.1, 2)}, 2) is None  # ties go on
    # Sixth arrival: keep = 2, so the second best of six goes on, the third does not.
    five = {i: flat(v, 2) for i, v in enumerate([0.9, 0.5, 0.4, 0.3, 0.2], start=1)}
    assert decide(ASHA, flat(0.6, 2), five, 2) is None
    assert decide(ASHA, flat(0.45, 2), five, 2) == (
        "asha: 0.45 at rung 2 is not in the top 1/3 of 6 trials (rank 3, needs >= 0.5)"
    )


def test_asha_uses_the_value_at_the_rung_not_the_best() -> None:
    others = {i: flat(0.5, 6) for i in range(1, 6)}
    curve = {**flat(0.9, 6), 6: 0.4}
    assert decide(ASHA, curve, others, 6) is not None
    # Trials that reached the rung count; those that stopped before it do not.
    assert decide(ASHA, curve, {i: flat(0.5, 5) for i in range(1, 6)}, 6) is None


def test_asha_for_a_cost_and_non_finite_values() -> None:
    five = {i: flat(v, 2) for i, v in enumerate([0.1, 0.5, 0.6, 0.7, 0.8], start=1)}
    reason = decide(ASHA, flat(0.55, 2), five, 2, direction="minimize")
    assert reason == "asha: 0.55 at rung 2 is not in the top 1/3 of 6 trials (rank 3, needs <= 0.5)"
    assert decide(ASHA, flat(0.3, 2), five, 2, direction="minimize") is None
    assert decide(ASHA, flat(math.nan, 2), {}, 2) == "asha: no finite objective value at rung 2"
    # A diverged peer is below everyone: the trial is the best of two.
    assert decide(ASHA, flat(0.01, 2), {1: flat(math.inf, 2)}, 2, direction="minimize") is None


def test_asha_on_a_seeded_study_keeps_the_best_and_stops_most_early() -> None:
    """40 trials with known final quality arrive in turn; ASHA stops most at early rungs."""
    import numpy as np

    rng = np.random.default_rng(7)
    quality = rng.uniform(0.5, 1.0, 40)
    spec = PruningSpec(type="asha", min_epochs=3, reduction_factor=3)

    def value(i: int, e: int) -> float:
        # Rising curves whose order is the final quality's, plus a little noise.
        return float(quality[i] * (1 - 0.5 / e) + rng.normal(0, 0.005))

    curves: dict[int, dict[int, float]] = {}
    for i in range(40):
        curves[i] = {}
        for e in range(1, 61):
            curves[i][e] = value(i, e)
            if should_prune(
                pruning=spec,
                direction="maximize",
                trial_id=i,
                curve=curves[i],
                others=curves,
                epoch=e,
                epochs=60,
            ):
                break
    best = int(np.argmax(quality))
    assert len(curves[best]) == 60
    assert sum(len(c) for c in curves.values()) < 0.3 * 40 * 60
    assert sum(len(c) <= 9 for c in curves.values()) >= 30


# -- properties -------------------------------------------------------------------------

values = st.floats(-10, 10, allow_nan=False)
curves = st.dictionaries(st.integers(1, 12), values, max_size=12)
peers = st.dictionaries(st.integers(1, 30), curves, max_size=12)
specs = st.sampled_from(
    [
        PruningSpec(type="median", warmup_epochs=0),
        PruningSpec(type="median", warmup_epochs=2),
        PruningSpec(type="asha", min_epochs=1, reduction_factor=2),
        PruningSpec(type="asha", min_epochs=2, reduction_factor=3),
    ]
)


@settings(max_examples=300, deadline=None)
@given(spec=specs, curve=curves, others=peers, epoch=st.integers(1, 12))
def test_minimize_mirrors_maximize(
    spec: PruningSpec, curve: dict[int, float], others: dict[int, dict[int, float]], epoch: int
) -> None:
    def negate(c: Mapping[int, float]) -> dict[int, float]:
        return {e: -v for e, v in c.items()}

    up = decide(spec, curve, others, epoch, n_min_trials=1)
    down = decide(
        spec,
        negate(curve),
        {t: negate(c) for t, c in others.items()},
        epoch,
        direction="minimize",
        n_min_trials=1,
    )
    assert (up is None) == (down is None)


@settings(max_examples=300, deadline=None)
@given(
    spec=specs,
    others=peers,
    epoch=st.integers(1, 12),
    direction=st.sampled_from(["maximize", "minimize"]),
)
def test_the_best_trial_is_never_pruned(
    spec: PruningSpec, others: dict[int, dict[int, float]], epoch: int, direction: str
) -> None:
    # A trial at least as good as every other at every epoch: 100 (or -100 for a cost).
    top = 100.0 if direction == "maximize" else -100.0
    assert decide(spec, flat(top, epoch), others, epoch, direction, n_min_trials=1) is None
    # And at an ASHA rung, the best value there goes on whatever its earlier values.
    curve = {**flat(-top, epoch), epoch: top}
    if spec.type == "asha":
        assert decide(spec, curve, others, epoch, direction) is None


@settings(max_examples=200, deadline=None)
@given(
    scores=st.lists(values, min_size=1, max_size=30),
    factor=st.integers(2, 4),
)
def test_asha_promotes_exactly_the_top_fraction_when_everyone_has_arrived(
    scores: list[float], factor: int
) -> None:
    """Judged against all the others, the promoted trials are the top max(1, n // factor)."""
    spec = PruningSpec(type="asha", min_epochs=1, reduction_factor=factor)
    all_curves = {i: {1: v} for i, v in enumerate(scores)}
    promoted = [
        i
        for i in all_curves
        if should_prune(
            pruning=spec,
            direction="maximize",
            trial_id=i,
            curve=all_curves[i],
            others=all_curves,
            epoch=1,
        )
        is None
    ]
    keep = max(1, len(scores) // factor)
    bar = sorted(scores, reverse=True)[keep - 1]
    assert promoted == [i for i, v in enumerate(scores) if v >= bar]
    assert len(promoted) >= keep


@settings(max_examples=200, deadline=None)
@given(spec=specs, curve=curves, others=peers, epoch=st.integers(1, 12), gain=st.floats(0, 5))
def test_a_better_value_never_turns_going_on_into_stopping(
    spec: PruningSpec,
    curve: dict[int, float],
    others: dict[int, dict[int, float]],
    epoch: int,
    gain: float,
) -> None:
    better = {e: v + gain for e, v in curve.items()}
    if decide(spec, curve, others, epoch, n_min_trials=1) is None:
        assert decide(spec, better, others, epoch, n_min_trials=1) is None

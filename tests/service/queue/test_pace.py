"""Lease sizes from each study's observed trial durations: the rule alone, and its memory.

The README's promise: only trials shorter than about half a second are leased
several at a time, and no trial waits behind one of a study whose trials run longer
than the lease target (or whose length is not known yet).
"""

from __future__ import annotations

import math

import pytest

from service.queue.pace import StudyPace, fair_share, lease_from_study, work_ahead

TARGET = 0.25


def test_short_trials_share_a_lease_up_to_the_target() -> None:
    # 0.05 s trials: the 6th would wait 0.25 s, the 7th 0.3 s.
    assert lease_from_study(ahead=0.0, expected=0.05, budget=TARGET, want=64) == 6
    assert lease_from_study(ahead=0.0, expected=0.05, budget=TARGET, want=4) == 4
    assert lease_from_study(ahead=0.0, expected=0.0, budget=TARGET, want=16) == 16


def test_a_long_or_unknown_study_is_leased_one_trial_at_a_time() -> None:
    for expected in (60.0, TARGET + 0.01, None):
        assert lease_from_study(ahead=0.0, expected=expected, budget=TARGET, want=64) == 1


def test_nothing_is_leased_behind_a_trial_longer_than_the_target() -> None:
    # A claim serves studies in turn: after one trial of a long study, no other trial.
    ahead = work_ahead(ahead=0.0, expected=60.0, taken=1)
    assert lease_from_study(ahead=ahead, expected=0.001, budget=TARGET, want=64) == 0
    ahead = work_ahead(ahead=0.0, expected=None, taken=1)
    assert ahead == math.inf
    assert lease_from_study(ahead=ahead, expected=0.001, budget=TARGET, want=64) == 0
    # After short ones, a long one may come last: it waits behind 0.2 s, nothing behind it.
    ahead = work_ahead(ahead=0.0, expected=0.05, taken=4)
    assert lease_from_study(ahead=ahead, expected=60.0, budget=TARGET, want=64) == 1


def test_a_worker_still_busy_gets_only_what_fits_after_its_running_trial() -> None:
    assert lease_from_study(ahead=0.1, expected=0.05, budget=TARGET, want=64) == 4
    assert lease_from_study(ahead=0.1, expected=None, budget=TARGET, want=64) == 1
    assert lease_from_study(ahead=0.3, expected=0.01, budget=TARGET, want=64) == 0


def test_the_pace_is_each_study_s_own_moving_average() -> None:
    pace = StudyPace()
    assert pace.expected(database="db", study_id=1) is None
    pace.observe(database="db", study_id=1, seconds=1.0)
    assert pace.expected(database="db", study_id=1) == 1.0
    pace.observe(database="db", study_id=1, seconds=2.0)
    assert pace.expected(database="db", study_id=1) == pytest.approx(1.3)
    # another study, another database: their own
    assert pace.expected(database="db", study_id=2) is None
    assert pace.expected(database="other", study_id=1) is None
    pace.seed(database="db", study_id=1, seconds=50.0)  # a seed never overrides what is seen
    assert pace.expected(database="db", study_id=1) == pytest.approx(1.3)
    pace.seed(database="db", study_id=2, seconds=50.0)
    assert pace.expected(database="db", study_id=2) == 50.0
    pace.observe(database="db", study_id=3, seconds=math.nan)  # not a duration: ignored
    assert pace.expected(database="db", study_id=3) is None


def test_the_end_of_a_queue_is_shared_out_not_leased_whole() -> None:
    # Half of what is left (rounded up), within what the claim wants; at least one.
    assert fair_share(queued=100, want=64) == 50
    assert fair_share(queued=200, want=64) == 64
    assert fair_share(queued=7, want=64) == 4
    assert fair_share(queued=1, want=64) == 1
    assert fair_share(queued=0, want=64) == 1
    # Two workers claiming in turn split the last 10 trials 5, 3, 1, 1 - never 10 and 0.
    left, leases = 10, []
    while left:
        leases.append(fair_share(queued=left, want=64))
        left -= leases[-1]
    assert leases == [5, 3, 1, 1]

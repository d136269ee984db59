"""The claim policy alone: lease sizes, early claims and lone reports from given durations."""

from __future__ import annotations

import pytest

from worker import policy
from worker.policy import ClaimPolicy, average


def test_the_first_sample_is_the_whole_average_then_it_moves_by_its_weight() -> None:
    assert average(None, 2.0, 0.3) == 2.0
    assert average(2.0, 1.0, 0.25) == pytest.approx(1.75)


def test_one_trial_until_a_duration_is_known_then_a_quarter_second_of_work() -> None:
    pace = ClaimPolicy(claim_batch=16)
    assert pace.lease_size() == 1
    pace.trial_took(0.05)
    assert pace.lease_size() == 5  # 0.25 s of 0.05 s trials
    pace.trial_took(0.05)
    assert pace.trial_seconds == pytest.approx(0.05)


def test_a_lease_is_capped_by_the_batch_and_never_empty() -> None:
    fast = ClaimPolicy(claim_batch=4, trial_seconds=0.001)
    assert fast.lease_size() == 4
    slow = ClaimPolicy(claim_batch=4, trial_seconds=30.0)
    assert slow.lease_size() == 1


def test_a_running_trial_counts_in_as_if_it_had_ended() -> None:
    pace = ClaimPolicy(claim_batch=16, trial_seconds=0.01)
    # 0.7 * 0.01 + 0.3 * 0.2 = 0.067: three trials fit a quarter second.
    assert pace.lease_size(running=0.2) == 3
    assert ClaimPolicy().lease_size(running=0.05) == 5  # the only sample there is


def test_max_trials_leaves_room_for_what_is_done_and_running() -> None:
    pace = ClaimPolicy(max_trials=5)
    assert pace.within_max(4, trials_done=2) == 3
    assert pace.within_max(4, trials_done=2, running=True) == 2
    assert pace.within_max(4, trials_done=5) == 0
    assert ClaimPolicy().within_max(4, trials_done=1000) == 4


def test_the_next_claim_goes_out_a_few_round_trips_before_the_trial_ends() -> None:
    pace = ClaimPolicy(round_trip=0.02)  # lead: 3 round trips, 0.06 s
    # 10 epochs in 0.1 s, 10 left: 0.1 s left, more than the lead.
    assert pace.prefetch_for(elapsed=0.1, epochs_run=10, epochs_left=10) is None
    # 5 left: 0.05 s, within the lead; the trial is expected to take 0.15 s in all.
    assert pace.prefetch_for(elapsed=0.1, epochs_run=10, epochs_left=5) == pytest.approx(0.15)
    assert pace.prefetch_for(elapsed=0.1, epochs_run=0, epochs_left=5) is None


def test_the_lead_is_bounded_and_a_long_trial_claims_when_it_ends() -> None:
    slow_service = ClaimPolicy(round_trip=5.0)  # 15 s of round trips, capped at 1 s
    assert slow_service.prefetch_for(elapsed=0.1, epochs_run=1, epochs_left=9) is not None
    assert slow_service.prefetch_for(elapsed=0.1, epochs_run=1, epochs_left=11) is None
    unknown = ClaimPolicy()  # no round trip seen: taken as 0.05 s, a lead of 0.15 s
    assert unknown.prefetch_for(elapsed=0.1, epochs_run=10, epochs_left=14) is not None
    assert unknown.prefetch_for(elapsed=0.1, epochs_run=10, epochs_left=16) is None
    # Longer than FINISH_DELAY_SECONDS in all: no early claim, however close the end.
    assert slow_service.prefetch_for(elapsed=1.5, epochs_run=10, epochs_left=0) is None


def test_a_result_goes_alone_when_the_next_claim_would_come_too_late() -> None:
    pace = ClaimPolicy(trial_seconds=0.4)
    assert not pace.report_now(age=0.5)
    assert pace.report_now(age=1.1)
    assert pace.report_now(age=0.5, trials_ahead=2)  # 0.5 + 0.8 s until the next claim
    assert not ClaimPolicy().report_now(age=0.5, trials_ahead=2)  # no duration known yet


def test_the_knobs_are_read_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    pace = ClaimPolicy(claim_batch=16, trial_seconds=0.5)
    assert pace.lease_size() == 1
    monkeypatch.setattr(policy, "LEASE_TARGET_SECONDS", 10.0)
    assert pace.lease_size() == 16
    monkeypatch.setattr(policy, "FINISH_DELAY_SECONDS", 10.0)
    assert not pace.report_now(age=5.0)

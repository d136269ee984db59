"""The claim policy alone: what to ask for, early claims and lone reports from given times."""

from __future__ import annotations

import inspect
import math

import pytest

from service.protocol import MAX_RESULTS_PER_CLAIM
from worker import policy
from worker.policy import ClaimPolicy, average, time_left
from worker.pool import PoolOptions
from worker.results import RESULTS_PER_CLAIM
from worker.runner import Worker


def test_the_first_sample_is_the_whole_average_then_it_moves_by_its_weight() -> None:
    assert average(None, 2.0, 0.3) == 2.0
    assert average(2.0, 1.0, 0.25) == pytest.approx(1.75)


def test_a_claim_asks_for_the_batch_within_what_max_trials_leaves() -> None:
    # How many a lease holds is the service's to say (tests/service/queue/test_pace.py);
    # the worker only caps it.
    assert ClaimPolicy(claim_batch=16).ask(trials_done=1000) == 16
    pace = ClaimPolicy(claim_batch=4, max_trials=5)
    assert pace.ask(trials_done=2) == 3
    assert pace.ask(trials_done=2, running=1) == 2
    assert pace.ask(trials_done=2, running=3) == 0
    assert pace.ask(trials_done=5) == 0


def test_by_default_a_claim_asks_for_as_many_results_as_the_service_takes_in_one() -> None:
    # The policy, the worker, the pool and `caviar worker --claim-batch` share this default;
    # a larger one would leave results the service refuses, a smaller one more requests.
    assert ClaimPolicy().ask(trials_done=0) == policy.CLAIM_BATCH == MAX_RESULTS_PER_CLAIM
    assert RESULTS_PER_CLAIM == MAX_RESULTS_PER_CLAIM
    assert inspect.signature(Worker).parameters["claim_batch"].default == policy.CLAIM_BATCH
    assert PoolOptions(api_url="http://127.0.0.1:1").claim_batch == policy.CLAIM_BATCH


def test_a_process_retires_after_max_trials_or_else_after_many_trials_and_minutes() -> None:
    assert ClaimPolicy(max_trials=2).retiring(trials_done=2, lived=0.0)
    assert not ClaimPolicy(max_trials=2).retiring(trials_done=1, lived=1e9)
    # by default: short trials do not pay for a new process every 200 of them
    assert not ClaimPolicy().retiring(trials_done=policy.RECYCLE_TRIALS, lived=1.0)
    assert not ClaimPolicy().retiring(trials_done=10, lived=policy.RECYCLE_SECONDS)
    assert ClaimPolicy().retiring(trials_done=policy.RECYCLE_TRIALS, lived=policy.RECYCLE_SECONDS)


def test_the_time_left_is_judged_from_the_epochs_so_far() -> None:
    assert time_left(elapsed=0.1, epochs_run=10, epochs_left=5) == pytest.approx(0.05)
    assert time_left(elapsed=0.1, epochs_run=0, epochs_left=5) == pytest.approx(0.5)
    assert time_left(elapsed=0.1, epochs_run=10, epochs_left=-1) == 0.0


def test_the_next_claim_goes_out_a_few_round_trips_before_the_trial_ends() -> None:
    pace = ClaimPolicy(round_trip=0.02)  # lead: 3 round trips, 0.06 s
    assert pace.lead() == pytest.approx(0.06)
    # 0.1 s in, 0.1 s left: due in 0.04 s; 0.05 s left: due now.
    assert pace.prefetch_in(elapsed=0.1, left=0.1) == pytest.approx(0.04)
    assert pace.prefetch_in(elapsed=0.1, left=0.05) == 0.0
    # Judged again at the latest when it has run twice as long: early judgements are long.
    assert pace.prefetch_in(elapsed=0.001, left=0.7) == pytest.approx(0.001)


def test_the_lead_is_bounded_by_the_lease_target_and_a_long_trial_claims_when_it_ends() -> None:
    slow_service = ClaimPolicy(round_trip=5.0)  # 15 s of round trips
    # capped at the lease target: the service leases nothing behind a longer wait
    assert slow_service.lead() == policy.LEASE_TARGET_SECONDS
    unknown = ClaimPolicy()  # no round trip seen: taken as 0.05 s, a lead of 0.15 s
    assert unknown.lead() == pytest.approx(0.15)
    # Longer than FINISH_DELAY_SECONDS in all: no early claim, however close the end.
    assert slow_service.prefetch_in(elapsed=1.5, left=0.0) is None
    assert slow_service.prefetch_in(elapsed=0.5, left=0.6) is None


def test_a_result_goes_alone_when_the_next_claim_would_come_too_late() -> None:
    pace = ClaimPolicy()
    assert not pace.report_now(age=0.5)
    assert pace.report_in(age=0.5) == pytest.approx(0.5)
    assert pace.report_now(age=1.1)
    assert pace.report_now(age=0.5, ahead=0.8)  # 0.5 + 0.8 s until the next claim
    assert pace.report_now(age=0.0, ahead=math.inf)  # a trial of unknown length ahead


def test_the_knobs_are_read_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    pace = ClaimPolicy(round_trip=1.0)
    assert pace.lead() == policy.LEASE_TARGET_SECONDS
    monkeypatch.setattr(policy, "LEASE_TARGET_SECONDS", 10.0)
    assert pace.lead() == policy.PREFETCH_LEAD_MAX_SECONDS
    monkeypatch.setattr(policy, "FINISH_DELAY_SECONDS", 10.0)
    assert not pace.report_now(age=5.0)

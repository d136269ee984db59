"""The worker's claim policy: how many trials to lease, and when to claim or report.

Pure: no clock, no threads, no HTTP. The worker measures (trial durations, claim round
trips, how far the running trial is) and asks; the answers depend only on what it passes
and on the knobs below, which are read at each call (tests adjust them).
"""

from __future__ import annotations

from dataclasses import dataclass

# A result waits at most about this long, counted from its trial's start, for a claim to
# carry it (the next claim goes out near the end of the last leased trial); a result that
# would wait longer goes out on its own at once. Trials shorter than this thus cost one
# request each, or one per batch.
FINISH_DELAY_SECONDS = 1.0
# A claim leases about this much work, judged from the trials run so far (at most
# `claim_batch` trials, at least one): very short trials share a round trip; longer ones
# go one by one, so at the end of a queue no process sits on trials another could run
# (the next claim's round trip is hidden anyway: it goes out while a trial trains).
LEASE_TARGET_SECONDS = 0.25
# The next claim goes out while the last leased trial trains, when about this many claim
# round trips of it are left (within these bounds): the next trial is then at hand when
# it ends, and is leased at most about a round trip early, so at the end of a queue one
# process does not sit on a trial the other is free to run.
PREFETCH_ROUND_TRIPS = 3.0
PREFETCH_LEAD_MIN_SECONDS = 0.05
PREFETCH_LEAD_MAX_SECONDS = 1.0
# Moving averages of trial durations and of claim round trips: the weight of a new sample.
TRIAL_SECONDS_WEIGHT = 0.3
ROUND_TRIP_WEIGHT = 0.2


def average(mean: float | None, sample: float, weight: float) -> float:
    """A moving average that gives `sample` this `weight` (the first sample is all of it)."""
    return sample if mean is None else (1.0 - weight) * mean + weight * sample


@dataclass
class ClaimPolicy:
    """What one worker has seen of its trials and claims, and what it should do next.

    `claim_batch` caps a lease; `max_trials` (None: no limit) is how many trials the
    process runs before it leaves. `trial_seconds` and `round_trip` are moving averages
    the worker feeds through `trial_took` and `claim_took`.
    """

    claim_batch: int = 16
    max_trials: int | None = None
    trial_seconds: float | None = None
    round_trip: float | None = None

    def trial_took(self, seconds: float) -> None:
        self.trial_seconds = average(self.trial_seconds, seconds, TRIAL_SECONDS_WEIGHT)

    def claim_took(self, seconds: float) -> None:
        self.round_trip = average(self.round_trip, seconds, ROUND_TRIP_WEIGHT)

    def lease_size(self, running: float | None = None) -> int:
        """How many trials the next claim asks for; `running` is the expected duration of
        a trial still training (an early claim's), counted in as if it had ended."""
        seconds = self.trial_seconds
        if running is not None:
            seconds = average(seconds, running, TRIAL_SECONDS_WEIGHT)
        if seconds is None:
            return 1  # nothing seen yet: one trial, then judge
        fits = int(LEASE_TARGET_SECONDS / max(seconds, 1e-4))
        return max(1, min(self.claim_batch, fits))

    def within_max(self, size: int, *, trials_done: int, running: bool = False) -> int:
        """`size` cut to what `max_trials` leaves after `trials_done` (and one `running`);
        0 or less: claim nothing."""
        if self.max_trials is None:
            return size
        return min(size, self.max_trials - trials_done - running)

    def prefetch_for(self, *, elapsed: float, epochs_run: int, epochs_left: int) -> float | None:
        """The expected duration of the last leased trial, if the next claim should go out
        now, while it trains; else None.

        The time left is judged from its `epochs_run` epochs in `elapsed` seconds, and the
        claim goes out when that is within a few claim round trips, so it is answered
        before the trial ends but the trial it leases does not wait long. A trial longer
        than FINISH_DELAY_SECONDS claims when it ends instead: its result then rides with
        that claim rather than cost a request of its own, and one round trip is little
        next to it.
        """
        if epochs_run <= 0:
            return None
        left = max(epochs_left, 0) * elapsed / epochs_run
        trip = self.round_trip if self.round_trip is not None else PREFETCH_LEAD_MIN_SECONDS
        lead = min(
            max(PREFETCH_ROUND_TRIPS * trip, PREFETCH_LEAD_MIN_SECONDS), PREFETCH_LEAD_MAX_SECONDS
        )
        if left > lead or elapsed + left > FINISH_DELAY_SECONDS:
            return None
        return elapsed + left

    def report_now(self, *, age: float, trials_ahead: int = 0) -> bool:
        """Whether results `age` seconds old (from their first trial's start) should go
        out on their own now, rather than wait `trials_ahead` trials for the next claim."""
        ahead = trials_ahead * (self.trial_seconds or 0.0)
        return age + ahead > FINISH_DELAY_SECONDS

"""The worker's claim policy: how much to ask for, and when to claim or report.

Pure: no clock, no threads, no HTTP. The worker measures (claim round trips, how far the
running trial is, how long its leased trials are expected to take) and asks; the
answers depend only on what it passes and on the knobs below, which are read at each
call (tests adjust them).

How many trials a claim leases is the service's to say (service.queue.pace), from each
study's own observed trial durations: the worker asks for up to `claim_batch`, within
LEASE_TARGET_SECONDS of expected work, and tells how long it is still busy.
"""

from __future__ import annotations

from dataclasses import dataclass

# A claim leases at most this many trials unless told otherwise (`caviar worker
# --claim-batch`): the service takes as many results in one claim (its
# MAX_RESULTS_PER_CLAIM), and sizes each lease within it by LEASE_TARGET_SECONDS.
CLAIM_BATCH = 64
# A result waits at most about this long, counted from its trial's start, for a claim to
# carry it (the next claim goes out near the end of the last leased trial); a result that
# would wait longer goes out on its own at once. Trials shorter than this thus cost one
# request per batch, and no request of their own.
FINISH_DELAY_SECONDS = 1.0
# A claim leases about this much expected work (at least one trial): very short trials
# share a round trip; longer ones, and those of a study whose length is not known yet, go
# one by one, so no trial waits behind a long one (the next claim's round trip is hidden
# anyway: it goes out while a trial trains); at the end of a queue the service leases at
# most half of what is left, so no process sits on trials another could run. Half a
# second rather than a quarter halved the service's CPU per 100-epoch trial (one claim
# per 25 such trials instead of 12).
LEASE_TARGET_SECONDS = 0.5
# The next claim goes out while the last leased trial trains, when about this many claim
# round trips of it are left (within these bounds, and never more than the lease target:
# the service leases nothing behind a trial busy longer than that): the next trial is
# then at hand when it ends, and is leased at most about a round trip early.
PREFETCH_ROUND_TRIPS = 3.0
PREFETCH_LEAD_MIN_SECONDS = 0.05
PREFETCH_LEAD_MAX_SECONDS = 1.0
# The moving average of claim round trips: the weight of a new sample.
ROUND_TRIP_WEIGHT = 0.2
# Without `max_trials`, a process leaves (the pool starts a fresh one, so memory cannot
# creep) once it has run this many trials for this long: a new process costs about a
# second of CPU, which trials of a millisecond must not pay every 200 of them.
RECYCLE_TRIALS = 200
RECYCLE_SECONDS = 600.0


def average(mean: float | None, sample: float, weight: float) -> float:
    """A moving average that gives `sample` this `weight` (the first sample is all of it)."""
    return sample if mean is None else (1.0 - weight) * mean + weight * sample


def time_left(*, elapsed: float, epochs_run: int, epochs_left: int) -> float:
    """The time a trial still needs, judged from `epochs_run` epochs in `elapsed` seconds."""
    return max(epochs_left, 0) * elapsed / max(epochs_run, 1)


@dataclass
class ClaimPolicy:
    """What one worker has seen of its claims, and what it should do next.

    `claim_batch` caps a lease; `max_trials` (None: no limit) is how many trials the
    process runs before it leaves. `round_trip` is a moving average the worker feeds
    through `claim_took`.
    """

    claim_batch: int = CLAIM_BATCH
    max_trials: int | None = None
    round_trip: float | None = None

    def claim_took(self, seconds: float) -> None:
        self.round_trip = average(self.round_trip, seconds, ROUND_TRIP_WEIGHT)

    def retiring(self, *, trials_done: int, lived: float) -> bool:
        """Whether the process should leave now, after `trials_done` trials in `lived`
        seconds (it then leases no more)."""
        if self.max_trials is not None:
            return trials_done >= self.max_trials
        return trials_done >= RECYCLE_TRIALS and lived >= RECYCLE_SECONDS

    def ask(self, *, trials_done: int, running: int = 0) -> int:
        """How many trials the next claim may lease at most: `claim_batch`, within what
        `max_trials` leaves after `trials_done` and `running` (leased, not done yet); 0
        or less: none."""
        if self.max_trials is None:
            return self.claim_batch
        return min(self.claim_batch, self.max_trials - trials_done - running)

    def lead(self) -> float:
        """How long before the running trial's end the next claim goes out."""
        trip = self.round_trip if self.round_trip is not None else PREFETCH_LEAD_MIN_SECONDS
        lead = max(PREFETCH_ROUND_TRIPS * trip, PREFETCH_LEAD_MIN_SECONDS)
        return min(lead, PREFETCH_LEAD_MAX_SECONDS, LEASE_TARGET_SECONDS)

    def prefetch_in(self, *, elapsed: float, left: float) -> float | None:
        """Seconds until the next claim should go out while the last leased trial trains
        (0: now), `elapsed` seconds into it with `left` to go; None: it claims when it ends.

        A trial longer than FINISH_DELAY_SECONDS claims when it ends: its result then
        rides with that claim rather than cost a request of its own, and one round trip
        is little next to it. The answer is never more than `elapsed`: the time left is
        judged again as the trial goes on (its first epochs carry its setup, so the
        first judgement is long).
        """
        if elapsed + left > FINISH_DELAY_SECONDS:
            return None
        return max(0.0, min(left - self.lead(), elapsed))

    def report_in(self, *, age: float, ahead: float = 0.0) -> float:
        """Seconds until results `age` seconds old (from their first trial's start) should
        go out on their own, if the next claim that could carry them comes `ahead`
        seconds from now (expected; inf if not known); 0 or less: now."""
        return FINISH_DELAY_SECONDS - age - ahead

    def report_now(self, *, age: float, ahead: float = 0.0) -> bool:
        return self.report_in(age=age, ahead=ahead) <= 0

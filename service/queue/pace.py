"""How long a study's trials take, as observed, and how many of them one claim may lease.

A worker runs the trials of one lease one after another, so a trial leased behind others
waits for them. The service sizes each lease from the durations it has seen of each
study's own trials (workers report them with their results), never from another
study's: a study whose trials' length is not known yet, or is longer than the worker's
lease target, is leased one trial at a time and nothing is leased behind it, so two
long trials of one study go to two idle workers, never both to one.

`lease_from_study` is the rule, a pure function, and `fair_share` splits the end of a
queue between the workers that claim it; `StudyPace` is the memory it reads (one
per service process: a replica that has not seen a study's results reads its last
finished trial's epochs from the database instead, see service.queue.claims).
"""

from __future__ import annotations

import math
import threading

# The weight of the newest duration in a study's moving average.
SECONDS_WEIGHT = 0.3
# Studies remembered per process; the least recently reported goes first beyond that.
MAX_STUDIES = 10_000


def lease_from_study(*, ahead: float, expected: float | None, budget: float, want: int) -> int:
    """How many trials of one study to lease now, after `ahead` seconds of work leased
    before them (the worker's running trial, trials of other studies in the same claim).

    A trial is leased behind others only if the work ahead of it is expected to take at
    most `budget` seconds (the worker's lease target); a study of unknown duration
    (`expected` None) counts as longer than any budget. The first trial of a claim from
    an idle worker (`ahead` 0) is always leased. At most `want`.
    """
    cost = math.inf if expected is None else max(expected, 0.0)
    taken = 0
    while taken < want and ahead <= budget:
        taken += 1
        ahead += cost
    return taken


def fair_share(*, queued: int, want: int) -> int:
    """At most half of a study's `queued` trials (rounded up, at least one), within `want`:
    the end of a queue is split between the workers that claim it, never leased whole to
    the first one while the others go idle."""
    return min(want, max(1, (queued + 1) // 2))


def work_ahead(*, ahead: float, expected: float | None, taken: int) -> float:
    """`ahead` plus the expected work of `taken` trials of a study (inf if unknown)."""
    if taken == 0:
        return ahead
    return math.inf if expected is None else ahead + taken * max(expected, 0.0)


class StudyPace:
    """The moving average of each study's trial durations, as this process has seen them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[tuple[str, int], float] = {}

    def observe(self, *, database: str, study_id: int, seconds: float) -> None:
        """Count one finished trial of `study_id` that took `seconds` to run."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        key = (database, study_id)
        with self._lock:
            mean = self._seconds.pop(key, None)  # re-inserted: the newest go last
            self._seconds[key] = (
                seconds if mean is None else (1 - SECONDS_WEIGHT) * mean + SECONDS_WEIGHT * seconds
            )
            if len(self._seconds) > MAX_STUDIES:
                self._seconds.pop(next(iter(self._seconds)))

    def seed(self, *, database: str, study_id: int, seconds: float) -> None:
        """A first estimate (read from the database) unless one is known already."""
        with self._lock:
            self._seconds.setdefault((database, study_id), seconds)

    def expected(self, *, database: str, study_id: int) -> float | None:
        """The study's expected trial duration in seconds, None if not known here."""
        return self._seconds.get((database, study_id))


PACE = StudyPace()

"""A worker's round trip: report the trials it finished, then lease the next ones.

One transaction for both: a worker of short trials sends one request per batch of
trials, and the service commits once for it (SQLite takes its write lock once;
PostgreSQL flushes its log once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from service.db import Database
from service.queue.claims import Claimed, claim_in, waiting
from service.queue.finish import finish_in
from service.queue.offers import touch_worker


@dataclass(frozen=True)
class Exchange:
    """What a claim answers: each result's fate, the trials leased, and whether queued
    trials wait for a free slot although none was leased."""

    finished: list[dict[str, Any]]
    trials: list[Claimed]
    waiting: bool


def claim_and_report(
    *,
    db: Database,
    worker_id: str,
    results: Sequence[Mapping[str, Any]],
    max_trials: int,
    lease_seconds: float,
    caviar_checkpoint_seconds: float = 0.0,
    target_seconds: float | None = None,
    busy_seconds: float = 0.0,
    study_id: int | None = None,
) -> Exchange:
    """Finish `results` (see finish_trials), then lease up to `max_trials` (see claim_in),
    for the registered worker `worker_id` (NotFound if it is not); with `study_id`, only
    that study's trials (and `waiting` says whether that study's wait)."""
    with db.session() as s:
        offers = replace(touch_worker(s, worker_id), study_id=study_id)
        finished = finish_in(s, results) if results else []
        trials: list[Claimed] = []
        if max_trials:
            trials = claim_in(
                s,
                worker_id=worker_id,
                offers=offers,
                max_trials=max_trials,
                lease_seconds=lease_seconds,
                caviar_checkpoint_seconds=caviar_checkpoint_seconds,
                target_seconds=target_seconds,
                busy_seconds=busy_seconds,
            )
        held = max_trials and not trials
        queued = bool(
            held and s.connection().execute(waiting(*offers.statements), offers.params()).scalar()
        )
    return Exchange(finished=finished, trials=trials, waiting=queued)

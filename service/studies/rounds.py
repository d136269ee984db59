"""Coarse-to-fine rounds: a study's trials, and a planner thread that opens each next round.

Planning a round fits a model of the finished trials (0.3-0.6 s of a core for 1,000
trials and a 512-trial round), so it runs on the planner's thread, never in a worker's request
and never under the study's lock: the finish that closes a round only leaves the study
due (service.queue.closing). The planner reads the spec and the history without a lock,
plans, then creates the round in a short transaction that checks, under the study's
lock, that the study is still due at the same round with the same history, and moves its
round counter by compare-and-set (the rounds' unique (study_id, index) backs it): each
round is created exactly once, however many planners or replicas race for it, and from
exactly the history it was planned on, so the same spec, seed and history always give
the same round."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.db import Database
from service.events import emit
from service.models import Round, Study, Trial, TrialStatus
from service.periodic import Periodic
from service.queue.closing import ROUND_DUE, ROUNDS_DUE
from service.spec import TrialPlan, plan_round, stored_spec

log = logging.getLogger("caviar.service")

History = list[tuple[dict[str, Any], float | None]]


def add_trials(
    s: Session, *, study_id: int, round_index: int, plans: list[TrialPlan], first_number: int
) -> None:
    s.add_all(
        Trial(
            study_id=study_id,
            number=first_number + i,
            round_index=round_index,
            params=plan.params,
            config=plan.config,
            status=TrialStatus.queued,
            attempt=0,
            retries=0,
            stop_requested=False,
            epochs_done=0,
        )
        for i, plan in enumerate(plans)
    )


_DUE = (
    select(Study.id, Study.current_round, Study.spec, Study.spec_sha256)
    .where(*ROUND_DUE)
    .order_by(Study.id)
)


def due_studies(*, db: Database) -> list[int]:
    """The studies whose next round is due, by id."""
    with db.session(write=False) as s:
        return list(s.scalars(select(Study.id).where(*ROUND_DUE).order_by(Study.id)))


def plan_due_rounds(*, db: Database) -> int:
    """Open the next round of every study it is due for; returns how many were opened."""
    opened = 0
    for study_id in due_studies(db=db):
        try:
            opened += open_next_round(db=db, study_id=study_id)
        except Exception:  # one study's failure must not hold up the others' rounds
            log.exception("planning study %d's next round failed", study_id)
    return opened


def open_next_round(*, db: Database, study_id: int) -> bool:
    """Plan and create the study's next round if it is due; False if it is not (any more).

    The plan is made with no transaction open; the round is created only if, under the
    study's lock, nothing it was planned from has changed (another planner took it, a
    trial was retried, the study was cancelled): else nothing is written.
    """
    with db.session(write=False) as s:
        study = s.execute(_DUE.where(Study.id == study_id)).one_or_none()
        if study is None:
            return False
        history = _history(s, study_id)
    round_index = study.current_round + 1
    # Read once per study, not per round: it was checked whole when it was submitted.
    spec = stored_spec(study.spec, fingerprint=study.spec_sha256)
    box, plans = plan_round(spec, round_index=round_index, history=history)
    with db.session() as s:
        if not _still_due(s, study_id=study_id, round_index=round_index, history=history):
            return False
        last = s.scalar(select(func.max(Trial.number)).where(Trial.study_id == study_id))
        s.add(Round(study_id=study_id, index=round_index, box=box))
        add_trials(
            s, study_id=study_id, round_index=round_index, plans=plans, first_number=(last or 0) + 1
        )
        emit(
            s,
            study_id=study_id,
            type="round.created",
            index=round_index,
            box=box,
            trials=len(plans),
        )
    return True


def _history(s: Session, study_id: int) -> History:
    """(params, value) of every trial of the study in id order; None for one that did not
    complete. A fixed order: the model fitted on it sees the same rows every time."""
    rows = s.execute(
        select(Trial.params, Trial.value, Trial.status)
        .where(Trial.study_id == study_id)
        .order_by(Trial.id)
    ).all()
    return [(r.params, r.value if r.status == TrialStatus.completed else None) for r in rows]


def _still_due(s: Session, *, study_id: int, round_index: int, history: History) -> bool:
    """Lock the study; if it is still due for `round_index` with the same history, move
    its round counter to it (compare-and-set) and say so.

    The lock is FOR NO KEY UPDATE, as the finish path's (service.queue.closing). The
    checks come after it, in statements of their own: on PostgreSQL each then reads what
    was committed before the lock was granted (a locking statement's own subqueries
    would still read from before the wait).
    """
    s.execute(select(Study.id).where(Study.id == study_id).with_for_update(key_share=True))
    current = s.scalar(select(Study.current_round).where(Study.id == study_id, *ROUND_DUE))
    if current != round_index - 1 or _history(s, study_id) != history:
        return False
    moved = s.execute(
        update(Study)
        .where(Study.id == study_id, Study.current_round == current)
        .values(current_round=round_index)
    )
    return moved.rowcount == 1  # type: ignore[attr-defined]


class Planner(Periodic):
    """A thread that opens due rounds: woken when a finish leaves one due (ROUNDS_DUE),
    and every `interval` seconds, so a round left due by a process that died, or by
    another replica, is opened all the same."""

    name = "caviar-planner"
    logger = log

    def __init__(self, db: Database, interval: float) -> None:
        self.db = db
        super().__init__(interval)

    def start(self) -> None:
        ROUNDS_DUE.subscribe(self.wake)
        super().start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the pass under way (a round being planned is finished first)."""
        super().close(timeout)
        ROUNDS_DUE.unsubscribe(self.wake)

    def tick(self) -> None:
        opened = plan_due_rounds(db=self.db)
        if opened:
            # DEBUG: the service log's journal says each round opened, with its study,
            # once settled; an INFO line here came first, without ids ("1 rounds").
            log.debug("planner opened %d round(s)", opened, extra={"action": "plan"})

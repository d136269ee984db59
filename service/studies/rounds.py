"""What happens when a trial ends: the next coarse-to-fine round, or the study's end."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.events import emit
from service.models import (
    OPEN_TRIAL,
    TERMINAL_STUDY,
    Round,
    Study,
    StudyStatus,
    Trial,
    TrialStatus,
)
from service.spec import TrialPlan, parse_spec, plan_round


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


def after_trial_finished(s: Session, *, study_id: int) -> None:
    """Open the next round or end the study once no trial of it is open.

    The study row is locked first (a no-op on SQLite, whose write transactions are
    already serial), so of many trials finishing at once exactly one sees the round
    closed, and the next round is created once. The lock is FOR NO KEY UPDATE: it
    serializes these checks but not the KEY SHARE locks that inserting an event (a row
    referencing the study) takes; FOR UPDATE would deadlock two finishers that had each
    inserted an event.
    """
    study = s.scalars(
        select(Study)
        .where(Study.id == study_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).one()
    if study.status in TERMINAL_STUDY:
        return
    if mark_awaiting_review(s, study=study):
        return
    still_open = s.scalar(
        select(func.count())
        .select_from(Trial)
        # IN over the open statuses, not NOT IN the terminal ones: the (study_id, status)
        # index then reads only open trials, however many have finished.
        .where(Trial.study_id == study_id, Trial.status.in_(OPEN_TRIAL))
    )
    if still_open:
        return
    next_round = study.current_round + 1
    if next_round < study.total_rounds:
        moved = s.execute(
            update(Study)
            .where(Study.id == study_id, Study.current_round == study.current_round)
            .values(current_round=next_round)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            return
        open_round(s, study=study, round_index=next_round)
        return
    finish_study(s, study=study)


def open_round(s: Session, *, study: Study, round_index: int) -> None:
    spec = parse_spec(study.spec, check_trials=False)  # round 1 was checked at creation
    rows = s.execute(
        select(Trial.params, Trial.value, Trial.status).where(Trial.study_id == study.id)
    ).all()
    history: list[tuple[dict[str, Any], float | None]] = [
        (r.params, r.value if r.status == TrialStatus.completed else None) for r in rows
    ]
    box, plans = plan_round(spec, round_index=round_index, history=history)
    s.add(Round(study_id=study.id, index=round_index, box=box))
    first = (s.scalar(select(func.max(Trial.number)).where(Trial.study_id == study.id)) or 0) + 1
    add_trials(s, study_id=study.id, round_index=round_index, plans=plans, first_number=first)
    emit(s, study_id=study.id, type="round.created", index=round_index, box=box, trials=len(plans))


def finish_study(s: Session, *, study: Study) -> None:
    produced = s.scalar(
        select(func.count())
        .select_from(Trial)
        .where(Trial.study_id == study.id, Trial.value.is_not(None))
    )
    status = StudyStatus.completed if produced else StudyStatus.failed
    error = None if produced else "no trial produced a value: every trial failed or diverged"
    ended = s.execute(
        update(Study)
        .where(Study.id == study.id, Study.status.in_([StudyStatus.queued, StudyStatus.running]))
        .values(status=status, error=error, finished_at=func.now())
    )
    if ended.rowcount == 1:  # type: ignore[attr-defined]
        emit(s, study_id=study.id, type="study.finished", status=status.value, error=error)


def mark_awaiting_review(s: Session, *, study: Study) -> bool:
    """After a trial of a reviewed panda study ends, hold the next one for the person.

    The person then continues the study (its next queued trial runs), forks a trial with
    changes, or cancels; the claim passes over a study that awaits review.
    """
    if study.mode != "panda" or not study.spec.get("execution", {}).get("await_review"):
        return False
    waiting = s.scalar(
        select(func.count())
        .select_from(Trial)
        .where(Trial.study_id == study.id, Trial.status == TrialStatus.queued)
    )
    running = s.scalar(
        select(func.count())
        .select_from(Trial)
        .where(Trial.study_id == study.id, Trial.status == TrialStatus.running)
    )
    if not waiting or running:
        return False
    s.execute(update(Study).where(Study.id == study.id).values(awaiting_review=True))
    emit(s, study_id=study.id, type="study.awaiting_review", queued=waiting)
    return True

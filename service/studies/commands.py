"""What people do to studies and trials: create (and zoom into) a study, stop, cancel, retry."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.datasets import check_study_data
from service.db import Database
from service.errors import Conflict, InvalidSpec, get_or_404
from service.events import emit
from service.models import (
    TERMINAL_STUDY,
    TERMINAL_TRIAL,
    Dataset,
    Round,
    Study,
    StudyStatus,
    Trial,
    TrialStatus,
)
from service.queue import after_trial_finished
from service.settings import Settings
from service.spec import (
    BUILTIN_DATASETS,
    SpecError,
    StudySpec,
    checked_round,
    parse_spec,
    total_rounds,
)
from service.studies.reads import study_dict, trial_detail
from service.studies.rounds import add_trials


def validate_spec(data: Any, *, settings: Settings, check_trials: bool = True) -> StudySpec:
    """Parse and validate a spec, or raise InvalidSpec naming every wrong field.

    `check_trials`: also that every trial of the first round makes a valid config."""
    try:
        return parse_spec(data, settings=settings, check_trials=check_trials)
    except SpecError as exc:
        raise InvalidSpec(errors=exc.errors) from None


def _fingerprint(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def create_study(
    *,
    db: Database,
    data: Any,
    settings: Settings,
    idempotency_key: str | None = None,
    parent_study_id: int | None = None,
    history: Sequence[tuple[dict[str, Any], float | None]] = (),
) -> int:
    """Validate `data`, expand its first round into trials and queue them, all or nothing.

    `history` (params and value of finished trials, of a parent study) makes a
    coarse-to-fine study start in the box around their best instead of the whole space.
    """
    # The first round is drawn once, with the history, and each trial's config checked
    # once as it is (parse_spec would draw it a second time, without the history, to check).
    spec = validate_spec(data, settings=settings, check_trials=False)
    check_study_data(db=db, spec=spec, settings=settings)  # an upload, as this spec reads it
    try:
        box, plans = checked_round(spec, settings=settings, history=list(history))
    except SpecError as exc:
        raise InvalidSpec(errors=exc.errors) from None
    stored = spec.model_dump(mode="json")
    with db.session() as s:
        label_column = _check_dataset(s, spec)
        if label_column is not None:  # the worker's copy of the block says how to read the file
            stored["dataset"]["label_column"] = label_column
        fingerprint = _fingerprint(stored)
        if idempotency_key:
            existing = _study_of_key(s, idempotency_key, fingerprint)
            if existing is not None:
                return existing
        if parent_study_id is not None:
            get_or_404(s, Study, parent_study_id)
        study = Study(
            name=spec.name,
            spec=stored,
            status=StudyStatus.queued,
            strategy=spec.strategy.type,
            mode=spec.execution.mode,
            max_parallel=spec.execution.max_parallel,
            max_retries=spec.execution.max_retries,
            metric=spec.objective.metric,
            direction=spec.direction,
            total_rounds=total_rounds(spec),
            entrypoint=spec.entrypoint,
            current_round=0,
            parent_study_id=parent_study_id,
            idempotency_key=idempotency_key,
            spec_sha256=fingerprint,
        )
        s.add(study)
        try:
            s.flush()
        except IntegrityError:  # the same key raced in from another request
            raise Conflict("a study with this Idempotency-Key is being created") from None
        s.add(Round(study_id=study.id, index=0, box=box))
        add_trials(s, study_id=study.id, round_index=0, plans=plans, first_number=0)
        emit(s, study_id=study.id, type="study.created", name=spec.name, trials=len(plans))
        emit(s, study_id=study.id, type="round.created", index=0, box=box, trials=len(plans))
        return study.id


def _study_of_key(s: Session, key: str, fingerprint: str) -> int | None:
    """The study an Idempotency-Key already created from the same spec, or None if new."""
    existing = s.execute(
        select(Study.id, Study.spec_sha256).where(Study.idempotency_key == key)
    ).first()
    if existing is None:
        return None
    if existing.spec_sha256 != fingerprint:
        raise InvalidSpec.at(
            "Idempotency-Key", "this key was already used with a different spec", key
        )
    return int(existing.id)


def check_dataset(*, db: Database, spec: StudySpec) -> None:
    """InvalidSpec unless the spec's data set is built in or uploaded (and readable)."""
    with db.session(write=False) as s:
        _check_dataset(s, spec, lock=False)


def _check_dataset(s: Session, spec: StudySpec, *, lock: bool = True) -> str | None:
    """Check that an uploaded data set exists; its label column (None for built-ins).

    On PostgreSQL the data set's row is share-locked until the study is stored, so a
    concurrent delete (which takes the row's update lock) cannot remove it in between.
    """
    if spec.dataset is None:  # a task's function loads its own data
        return None
    name = spec.dataset.name
    if name in BUILTIN_DATASETS:
        return None
    q = select(Dataset.id, Dataset.label_column, Dataset.format).where(Dataset.id == name)
    row = s.execute(q.with_for_update(read=True) if lock else q).first()
    if row is None:
        raise InvalidSpec.at(
            "dataset.name",
            f"no built-in or uploaded data set named {name!r}; built-ins are "
            + ", ".join(sorted(BUILTIN_DATASETS)),
            name,
        )
    wanted = spec.dataset.label_column
    if wanted is not None and wanted != row.label_column:
        _check_other_label(s, spec, row)
        return wanted
    return row.label_column or ("y" if row.format == "npz" else None)


def _check_other_label(s: Session, spec: StudySpec, row: Any) -> None:
    """A label column other than the upload's: load the file with it, as a worker will."""
    from service.datasets import load_stored

    label = spec.dataset.label_column if spec.dataset is not None else None
    try:
        load_stored(s, dataset_id=row.id, label_column=label)
    except ValueError as exc:
        raise InvalidSpec.at("dataset.label_column", str(exc), label) from None


def stop_trial(*, db: Database, trial_id: int) -> dict[str, Any]:
    """Stop a trial: at once if it waits, at the end of its current epoch if it runs."""
    with db.session() as s:
        trial = get_or_404(s, Trial, trial_id)
        if trial.status in TERMINAL_TRIAL:
            raise Conflict(f"trial {trial_id} has already ended ({trial.status.value})")
        if trial.status == TrialStatus.running:
            trial.stop_requested = True
            trial.stop_reason = "stop"  # overrides a pause or a prune asked before
            emit(s, study_id=trial.study_id, type="trial.stop_requested", trial_id=trial.id)
        else:
            emit(
                s,
                study_id=trial.study_id,
                type="trial.finished",
                trial_id=trial.id,
                number=trial.number,
                status="stopped",
                outcome="stopped",
                value=None,
            )
            trial.status = TrialStatus.stopped
            trial.outcome = "stopped"
            trial.finished_at = func.now()
            s.flush()
            after_trial_finished(s, study_id=trial.study_id)
        s.flush()
        s.refresh(trial)
        return trial_detail(trial)


def cancel_study(*, db: Database, study_id: int) -> dict[str, Any]:
    """Cancel: queued and paused trials are stopped now, running ones at their next epoch."""
    with db.session() as s:
        study = get_or_404(s, Study, study_id)
        if study.status in TERMINAL_STUDY:
            raise Conflict(f"study {study_id} has already ended ({study.status.value})")
        s.execute(
            update(Trial)
            .where(
                Trial.study_id == study_id,
                Trial.status.in_([TrialStatus.queued, TrialStatus.paused]),
            )
            .values(
                status=TrialStatus.stopped,
                outcome="cancelled",
                error="the study was cancelled",
                finished_at=func.now(),
            )
        )
        s.execute(
            update(Trial)
            .where(Trial.study_id == study_id, Trial.status == TrialStatus.running)
            .values(stop_requested=True, stop_reason="cancel")
        )
        study.status = StudyStatus.cancelled
        study.finished_at = func.now()
        emit(s, study_id=study_id, type="study.cancelled")
        emit(s, study_id=study_id, type="study.finished", status="cancelled", error=None)
        s.flush()
        s.refresh(study)
        return study_dict(s, study)


def retry_failed(*, db: Database, study_id: int) -> dict[str, Any]:
    """Queue the study's failed trials again as new attempts; the study runs again if any.

    Only failed trials: a trial someone stopped, or a study's cancel stopped, stays so. A
    cancelled study is 409: its cancel stopped what had not run, and retrying would undo it.
    """
    with db.session() as s:
        study = get_or_404(s, Study, study_id)
        if study.status == StudyStatus.cancelled:
            raise Conflict(
                f"study {study_id} was cancelled: its trials stay stopped; submit its spec "
                "again to run it"
            )
        moved = s.execute(
            update(Trial)
            .where(Trial.study_id == study_id, Trial.status == TrialStatus.failed)
            .values(
                status=TrialStatus.queued,
                retries=0,
                error=None,
                outcome=None,
                value=None,
                stop_requested=False,
                finished_at=None,
            )
        )
        if moved.rowcount:  # type: ignore[attr-defined]
            emit(s, study_id=study_id, type="study.requeued", trials=moved.rowcount)  # type: ignore[attr-defined]
            study.status = StudyStatus.running if study.started_at else StudyStatus.queued
            study.finished_at = None
            study.error = None
        s.flush()
        s.refresh(study)
        return {**study_dict(s, study), "requeued": moved.rowcount}  # type: ignore[attr-defined]

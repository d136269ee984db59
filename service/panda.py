"""Panda: babysit one model. Pause, resume and fork trials from checkpoints; review steps.

A pause asks the worker to stop after its epoch; the worker saves a checkpoint and the
trial ends its attempt as `paused`, freeing the worker. Resume queues it again from its
latest checkpoint; fork queues a new trial from a checkpoint at a chosen epoch with some
hyperparameters changed (a task's function gets the changed params, and its own bytes
from `trial.resume()`), keeping the lineage. Either way the claim copies the learning
curve up to the checkpoint into the new attempt, so the curve, the objective and the
pruning decisions see one continuous run.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.checkpoints import checkpoint_at, checkpoint_epochs, latest_checkpoint
from service.db import Database
from service.errors import Conflict, InvalidSpec, get_or_404
from service.events import emit
from service.models import TERMINAL_STUDY, Checkpoint, Study, StudyStatus, Trial, TrialStatus
from service.search.distributions import (
    CategoricalDistribution,
    Distribution,
    FloatDistribution,
    IntDistribution,
    show,
)
from service.settings import Settings
from service.spec import cap_errors, epochs_checkpoint_errors, stored_spec, value_errors
from service.spec.messages import suggest
from service.spec.schema import StudySpec
from service.studies import trial_detail
from trainer.checkpoint import FORKABLE_FIELDS
from trainer.config import TrainConfig

# What a fork may change: the optimization, never the architecture the weights fit. The
# trainer owns the list, since it is the trainer that must honour it on resume.
FORKABLE = FORKABLE_FIELDS


def _detail(s: Session, trial: Trial) -> dict[str, Any]:
    s.flush()
    s.refresh(trial)
    return trial_detail(trial)


def _reopen_study(s: Session, study_id: int) -> None:
    """A study that had ended gets work again (a resume or a fork): it runs again."""
    study = s.get(Study, study_id)
    assert study is not None
    if study.status == StudyStatus.cancelled:
        raise Conflict(f"study {study_id} was cancelled; start a new study instead")
    if study.status in TERMINAL_STUDY:
        study.status = StudyStatus.running
        study.finished_at = None
        study.error = None


def pause_trial(*, db: Database, trial_id: int) -> dict[str, Any]:
    """Pause: a waiting trial at once; a running one after its epoch, with a checkpoint."""
    with db.session() as s:
        trial = get_or_404(s, Trial, trial_id)
        if trial.status == TrialStatus.running:
            trial.stop_requested = True
            trial.stop_reason = "pause"
        elif trial.status == TrialStatus.queued:
            trial.status = TrialStatus.paused
            emit(s, study_id=trial.study_id, type="trial.paused", trial_id=trial.id)
        else:
            raise Conflict(
                f"trial {trial_id} is {trial.status.value}; only a queued or running trial pauses"
            )
        return _detail(s, trial)


def resume_trial(*, db: Database, trial_id: int) -> dict[str, Any]:
    """Queue a paused trial again, from its latest checkpoint (from scratch if it has none)."""
    with db.session() as s:
        trial = get_or_404(s, Trial, trial_id)
        if trial.status != TrialStatus.paused:
            raise Conflict(f"trial {trial_id} is {trial.status.value}, not paused")
        _reopen_study(s, trial.study_id)
        ckpt = latest_checkpoint(s, trial_id)
        trial.status = TrialStatus.queued
        trial.outcome = None  # the pause is over; the next attempt says how it ends
        trial.resume_checkpoint_id = ckpt.id if ckpt is not None else None
        trial.stop_requested = False
        trial.stop_reason = None
        emit(
            s,
            study_id=trial.study_id,
            type="trial.resumed",
            trial_id=trial.id,
            from_epoch=ckpt.epoch if ckpt is not None else 0,
        )
        return _detail(s, trial)


def fork_trial(
    *, db: Database, trial_id: int, from_epoch: int, changes: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """A new trial that starts from `trial_id`'s checkpoint at `from_epoch`, with changes.

    For the built-in trainer, `changes` are TrainConfig fields a resumed run can honour
    (FORKABLE); for a task's own function, params: keys of the study's space (checked by
    its distribution) or of its task.params (any JSON scalar). A fork is a submission of
    one trial: the same caps hold (epochs, the trials a study may have, a panda trial's
    checkpoints), and the route spends the same rate.
    """
    if errors := value_errors(changes, prefix="changes"):
        raise InvalidSpec(errors=errors)
    with db.session() as s:
        parent = get_or_404(s, Trial, trial_id)
        study = s.get(Study, parent.study_id)
        assert study is not None
        spec = stored_spec(study.spec, fingerprint=study.spec_sha256)
        if spec.entrypoint is None:
            _check_forkable(changes)
        else:
            _check_task_changes(spec, changes, settings)
        ckpt = checkpoint_at(s, trial_id, from_epoch)
        if ckpt is None:
            have = ", ".join(map(str, checkpoint_epochs(s, trial_id))) or "none"
            raise InvalidSpec.at(
                "from_epoch",
                f"trial {trial_id} has no checkpoint at epoch {from_epoch}; it has {have}",
                from_epoch,
            )
        epochs: Any
        if spec.entrypoint is None:
            forked = _forked_config(parent.config, changes, from_epoch)
            config, epochs, caps = forked.model_dump(mode="json"), forked.epochs, forked
        else:
            config = _forked_params(parent.config, changes, from_epoch)
            epochs, caps = config.get("epochs"), None
        _check_fork_caps(s, study, caps, epochs, settings)
        _reopen_study(s, parent.study_id)
        child = _add_fork(s, parent, ckpt, config=config, changes=changes)
        return {**_detail(s, child), "parent_trial_id": parent.id, "fork_epoch": from_epoch}


def _check_fork_caps(
    s: Session, study: Study, config: TrainConfig | None, epochs: Any, settings: Settings
) -> None:
    """The caps a submitted spec meets, for one more trial of `study` (`config`: a
    trainer's trial's, whose network is capped too; `epochs`: the fork's length, if any)."""
    errors = [
        {"loc": f"changes.{field}", "msg": msg, "input": value}
        for field, msg, value in (cap_errors(config, settings) if config is not None else [])
    ]
    if study.mode == "panda" and isinstance(epochs, int):  # every checkpoint is kept
        every = stored_spec(study.spec, fingerprint=study.spec_sha256).execution.checkpoint_every
        errors += epochs_checkpoint_errors(epochs, every, settings, loc="changes.epochs")
    if errors:
        raise InvalidSpec(errors=errors)
    trials = s.scalar(select(func.count()).where(Trial.study_id == study.id)) or 0
    if trials >= settings.max_trials_per_study:
        raise Conflict(
            f"study {study.id} has {trials} trials, the most a study may have "
            f"({settings.max_trials_per_study}, max_trials_per_study); fork in a new study"
        )


def _check_forkable(changes: dict[str, Any]) -> None:
    """InvalidSpec naming every change a fork of a trainer's trial cannot make."""
    errors = [
        {
            "loc": f"changes.{key}",
            "msg": (
                "cannot change in a fork: the checkpoint's weights fit the old value"
                if key in TrainConfig.model_fields
                else "not a TrainConfig field"
            ),
            "input": value,
        }
        for key, value in changes.items()
        if key not in FORKABLE
    ]
    if errors:
        raise InvalidSpec(errors=errors)


def _forked_config(config: dict[str, Any], changes: dict[str, Any], from_epoch: int) -> TrainConfig:
    """The parent's config with `changes`, checked as the trainer will read it."""
    try:
        forked = TrainConfig(**{**config, **changes})
    except ValidationError as exc:
        raise InvalidSpec(
            errors=[
                {
                    "loc": "changes." + ".".join(str(p) for p in e["loc"]),
                    "msg": e["msg"],
                    "input": e.get("input"),
                }
                for e in exc.errors()
            ]
        ) from None
    if forked.epochs <= from_epoch:
        raise InvalidSpec.at(
            "changes.epochs",
            f"must be more than from_epoch ({from_epoch}) to train at all",
            forked.epochs,
        )
    return forked


def _check_task_changes(spec: StudySpec, changes: dict[str, Any], settings: Settings) -> None:
    """InvalidSpec naming every change a fork of a task's trial cannot make: a key that is
    not a param of the study's (its space or task.params), a value its space does not
    hold, a fixed param set to something other than a JSON scalar, epochs out of bounds."""
    assert spec.task is not None
    known = sorted({*spec.space, *spec.task.params})
    errors = []
    for key, value in changes.items():
        dist = spec.space.get(key)
        if dist is not None:
            problem = _space_problem(dist, value)
        elif key not in spec.task.params:
            problem = (
                f"not a param of this study: a fork changes a key of its space or task.params "
                f"({', '.join(known) or 'it has none'}){suggest(key, known)}"
            )
        elif value is not None and not isinstance(value, str | int | float):
            problem = "a fixed param a fork sets is a string, a number, true, false or null"
        else:
            problem = None
        if problem is None and key == "epochs" and not _whole(value, settings.max_epochs):
            problem = (
                f"epochs is a trial's length: a whole number from 1 to {settings.max_epochs} "
                "(max_epochs)"
            )
        if problem is not None:
            errors.append({"loc": f"changes.{key}", "msg": problem, "input": value})
    if errors:
        raise InvalidSpec(errors=errors)


def _space_problem(dist: Distribution, value: Any) -> str | None:
    """Why `dist` (a space key's distribution) could not hold `value`, or None."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(dist, IntDistribution):
        step = f" in steps of {dist.step}" if dist.step != 1 else ""
        if _whole(value, dist.high, low=dist.low) and (value - dist.low) % dist.step == 0:
            return None
        return f"not in the space: a whole number from {dist.low} to {dist.high}{step}"
    if isinstance(dist, FloatDistribution):
        step = f" in steps of {show(dist.step)}" if dist.step else ""
        if number and dist.low <= value <= dist.high and _on_step(value, dist):
            return None
        return f"not in the space: a number from {show(dist.low)} to {show(dist.high)}{step}"
    if isinstance(dist, CategoricalDistribution):
        return None if dist.contains(value) else f"not one of the space's {show(dist.choices)}"
    return None if dist.contains(value) else "not a value the space's distribution holds"


def _on_step(value: float, dist: FloatDistribution) -> bool:
    if dist.step is None:
        return True
    steps = (value - dist.low) / dist.step
    return abs(steps - round(steps)) <= 1e-9 * max(1.0, abs(steps))


def _whole(value: Any, cap: int, *, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= cap


def _forked_params(
    params: dict[str, Any], changes: dict[str, Any], from_epoch: int
) -> dict[str, Any]:
    """A task's trial's params with `changes` (checked already), if it trains at all."""
    forked = {**params, **changes}
    epochs = forked.get("epochs")
    if isinstance(epochs, int) and epochs <= from_epoch:
        raise InvalidSpec.at(
            "changes.epochs" if "epochs" in changes else "from_epoch",
            f"epochs ({epochs}) must be more than from_epoch ({from_epoch}) to train at all",
            changes.get("epochs", from_epoch),
        )
    return forked


def _add_fork(
    s: Session, parent: Trial, ckpt: Checkpoint, *, config: dict[str, Any], changes: dict[str, Any]
) -> Trial:
    """Queue the fork as the study's next trial, starting from `ckpt`, and say so."""
    number = (
        s.scalar(select(func.max(Trial.number)).where(Trial.study_id == parent.study_id)) or 0
    ) + 1
    child = Trial(
        study_id=parent.study_id,
        number=number,
        round_index=parent.round_index,
        params={**parent.params, **changes},
        config=config,
        status=TrialStatus.queued,
        attempt=0,
        retries=0,
        stop_requested=False,
        epochs_done=0,
        parent_trial_id=parent.id,
        fork_epoch=ckpt.epoch,
        resume_checkpoint_id=ckpt.id,
    )
    s.add(child)
    s.flush()
    emit(
        s,
        study_id=parent.study_id,
        type="trial.forked",
        trial_id=child.id,
        parent_trial_id=parent.id,
        from_epoch=ckpt.epoch,
        changes=changes,
        number=number,
    )
    return child


def continue_study(*, db: Database, study_id: int) -> None:
    """A panda study awaiting review goes on with its next trial."""
    with db.session() as s:
        study = get_or_404(s, Study, study_id)
        if not study.awaiting_review:
            raise Conflict(f"study {study_id} is not waiting for a review")
        study.awaiting_review = False
        emit(s, study_id=study_id, type="study.continued")

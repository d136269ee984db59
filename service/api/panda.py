"""Routes to babysit trials: pause, resume, fork from a checkpoint, continue a review."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from service.api.deps import (
    DbDep,
    ReadScope,
    SettingsDep,
    StudyId,
    SubmitRate,
    TrialId,
    WriteScope,
)
from service.api.docs import problem_responses
from service.checkpoints import list_checkpoints
from service.panda import continue_study, fork_trial, pause_trial, resume_trial
from service.schemas import StudyRead, TrialDetail
from service.studies import get_study

router = APIRouter(prefix="/api", tags=["panda"])


class ForkRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"from_epoch": 20, "changes": {"learning_rate": 0.001}}]},
    )

    from_epoch: int = Field(ge=1, description="the epoch of the parent's checkpoint to start from")
    changes: dict[str, Any] = Field(
        default_factory=dict,
        description="hyperparameters to change: for the built-in trainer, the optimization "
        "only (learning rate, L2, decay...); for a task's function, params of its space "
        "(within their distributions) or of its task.params",
    )


class ForkRead(TrialDetail):
    pass


class CheckpointRead(BaseModel):
    id: int
    attempt: int
    epoch: int
    size_bytes: int


@router.post(
    "/trials/{trial_id}/pause",
    response_model=TrialDetail,
    dependencies=[WriteScope],
    responses=problem_responses(404, 409),
)
def post_pause(trial_id: TrialId, db: DbDep) -> dict[str, Any]:
    """Pause a trial: a waiting one now, a running one after its epoch, with a checkpoint."""
    return pause_trial(db=db, trial_id=trial_id)


@router.post(
    "/trials/{trial_id}/resume",
    response_model=TrialDetail,
    dependencies=[WriteScope],
    responses=problem_responses(404, 409),
)
def post_resume(trial_id: TrialId, db: DbDep) -> dict[str, Any]:
    """Queue a paused trial again; it continues from its latest checkpoint."""
    return resume_trial(db=db, trial_id=trial_id)


@router.post(
    "/trials/{trial_id}/fork",
    status_code=status.HTTP_201_CREATED,
    response_model=ForkRead,
    dependencies=[WriteScope, SubmitRate],
    responses=problem_responses(404, 409, 422, 429),
)
def post_fork(
    trial_id: TrialId, body: ForkRequest, db: DbDep, settings: SettingsDep
) -> dict[str, Any]:
    """A new trial from this one's checkpoint at from_epoch, with some hyperparameters changed.

    Within the caps a submission meets (epochs, trials per study, a panda trial's
    checkpoints), and counted in the same submission rate.
    """
    return fork_trial(
        db=db,
        trial_id=trial_id,
        from_epoch=body.from_epoch,
        changes=body.changes,
        settings=settings,
    )


@router.get(
    "/trials/{trial_id}/checkpoints",
    response_model=list[CheckpointRead],
    dependencies=[ReadScope],
    responses=problem_responses(404),
)
def get_checkpoints(trial_id: TrialId, db: DbDep) -> list[dict[str, Any]]:
    """The trial's checkpoints: the epochs a fork can start from."""
    return list_checkpoints(db=db, trial_id=trial_id)


@router.post(
    "/studies/{study_id}/continue",
    response_model=StudyRead,
    dependencies=[WriteScope],
    responses=problem_responses(404, 409),
)
def post_continue(study_id: StudyId, db: DbDep) -> dict[str, Any]:
    """A panda study awaiting review goes on with its next queued trial."""
    continue_study(db=db, study_id=study_id)
    return get_study(db=db, study_id=study_id)

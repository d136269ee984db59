"""Routes for the course's lessons: which hyperparameters mattered in a study (fANOVA)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.api.deps import DbDep, ReadScope, StudyId
from service.importance import study_importance

router = APIRouter(prefix="/api", tags=["lessons"])


class Importance(BaseModel):
    name: str = Field(
        description="a space path; a layers space gives <path>.depth and <path>.units "
        "(the mean width on the units' scale)"
    )
    importance: float = Field(description="its share of the objective's variance (all sum to 1)")
    rank: int = Field(description="1 for the most important")
    scale: str = Field(description="the scale it was measured on: log, one_minus_log, ...")
    course_tier: int | None = Field(
        description="where the course ranks it: 1 first, 3 last; null: not in its list"
    )


class CourseTier(BaseModel):
    tier: int
    what: str


class ImportanceRead(BaseModel):
    study_id: int
    method: str = Field(description="fanova: functional ANOVA over a random forest (Optuna's)")
    metric: str = Field(description="the objective whose variance is explained")
    completed_trials: int = Field(description="completed trials with a value, when computed")
    trials_used: int = Field(description="the ones the forest was fitted to")
    sampled: bool = Field(description="a random sample of the completed trials was used")
    importances: list[Importance] = Field(description="most important first")
    course: list[CourseTier] = Field(description="the course's expected ranking, tier by tier")
    note: str | None = Field(description="why there are no importances yet")
    seconds: float = Field(description="what computing it took")
    cached: bool = Field(description="answered from the study's last computation")


@router.get(
    "/studies/{study_id}/importance", response_model=ImportanceRead, dependencies=[ReadScope]
)
def get_importance(study_id: StudyId, db: DbDep) -> dict[str, Any]:
    """Which hyperparameters mattered: each one's share of the objective's variance (fANOVA)."""
    return study_importance(db=db, study_id=study_id)

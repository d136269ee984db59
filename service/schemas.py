"""API schemas, named by role (StudyRead, StudiesPage, ...); separate from the ORM models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.models import StudyStatus, TrialStatus


class Objective(BaseModel):
    metric: str
    direction: str
    at: str


class RoundsProgress(BaseModel):
    current: int = Field(description="0-based index of the round being run")
    total: int


class TrialRead(BaseModel):
    id: int
    study_id: int
    number: int = Field(description="0-based position of the trial in its study")
    round: int
    status: TrialStatus
    params: dict[str, Any] = Field(description="the sampled hyperparameters, by spec path")
    value: float | None = Field(description="the study's objective for this trial")
    attempt: int
    retries: int
    epochs_done: int
    outcome: str | None
    error: str | None
    worker_id: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class TrialDetail(TrialRead):
    config: dict[str, Any] = Field(description="the full TrainConfig the trial trains with")


class StudyRead(BaseModel):
    id: int
    name: str
    status: StudyStatus
    strategy: str
    mode: str
    objective: Objective
    rounds: RoundsProgress
    counts: dict[str, int] = Field(description="number of trials in each status")
    total_trials: int
    best_trial: TrialDetail | None
    parent_study_id: int | None
    error: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    spec: dict[str, Any]


class StudiesPage(BaseModel):
    items: list[StudyRead]
    total: int
    limit: int
    offset: int


class TrialsPage(BaseModel):
    items: list[TrialRead]
    total: int
    limit: int
    offset: int


class MetricRead(BaseModel):
    epoch: int
    train_cost: float | None
    train_accuracy: float | None
    dev_cost: float | None
    dev_accuracy: float | None
    learning_rate: float | None
    seconds: float | None


class RoundRead(BaseModel):
    index: int
    box: dict[str, Any] | None
    created_at: datetime | None


class SpecValidation(BaseModel):
    valid: bool
    trials: int = Field(description="trials of the first round")
    rounds: int
    spec: dict[str, Any] = Field(description="the spec with every default filled in")


class WorkerRead(BaseModel):
    id: str
    name: str
    host: str
    pid: int | None
    alive: bool
    seconds_since_heartbeat: float
    trials_done: int
    running: list[int] = Field(description="ids of the trials it holds now")


class Health(BaseModel):
    status: Literal["ok"]
    version: str


# Worker protocol -----------------------------------------------------------------------


class EpochReport(BaseModel):
    model_config = ConfigDict(extra="ignore")

    epoch: int = Field(ge=1, description="1 after the first pass over the training set")
    train_cost: float | None = None
    train_accuracy: float | None = None
    dev_cost: float | None = None
    dev_accuracy: float | None = None
    learning_rate: float | None = None
    seconds: float | None = None


class WorkerRegister(BaseModel):
    name: str = Field(max_length=200)
    host: str | None = Field(None, max_length=200)
    pid: int | None = None


class WorkerRegistered(BaseModel):
    worker_id: str
    lease_seconds: float
    heartbeat_seconds: float


class ClaimRequest(BaseModel):
    worker_id: str
    max_trials: int = Field(1, ge=1, le=64)


class ClaimedTrial(BaseModel):
    trial_id: int
    study_id: int
    number: int
    attempt: int
    lease_token: str
    config: dict[str, Any]
    dataset: dict[str, Any]


class ClaimResponse(BaseModel):
    trials: list[ClaimedTrial]


class LeaseRequest(BaseModel):
    lease_token: str


class MetricsReport(BaseModel):
    lease_token: str
    epochs: list[EpochReport] = Field(max_length=100_000)


class FinishReport(BaseModel):
    lease_token: str
    outcome: Literal["completed", "diverged", "stopped", "failed"]
    error: str | None = Field(None, max_length=100_000)
    epochs: list[EpochReport] = Field(default_factory=list, max_length=100_000)


class StopFlag(BaseModel):
    stop: bool = Field(description="the service asks the worker to stop this trial")


class FinishResponse(BaseModel):
    status: TrialStatus

"""API schemas, named by role (StudyRead, StudiesPage, ...); separate from the ORM models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from service.models import StudyStatus, TrialStatus


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes (stored in UTC); PostgreSQL aware ones. Either
    # way the API says which zone: RFC 3339 date-times carry one, Z.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_iso(value: datetime) -> str:
    """The one way the service writes a time: ISO 8601 in UTC with Z, to the microsecond
    when it has any (2026-11-25T10:00:00.250000Z), as the API's documents do."""
    return _utc(value).isoformat().replace("+00:00", "Z")


Timestamp = Annotated[datetime, AfterValidator(_utc)]

_AT = "2026-11-25T10:00:00Z"
_TRIAL_EXAMPLE: dict[str, Any] = {
    "id": 12,
    "study_id": 3,
    "number": 1,
    "round": 0,
    "status": "completed",
    "params": {"learning_rate": 0.0031, "beta1": 0.93},
    "value": 0.915,
    "attempt": 1,
    "retries": 0,
    "epochs_done": 200,
    "outcome": "completed",
    "error": None,
    "worker_id": "w-5f2c9a01b3d4",
    "created_at": _AT,
    "started_at": _AT,
    "finished_at": _AT,
}
_STUDY_EXAMPLE: dict[str, Any] = {
    "id": 3,
    "name": "moons-adam",
    "status": "running",
    "strategy": "random",
    "mode": "caviar",
    "objective": {"metric": "dev_accuracy", "direction": "maximize", "at": "last"},
    "rounds": {"current": 0, "total": 1},
    "counts": {
        "queued": 40,
        "running": 8,
        "paused": 0,
        "completed": 11,
        "failed": 1,
        "pruned": 0,
        "stopped": 0,
    },
    "total_trials": 60,
    "planned_trials": 60,
    "finished_trials": 18,
    "best_trial": {**_TRIAL_EXAMPLE, "config": {"hidden_layers": [20, 7, 5], "epochs": 200}},
    "parent_study_id": None,
    "error": None,
    "created_at": _AT,
    "started_at": _AT,
    "finished_at": None,
    "spec": {"name": "moons-adam", "dataset": {"name": "moons"}},
}


class FieldError(BaseModel):
    loc: str = Field(description="dotted path of the wrong field, e.g. space.learning_rate.low")
    msg: str
    input: Any = None


class Problem(BaseModel):
    """An RFC 9457 problem: every 4xx and 5xx answer has this shape."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "/problems/invalid-spec",
                    "title": "The search spec is invalid",
                    "status": 422,
                    "detail": "space.learning_rate.low: must be > 0 for scale log (got 0)",
                    "errors": [
                        {
                            "loc": "space.learning_rate.low",
                            "msg": "must be > 0 for scale log (got 0)",
                            "input": 0,
                        }
                    ],
                }
            ]
        },
    )

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = Field(None, description="one entry per wrong field")


class Objective(BaseModel):
    metric: str
    direction: str
    at: str


class RoundsProgress(BaseModel):
    current: int = Field(description="0-based index of the round being run")
    total: int


class TrialRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_TRIAL_EXAMPLE]})

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
    parent_trial_id: int | None = Field(None, description="the trial this one was forked from")
    fork_epoch: int | None = Field(None, description="the parent's epoch the fork starts after")
    prune_reason: str | None = Field(None, description="why pruning stopped it")
    created_at: Timestamp | None
    started_at: Timestamp | None
    finished_at: Timestamp | None


class GradientCheckRead(BaseModel):
    """A trial's network checked before training (execution.gradient_check): backpropagation
    against two-sided differences, as trainer.gradcheck.GradientReport.to_json() has it."""

    model_config = ConfigDict(strict=True, extra="forbid")

    difference: float | None = Field(
        description="||g - g_approx|| / (||g|| + ||g_approx||) over the components checked "
        "(null: not a number)"
    )
    verdict: Literal["correct", "fine", "suspicious", "wrong"] = Field(
        description="below 1e-7 correct, below 1e-5 fine, above 1e-3 wrong (the trial failed)"
    )
    parameters: dict[str, float | None] = Field(
        max_length=1000, description="the same difference over each parameter: W1, b1, ..."
    )
    shapes: dict[str, list[int]] = Field(max_length=1000, description="each parameter's shape")
    examples: int = Field(ge=1, description="training examples in the batch")
    checked: int = Field(ge=0, description="components of the parameter vector compared")
    total: int = Field(ge=0, description="components the parameter vector has")
    epsilon: float = Field(gt=0, description="half the width of the two-sided difference")


class TrialDetail(TrialRead):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**_TRIAL_EXAMPLE, "config": {"hidden_layers": [20, 7, 5], "epochs": 200}}]
        }
    )

    config: dict[str, Any] = Field(description="the full TrainConfig the trial trains with")
    gradient_check: GradientCheckRead | None = Field(
        None, description="its network's gradient check, with execution.gradient_check"
    )


class StudyRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_STUDY_EXAMPLE]})

    id: int
    name: str
    status: StudyStatus
    strategy: str
    mode: str
    objective: Objective
    rounds: RoundsProgress
    counts: dict[str, int] = Field(description="number of trials in each status")
    total_trials: int = Field(description="trials that exist now")
    planned_trials: int = Field(
        description="trials the study runs in all (later coarse-to-fine rounds included)"
    )
    finished_trials: int = Field(
        description="trials that ran and ended: a trial stopped before it started (a "
        "cancel stops the queued ones) is not counted, so a cancelled study is not shown done"
    )
    best_trial: TrialDetail | None
    parent_study_id: int | None
    error: str | None
    awaiting_review: bool = Field(
        False, description="panda with await_review: the next trial waits for POST .../continue"
    )
    waiting_for: str | None = Field(
        None,
        description="why queued trials of a task's function do not run: no live worker "
        "offers its entrypoint (caviar worker --entrypoint); null otherwise",
    )
    created_at: Timestamp | None
    started_at: Timestamp | None
    finished_at: Timestamp | None
    spec: dict[str, Any]


class StudyRetried(StudyRead):
    requeued: int = Field(description="how many failed trials went back to the queue")


class StudiesPage(BaseModel):
    items: list[StudyRead]
    total: int = Field(description="studies matching the filters, over all pages")
    limit: int
    offset: int


class TrialsPage(BaseModel):
    items: list[TrialRead]
    total: int = Field(description="trials matching the filters, over all pages")
    limit: int
    offset: int


class TrialsExport(BaseModel):
    """One flat row per trial: fixed columns, then `param.<path>`, then `final.<metric>`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "study_id": 3,
                    "name": "moons-adam",
                    "objective": {"metric": "dev_accuracy", "direction": "maximize", "at": "last"},
                    "columns": ["trial_id", "number", "status", "value", "param.learning_rate"],
                    "rows": [
                        {
                            "trial_id": 12,
                            "number": 1,
                            "status": "completed",
                            "value": 0.915,
                            "param.learning_rate": 0.0031,
                        }
                    ],
                }
            ]
        }
    )

    study_id: int
    name: str
    objective: Objective
    columns: list[str] = Field(description="every row's keys, in the CSV export's order")
    rows: list[dict[str, Any]]


class MetricRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "epoch": 12,
                    "train_cost": 0.231,
                    "train_accuracy": 0.912,
                    "dev_cost": 0.262,
                    "dev_accuracy": 0.895,
                    "learning_rate": 0.0031,
                    "seconds": 0.018,
                }
            ]
        }
    )

    epoch: int
    train_cost: float | None
    train_accuracy: float | None
    dev_cost: float | None
    dev_accuracy: float | None
    learning_rate: float | None
    seconds: float | None
    extra: dict[str, float | None] = Field(
        default_factory=dict,
        description="metrics of other names the epoch reported (a task's own function's)",
    )


class RoundRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "index": 1,
                    "box": {"learning_rate": {"low": 0.001, "high": 0.02}},
                    "created_at": _AT,
                }
            ]
        }
    )

    index: int
    box: dict[str, Any] | None
    created_at: Timestamp | None


class SpecValidation(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"valid": True, "trials": 24, "rounds": 1, "spec": {"name": "moons-adam"}}]
        }
    )

    valid: bool
    trials: int = Field(description="trials of the first round")
    rounds: int
    spec: dict[str, Any] = Field(description="the spec with every default filled in")


class ParamPreview(BaseModel):
    distribution: dict[str, Any]
    values: list[Any] = Field(description="the value each of the first n trials gets")
    positions: list[float | None] = Field(description="0 = low, 1 = high, on the param's scale")
    levels: list[Any] | None = Field(None, description="grid only: the levels of this param")


class SpecPreview(BaseModel):
    strategy: str
    rounds: int
    trials_in_first_round: int
    total_trials: int
    n: int
    params: dict[str, ParamPreview] = Field(description="by space path")


class DatasetRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "ds-3f1a9c0d2b7e4f65",
                    "sha256": "3f1a9c0d2b7e4f65" + "0" * 48,
                    "name": "churn.csv",
                    "format": "csv",
                    "size_bytes": 48213,
                    "n_rows": 1000,
                    "n_columns": 12,
                    "label_column": "churned",
                    "created_at": _AT,
                }
            ]
        }
    )

    id: str = Field(description="what a study spec names in dataset.name")
    sha256: str
    name: str
    format: Literal["csv", "npz"]
    size_bytes: int
    n_rows: int = Field(description="examples, train and dev together")
    n_columns: int = Field(description="feature columns (the label excluded)")
    label_column: str | None
    created_at: Timestamp | None


class DatasetsPage(BaseModel):
    items: list[DatasetRead]
    total: int
    limit: int
    offset: int


class WorkerRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "w-5f2c9a01b3d4",
                    "name": "caviar-worker-1",
                    "host": "gpu-box",
                    "pid": 4242,
                    "alive": True,
                    "seconds_since_heartbeat": 1.2,
                    "trials_done": 37,
                    "running": [12],
                    "trainer": True,
                    "entrypoints": ["mypkg.train:objective"],
                }
            ]
        }
    )

    id: str
    name: str
    host: str
    pid: int | None
    alive: bool
    seconds_since_heartbeat: float
    trials_done: int
    running: list[int] = Field(description="ids of the trials it holds now")
    trainer: bool = Field(True, description="it runs the built-in trainer's trials")
    entrypoints: list[str] = Field(
        default_factory=list,
        description="the task functions it offers: it runs trials of studies naming one",
    )


class Health(BaseModel):
    status: Literal["ok"]
    version: str

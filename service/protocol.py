"""The worker protocol's bodies under /api/worker/: what workers send and get back.

Requests are strict (a number in a string is not a number) and bounded field by field; a
report's epochs and checkpoint are read first as *heads* (counted, not validated), and
validated once the trial's lease is known to hold (service.queue.results), so a flood of
fake results costs the service a count, not a validation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from service.models import TrialStatus
from service.schemas import GradientCheckRead

MAX_ID = 2**31 - 1  # ids are 32-bit INTEGER columns

# Bounds of worker bodies, checked as they are read (a body over them is refused before
# any lease is looked up): its bytes, results per claim, and epochs per report, rows or
# points. Workers send smaller claims (worker.runner splits its results).
MAX_WORKER_BODY_BYTES = 16 * 1024 * 1024
MAX_RESULTS_PER_CLAIM = 64
MAX_EPOCHS_PER_REPORT = 100_000
# A finished trial's last checkpoint rides with its result up to this size (base64 in
# the JSON); a larger one is uploaded on its own first (see worker.trial).
MAX_INLINE_CHECKPOINT_BYTES = 1 << 20
# Lease tokens and worker ids are the service's own (`w-` and hex; hex, `-` and an id).
_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,100}$"
# A task's entrypoint, as the spec takes it (service.spec.schema.ENTRYPOINT).
_ENTRYPOINT = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$"
MAX_ENTRYPOINTS = 64  # functions one worker offers
# A metric of a task's own (service.spec.schema.METRIC_NAME), and how many one curve has.
_METRIC_NAME = r"^[A-Za-z_]\w{0,31}$"
MAX_NAMED_METRICS = 64


def _no_nul(value: str) -> str:
    # PostgreSQL's text cannot hold NUL; a worker's error text keeps the rest of it.
    return value.replace("\x00", "\ufffd")


class _Request(BaseModel):
    # Request bodies are validated as their schema says: "5" is not a number, true is not 1.
    model_config = ConfigDict(strict=True)


class EpochReport(_Request):
    model_config = ConfigDict(extra="ignore", strict=True)

    epoch: int = Field(
        ge=1, le=2**31 - 1, description="1 after the first pass over the training set"
    )
    train_cost: float | None = None
    train_accuracy: float | None = None
    dev_cost: float | None = None
    dev_accuracy: float | None = None
    learning_rate: float | None = None
    seconds: float | None = None


_Column = Annotated[
    list[Annotated[float, Field(allow_inf_nan=False)] | None],
    Field(max_length=MAX_EPOCHS_PER_REPORT),
]


class Curve(_Request):
    """Epochs as columns, one list per metric, equally long: what a worker sends (rows
    cost the service several times more to read). A value that is not finite is null."""

    epoch: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(max_length=MAX_EPOCHS_PER_REPORT)
    train_cost: _Column = Field(default_factory=list)
    train_accuracy: _Column = Field(default_factory=list)
    dev_cost: _Column = Field(default_factory=list)
    dev_accuracy: _Column = Field(default_factory=list)
    learning_rate: _Column = Field(default_factory=list)
    seconds: _Column = Field(default_factory=list)
    extra: dict[Annotated[str, Field(pattern=_METRIC_NAME)], _Column] = Field(
        default_factory=dict,
        max_length=MAX_NAMED_METRICS,
        description="metrics of other names (a task's own function reports any): a column each",
    )

    @model_validator(mode="after")
    def _aligned(self) -> Curve:
        n = len(self.epoch)
        for name, column in self.extra.items():
            if len(column) != n:
                raise ValueError(f"extra.{name}: {len(column)} values for {n} epochs")
        for name in ("train_cost", "train_accuracy", "dev_cost", "dev_accuracy", "learning_rate"):
            column = getattr(self, name)
            if column and len(column) != n:  # an empty column: that metric was not reported
                raise ValueError(f"{name}: {len(column)} values for {n} epochs")
        if self.seconds and len(self.seconds) != n:
            raise ValueError(f"seconds: {len(self.seconds)} values for {n} epochs")
        return self


class InlineCheckpoint(_Request):
    epoch: int = Field(ge=1, le=2**31 - 1, description="the epoch it was taken after")
    content: str = Field(
        max_length=(MAX_INLINE_CHECKPOINT_BYTES + 2) // 3 * 4,
        description="trainer.Checkpoint bytes, base64",
    )


class WorkerRegister(_Request):
    name: Annotated[str, AfterValidator(_no_nul)] = Field(max_length=200)
    host: Annotated[str, AfterValidator(_no_nul)] | None = Field(None, max_length=200)
    pid: int | None = Field(None, ge=0, le=2**31 - 1)
    entrypoints: list[Annotated[str, Field(max_length=200, pattern=_ENTRYPOINT)]] = Field(
        default_factory=list,
        max_length=MAX_ENTRYPOINTS,
        description="the task functions (module.path:function) installed where the worker "
        "runs: it gets trials of studies whose task.entrypoint is one of them",
    )
    trainer: bool = Field(
        True, description="it also runs the built-in trainer's trials (studies with no entrypoint)"
    )

    @model_validator(mode="after")
    def _offers_something(self) -> WorkerRegister:
        if not self.trainer and not self.entrypoints:
            raise ValueError(
                "a worker that runs no trainer trials (trainer: false) must offer at least "
                "one entrypoint, or it could never be given a trial"
            )
        if len(set(self.entrypoints)) != len(self.entrypoints):
            raise ValueError(f"entrypoints: each at most once (got {self.entrypoints})")
        return self


class WorkerRegistered(BaseModel):
    worker_id: str
    lease_seconds: float
    heartbeat_seconds: float


class ClaimRequest(_Request):
    worker_id: str = Field(pattern=_ID_PATTERN)
    max_trials: int = Field(1, ge=1, le=MAX_RESULTS_PER_CLAIM)
    target_seconds: float | None = Field(
        None,
        ge=0,
        le=3600,
        description="lease trials of studies whose trials are known to take this long in "
        "all, one at least (one alone of a study whose length is not known or longer); "
        "null: up to max_trials",
    )
    busy_seconds: float = Field(
        0.0,
        ge=0,
        le=86_400,
        description="the worker is still busy this long (the end of its running trial)",
    )
    study_id: int | None = Field(
        None,
        ge=1,
        le=MAX_ID,
        description="lease only this study's trials (a program asking for one study's "
        "trials); null: any study the worker runs",
    )


class ResumeFrom(BaseModel):
    checkpoint_id: int
    epoch: int


class ClaimedTrial(BaseModel):
    trial_id: int
    study_id: int
    number: int
    attempt: int
    lease_token: str
    config: dict[str, Any]
    dataset: dict[str, Any]
    checkpoint_every: int = Field(0, description="save a checkpoint every this many epochs")
    checkpoint_seconds: float = Field(
        0.0,
        description="but at most one per this many seconds, besides the last epoch's (0: no limit)",
    )
    resume: ResumeFrom | None = Field(None, description="start from this checkpoint")
    report_at: list[int] = Field(
        default_factory=list,
        description="epochs to report as soon as they end (where pruning decides)",
    )
    expected_seconds: float | None = Field(
        None, description="how long the study's trials have taken (null: not known yet)"
    )
    gradient_check: bool = Field(
        False, description="check the network's gradients before training, and report them"
    )
    entrypoint: str | None = Field(
        None,
        description="the study's task.entrypoint: call this function with config as its "
        "params (null: train config with the built-in trainer)",
    )
    metric: str | None = Field(
        None, description="a task's objective.metric: the name of what its function returns"
    )


class ClaimResponse(BaseModel):
    trials: list[ClaimedTrial]


class LeaseRequest(_Request):
    lease_token: str = Field(pattern=_ID_PATTERN)


class MetricsReport(_Request):
    lease_token: str = Field(pattern=_ID_PATTERN)
    epochs: list[EpochReport] = Field(default_factory=list, max_length=MAX_EPOCHS_PER_REPORT)
    curve: Curve | None = Field(None, description="more epochs, as columns")


class FinishReport(MetricsReport):
    outcome: Literal["completed", "diverged", "stopped", "failed"]
    error: Annotated[str, AfterValidator(_no_nul)] | None = Field(None, max_length=100_000)
    seconds: float | None = Field(
        None, ge=0, le=10**9, description="how long the trial ran on the worker"
    )
    checkpoint: InlineCheckpoint | None = Field(
        None, description="the state after its last epoch, instead of an upload of its own"
    )
    gradient_check: GradientCheckRead | None = Field(
        None, description="its network's gradient check before training, when it was asked"
    )
    value: float | None = Field(
        None,
        allow_inf_nan=False,
        description="what a task's own function returned as objective.metric: the trial's "
        "value as is (null: read from its curve, as the built-in trainer's)",
    )


# What the service reads of a report before its lease is checked: the same fields, with
# the epochs and the checkpoint only counted; they are validated (as EpochReport, Curve
# and InlineCheckpoint) once the lease holds, against the trial (service.queue.results).
class MetricsReportHead(_Request):
    lease_token: str = Field(pattern=_ID_PATTERN)
    epochs: list[Any] = Field(default_factory=list, max_length=MAX_EPOCHS_PER_REPORT)
    curve: dict[str, Any] | None = None


class FinishReportHead(MetricsReportHead):
    outcome: Literal["completed", "diverged", "stopped", "failed"]
    error: Annotated[str, AfterValidator(_no_nul)] | None = Field(None, max_length=100_000)
    seconds: float | None = Field(None, ge=0, le=10**9)
    checkpoint: dict[str, Any] | None = None
    gradient_check: GradientCheckRead | None = None  # small and bounded: validated at once
    value: float | None = Field(None, allow_inf_nan=False)


class StopFlag(BaseModel):
    stop: bool = Field(description="the service asks the worker to stop this trial")


class FinishResponse(BaseModel):
    status: TrialStatus


class FinishedTrial(FinishReport):
    trial_id: int = Field(ge=1, le=MAX_ID)


class ClaimAndReport(ClaimRequest):
    """A claim that also reports the trials finished since the last one: short trials
    then cost one round trip and one transaction per batch, not per trial."""

    max_trials: int = Field(1, ge=0, le=MAX_RESULTS_PER_CLAIM, description="0 only reports")
    finished: list[FinishedTrial] = Field(default_factory=list, max_length=MAX_RESULTS_PER_CLAIM)


class FinishedTrialHead(FinishReportHead):
    trial_id: int = Field(ge=1, le=MAX_ID)


class ClaimAndReportHead(ClaimRequest):
    """ClaimAndReport as read before the leases are checked (see FinishReportHead)."""

    max_trials: int = Field(1, ge=0, le=MAX_RESULTS_PER_CLAIM)
    finished: list[FinishedTrialHead] = Field(
        default_factory=list, max_length=MAX_RESULTS_PER_CLAIM
    )


class FinishAnswer(BaseModel):
    trial_id: int
    status: TrialStatus | None = Field(description="the trial's new status; null if refused")
    error: str | None = Field(
        description="why a result was refused (the lease was lost, it does not fit its trial)"
    )


class ClaimAndReportResponse(ClaimResponse):
    finished: list[FinishAnswer]
    waiting: bool = Field(
        False,
        description="no trial was leased, but queued ones wait for a free slot (a study at "
        "its max_parallel, a panda study's running trial, a coarse-to-fine round being "
        "planned): the queue is not empty",
    )

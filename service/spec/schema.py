"""The spec's schema: the pydantic model of each block, and the plan of one trial.

A spec names a data set, a base model (a ``TrainConfig`` given as the fields to change),
a space of distributions keyed by dotted paths into the model, a strategy, an objective,
how to execute and how to prune (field by field in docs/spec.md, which
`service.spec.reference` writes from the descriptions here). The schema alone checks
each block's own fields; `service.spec.parse_spec` also checks the spec against the
model and the caps.

Space paths and distributions::

    space:
      learning_rate:   {type: float, low: 1.0e-4, high: 1.0, scale: log}
      beta1:           {type: float, low: 0.9, high: 0.999, scale: one_minus_log}
      keep_prob:       {type: float, low: 0.5, high: 1.0, step: 0.05}
      hidden_layers.0: {type: int, low: 5, high: 50}          # one width of model.hidden_layers
      epochs:          {type: int, low: 10, high: 1000, scale: log}
      init:            {type: categorical, choices: [he, xavier]}

A path is a model field, or ``<list field>.<index>`` for one element of a list the base
model already has. A distribution must fit the field: ``float`` for a float field,
``int`` for an int or float field, ``categorical`` for anything (its choices are any JSON
values, so ``hidden_layers`` can be a choice of lists: ``choices: [[50], [20, 7, 5]]``).

Depth and widths together - "1 to 4 hidden layers, 5 to 200 units each on a log
scale" - is the ``layers`` distribution on ``hidden_layers``::

    hidden_layers: {type: layers, depth: {low: 1, high: 4}, units: {low: 5, high: 200, scale: log}}

``depth`` and ``units`` are int distributions (``type: int`` may be left out). A trial
first draws the depth, then one width per layer that exists, each from ``units``; widths
of layers that do not exist are not drawn (on the grid, each depth is combined only with
widths for its own layers). ``hidden_layers`` then cannot also appear as
``hidden_layers.<index>``.

With a ``task`` that names an entrypoint (your own objective function, see ``task``),
space keys are free names - identifiers, dots allowed (``optimizer.lr``) - and the
function gets them in one flat dict keyed by the space key, over ``task.params``;
only the distributions themselves are checked.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from service.search.distributions import AnyDistribution
from service.search.strategies import SearchSpace
from trainer.config import TrainConfig, plain_value

BUILTIN_DATASETS = ("moons", "circles", "spirals", "blobs", "xor", "digits", "breast_cancer")
GENERATED_DATASETS = ("moons", "circles", "spirals", "blobs", "xor")
# An uploaded data set's id: ds- and the first 16 hex digits of its SHA-256
# (service/datasets.py), so a name that is neither this nor a built-in is refused here,
# where the CLI, the API and the dashboard all check it, not only by the database.
UPLOAD_ID = re.compile(r"ds-[0-9a-f]{16}")
METRICS = ("dev_accuracy", "dev_cost", "train_accuracy", "train_cost")
# A task's entrypoint: "module.path:function", importable where the workers run.
ENTRYPOINT = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
# A metric or space key of a task's own: identifiers, dots allowed in space keys.
METRIC_NAME = re.compile(r"[A-Za-z_]\w{0,31}")
FREE_PATH = re.compile(r"[A-Za-z_]\w*(?:\.\w+)*")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return plain_value(cls, value, info)


class DatasetSpec(_Strict):
    """A built-in generator, a built-in real data set, or the id of an uploaded one."""

    name: str = Field(
        max_length=200,
        description="a built-in data set (below), or the id of an uploaded one: ds- and 16 "
        "hex digits, as `caviar datasets upload` prints it",
    )
    n_samples: int = Field(
        1000, ge=4, description="generators only: examples drawn, train and dev together"
    )
    noise: float = Field(
        0.2,
        ge=0.0,
        le=1000.0,
        description="generators only: standard deviation of the Gaussian noise added to the "
        "points (spirals: to the angle, in radians)",
    )
    dev_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="share of the examples held out as the dev set"
    )
    seed: int = Field(
        0, ge=0, lt=2**63, description="seed of the generator and of the train/dev split"
    )
    label_column: str | None = Field(
        None,
        min_length=1,
        description="uploaded data only: the CSV column (or NPZ array) holding y; default: "
        "the one named at upload",
    )
    # What trainer.load_dataset also takes.
    n_classes: int | None = Field(
        None,
        ge=2,
        le=50,
        description="spirals and blobs only: how many classes to draw (default 2 for "
        "spirals, 3 for blobs)",
    )
    standardize: bool = Field(
        True,
        description="scale each feature to mean 0 and variance 1, with the training part's "
        "statistics only",
    )
    task: Literal["binary", "multiclass", "regression"] | None = Field(
        None,
        description="default: inferred from the labels (two classes: binary; more integer "
        "or string labels: multiclass; other numbers: regression)",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not name.strip():
            raise ValueError(
                f"must be a built-in data set ({', '.join(BUILTIN_DATASETS)}) "
                f"or an uploaded data set's id (got {name!r})"
            )
        if name != name.strip():
            raise ValueError(f"must not start or end with spaces (got {name!r})")
        if name not in BUILTIN_DATASETS and not UPLOAD_ID.fullmatch(name):
            close = difflib.get_close_matches(name, BUILTIN_DATASETS, n=1, cutoff=0.7)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"not a built-in data set ({', '.join(BUILTIN_DATASETS)}) nor an uploaded "
                f"data set's id (ds- and 16 hex digits, as `caviar datasets upload` prints)"
                f"{hint} (got {name!r})"
            )
        return name

    @model_validator(mode="after")
    def _label_column(self) -> DatasetSpec:
        if self.label_column is not None and self.is_builtin:
            raise ValueError(
                f"label_column: only for an uploaded data set, not the built-in "
                f"{self.name!r} (got {self.label_column!r})"
            )
        return self

    @model_validator(mode="after")
    def _n_classes(self) -> DatasetSpec:
        if self.n_classes is not None and self.name not in ("spirals", "blobs"):
            raise ValueError(
                f"n_classes: only for spirals and blobs (got {self.n_classes} for {self.name!r})"
            )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Dumped, the block is what trainer.load_dataset takes: no unset options, and no
        # generator-only keys for a real data set (parsing it again restores the defaults).
        out: dict[str, Any] = {k: v for k, v in handler(self).items() if v is not None}
        if not self.is_generated:
            out.pop("n_samples", None)
            out.pop("noise", None)
        return out

    def loader_args(self) -> dict[str, Any]:
        """The mapping `trainer.load_dataset` takes for a built-in data set.

        The same as the dumped block. For an uploaded data set the service adds the file's
        ``path`` (the ``name`` is its id).
        """
        return self.model_dump()

    @property
    def is_builtin(self) -> bool:
        return self.name in BUILTIN_DATASETS

    @property
    def is_generated(self) -> bool:
        """Whether `n_samples` and `noise` apply (a spec setting them for another is refused)."""
        return self.name in GENERATED_DATASETS


class StrategySpec(_Strict):
    """How trials are chosen: grid, random, sobol or coarse_to_fine. Each type reads the
    fields whose meaning names it; a field only other types read, set to other than its
    default, is refused (it would change nothing)."""

    type: Literal["grid", "random", "sobol", "coarse_to_fine"] = Field(
        "random",
        description="grid: every combination of grid_points values per dimension; random: "
        "independent draws, uniform on each distribution's scale; sobol: a scrambled Sobol "
        "sequence, which covers the space more evenly; coarse_to_fine: rounds, each in a "
        "smaller box around the best trials so far",
    )
    trials: int = Field(60, ge=1, description="random and sobol: how many trials")
    grid_points: int = Field(5, ge=1, description="grid: points per continuous dimension")
    rounds: int = Field(
        3, ge=1, description="coarse_to_fine: how many rounds, the first over the whole space"
    )
    trials_per_round: int = Field(20, ge=1, description="coarse_to_fine: trials in each round")
    keep_top: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="coarse_to_fine: the share of the best trials so far whose span makes the "
        "next round's box (0.25: the best quarter), never fewer than 5 trials",
    )
    margin: float = Field(
        0.1, ge=0.0, le=1.0, description="coarse_to_fine: widen the best's span by this share"
    )
    placement: Literal["model", "uniform"] = Field(
        "model",
        description=(
            "coarse_to_fine: where in the box a round's trials go - model: a Gaussian "
            "process of the finished trials narrows the box to where it may peak and places "
            "the round by Thompson sampling, the last round for the best value it may find; "
            "uniform: uniformly in the box"
        ),
    )


class ObjectiveSpec(_Strict):
    """What a trial's value is; `direction` defaults to the one the metric needs."""

    metric: str = Field(
        "dev_accuracy",
        description="a trial's value: the built-in trainer's dev_accuracy, dev_cost, "
        "train_accuracy or train_cost; with a task entrypoint, the name of a metric the "
        "function returns (default value), an identifier of at most 32 characters",
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        None,
        description="default: maximize for an accuracy, minimize for a cost; the other one "
        "is refused (it would look for the worst model); required for a task's own metric",
    )
    at: Literal["last", "best"] = Field(
        "last", description="last: the metric after the last epoch; best: its best epoch's"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_direction(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("direction") is None:
            metric = data.get("metric", "dev_accuracy")
            if metric not in METRICS:  # a task's own metric: its direction must be given
                return data
            natural = "minimize" if str(metric).endswith("_cost") else "maximize"
            return {**data, "direction": natural}
        return data

    @field_validator("metric")
    @classmethod
    def _metric_name(cls, metric: str) -> str:
        if not METRIC_NAME.fullmatch(metric):
            raise ValueError(
                f"must be an identifier of at most 32 characters: letters, digits and _, "
                f"not starting with a digit (got {metric!r})"
            )
        return metric

    @model_validator(mode="after")
    def _consistent(self) -> ObjectiveSpec:
        if self.metric not in METRICS:  # a task's own: checked against the task by StudySpec
            return self
        natural = "minimize" if self.metric.endswith("_cost") else "maximize"
        if self.direction != natural:
            raise ValueError(
                f"direction: {self.metric} is to {natural}, a search that would "
                f"{self.direction} it finds the worst model (got {self.direction!r})"
            )
        return self


class ExecutionSpec(_Strict):
    """How the queue runs a study's trials."""

    mode: Literal["caviar", "panda"] = Field(
        "caviar",
        description="caviar: many trials at once; panda: one trial at a time, watched, with "
        "a checkpoint every checkpoint_every epochs to pause, resume and fork from",
    )
    max_parallel: int = Field(
        8, ge=1, le=100_000, description="at most this many of its trials running at once"
    )
    seed: int = Field(
        42, ge=0, lt=2**63, description="seed of the strategy: the same seed, the same trials"
    )
    max_retries: int = Field(
        2,
        ge=0,
        le=100,
        description="times a trial whose worker crashed or vanished is queued again before "
        "it counts as failed",
    )
    checkpoint_every: int = Field(
        10, ge=1, description="save the training state every this many epochs"
    )
    await_review: bool = Field(
        False,
        description="panda only: after each trial, wait until a person continues the study "
        "(`caviar continue`, or the dashboard) - so a served study, not one of `caviar run` "
        "or optimize(), which refuse it",
    )
    gradient_check: bool = Field(
        False,
        description="check each trial's backpropagation before it trains: two-sided "
        "differences in float64 on 16 training examples, at most 100 components of each "
        "parameter; the relative difference is kept on the trial, and a trial above 1e-3 "
        "fails with the numbers (`caviar gradcheck` checks the model block alone)",
    )

    @model_validator(mode="after")
    def _review_needs_panda(self) -> ExecutionSpec:
        if self.await_review and self.mode != "panda":
            raise ValueError(
                f"await_review: only with mode panda, one trial at a time (got mode {self.mode!r})"
            )
        return self


class PruningSpec(_Strict):
    """Stopping unpromising trials early: none, median or ASHA."""

    type: Literal["none", "median", "asha"] = Field(
        "none",
        description="none; median: stop a trial whose best so far is worse than the median "
        "of the others' at the same epoch; asha: asynchronous successive halving, keeping "
        "the best 1 / reduction_factor at each rung",
    )
    warmup_epochs: int = Field(
        10, ge=0, description="median: epochs a trial runs before it can be stopped"
    )
    min_epochs: int = Field(5, ge=1, description="asha: rungs at min_epochs * reduction_factor^k")
    reduction_factor: int = Field(
        3, ge=2, description="asha: a rung keeps the best 1 / reduction_factor of its trials"
    )


class TaskSpec(_Strict):
    """What a trial runs: the built-in trainer, or an objective function of your own.

    ``entrypoint: mypkg.train:objective`` names a function installed where the workers
    run (``caviar worker --entrypoint mypkg.train:objective`` imports it; the service
    never does). It is called as ``objective(params, trial)``: ``params`` is
    ``task.params`` overlaid by the trial's sampled values, keyed by space key, and
    ``trial`` reports epochs (``trial.report(epoch, accuracy=0.9)``), says when to stop
    (``trial.should_stop()``) and keeps checkpoints (``trial.checkpoint(data)``,
    ``trial.resume()``). It returns the objective's value, or a dict of metrics holding
    ``objective.metric``. Such a spec has no ``dataset`` or ``model`` block: fixed values
    go in ``task.params``. A param named ``epochs`` (an int) is the trial's length to the
    service: no epoch past it is stored, and pruning places its decisions below it.
    """

    entrypoint: str | None = Field(
        None,
        max_length=200,
        description="module.path:function of your objective, importable where workers run; "
        "not set: the built-in trainer",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="fixed values passed to the function with the sampled ones "
        "(a sampled value of the same name overrides its fixed one)",
    )

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint(cls, entrypoint: str | None) -> str | None:
        if entrypoint is not None and not ENTRYPOINT.fullmatch(entrypoint):
            raise ValueError(
                "must be module.path:function, such as mypkg.train:objective: a dotted "
                f"module path, a colon, then the function's name (got {entrypoint!r})"
            )
        return entrypoint


class StudySpec(_Strict):
    """A whole search. Build it with `parse_spec`, which also checks it against the model."""

    name: str = Field(
        min_length=1, max_length=200, description="the study's name in lists and exports"
    )
    task: TaskSpec | None = Field(
        None,
        description="what a trial runs: the built-in trainer (not set), or your own function",
    )
    dataset: DatasetSpec | None = Field(
        None, description="the data to train on; required unless a task names an entrypoint"
    )
    model: dict[str, Any] = Field(
        default_factory=dict,
        description="the base model: the TrainConfig fields to change from their defaults",
    )
    space: dict[str, AnyDistribution] = Field(
        default_factory=dict,
        description="what to search: a distribution for each model path to vary; empty only "
        "with a single trial (the base model trained once), as more would all be the same",
    )
    strategy: StrategySpec = Field(
        default_factory=lambda: StrategySpec(), description="how trials are chosen"
    )
    objective: ObjectiveSpec = Field(
        default_factory=lambda: ObjectiveSpec.model_validate({}),
        description="what a trial's value is",
    )
    execution: ExecutionSpec = Field(
        default_factory=lambda: ExecutionSpec(), description="how the trials run"
    )
    pruning: PruningSpec = Field(
        default_factory=lambda: PruningSpec(), description="stopping unpromising trials early"
    )

    @field_validator("pruning", mode="before")
    @classmethod
    def _null_pruning(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not name.strip():
            raise ValueError(f"must not be blank (got {name!r})")
        return name

    @model_validator(mode="before")
    @classmethod
    def _task_metric(cls, data: Any) -> Any:
        # A task's own objective is named `value` unless the spec names another.
        if not isinstance(data, dict) or not _names_entrypoint(data.get("task")):
            return data
        objective = data.get("objective")
        if objective is None:
            return {**data, "objective": {"metric": "value"}}
        if isinstance(objective, dict) and objective.get("metric") is None:
            return {**data, "objective": {**objective, "metric": "value"}}
        return data

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A task's spec has no dataset or model block: dumped, it parses back as given.
        out: dict[str, Any] = handler(self)
        if self.entrypoint is not None:
            out.pop("dataset", None)
            out.pop("model", None)
        elif self.task is None:
            out.pop("task", None)
        return out

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """objective.direction, which a checked spec always has (see `parse_spec`)."""
        if self.objective.direction is None:
            raise ValueError(f"objective.direction: not given for {self.objective.metric!r}")
        return self.objective.direction

    @property
    def entrypoint(self) -> str | None:
        """The task's function (module.path:function), or None for the built-in trainer."""
        return self.task.entrypoint if self.task is not None else None

    def base_config(self) -> TrainConfig:
        """The model block over TrainConfig's defaults (raises if the block is invalid)."""
        return TrainConfig(**self.model)

    def search_space(self) -> SearchSpace:
        return SearchSpace(self.space)

    def to_json(self) -> dict[str, Any]:
        """JSON-able and complete (defaults filled in); `parse_spec` reads it back as equal."""
        return self.model_dump(mode="json", exclude_none=True)


def _names_entrypoint(task: Any) -> bool:
    return isinstance(task, dict) and task.get("entrypoint") is not None


@dataclass(frozen=True)
class TrialPlan:
    """One trial to queue: the sampled values and the full config they make."""

    params: dict[str, Any]  # sampled values keyed by space path
    # the merged TrainConfig, JSON-able; for a task's own function, the params it gets
    config: dict[str, Any]

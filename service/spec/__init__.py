"""The search spec, pure: its schema, its one loader, its error messages, checks and plans.

A spec (YAML or JSON; the body of ``POST /api/studies``) names a data set, a base model,
a space of distributions, a strategy, an objective, how to execute and how to prune
(`schema`). `parse_spec` (`loader`) reads it and validates all of it before anything is
queued (`checks`), raising `SpecError` listing every problem as ``loc: msg``, each naming
the field and echoing the value (``space.learning_rate.low: must be > 0 for scale log
(got 0)``; `messages`). `plan_round` turns it into the trials of each round, and
`total_trials` says how many the whole study runs (`planning`). What the data set and
the largest network cost (output units, checkpoint bytes, a panda trial's checkpoints) is
checked against the caps too (`sizes`), and values no spec may hold anywhere are refused
first (`values`).
"""

from service.spec.checks import cap_errors, checked_round
from service.spec.loader import MAX_SPEC_DEPTH, MAX_SPEC_VALUES, load_spec_data, parse_spec
from service.spec.messages import SpecError
from service.spec.openapi import spec_json_schema
from service.spec.planning import (
    make_strategy,
    objective_direction,
    plan_round,
    preview,
    total_rounds,
    total_trials,
)
from service.spec.schema import (
    BUILTIN_DATASETS,
    GENERATED_DATASETS,
    METRICS,
    DatasetSpec,
    ExecutionSpec,
    ObjectiveSpec,
    PruningSpec,
    StrategySpec,
    StudySpec,
    TrialPlan,
)
from service.spec.sizes import (
    DataShape,
    builtin_shape,
    epochs_checkpoint_errors,
    fit_errors,
)
from service.spec.stored import stored_spec
from service.spec.values import text_problem, value_errors

__all__ = [
    "BUILTIN_DATASETS",
    "GENERATED_DATASETS",
    "MAX_SPEC_DEPTH",
    "MAX_SPEC_VALUES",
    "METRICS",
    "DataShape",
    "DatasetSpec",
    "ExecutionSpec",
    "ObjectiveSpec",
    "PruningSpec",
    "SpecError",
    "StrategySpec",
    "StudySpec",
    "TrialPlan",
    "builtin_shape",
    "cap_errors",
    "checked_round",
    "epochs_checkpoint_errors",
    "fit_errors",
    "load_spec_data",
    "make_strategy",
    "objective_direction",
    "parse_spec",
    "plan_round",
    "preview",
    "spec_json_schema",
    "stored_spec",
    "text_problem",
    "total_rounds",
    "total_trials",
    "value_errors",
]

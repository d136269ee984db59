"""The checks of the `task` block: which blocks a spec of your own function may have.

The service never imports a task's entrypoint (it lives where the workers run): it checks
only its syntax (`schema.TaskSpec`), that the spec holds no block of the built-in
trainer's (`dataset`, `model`: the function loads its own data, and its fixed values go
in `task.params`), that every space key is a free name, and that `epochs`, the one
param the service reads (a trial's length), is a whole number within the caps. A spec
without an entrypoint is the built-in trainer's: it needs a data set, one of the
trainer's metrics, and no `task.params`.
"""

from __future__ import annotations

from typing import Any

from service.search.distributions import CategoricalDistribution, IntDistribution
from service.settings import Settings
from service.spec.messages import error_at, suggest
from service.spec.schema import FREE_PATH, METRICS, StudySpec


def task_errors(
    spec: StudySpec, *, settings: Settings, parsed: frozenset[str]
) -> list[dict[str, Any]]:
    """The problems of `spec`'s task and of the blocks it rules out or in (see the module)."""
    if spec.entrypoint is None:
        return _builtin_errors(spec, parsed)
    errors = []
    if "dataset" in spec.model_fields_set:
        errors.append(
            error_at(
                "dataset",
                "not with task.entrypoint: your function loads its own data; put fixed "
                "values it needs (a data set's name, a seed) in task.params",
                spec.dataset.model_dump() if spec.dataset is not None else None,
            )
        )
    if "objective" in parsed and spec.objective.direction is None:
        errors.append(
            error_at(
                "objective.direction",
                f"required for a task's own metric ({spec.objective.metric!r}): maximize or "
                "minimize",
                None,
            )
        )
    if "model" in spec.model_fields_set:
        errors.append(
            error_at(
                "model",
                "not with task.entrypoint: the built-in trainer's model is not used; put "
                "fixed values in task.params (they reach the function with the sampled ones)",
                spec.model,
            )
        )
    if "space" in parsed:
        for path in spec.space:
            if not FREE_PATH.fullmatch(path) or len(path) > 200:
                errors.append(
                    error_at(
                        f"space.{path}",
                        "a task's space key must be a name: letters, digits and _, not "
                        "starting with a digit, dots between parts (such as optimizer.lr)",
                        path,
                    )
                )
    return errors + _epochs_errors(spec, settings)


def _builtin_errors(spec: StudySpec, parsed: frozenset[str]) -> list[dict[str, Any]]:
    errors = []
    if spec.dataset is None and "dataset" in parsed:
        errors.append(
            error_at(
                "dataset",
                "required for the built-in trainer (or name your own function in task.entrypoint)",
                None,
            )
        )
    if spec.task is not None and spec.task.params:
        errors.append(
            error_at(
                "task.params",
                "only with task.entrypoint; the built-in trainer's fixed values go in model",
                spec.task.params,
            )
        )
    metric = spec.objective.metric
    if "objective" in parsed and metric not in METRICS:
        errors.append(
            error_at(
                "objective.metric",
                f"must be one of the built-in trainer's metrics ({', '.join(METRICS)})"
                f"{suggest(metric, METRICS)}; a task.entrypoint's function may name its own "
                f"(got {metric!r})",
                metric,
            )
        )
    return errors


def _epochs_errors(spec: StudySpec, settings: Settings) -> list[dict[str, Any]]:
    """`epochs`, in task.params or the space, must be a whole number of epochs within the
    caps: the service bounds the trial's reports by it."""
    cap = settings.max_epochs
    why = (
        f"epochs is a trial's length to the service (no epoch past it is stored, pruning "
        f"decides below it): a whole number from 1 to {cap} (max_epochs)"
    )
    errors = []
    assert spec.task is not None
    if "epochs" in spec.task.params and not _epochs_ok(spec.task.params["epochs"], cap):
        errors.append(
            error_at(
                "task.params.epochs",
                f"{why} (got {spec.task.params['epochs']!r})",
                spec.task.params["epochs"],
            )
        )
    dist = spec.space.get("epochs")
    ends: list[Any]
    if isinstance(dist, IntDistribution):
        ends = [dist.low, dist.high]
    elif isinstance(dist, CategoricalDistribution):
        ends = list(dist.choices)
    elif dist is not None:
        ends = [None]
    else:
        ends = []
    bad = [e for e in ends if not _epochs_ok(e, cap)]
    if bad:
        errors.append(error_at("space.epochs", f"{why} (got {bad[0]!r})", bad[0]))
    return errors


def _epochs_ok(value: Any, cap: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= cap

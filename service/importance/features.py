"""A study's hyperparameters as fANOVA's features, each on its own scale, and the course's tiers.

Every feature is a coordinate of the search's unit box (`Distribution.to_unit`), which is
uniform on the hyperparameter's own scale: log10 x for ``scale: log``, log10 (1 - x) for
``one_minus_log``, x for linear, the choice's index for a categorical. fANOVA integrates
its marginals uniformly over each feature's range, so on these coordinates a decade of
learning rates weighs the same wherever it lies, as the search drew them.

A ``layers`` space is conditional: the width of layer 3 exists only in trials that have
three layers, and a marginal over a value that is absent in most trials means nothing.
It becomes two features defined in every trial: its depth, and the mean of its widths'
coordinates on the units' scale (``hidden_layers.depth`` and ``hidden_layers.units``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.search.distributions import (
    CategoricalDistribution,
    Distribution,
    LayersDistribution,
)

# The course's ranking ("some hyperparameters are more important than others").
COURSE_TIERS: tuple[tuple[int, str], ...] = (
    (1, "the learning rate"),
    (2, "momentum's beta, the hidden units, the mini-batch size"),
    (3, "the number of layers, the learning-rate decay"),
)
_TIER_OF_FIELD = {
    "learning_rate": 1,
    "beta1": 2,
    "batch_size": 2,
    "hidden_layers": 2,  # a choice of whole lists: the units (and the layers) at once
    "hidden_layers.units": 2,
    "hidden_layers.depth": 3,
    "lr_decay": 3,
    "decay_rate": 3,
    "decay_every": 3,
    "decay_per": 3,
}


def course_tier(feature: str) -> int | None:
    """Where the course ranks a feature: 1 first, 3 last; None if its list leaves it out
    (Adam's beta2 and epsilon, which it says are almost never tuned; regularization)."""
    if feature.startswith("hidden_layers.") and feature.split(".", 1)[1].isdigit():
        return 2  # one layer's width: hidden units
    return _TIER_OF_FIELD.get(feature)


@dataclass(frozen=True)
class Feature:
    """One column of fANOVA's input: its name, its scale, and whether it is categorical."""

    name: str
    scale: str  # what the coordinate is: "log", "one_minus_log", "linear", "categorical", ...
    choices: int = 0  # categorical: how many; 0 for an ordered coordinate in [0, 1]


def _scale(dist: Distribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return "categorical"
    return str(getattr(dist, "scale", "linear"))


def features_of(space: Mapping[str, Distribution]) -> list[Feature]:
    """The features a space makes, in the space's order."""
    out: list[Feature] = []
    for path, dist in space.items():
        if isinstance(dist, LayersDistribution):
            out.append(Feature(f"{path}.depth", f"depth, {dist.depth.scale}"))
            out.append(Feature(f"{path}.units", f"mean width, {dist.units.scale}"))
        elif isinstance(dist, CategoricalDistribution):
            out.append(Feature(path, "categorical", choices=len(dist.choices)))
        else:
            out.append(Feature(path, _scale(dist)))
    return out


def _inside(dist: Distribution, value: Any) -> bool:
    """Whether a numeric value lies in its distribution's range (to_unit would clip it):
    a fork's changed learning rate, say, may lie outside the space it was searched in."""
    if isinstance(dist, LayersDistribution):
        return isinstance(value, list) and all(_inside(dist.units, w) for w in value)
    low, high = getattr(dist, "low", None), getattr(dist, "high", None)
    if low is None or high is None:
        return True  # a categorical: to_unit refuses what is not a choice
    return bool(low <= value <= high)


def _row(space: Mapping[str, Distribution], params: Mapping[str, Any]) -> list[float] | None:
    row: list[float] = []
    for path, dist in space.items():
        if path not in params or not _inside(dist, params[path]):
            return None
        u = dist.to_unit(params[path])
        if isinstance(dist, LayersDistribution):
            widths = [w for w in u[1:] if not math.isnan(w)]
            row += [u[0], sum(widths) / len(widths)]
        elif isinstance(dist, CategoricalDistribution):
            row.append(float(min(int(u[0] * len(dist.choices)), len(dist.choices) - 1)))
        else:
            row.append(u[0])
    return row


def feature_rows(
    space: Mapping[str, Distribution], params: Sequence[Mapping[str, Any]]
) -> tuple[list[list[float]], list[int]]:
    """Each trial's features (see `features_of`), and the indexes of the trials kept: a
    trial whose params the space cannot place (a value outside it, a missing path) is left
    out rather than guessed."""
    rows: list[list[float]] = []
    kept: list[int] = []
    for i, p in enumerate(params):
        try:
            row = _row(space, p)
        except (TypeError, ValueError):
            continue
        if row is not None and all(math.isfinite(x) for x in row):
            rows.append(row)
            kept.append(i)
    return rows, kept

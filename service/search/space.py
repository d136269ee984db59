"""The unit box a space is searched in: a `SearchSpace` lays a space's distributions out as
its coordinates, and a `Box` is a region of it.

A `SearchSpace` is the transform: it lays the distributions of a space side by side as
coordinates of the unit box (paths sorted, so the order does not depend on how a spec's
keys were stored) and decodes a point into parameter values. A `Box` is a region of the
unit box, one union of intervals per coordinate; it maps uniform points into itself and
back. Strategies (`service.search.strategies`) only produce unit points and boxes, so
none of them branches on a distribution's type.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np

from service.search.distributions import Distribution, ScalarDistribution

# Below this, a discrete interval's upper edge counts as inside the cell below it.
EDGE = 1e-9


@dataclass(frozen=True)
class Axis:
    """One coordinate of the unit box: whose it is and the scalar distribution decoding it."""

    name: str  # "learning_rate", or "hidden_layers.depth", "hidden_layers.units.0"
    path: str  # the space path that owns it
    distribution: ScalarDistribution


class SearchSpace:
    """The unit-box transform of a whole space: decode points, encode parameters."""

    def __init__(self, distributions: Mapping[str, Distribution]) -> None:
        self.paths = sorted(distributions)
        self.distributions = {p: distributions[p] for p in self.paths}
        self.axes: list[Axis] = []
        self._slices: dict[str, slice] = {}
        for path in self.paths:
            start = len(self.axes)
            for suffix, scalar in self.distributions[path].axes():
                name = f"{path}.{suffix}" if suffix else path
                self.axes.append(Axis(name=name, path=path, distribution=scalar))
            self._slices[path] = slice(start, len(self.axes))

    @property
    def dims(self) -> int:
        return len(self.axes)

    def decode(self, u: Sequence[float] | np.ndarray) -> dict[str, Any]:
        """The parameters at unit point `u` (shape ``(dims,)``), keyed by path."""
        return {p: self.distributions[p].from_unit(list(u[self._slices[p]])) for p in self.paths}

    def encode(self, params: Mapping[str, Any]) -> np.ndarray:
        """The unit point of `params`; ``nan`` where a coordinate is inactive or unknown.

        A path missing from `params`, or a value its distribution cannot take (a trial of
        another study, a forked trial), leaves its coordinates ``nan``: no information.
        """
        out = np.full(self.dims, np.nan)
        for p in self.paths:
            if p not in params:
                continue
            try:
                out[self._slices[p]] = self.distributions[p].to_unit(params[p])
            except (TypeError, ValueError):
                continue
        return out

    def grid_size(self, points: int) -> int:
        return math.prod(self.distributions[p].grid_size(points) for p in self.paths)

    def grid(self, points: int) -> np.ndarray:
        """Every point of the grid, in unit coordinates, shape ``(grid_size, dims)``."""
        per_path = [self.distributions[p].grid_units(points) for p in self.paths]
        rows = [sum(combo, ()) for combo in product(*per_path)]
        return np.array(rows, dtype=float).reshape(len(rows), self.dims)


class Box:
    """A region of the unit box: per coordinate, a sorted union of disjoint intervals."""

    def __init__(self, intervals: Sequence[Sequence[tuple[float, float]]]) -> None:
        self.intervals = [list(iv) for iv in intervals]
        for iv in self.intervals:
            if not iv or any(not 0.0 <= a <= b <= 1.0 for a, b in iv):
                raise ValueError(f"every coordinate needs intervals inside [0, 1] (got {iv!r})")

    @classmethod
    def full(cls, dims: int) -> Box:
        return cls([[(0.0, 1.0)] for _ in range(dims)])

    def map(self, u: np.ndarray) -> np.ndarray:
        """Uniform points of the unit box (shape ``(n, dims)``) -> uniform points of this box."""
        out = np.empty_like(u, dtype=float)
        for j, iv in enumerate(self.intervals):
            lows = np.array([a for a, _ in iv])
            widths = np.array([b - a for a, b in iv])
            total = widths.sum()
            if total == 0.0:  # only single points: pick one of them uniformly
                out[:, j] = lows[np.minimum((u[:, j] * len(iv)).astype(int), len(iv) - 1)]
                continue
            ends = np.cumsum(widths)
            t = u[:, j] * total
            k = np.minimum(np.searchsorted(ends, t, side="right"), len(iv) - 1)
            out[:, j] = lows[k] + (t - (ends[k] - widths[k]))
        return np.clip(out, 0.0, 1.0)

    def unmap(self, u: np.ndarray) -> np.ndarray:
        """The inverse of `map`: points of this box (shape ``(n, dims)``) -> the unit box.

        A coordinate outside every interval goes to the nearest one's edge; ``nan`` (an
        inactive coordinate) stays ``nan``."""
        out = np.full(u.shape, np.nan)
        for j, iv in enumerate(self.intervals):
            lows = np.array([a for a, _ in iv])
            highs = np.array([b for _, b in iv])
            widths = highs - lows
            total = widths.sum()
            x = u[:, j]
            known = ~np.isnan(x)
            xs = x[known]
            gap = np.maximum(lows[None, :] - xs[:, None], 0) + np.maximum(xs[:, None] - highs, 0)
            k = np.argmin(gap, axis=1)
            if total == 0.0:
                out[known, j] = (k + 0.5) / len(iv)
                continue
            starts = np.cumsum(widths) - widths
            out[known, j] = (starts[k] + np.clip(xs - lows[k], 0.0, widths[k])) / total
        return np.clip(out, 0.0, 1.0)

    def contains(self, u: Sequence[float] | np.ndarray) -> bool:
        """Whether unit point `u` lies in the box (``nan`` coordinates count as inside)."""
        return all(
            math.isnan(x) or any(a - EDGE <= x <= b + EDGE for a, b in iv)
            for x, iv in zip(u, self.intervals, strict=True)
        )

    def volume(self) -> float:
        return math.prod(sum(b - a for a, b in iv) for iv in self.intervals)

    def describe(self, space: SearchSpace) -> dict[str, Any]:
        """JSON-able: per axis, low/high in the original units or the kept choices."""
        axes: dict[str, Any] = {}
        for axis, iv in zip(space.axes, self.intervals, strict=True):
            d = axis.distribution
            entry: dict[str, Any] = {"unit": [[a, b] for a, b in iv]}
            if d.ordered:
                hi = iv[-1][1] - EDGE if d.cells else iv[-1][1]
                entry["low"] = d.from_unit([iv[0][0]])
                entry["high"] = d.from_unit([max(hi, iv[0][0])])
            else:
                entry["choices"] = _unique_json(
                    [d.from_unit([c]) for a, b in iv for c in _cell_centers(d, a, b)]
                )
            axes[axis.name] = entry
        return {"axes": axes, "volume": self.volume()}


def _cell_centers(d: ScalarDistribution, a: float, b: float) -> list[float]:
    k = d.cells
    first, last = int(a * k + EDGE), math.ceil(b * k - EDGE)
    return [(i + 0.5) / k for i in range(first, max(last, first + 1))]


def _unique_json(values: list[Any]) -> list[Any]:
    seen: set[str] = set()
    out = []
    for v in values:
        key = json.dumps(v, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out

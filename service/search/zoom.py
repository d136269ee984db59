"""A space cut down to a box: the ranges a zoomed study states in its own spec.

Coarse-to-fine zooms by sampling a box of the unit space; a person who wants to read,
edit or resubmit the zoomed search needs that box written back as distributions. This is
the one place that does it, so the dashboard's "edit as a spec" shows exactly the region
the service's zoom samples.
"""

from __future__ import annotations

import math
from typing import Any

from service.search.distributions import (
    CategoricalDistribution,
    Distribution,
    FloatDistribution,
    IntDistribution,
    LayersDistribution,
    ScalarDistribution,
)
from service.search.space import Box, SearchSpace

# Significant digits of a narrowed float bound: readable in a spec, and rounded outwards
# so the stated range still holds the whole box.
DIGITS = 4


def narrowed_space(space: SearchSpace, box: Box) -> dict[str, Distribution]:
    """Each distribution of `space` restricted to `box`, keyed by path."""
    described = box.describe(space)["axes"]
    entries: dict[str, dict[str, dict[str, Any]]] = {}
    for axis in space.axes:
        suffix = axis.name[len(axis.path) + 1 :] if axis.name != axis.path else ""
        entries.setdefault(axis.path, {})[suffix] = described[axis.name]
    return {p: _narrow(d, entries[p]) for p, d in space.distributions.items()}


def _narrow(d: Distribution, entries: dict[str, dict[str, Any]]) -> Distribution:
    if isinstance(d, LayersDistribution):
        units = [e for k, e in entries.items() if k.startswith("units.")]
        merged = {"low": min(e["low"] for e in units), "high": max(e["high"] for e in units)}
        return d.model_validate(
            {
                **d.to_json(),
                "depth": _narrow_scalar(d.depth, entries["depth"]).to_json(),
                "units": _narrow_scalar(d.units, merged).to_json(),
            }
        )
    assert isinstance(d, ScalarDistribution)
    return _narrow_scalar(d, entries[""])


def _narrow_scalar(d: ScalarDistribution, entry: dict[str, Any]) -> ScalarDistribution:
    if isinstance(d, CategoricalDistribution):
        return d.model_validate({**d.to_json(), "choices": entry["choices"]})
    low, high = entry["low"], entry["high"]
    if isinstance(d, FloatDistribution) and d.step is None:
        low, high = _rounded_out(d, low, high)
    if isinstance(d, IntDistribution | FloatDistribution) and not low < high:
        return d  # a single value left: keep the whole range rather than a point
    return d.model_validate({**d.to_json(), "low": low, "high": high})


def _rounded_out(d: FloatDistribution, low: float, high: float) -> tuple[float, float]:
    """`low` rounded down and `high` up to DIGITS significant digits, inside d's range.

    On the one_minus_log scale the digits that matter are those of ``1 - x``."""
    if d.scale == "one_minus_log":
        lo, hi = 1.0 - _round(1.0 - low, up=True), 1.0 - _round(1.0 - high, up=False)
    else:
        lo, hi = _round(low, up=False), _round(high, up=True)
    lo, hi = max(lo, d.low), min(hi, d.high)
    return (lo, hi) if lo < hi else (low, high)


def _round(x: float, *, up: bool) -> float:
    if x == 0.0 or not math.isfinite(x):
        return x
    scale = 10.0 ** (math.floor(math.log10(abs(x))) - DIGITS + 1)
    # The second round() drops the float noise of the division (0.3 / 0.01 = 29.999...).
    steps = round(x / scale, 9)
    return float(f"{(math.ceil(steps) if up else math.floor(steps)) * scale:.{DIGITS}g}")

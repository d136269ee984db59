"""Search distributions: validated value objects mapping each hyperparameter to the unit box.

Every distribution maps its values to ``dims`` coordinates in [0, 1] (``to_unit``) and back
(``from_unit``), so strategies draw points in the unit box and never branch on a type:

- ``float`` with scale ``linear`` (uniform), ``log`` (uniform in log10 x) or
  ``one_minus_log`` (uniform in log10 of 1 - x: beta in [0.9, 0.999] puts as many samples
  in [0.99, 0.999] as in [0.9, 0.99]); an optional ``step`` (linear only) makes it discrete.
- ``int`` with scale ``linear`` or ``log`` and an optional ``step`` (linear only).
- ``categorical`` over any JSON values (numbers, strings, booleans, lists such as
  ``[20, 7, 5]`` for ``hidden_layers``); its coordinate is the index cell ``[i/k, (i+1)/k)``.
- ``layers``: a conditional space over the depth and the widths of ``hidden_layers``. It
  takes ``1 + depth.high`` coordinates: the depth, then one width per possible layer. A
  width exists only for a layer that exists; ``to_unit`` reports ``nan`` for the others
  (an inactive coordinate), and ``from_unit`` ignores them.

Discrete coordinates (ints, stepped floats, categoricals, the depth) are split into cells,
one per value; ``unit_cell(u)`` gives the cell holding ``u`` so a strategy can widen a
region to whole values without knowing what they are. Values come back as plain Python
``float``/``int``/JSON values, so they serialize as they are.

Errors name the field and echo the input, e.g. ``low: must be > 0 for scale log (got 0.0)``;
the spec parser turns the ``field:`` prefix into the error's location.
"""

from __future__ import annotations

import copy
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

FloatScale = Literal["linear", "log", "one_minus_log"]
IntScale = Literal["linear", "log"]

# Rounding a stepped float to the step's own decimals hides binary noise
# (0.1 + 3 * 0.1 = 0.30000000000000004 becomes 0.3); 12 digits is below any real step.
_MAX_STEP_DECIMALS = 12
# A hard ceiling on a layers space's depth, whatever the settings: each possible layer is
# a coordinate of the unit box, so an absurd depth must not get as far as building one.
MAX_DEPTH = 1024
# Relative slack when checking that (high - low) / step is a whole number.
_STEP_TOLERANCE = 1e-9


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Distribution(_Model, ABC):
    """The contract every distribution obeys: a value <-> ``dims`` unit coordinates."""

    @property
    def dims(self) -> int:
        """How many unit-box coordinates a value takes."""
        return 1

    @abstractmethod
    def to_unit(self, value: Any) -> tuple[float, ...]:
        """The unit coordinates of `value` (``nan`` for an inactive coordinate)."""

    @abstractmethod
    def from_unit(self, u: Sequence[float]) -> Any:
        """The value at unit coordinates `u` (each in [0, 1]; 1.0 maps to the top value)."""

    @abstractmethod
    def axes(self) -> list[tuple[str, ScalarDistribution]]:
        """Per coordinate: a name suffix ("" for a scalar) and the scalar that decodes it."""

    @abstractmethod
    def grid_units(self, points: int) -> list[tuple[float, ...]]:
        """The grid of this distribution in unit coordinates, `points` per continuous axis."""

    def grid_size(self, points: int) -> int:
        """How many grid values `grid_units(points)` yields, without building them."""
        return len(self.grid_units(points))

    def grid(self, points: int) -> list[Any]:
        """The grid values themselves."""
        return [self.from_unit(u) for u in self.grid_units(points)]

    def contains(self, value: Any) -> bool:
        """Whether `value` is one this distribution can produce."""
        try:
            return _json_key(self.from_unit(self.to_unit(value))) == _json_key(value)
        except (TypeError, ValueError):
            return False

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict that `from_json` turns back into an equal object."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> Distribution:
        """The distribution `data` (a `to_json` dict or its JSON text) describes.

        On an abstract class the ``type`` field picks the class; on a concrete one the
        data must describe that class. Raises pydantic's ValidationError (a ValueError).
        """
        if cls in (Distribution, ScalarDistribution):
            return distribution_from_json(data)
        if isinstance(data, str):
            return cls.model_validate_json(data)
        return cls.model_validate(data)


class ScalarDistribution(Distribution, ABC):
    """A distribution over one unit coordinate."""

    @property
    @abstractmethod
    def cells(self) -> int:
        """How many distinct values (0 for a continuous range)."""

    @property
    def ordered(self) -> bool:
        """Whether nearness in the unit coordinate means nearness in value."""
        return True

    @abstractmethod
    def _encode(self, value: Any) -> float: ...

    @abstractmethod
    def _decode(self, u: float) -> Any: ...

    def to_unit(self, value: Any) -> tuple[float, ...]:
        return (self._encode(value),)

    def from_unit(self, u: Sequence[float]) -> Any:
        if len(u) != 1:
            raise ValueError(f"expected 1 unit coordinate, got {len(u)} ({list(u)!r})")
        return self._decode(_clip01(u[0]))

    def axes(self) -> list[tuple[str, ScalarDistribution]]:
        return [("", self)]

    def unit_cell(self, u: float) -> tuple[float, float]:
        """The interval of unit coordinates that decode to the same value as `u`."""
        k = self.cells
        if k == 0:
            return (u, u)
        i = min(int(_clip01(u) * k), k - 1)
        return (i / k, (i + 1) / k)


def show(value: Any, *, limit: int = 80) -> str:
    """`value` as an error message echoes it: 0.0 as 0, strings quoted, long ones cut."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        text = str(int(value))
    elif isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clip01(u: float) -> float:
    u = float(u)
    if math.isnan(u):
        raise ValueError(f"unit coordinate must be a number (got {u})")
    return min(max(u, 0.0), 1.0)


def _cell_index(u: float, k: int) -> int:
    return min(int(u * k), k - 1)


def _cell_center(i: int, k: int) -> float:
    return (i + 0.5) / k


def _json_key(value: Any) -> str:
    # JSON text tells true from 1 and 1 from 1.0 the way a spec author means them.
    return json.dumps(value, sort_keys=True, allow_nan=False)


def _check_bounds(low: float, high: float) -> None:
    if not low <= high:
        raise ValueError(f"high: must be >= low (got low={show(low)}, high={show(high)})")


def _decimals(x: float) -> int:
    """How many decimals `x` is written with (0.25 -> 2, 1e-05 -> 5), at most 12."""
    exponent = Decimal(repr(float(x))).as_tuple().exponent
    if not isinstance(exponent, int):
        return _MAX_STEP_DECIMALS
    return min(max(-exponent, 0), _MAX_STEP_DECIMALS)


def _steps(low: float, high: float, step: float) -> int:
    """How many values low, low + step, ..., high there are; high must be on the grid."""
    n = (high - low) / step
    if abs(n - round(n)) > _STEP_TOLERANCE * max(1.0, abs(n)):
        raise ValueError(
            f"step: high - low must be a multiple of step "
            f"(got low={show(low)}, high={show(high)}, step={show(step)})"
        )
    return round(n) + 1


class FloatDistribution(ScalarDistribution):
    """A float in [low, high] on a linear, log or one-minus-log scale, optionally stepped."""

    type: Literal["float"] = "float"
    low: float
    high: float
    scale: FloatScale = "linear"
    step: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _validate(self) -> FloatDistribution:
        _check_bounds(self.low, self.high)
        if self.scale == "log" and self.low <= 0:
            raise ValueError(f"low: must be > 0 for scale log (got {show(self.low)})")
        if self.scale == "one_minus_log" and self.high >= 1:
            raise ValueError(f"high: must be < 1 for scale one_minus_log (got {show(self.high)})")
        if self.step is not None:
            if self.scale != "linear":
                raise ValueError(f"step: only for scale linear (got scale {show(self.scale)})")
            _steps(self.low, self.high, self.step)
        return self

    @property
    def cells(self) -> int:
        return 0 if self.step is None else _steps(self.low, self.high, self.step)

    def contains(self, value: Any) -> bool:
        """Whether `value` is a number in [low, high] (on the step's grid, if stepped).

        Not by a round trip through the unit box, which the base class does: on a log
        scale that changes the last bits of most values (0.0003 came back as
        0.00030000000000000014) and refused them.
        """
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not (math.isfinite(value) and self.low <= value <= self.high):
            return False
        if self.step is None:
            return True
        k = (value - self.low) / self.step
        return abs(k - round(k)) <= 1e-9 * max(1.0, abs(k))

    def _forward(self, x: float) -> float:
        """Value -> the coordinate that is uniform on this scale."""
        if self.scale == "log":
            return math.log10(x)
        if self.scale == "one_minus_log":
            return math.log10(1.0 - x)
        return x

    def _backward(self, t: float) -> float:
        if self.scale == "log":
            return float(10.0**t)
        if self.scale == "one_minus_log":
            return 1.0 - float(10.0**t)
        return t

    def _encode(self, value: Any) -> float:
        x = float(value)
        if self.step is not None:
            k = self.cells
            return _cell_center(min(max(round((x - self.low) / self.step), 0), k - 1), k)
        a, b = self._forward(self.low), self._forward(self.high)
        if a == b:
            return 0.5
        return _clip01((self._forward(min(max(x, self.low), self.high)) - a) / (b - a))

    def _decode(self, u: float) -> float:
        if self.step is not None:
            return self._stepped(_cell_index(u, self.cells))
        a, b = self._forward(self.low), self._forward(self.high)
        x = self._backward(a + u * (b - a))
        return float(min(max(x, self.low), self.high))

    def _stepped(self, i: int) -> float:
        assert self.step is not None
        x = round(self.low + i * self.step, max(_decimals(self.step), _decimals(self.low)))
        return float(min(x, self.high))

    def grid_units(self, points: int) -> list[tuple[float, ...]]:
        if self.step is not None:
            k = self.cells
            idx = sorted({round(t * (k - 1)) for t in _linspace(points)})
            return [(_cell_center(i, k),) for i in idx]
        if self.low == self.high:
            return [(0.5,)]
        return [(t,) for t in _linspace(points)]


class IntDistribution(ScalarDistribution):
    """An int in [low, high] on a linear or log scale, optionally stepped (linear only).

    On the log scale a value v owns [log10 v, log10 (v + 1)), so every decade of values
    gets the same share of samples.
    """

    type: Literal["int"] = "int"
    low: int
    high: int
    scale: IntScale = "linear"
    step: Annotated[int, Field(gt=0)] = 1

    @model_validator(mode="after")
    def _validate(self) -> IntDistribution:
        _check_bounds(self.low, self.high)
        if self.scale == "log":
            if self.low < 1:
                raise ValueError(f"low: must be >= 1 for scale log (got {show(self.low)})")
            if self.step != 1:
                raise ValueError(f"step: only for scale linear (got scale 'log', step={self.step})")
        else:
            _steps(self.low, self.high, self.step)
        return self

    @property
    def cells(self) -> int:
        return (self.high - self.low) // self.step + 1

    def _log_bounds(self) -> tuple[float, float]:
        return math.log10(self.low), math.log10(self.high + 1)

    def _encode(self, value: Any) -> float:
        if isinstance(value, bool) or float(value) != int(value):
            raise ValueError(f"expected an int (got {show(value)})")
        v = min(max(int(value), self.low), self.high)
        if self.scale == "log":
            a, b = self._log_bounds()
            mid = 0.5 * (math.log10(v) + math.log10(v + 1))
            return (mid - a) / (b - a)
        return _cell_center((v - self.low) // self.step, self.cells)

    def _decode(self, u: float) -> int:
        if self.scale == "log":
            a, b = self._log_bounds()
            return int(min(max(math.floor(10.0 ** (a + u * (b - a))), self.low), self.high))
        return self.low + _cell_index(u, self.cells) * self.step

    def unit_cell(self, u: float) -> tuple[float, float]:
        if self.scale == "log":
            v = self._decode(_clip01(u))
            a, b = self._log_bounds()
            return ((math.log10(v) - a) / (b - a), (math.log10(v + 1) - a) / (b - a))
        return super().unit_cell(u)

    def grid_units(self, points: int) -> list[tuple[float, ...]]:
        if self.scale == "log":
            la, lb = math.log10(self.low), math.log10(self.high)
            values = sorted({round(10.0 ** (la + t * (lb - la))) for t in _linspace(points)})
            return [self.to_unit(v) for v in values]
        k = self.cells
        idx = sorted({round(t * (k - 1)) for t in _linspace(points)})
        return [(_cell_center(i, k),) for i in idx]


class CategoricalDistribution(ScalarDistribution):
    """One of a list of distinct JSON values; the unit coordinate picks the index."""

    type: Literal["categorical"] = "categorical"
    choices: list[Any]

    @field_validator("choices")
    @classmethod
    def _validate_choices(cls, choices: list[Any]) -> list[Any]:
        if not choices:
            raise ValueError("must not be empty (got [])")
        seen: dict[str, int] = {}
        for i, c in enumerate(choices):
            try:
                key = _json_key(c)
            except (TypeError, ValueError):
                raise ValueError(f"choice {i} is not a JSON value (got {show(c)})") from None
            if key in seen:
                raise ValueError(f"choice {i} repeats choice {seen[key]} (got {show(c)})")
            seen[key] = i
        return choices

    @property
    def cells(self) -> int:
        return len(self.choices)

    @property
    def ordered(self) -> bool:
        return False

    def index(self, value: Any) -> int:
        """The position of `value` among the choices (compared as JSON)."""
        key = _json_key(value)
        for i, c in enumerate(self.choices):
            if _json_key(c) == key:
                return i
        raise ValueError(f"not one of the choices {show(self.choices)} (got {show(value)})")

    def _encode(self, value: Any) -> float:
        return _cell_center(self.index(value), self.cells)

    def _decode(self, u: float) -> Any:
        return copy.deepcopy(self.choices[_cell_index(u, self.cells)])

    def grid_units(self, points: int) -> list[tuple[float, ...]]:
        # A grid tries every choice: `points` is for continuous axes only.
        return [(_cell_center(i, self.cells),) for i in range(self.cells)]


class LayersDistribution(Distribution):
    """A list of layer widths: first the depth, then a width for each layer that exists.

    Spec syntax: ``{type: layers, depth: {low: 1, high: 4}, units: {low: 5, high: 200,
    scale: log}}``. ``depth`` and ``units`` are int distributions (``type`` may be left
    out); every layer draws its width independently from ``units``.
    """

    type: Literal["layers"] = "layers"
    depth: IntDistribution
    units: IntDistribution

    @field_validator("depth", "units", mode="before")
    @classmethod
    def _default_int(cls, value: Any) -> Any:
        if isinstance(value, dict) and "type" not in value:
            return {"type": "int", **value}
        return value

    @model_validator(mode="after")
    def _validate(self) -> LayersDistribution:
        if self.depth.low < 1:
            raise ValueError(f"depth.low: must be >= 1 (got {show(self.depth.low)})")
        if self.depth.high > MAX_DEPTH:
            raise ValueError(f"depth.high: must be <= {MAX_DEPTH} (got {show(self.depth.high)})")
        if self.units.low < 1:
            raise ValueError(f"units.low: must be >= 1 (got {show(self.units.low)})")
        return self

    @property
    def dims(self) -> int:
        return 1 + self.depth.high

    def axes(self) -> list[tuple[str, ScalarDistribution]]:
        out: list[tuple[str, ScalarDistribution]] = [("depth", self.depth)]
        out += [(f"units.{i}", self.units) for i in range(self.depth.high)]
        return out

    def to_unit(self, value: Any) -> tuple[float, ...]:
        if not isinstance(value, list | tuple) or not value:
            raise ValueError(f"expected a non-empty list of widths (got {show(value)})")
        widths = [self.units.to_unit(w)[0] for w in value]
        if len(widths) > self.depth.high:
            raise ValueError(f"more than {self.depth.high} layers (got {show(value)})")
        return (
            self.depth.to_unit(len(value))[0],
            *widths,
            *([math.nan] * (self.depth.high - len(widths))),
        )

    def from_unit(self, u: Sequence[float]) -> list[int]:
        if len(u) != self.dims:
            raise ValueError(f"expected {self.dims} unit coordinates, got {len(u)} ({list(u)!r})")
        depth = self.depth.from_unit(u[:1])
        return [self.units.from_unit(u[1 + i : 2 + i]) for i in range(depth)]

    def grid_size(self, points: int) -> int:
        w = self.units.grid_size(points)
        return sum(w**d for d in self.depth.grid(points))

    def grid_units(self, points: int) -> list[tuple[float, ...]]:
        widths = self.units.grid_units(points)
        out: list[tuple[float, ...]] = []
        for (d_u,) in self.depth.grid_units(points):
            d = self.depth.from_unit([d_u])
            # Inactive widths sit mid-box; from_unit ignores them.
            pad = (0.5,) * (self.depth.high - d)
            for combo in np.ndindex(*([len(widths)] * d)):
                out.append((d_u, *(widths[i][0] for i in combo), *pad))
        return out


def _linspace(points: int) -> list[float]:
    if points < 1:
        raise ValueError(f"points: must be >= 1 (got {points!r})")
    if points == 1:
        return [0.5]
    return [i / (points - 1) for i in range(points)]


AnyDistribution = Annotated[
    FloatDistribution | IntDistribution | CategoricalDistribution | LayersDistribution,
    Field(discriminator="type"),
]
DISTRIBUTION_TYPES = ("float", "int", "categorical", "layers")

_ADAPTER: TypeAdapter[Distribution] = TypeAdapter(AnyDistribution)


def distribution_from_json(data: dict[str, Any] | str) -> Distribution:
    """The distribution a `to_json` dict (or its JSON text) describes; raises if invalid."""
    if isinstance(data, str):
        return _ADAPTER.validate_json(data)
    return _ADAPTER.validate_python(data)

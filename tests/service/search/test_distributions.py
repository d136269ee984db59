"""Distributions: validation that echoes input, JSON round trips, the unit transform's scales."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.search.distributions import (
    MAX_DEPTH,
    CategoricalDistribution,
    Distribution,
    FloatDistribution,
    IntDistribution,
    LayersDistribution,
    distribution_from_json,
)

EXAMPLES: list[Distribution] = [
    FloatDistribution(low=0.0, high=1.0),
    FloatDistribution(low=1e-4, high=1.0, scale="log"),
    FloatDistribution(low=0.9, high=0.999, scale="one_minus_log"),
    FloatDistribution(low=0.5, high=1.0, step=0.05),
    IntDistribution(low=5, high=50),
    IntDistribution(low=1, high=1000, scale="log"),
    IntDistribution(low=0, high=100, step=10),
    CategoricalDistribution(choices=["he", "xavier"]),
    CategoricalDistribution(choices=[[50], [20, 7, 5], True, 1, None, {"a": 1}]),
    LayersDistribution(
        depth=IntDistribution(low=1, high=4), units=IntDistribution(low=5, high=200, scale="log")
    ),
]
IDS = [json.dumps(d.to_json()) for d in EXAMPLES]


def uniform(n: int, dims: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, dims))


@pytest.mark.parametrize("dist", EXAMPLES, ids=IDS)
class TestEveryDistribution:
    def test_json_round_trip(self, dist: Distribution) -> None:
        data = dist.to_json()
        assert json.loads(json.dumps(data)) == data
        assert distribution_from_json(data) == dist
        assert Distribution.from_json(json.dumps(data)) == dist
        assert type(dist).from_json(data) == dist

    def test_from_unit_then_to_unit_is_stable(self, dist: Distribution) -> None:
        # Decoding a value's own coordinates gives the value back, for every value drawn.
        for u in uniform(300, dist.dims):
            value = dist.from_unit(list(u))
            assert dist.contains(value), value
            again = dist.from_unit([0.5 if math.isnan(x) else x for x in dist.to_unit(value)])
            assert json.dumps(again) == json.dumps(value)

    def test_unit_corners_are_the_ends(self, dist: Distribution) -> None:
        for corner in (0.0, 1.0):
            value = dist.from_unit([corner] * dist.dims)
            assert dist.contains(value)

    def test_grid_size_matches_grid(self, dist: Distribution) -> None:
        for points in (1, 2, 3, 5):
            grid = dist.grid(points)
            assert dist.grid_size(points) == len(grid)
            assert len({json.dumps(v) for v in grid}) == len(grid), "grid values repeat"
            assert all(dist.contains(v) for v in grid)


@pytest.mark.parametrize(
    ("make", "field", "echo"),
    [
        (lambda: FloatDistribution(low=1.0, high=0.5), "high", "got low=1, high=0.5"),
        (lambda: FloatDistribution(low=0.0, high=1.0, scale="log"), "low", "(got 0)"),
        (lambda: FloatDistribution(low=-1.0, high=1.0, scale="log"), "low", "(got -1)"),
        (lambda: FloatDistribution(low=0.9, high=1.0, scale="one_minus_log"), "high", "(got 1)"),
        (lambda: FloatDistribution(low=0.1, high=1.0, scale="log", step=0.1), "step", "'log'"),
        (lambda: FloatDistribution(low=0.0, high=1.0, step=0.3), "step", "step=0.3"),
        (lambda: FloatDistribution(low=0.0, high=1.0, step=0.0), "step", "0"),
        (lambda: FloatDistribution(low=0.0, high=math.inf), "high", "inf"),
        (lambda: IntDistribution(low=5, high=1), "high", "got low=5, high=1"),
        (lambda: IntDistribution(low=0, high=10, scale="log"), "low", "(got 0)"),
        (lambda: IntDistribution(low=1, high=10, scale="log", step=2), "step", "step=2"),
        (lambda: IntDistribution(low=0, high=10, step=3), "step", "step=3"),
        (lambda: IntDistribution(low=1, high=10, scale="one_minus_log"), "scale", "one_minus_log"),
        (lambda: IntDistribution(low=1.5, high=10), "low", "1.5"),
        (lambda: CategoricalDistribution(choices=[]), "choices", "[]"),
        (lambda: CategoricalDistribution(choices=["a", "b", "a"]), "choices", "'a'"),
        (lambda: CategoricalDistribution(choices=[[1, 2], [1, 2]]), "choices", "[1, 2]"),
        (lambda: CategoricalDistribution(choices=[object()]), "choices", "object"),
        (
            lambda: LayersDistribution(
                depth=IntDistribution(low=0, high=2), units=IntDistribution(low=1, high=9)
            ),
            "depth.low",
            "(got 0)",
        ),
        (
            lambda: LayersDistribution(
                depth=IntDistribution(low=1, high=2), units=IntDistribution(low=0, high=9)
            ),
            "units.low",
            "(got 0)",
        ),
        (
            lambda: LayersDistribution(
                depth=IntDistribution(low=1, high=MAX_DEPTH + 1),
                units=IntDistribution(low=1, high=9),
            ),
            "depth.high",
            f"(got {MAX_DEPTH + 1})",
        ),
    ],
)
def test_invalid_distributions_name_the_field_and_echo_the_input(make, field, echo) -> None:
    with pytest.raises(ValidationError) as info:
        make()
    text = str(info.value)
    assert field in text and echo in text, text


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="lo"):
        distribution_from_json({"type": "float", "lo": 0.0, "low": 0.0, "high": 1.0})


def test_categorical_tells_json_values_apart_and_copies_lists() -> None:
    dist = CategoricalDistribution(choices=[True, 1, 1.5, "1", [20, 7, 5]])
    assert [dist.index(v) for v in (True, 1, 1.5, "1", [20, 7, 5])] == [0, 1, 2, 3, 4]
    value = dist.from_unit([0.99])
    value.append(99)  # a trial's list must not alias the spec's choice
    assert dist.choices[4] == [20, 7, 5]
    assert not dist.contains("2")


def test_layers_widths_exist_only_for_layers_that_exist() -> None:
    dist = LayersDistribution(
        depth=IntDistribution(low=1, high=4), units=IntDistribution(low=5, high=200)
    )
    u = dist.to_unit([10, 20])
    assert len(u) == dist.dims == 5
    assert not math.isnan(u[1]) and not math.isnan(u[2])
    assert all(math.isnan(x) for x in u[3:])
    # Whatever the inactive coordinates hold, the value is the same.
    assert dist.from_unit([u[0], u[1], u[2], 0.0, 0.0]) == [10, 20]
    assert dist.from_unit([u[0], u[1], u[2], 1.0, 1.0]) == [10, 20]
    depths = {len(dist.from_unit(list(row))) for row in uniform(500, dist.dims)}
    assert depths == {1, 2, 3, 4}


def test_layers_grid_pairs_each_depth_with_its_own_widths() -> None:
    dist = LayersDistribution(
        depth=IntDistribution(low=1, high=3), units=IntDistribution(low=8, high=32, scale="log")
    )
    grid = dist.grid(3)
    assert dist.grid_size(3) == 3 + 3**2 + 3**3 == len(grid)
    assert {w for layers in grid for w in layers} == {8, 16, 32}


# --- scales ----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(a=st.integers(-8, 3), decades=st.integers(1, 6))
def test_log_puts_an_equal_share_in_each_decade(a: int, decades: int) -> None:
    dist = FloatDistribution(low=10.0**a, high=10.0 ** (a + decades), scale="log")
    edges = [dist.to_unit(10.0 ** (a + k))[0] for k in range(decades + 1)]
    assert np.allclose(np.diff(edges), 1 / decades)
    values = np.array([dist.from_unit([u]) for u in uniform(4000, 1, seed=a + 10)[:, 0]])
    counts = np.histogram(np.log10(values), bins=decades, range=(a, a + decades))[0]
    assert counts.sum() == 4000
    # Binomial standard deviation is at most 32 here; 5 sigma keeps the test honest.
    assert np.all(np.abs(counts - 4000 / decades) < 160)


def test_one_minus_log_puts_as_many_betas_in_0_99_to_0_999_as_in_0_9_to_0_99() -> None:
    dist = FloatDistribution(low=0.9, high=0.999, scale="one_minus_log")
    assert dist.to_unit(0.99)[0] == pytest.approx(0.5)
    betas = np.array([dist.from_unit([u]) for u in uniform(20_000, 1)[:, 0]])
    low_band = np.sum((betas >= 0.9) & (betas < 0.99))
    high_band = np.sum((betas >= 0.99) & (betas <= 0.999))
    assert low_band + high_band == 20_000
    assert abs(int(low_band) - int(high_band)) < 5 * math.sqrt(20_000) / 2
    # A linear scale would put only a tenth of them above 0.99.
    linear = FloatDistribution(low=0.9, high=0.999)
    linear_betas = np.array([linear.from_unit([u]) for u in uniform(20_000, 1)[:, 0]])
    assert np.mean(linear_betas >= 0.99) < 0.1


@settings(max_examples=40, deadline=None)
@given(
    low=st.floats(0.91, 0.99),
    width=st.floats(0.001, 0.0099),
)
def test_one_minus_log_is_uniform_in_log_of_one_minus_x(low: float, width: float) -> None:
    dist = FloatDistribution(low=low, high=low + width, scale="one_minus_log")
    for u in (0.0, 0.25, 0.5, 0.75, 1.0):
        expected = 1 - 10 ** (
            math.log10(1 - low) + u * (math.log10(1 - low - width) - math.log10(1 - low))
        )
        assert dist.from_unit([u]) == pytest.approx(expected, rel=1e-12)


def test_log_int_gives_each_decade_the_same_share() -> None:
    dist = IntDistribution(low=1, high=999, scale="log")
    u = (np.arange(30_000) + 0.5) / 30_000  # an even sweep of the unit interval
    values = np.array([dist.from_unit([x]) for x in u])
    shares = [np.mean((values >= lo) & (values < lo * 10)) for lo in (1, 10, 100)]
    assert np.allclose(shares, 1 / 3, atol=2e-3)


def test_linear_int_gives_each_value_the_same_share() -> None:
    dist = IntDistribution(low=3, high=7)
    u = (np.arange(10_000) + 0.5) / 10_000
    values = [dist.from_unit([x]) for x in u]
    assert all(type(v) is int for v in values)
    assert [values.count(v) for v in range(3, 8)] == [2000] * 5


@settings(max_examples=50, deadline=None)
@given(
    a=st.floats(-6, 2),
    decades=st.floats(0.5, 6),
    points=st.integers(3, 9),
)
def test_a_grid_on_a_log_scale_is_geometric(a: float, decades: float, points: int) -> None:
    dist = FloatDistribution(low=10.0**a, high=10.0 ** (a + decades), scale="log")
    grid = np.array(dist.grid(points))
    assert grid[0] == pytest.approx(10.0**a) and grid[-1] == pytest.approx(10.0 ** (a + decades))
    ratios = grid[1:] / grid[:-1]
    assert np.allclose(ratios, ratios[0], rtol=1e-9)


def test_a_grid_on_one_minus_log_is_geometric_in_one_minus_beta() -> None:
    grid = np.array(FloatDistribution(low=0.9, high=0.9999, scale="one_minus_log").grid(4))
    assert np.allclose(1 - grid, [0.1, 0.01, 0.001, 0.0001])


@settings(max_examples=60, deadline=None)
@given(
    low=st.integers(-50, 50),
    steps=st.integers(1, 40),
    step=st.sampled_from([0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 2.0]),
    u=st.floats(0.0, 1.0),
)
def test_stepped_floats_land_exactly_on_the_steps(
    low: int, steps: int, step: float, u: float
) -> None:
    lo = round(low * step, 3)
    dist = FloatDistribution(low=lo, high=round(lo + steps * step, 3), step=step)
    value = dist.from_unit([u])
    k = (value - lo) / step
    assert abs(k - round(k)) < 1e-9
    assert lo <= value <= dist.high
    # No binary noise: the value prints with no more decimals than low and step need.
    assert len(repr(value)) <= 12


@settings(max_examples=100, deadline=None)
@given(
    low=st.integers(1, 10_000),
    span=st.integers(0, 10_000),
    scale=st.sampled_from(["linear", "log"]),
    u=st.floats(0.0, 1.0),
)
def test_int_values_are_ints_in_bounds_and_cells_hold_them(
    low: int, span: int, scale: str, u: float
) -> None:
    dist = IntDistribution(low=low, high=low + span, scale=scale)
    value = dist.from_unit([u])
    assert type(value) is int and low <= value <= low + span
    a, b = dist.unit_cell(u)
    assert a - 1e-12 <= u <= b + 1e-12
    for x in (a + 1e-9 * (b - a), (a + b) / 2, b - 1e-9 * (b - a)):
        assert dist.from_unit([x]) == value


def test_a_float_space_holds_every_number_in_its_range() -> None:
    """By a round trip through the unit box, 0.0003 and 0.05 were not in [1e-5, 0.1] on a
    log scale (they came back a few bits off)."""
    log = FloatDistribution(low=1e-5, high=1e-1, scale="log")
    assert all(log.contains(v) for v in (1e-5, 0.0003, 0.012345, 0.05, 0.1))
    assert not any(log.contains(v) for v in (0.0, 0.2, float("nan"), True, "0.01", None))
    beta = FloatDistribution(low=0.9, high=0.9999, scale="one_minus_log")
    assert beta.contains(0.95) and beta.contains(0.9999) and not beta.contains(1.0)
    stepped = FloatDistribution(low=0.1, high=1.0, step=0.1)
    assert stepped.contains(0.3) and stepped.contains(0.7) and not stepped.contains(0.35)

"""Strategies: one contract every strategy passes, then grid, sobol and coarse-to-fine alone."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from scipy.stats import qmc

from service.search.distributions import (
    CategoricalDistribution,
    Distribution,
    FloatDistribution,
    IntDistribution,
    LayersDistribution,
)
from service.search.strategies import (
    MIN_BOX_TRIALS,
    Box,
    CoarseToFineStrategy,
    GridStrategy,
    RandomSampler,
    RandomStrategy,
    SearchSpace,
    SobolSampler,
    SobolStrategy,
    Strategy,
)

SPACE: dict[str, Distribution] = {
    "learning_rate": FloatDistribution(low=1e-4, high=1.0, scale="log"),
    "beta1": FloatDistribution(low=0.9, high=0.999, scale="one_minus_log"),
    "keep_prob": FloatDistribution(low=0.5, high=1.0, step=0.1),
    "l2": FloatDistribution(low=0.0, high=0.1),
    "epochs": IntDistribution(low=10, high=1000, scale="log"),
    "batch_size": IntDistribution(low=16, high=256, step=16),
    "init": CategoricalDistribution(choices=["he", "xavier", "random"]),
    "shape": CategoricalDistribution(choices=[[50], [20, 7, 5], [10, 10]]),
    "hidden_layers": LayersDistribution(
        depth=IntDistribution(low=1, high=3), units=IntDistribution(low=5, high=200, scale="log")
    ),
}


def bowl(params: Mapping[str, Any]) -> float:
    """Higher is better; best at lr 1e-2, beta 0.99, keep_prob 0.8, init he."""
    return (
        -((math.log10(params["learning_rate"]) + 2) ** 2)
        - (math.log10(1 - params["beta1"]) + 2) ** 2
        - 4 * (params["keep_prob"] - 0.8) ** 2
        + (0.5 if params["init"] == "he" else 0.0)
    )


def make(kind: str, *, seed: int = 7, space: Mapping[str, Distribution] = SPACE) -> Strategy:
    s = SearchSpace(space)
    if kind == "grid":
        return GridStrategy(space=s, seed=seed, points=2)
    if kind == "random":
        return RandomStrategy(space=s, seed=seed, trials=50)
    if kind == "sobol":
        return SobolStrategy(space=s, seed=seed, trials=50)
    return CoarseToFineStrategy(
        space=s,
        seed=seed,
        rounds=3,
        trials_per_round=30,
        keep_top=0.25,
        margin=0.1,
        direction="maximize",
    )


def all_rounds(strategy: Strategy) -> list[list[dict[str, Any]]]:
    """Every round's parameters, feeding each round's bowl() values to the next."""
    history: list[tuple[dict[str, Any], float | None]] = []
    rounds = []
    for r in range(strategy.rounds):
        _, params = strategy.suggest(round_index=r, history=history)
        rounds.append(params)
        history += [(p, bowl(p)) for p in params]
    return rounds


STRATEGIES = ["grid", "random", "sobol", "coarse_to_fine"]


@pytest.mark.parametrize("kind", STRATEGIES)
class TestStrategyContract:
    """What every strategy promises, whatever it does inside."""

    def test_every_value_is_one_its_distribution_can_take(self, kind: str) -> None:
        for params in all_rounds(make(kind)):
            for p in params:
                assert set(p) == set(SPACE)
                for path, value in p.items():
                    assert SPACE[path].contains(value), (path, value)

    def test_values_are_within_bounds(self, kind: str) -> None:
        for params in all_rounds(make(kind)):
            for p in params:
                assert 1e-4 <= p["learning_rate"] <= 1.0
                assert 0.9 <= p["beta1"] <= 0.999
                assert 0.0 <= p["l2"] <= 0.1
                assert 10 <= p["epochs"] <= 1000
                assert 1 <= len(p["hidden_layers"]) <= 3
                assert all(5 <= w <= 200 for w in p["hidden_layers"])

    def test_ints_are_ints_and_floats_are_python_floats(self, kind: str) -> None:
        for params in all_rounds(make(kind)):
            for p in params:
                for path in ("epochs", "batch_size"):
                    assert type(p[path]) is int
                assert all(type(w) is int for w in p["hidden_layers"])
                for path in ("learning_rate", "beta1", "keep_prob", "l2"):
                    assert type(p[path]) is float
                json.dumps(p)  # plain JSON, no numpy scalars

    def test_steps_are_respected(self, kind: str) -> None:
        for params in all_rounds(make(kind)):
            for p in params:
                assert p["keep_prob"] in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
                assert p["batch_size"] % 16 == 0

    def test_categoricals_come_only_from_the_choices(self, kind: str) -> None:
        for params in all_rounds(make(kind)):
            for p in params:
                assert p["init"] in ("he", "xavier", "random")
                assert p["shape"] in ([50], [20, 7, 5], [10, 10])

    def test_same_seed_same_trials(self, kind: str) -> None:
        assert all_rounds(make(kind, seed=3)) == all_rounds(make(kind, seed=3))

    def test_another_seed_other_trials(self, kind: str) -> None:
        a, b = all_rounds(make(kind, seed=3)), all_rounds(make(kind, seed=4))
        if kind == "grid":
            assert a == b  # a grid has no randomness to seed
        else:
            assert a != b

    def test_each_round_has_the_announced_size(self, kind: str) -> None:
        strategy = make(kind)
        sizes = [len(params) for params in all_rounds(strategy)]
        assert sizes == [strategy.trials_in_round(r) for r in range(strategy.rounds)]
        assert sum(sizes) == strategy.total_trials

    def test_a_round_it_does_not_have_is_refused(self, kind: str) -> None:
        strategy = make(kind)
        with pytest.raises(ValueError, match="round_index"):
            strategy.suggest(round_index=strategy.rounds)

    def test_an_empty_space_gives_empty_parameter_sets(self, kind: str) -> None:
        _, params = make(kind, space={}).suggest(round_index=0)
        assert params and all(p == {} for p in params)


# --- the transform and boxes -----------------------------------------------------------


def test_space_orders_axes_by_path_whatever_the_key_order() -> None:
    forward = SearchSpace(SPACE)
    backward = SearchSpace(dict(reversed(list(SPACE.items()))))
    assert [a.name for a in forward.axes] == [a.name for a in backward.axes]
    u = np.random.default_rng(0).random(forward.dims)
    assert forward.decode(u) == backward.decode(u)


def test_encode_marks_missing_and_foreign_values_as_unknown() -> None:
    space = SearchSpace(SPACE)
    point = space.encode({"learning_rate": 0.01, "init": "lecun", "hidden_layers": [10]})
    names = [a.name for a in space.axes]
    assert point[names.index("learning_rate")] == pytest.approx(0.5)
    assert math.isnan(point[names.index("init")])  # not a choice
    assert math.isnan(point[names.index("beta1")])  # missing
    assert math.isnan(point[names.index("hidden_layers.units.1")])  # layer does not exist
    assert not math.isnan(point[names.index("hidden_layers.units.0")])


def test_box_maps_uniform_points_uniformly_onto_a_union_of_intervals() -> None:
    box = Box([[(0.0, 0.1), (0.5, 0.8)], [(0.25, 0.25)]])
    u = np.random.default_rng(1).random((40_000, 2))
    mapped = box.map(u)
    assert all(box.contains(row) for row in mapped[:2000])
    first = mapped[:, 0]
    assert np.mean(first < 0.1) == pytest.approx(0.25, abs=0.01)  # 0.1 of 0.4 total width
    assert np.all(((first >= 0.0) & (first <= 0.1)) | ((first >= 0.5) & (first <= 0.8)))
    assert np.all(mapped[:, 1] == 0.25)
    assert box.volume() == pytest.approx(0.4 * 0.0)


def test_box_refuses_intervals_outside_the_unit_interval() -> None:
    with pytest.raises(ValueError, match="inside"):
        Box([[(-0.1, 0.5)]])


def test_sobol_covers_the_box_more_evenly_than_random() -> None:
    sobol = [qmc.discrepancy(SobolSampler(seed=s).sample(n=64, dims=4)) for s in range(20)]
    rand = [qmc.discrepancy(RandomSampler(seed=s).sample(n=64, dims=4)) for s in range(20)]
    assert np.median(sobol) < 0.5 * np.median(rand)


# --- grid ------------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_on_each_scale() -> None:
    space = SearchSpace(
        {
            "learning_rate": FloatDistribution(low=1e-4, high=1.0, scale="log"),
            "init": CategoricalDistribution(choices=["he", "xavier"]),
            "epochs": IntDistribution(low=1, high=3),
        }
    )
    _, params = GridStrategy(space=space, seed=0, points=5).suggest(round_index=0)
    assert len(params) == 5 * 2 * 3 == space.grid_size(5)
    levels = sorted({p["learning_rate"] for p in params})
    assert levels == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    assert {p["init"] for p in params} == {"he", "xavier"}
    assert {p["epochs"] for p in params} == {1, 2, 3}  # fewer values than points: all of them
    assert len({json.dumps(p, sort_keys=True) for p in params}) == len(params)


def test_grid_size_of_a_big_space_is_known_without_building_it() -> None:
    space = SearchSpace(
        {f"x{i}": FloatDistribution(low=0.0, high=1.0) for i in range(12)}
        | {
            "hidden_layers": LayersDistribution(
                depth={"low": 1, "high": 8}, units={"low": 1, "high": 512}
            )
        }
    )
    assert space.grid_size(10) == 10**12 * sum(10**d for d in (1, 2, 3, 4, 5, 6, 7, 8))


# --- coarse to fine --------------------------------------------------------------------

C2F_SPACE: dict[str, Distribution] = {
    "learning_rate": FloatDistribution(low=1e-5, high=1.0, scale="log"),
    "beta1": FloatDistribution(low=0.8, high=0.9999, scale="one_minus_log"),
    "init": CategoricalDistribution(choices=["he", "xavier", "random", "zeros"]),
}


def narrow(params: Mapping[str, Any]) -> float:
    """A narrow optimum in log10(lr) x log10(1 - beta), at lr 3e-3 and beta 0.995.

    Half the peak's height lies within 0.2 decades of it on both axes; its long tails
    still rank every point by its distance, as a learning curve's final cost does.
    """
    dx = math.log10(params["learning_rate"]) - math.log10(3e-3)
    dy = math.log10(1 - params["beta1"]) - math.log10(1 - 0.995)
    return 1 / (1 + (dx**2 + dy**2) / 0.2**2) + (0.05 if params["init"] == "he" else 0.0)


def c2f(*, seed: int, direction: str = "maximize", **kw: Any) -> CoarseToFineStrategy:
    args: dict[str, Any] = dict(rounds=3, trials_per_round=20, keep_top=0.25, margin=0.1)
    args.update(kw)
    return CoarseToFineStrategy(
        space=SearchSpace(C2F_SPACE),
        seed=seed,
        direction=direction,  # type: ignore[arg-type]
        **args,
    )


def run_c2f(
    strategy: CoarseToFineStrategy, f: Callable[[Mapping[str, Any]], float]
) -> tuple[list[Box], list[tuple[dict[str, Any], float | None]]]:
    history: list[tuple[dict[str, Any], float | None]] = []
    boxes = []
    for r in range(strategy.rounds):
        box, params = strategy.suggest(round_index=r, history=history)
        assert box is not None
        boxes.append(box)
        history += [(p, f(p)) for p in params]
    return boxes, history


@pytest.mark.parametrize("seed", range(10))
def test_the_box_shrinks_round_by_round_and_keeps_the_best_inside(seed: int) -> None:
    strategy = c2f(seed=seed, rounds=4)
    space = strategy.space
    boxes, history = run_c2f(strategy, narrow)
    volumes = [b.volume() for b in boxes]
    assert volumes[0] == 1.0
    # Never wider; strictly narrower overall (a round whose trials all miss the top
    # keeps the same best, hence the same box).
    assert all(b <= a for a, b in itertools.pairwise(volumes)), volumes
    assert volumes[-1] < 0.5 * volumes[1] < 0.5, volumes
    for r in range(1, len(boxes)):
        seen = history[: 20 * r]  # what the box of round r was built from
        best = max(seen, key=lambda item: item[1] or -math.inf)[0]
        assert boxes[r].contains(space.encode(best))


def test_coarse_to_fine_respects_the_direction() -> None:
    lrs = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    history = [
        ({"learning_rate": lr, "beta1": 0.9, "init": "he"}, float(i)) for i, lr in enumerate(lrs)
    ]
    space = SearchSpace(C2F_SPACE)
    up = c2f(seed=0, keep_top=0.2).box(history=history)
    down = c2f(seed=0, keep_top=0.2, direction="minimize").box(history=history)
    assert up.contains(space.encode(history[-1][0])) and not up.contains(
        space.encode(history[0][0])
    )
    assert down.contains(space.encode(history[0][0])) and not down.contains(
        space.encode(history[-1][0])
    )
    # Negating the values and the direction together changes nothing.
    negated = [(p, -v) for p, v in history]
    again = c2f(seed=0, keep_top=0.2, direction="minimize").box(history=negated)
    assert again.intervals == up.intervals


def test_failed_trials_rank_last_and_an_all_failed_history_keeps_the_whole_space() -> None:
    good = {"learning_rate": 1e-2, "beta1": 0.99, "init": "xavier"}
    failed = [({"learning_rate": lr, "beta1": 0.81, "init": "he"}, None) for lr in (1e-5, 1.0)]
    strategy = c2f(seed=0, keep_top=0.5)
    box = strategy.box(history=[*failed, (good, 0.1), ({**good, "learning_rate": 1e-3}, -1e9)])
    assert box.contains(strategy.space.encode(good))
    for params, _ in failed:
        assert not box.contains(strategy.space.encode(params))
    init = [a.name for a in strategy.space.axes].index("init")
    assert box.describe(strategy.space)["axes"]["init"]["choices"] == ["xavier"]
    assert box.intervals[init] == [(0.25, 0.5)]
    assert strategy.box(history=failed).volume() == 1.0
    assert strategy.box(history=[]).volume() == 1.0


def test_the_next_round_does_not_depend_on_the_order_of_the_history() -> None:
    strategy = c2f(seed=5)
    _, params = strategy.suggest(round_index=0)
    history = [(p, round(narrow(p), 1)) for p in params]  # rounding makes ties on purpose
    a = strategy.suggest(round_index=1, history=history)[1]
    b = strategy.suggest(round_index=1, history=list(reversed(history)))[1]
    assert a == b


def test_a_box_is_described_in_the_original_units() -> None:
    strategy = c2f(seed=0, keep_top=0.5)
    good = [(1e-3, 0.99, "he"), (1e-2, 0.999, "xavier"), (3e-3, 0.995, "he")]
    good += [(2e-3, 0.99, "xavier"), (5e-3, 0.999, "he")]
    history: list[tuple[dict[str, Any], float | None]] = [
        ({"learning_rate": lr, "beta1": beta1, "init": init}, 1.0 - i / 10)
        for i, (lr, beta1, init) in enumerate(good)
    ]
    history += [({"learning_rate": 1.0, "beta1": 0.8, "init": "zeros"}, 0.0)] * 3
    history += [({"learning_rate": 1e-5, "beta1": 0.8, "init": "random"}, 0.0)] * 2
    described = strategy.box(history=history).describe(strategy.space)
    json.dumps(described)
    lr = described["axes"]["learning_rate"]
    assert 1e-5 < lr["low"] <= 1e-3 and 1e-2 <= lr["high"] < 1.0
    beta = described["axes"]["beta1"]
    assert 0.8 < beta["low"] <= 0.99 and 0.999 <= beta["high"] <= 0.9999
    assert described["axes"]["init"]["choices"] == ["he", "xavier"]


def test_the_box_spans_at_least_five_best_trials_whatever_the_share() -> None:
    # A round of 10 keeps its best 5, not its best quarter (3): the box around two or three
    # trials shuts out the choices the next-best ones used, and no later round comes back.
    strategy = c2f(seed=0, keep_top=0.25)
    inits = ["he"] * 3 + ["xavier"] * 2 + ["zeros"] * 5
    values = [1.0 - i / 10 for i in range(len(inits))]
    params = [
        {"learning_rate": 10.0 ** -(1 + i / 4), "beta1": 0.9, "init": init}
        for i, init in enumerate(inits)
    ]
    history: list[tuple[dict[str, Any], float | None]] = list(zip(params, values, strict=True))
    assert MIN_BOX_TRIALS == 5
    assert len(strategy.top(history)) == 5
    assert strategy.box(history=history).describe(strategy.space)["axes"]["init"]["choices"] == [
        "he",
        "xavier",
    ]
    assert len(strategy.top(history[:3])) == 3  # all there is
    # Where the share holds more, the share decides: rounds of 20 are as they were.
    twenty = history + list(zip(params, [v - 1.0 for v in values], strict=True))
    assert len(strategy.top(twenty)) == 5 and len(strategy.top(twenty * 2)) == 10


def test_a_single_best_point_still_leaves_room_to_search() -> None:
    strategy = c2f(seed=0, keep_top=0.01)
    history = [({"learning_rate": 1e-5, "beta1": 0.8, "init": "he"}, 1.0)] * MIN_BOX_TRIALS + [
        ({"learning_rate": 1.0, "beta1": 0.9999, "init": "he"}, 0.0)
    ] * 3
    box = strategy.box(history=history)
    _, params = strategy.suggest(round_index=1, history=history)
    assert len({p["learning_rate"] for p in params}) == len(params)
    assert box.volume() > 0
    assert box.contains(strategy.space.encode(history[0][0]))


def test_coarse_to_fine_beats_random_on_a_narrow_optimum_with_the_same_budget() -> None:
    c2f_best, random_best, wins = [], [], 0
    for seed in range(40):
        _, history = run_c2f(c2f(seed=seed), narrow)
        rnd = RandomStrategy(space=SearchSpace(C2F_SPACE), seed=seed, trials=60)
        _, params = rnd.suggest(round_index=0)
        a = max(v for _, v in history if v is not None)
        b = max(narrow(p) for p in params)
        c2f_best.append(a)
        random_best.append(b)
        wins += a > b
    assert np.median(c2f_best) > np.median(random_best) + 0.05
    assert wins >= 26, (wins, np.median(c2f_best), np.median(random_best))

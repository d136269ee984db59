"""Placing a coarse-to-fine round in its box: candidates, determinism, bounded cost."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np

from service.search import acquisition, surrogate
from service.search.strategies import Box, CoarseToFineStrategy, SearchSpace
from tests.service.search.test_strategies import C2F_SPACE, SPACE, bowl, narrow
from tests.service.search.test_strategies import c2f as c2f_of

History = list[tuple[dict[str, Any], float | None]]


def test_unmap_inverts_map_on_a_union_of_intervals_and_single_points() -> None:
    box = Box([[(0.1, 0.3), (0.5, 0.6)], [(0.2, 0.9)], [(0.25, 0.25), (0.75, 0.75)]])
    u = np.random.default_rng(0).random((200, 3))
    back = box.unmap(box.map(u))
    np.testing.assert_allclose(back[:, :2], u[:, :2], atol=1e-12)
    # Single points: map picks one of them, unmap gives back a point mapping to it.
    np.testing.assert_array_equal(box.map(back)[:, 2], box.map(u)[:, 2])
    assert np.isnan(box.unmap(np.array([[np.nan, 0.5, 0.25]]))[0, 0])
    # Outside every interval: the nearest edge.
    np.testing.assert_allclose(
        box.unmap(np.array([[0.4, 0.95, 0.25]]))[0, :2],
        [box.unmap(np.array([[0.3, 0.9, 0.25]]))[0, 0], 1.0],
    )


def test_local_points_stay_in_the_unit_box_are_distinct_and_move_each_centre() -> None:
    centres = np.array([[0.0, 0.5, 1.0, 0.2, 0.9, 0.4, 0.6, 0.1]])
    rng = np.random.default_rng(1)
    pts = acquisition.local_points(centres, per_point=300, spreads=(0.03, 0.1), rng=rng)
    assert pts.shape == (300, 8)
    assert pts.min() >= 0.0 and pts.max() <= 1.0
    assert len({tuple(p) for p in pts}) == 300
    moved = (pts != centres).sum(axis=1)
    assert moved.min() >= 1 and moved.mean() < 8  # a subset of coordinates, not all
    # Near the centre: reflected at the edges, not piled onto them.
    assert np.abs(pts - centres).mean() < 0.1
    near_edge = acquisition.local_points(
        np.array([[0.97, 0.02]]), per_point=200, spreads=(0.25,), rng=rng
    )
    assert ((near_edge > 0.0) & (near_edge < 1.0)).all()


def history_for(
    strategy: CoarseToFineStrategy, n: int, seed: int
) -> list[tuple[dict[str, Any], float | None]]:
    rng = np.random.default_rng(seed)
    space = strategy.space
    out: History = []
    for _ in range(n):
        p = space.decode(rng.random(space.dims))
        out.append((p, narrow(p) if "beta1" in p and len(p) == 3 else bowl(p)))
    return out


def test_same_spec_seed_and_history_give_the_same_round_byte_for_byte() -> None:
    def plan(order: int) -> str:
        strategy = c2f_of(seed=11)
        history = history_for(strategy, 45, seed=2)
        random.Random(order).shuffle(history)
        box, params = strategy.suggest(round_index=2, history=history)
        assert box is not None
        return json.dumps({"box": box.describe(strategy.space), "params": params})

    first = plan(0)
    assert plan(0) == first
    assert plan(1) == first  # the order the service lists trials in does not matter
    other = c2f_of(seed=12)
    assert json.dumps(
        other.suggest(round_index=2, history=history_for(other, 45, 2))[1]
    ) != json.dumps(json.loads(first)["params"])


def test_the_round_lies_in_its_box_narrowed_by_the_model_inside_the_best_trials_box() -> None:
    strategy = c2f_of(seed=4)
    history = history_for(strategy, 40, seed=3)
    box, params = strategy.suggest(round_index=2, history=history)
    assert box is not None
    assert all(box.contains(strategy.space.encode(p)) for p in params)
    drawn = strategy.box(history=history)  # around the best trials
    assert 0.0 < box.volume() < drawn.volume() < 1.0
    for inner, outer in zip(box.intervals, drawn.intervals, strict=True):
        assert outer[0][0] <= inner[0][0] < inner[-1][1] <= outer[-1][1]


def test_a_zoom_s_first_round_keeps_the_box_its_preview_draws() -> None:
    strategy = c2f_of(seed=4)
    history = history_for(strategy, 40, seed=3)
    box, params = strategy.suggest(round_index=0, history=history)
    assert box is not None
    drawn = strategy.box(history=history)
    assert box.describe(strategy.space) == drawn.describe(strategy.space)
    assert all(drawn.contains(strategy.space.encode(p)) for p in params)


def test_a_mixed_space_with_conditional_layers_places_a_whole_round_in_its_box() -> None:
    strategy = CoarseToFineStrategy(
        space=SearchSpace(SPACE),
        seed=3,
        rounds=3,
        trials_per_round=25,
        keep_top=0.25,
        margin=0.1,
        direction="maximize",
    )
    history = history_for(strategy, 50, seed=5)
    box, params = strategy.suggest(round_index=2, history=history)
    assert box is not None and len(params) == 25
    assert all(box.contains(strategy.space.encode(p)) for p in params)


def test_the_model_and_the_candidates_are_capped_however_big_the_study() -> None:
    strategy = c2f_of(seed=0, trials_per_round=512)
    history = history_for(strategy, 1000, seed=1)
    gp = strategy.model(history)
    assert gp is not None and len(gp.X) == surrogate.MAX_POINTS
    # A 512-trial round: the model places at most the candidates' share, the rest uniformly.
    assert acquisition.pool_size(512) <= acquisition.MAX_POOL
    box, params = strategy.suggest(round_index=1, history=history)
    assert box is not None and len(params) == 512
    assert len({json.dumps(p, sort_keys=True) for p in params}) > 500
    assert all(box.contains(strategy.space.encode(p)) for p in params)


def test_the_round_concentrates_where_the_model_expects_the_best() -> None:
    strategy = c2f_of(seed=6, keep_top=1.0)  # the whole space stays the box
    history = history_for(strategy, 40, seed=6)
    _, params = strategy.suggest(round_index=1, history=history)
    uniform = [strategy.space.decode(u) for u in np.random.default_rng(0).random((20, 3))]
    assert np.mean([narrow(p) for p in params]) > np.mean([narrow(p) for p in uniform]) + 0.1
    assert C2F_SPACE  # the space these functions are written for

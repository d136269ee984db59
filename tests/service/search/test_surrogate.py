"""The Gaussian process that places coarse-to-fine trials, and Thompson sampling from it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.search import surrogate
from service.search.strategies import Box, CoarseToFineStrategy, SearchSpace
from service.search.surrogate import GaussianProcess, rank_normal, thompson_batch
from tests.service.search.test_strategies import C2F_SPACE, narrow, run_c2f
from tests.service.search.test_strategies import c2f as c2f_of


def smooth(X: np.ndarray) -> np.ndarray:
    """Depends on the first two coordinates only; the third is irrelevant."""
    return np.sin(4 * X[:, 0]) + (X[:, 1] - 0.3) ** 2 * 3


def fitted(n: int = 40, seed: int = 0, noise: float = 0.0) -> GaussianProcess:
    rng = np.random.default_rng(seed)
    X = rng.random((n, 3))
    y = smooth(X) + noise * rng.standard_normal(n)
    return GaussianProcess(X, rank_normal(y), unordered=[False] * 3, cells=[0] * 3)


def test_the_gradient_of_the_likelihood_matches_finite_differences() -> None:
    rng = np.random.default_rng(1)
    X = rng.random((25, 3))
    X[:, 2] = (np.floor(X[:, 2] * 3) + 0.5) / 3  # a categorical's cell centres
    gp = GaussianProcess(X, rank_normal(smooth(X)), unordered=[False, False, True], cells=[0, 0, 3])
    D = gp._sq_dists()
    theta = np.array([-1.0, 0.2, 0.3, 0.1, -2.0])
    _, grad = gp._neg_log_posterior(theta, D)
    h = 1e-6
    numeric = [
        (gp._neg_log_posterior(theta + h * e, D)[0] - gp._neg_log_posterior(theta - h * e, D)[0])
        / (2 * h)
        for e in np.eye(len(theta))
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)


def test_the_likelihood_fitted_is_that_of_the_kernel_the_posterior_uses() -> None:
    """Two codings of one kernel (the fit's, per coordinate with its gradient, and the
    posterior's, which a round's candidate covariance takes): the same numbers."""
    rng = np.random.default_rng(3)
    X = rng.random((30, 3))
    X[:, 2] = (np.floor(X[:, 2] * 3) + 0.5) / 3
    gp = GaussianProcess(X, rank_normal(smooth(X)), unordered=[False, False, True], cells=[0, 0, 3])
    theta = np.array([-1.2, 0.1, 0.4, 0.3, -3.0])
    K = gp._kernel(gp.X, gp.X, theta) + (math.exp(theta[4]) + 1e-8) * np.eye(30)
    _, logdet = np.linalg.slogdet(K)
    prior = 0.5 * np.sum(((theta[:3] - surrogate._PRIOR_MEAN) / surrogate._PRIOR_SD) ** 2)
    direct = 0.5 * gp.y @ np.linalg.solve(K, gp.y) + 0.5 * logdet + prior
    assert gp._neg_log_posterior(theta, gp._sq_dists())[0] == pytest.approx(direct, rel=1e-9)


def test_the_posterior_mean_follows_the_function_and_is_sure_where_it_has_seen() -> None:
    gp = fitted(n=40)
    rng = np.random.default_rng(99)
    C = rng.random((300, 3))
    mean, cov = gp.posterior(C)
    truth = smooth(C)
    assert np.corrcoef(mean, truth)[0, 1] > 0.9
    _, cov_seen = gp.posterior(gp.X[:5])
    assert np.diag(cov_seen).max() < 0.2 * np.diag(cov).mean()


def test_an_irrelevant_coordinate_gets_a_longer_length_scale() -> None:
    length = fitted(n=50, noise=0.05).length_scales
    assert length[2] > 2 * max(length[0], length[1]), length


def test_a_categorical_coordinate_is_matched_by_cell_not_by_position() -> None:
    # Cells 0 and 2 of three are good, cell 1 (between them) is bad: a distance on the
    # positions would blur the middle cell into its neighbours.
    rng = np.random.default_rng(2)
    cell = rng.integers(0, 3, 60)
    X = np.column_stack([rng.random(60), (cell + 0.5) / 3])
    y = np.where(cell == 1, 0.0, 1.0) + 0.1 * X[:, 0]
    gp = GaussianProcess(X, rank_normal(y), unordered=[False, True], cells=[0, 3])
    mean, _ = gp.posterior(np.array([[0.5, 0.5 / 3], [0.5, 1.5 / 3], [0.5, 2.5 / 3]]))
    assert mean[1] < mean[0] - 1 and mean[1] < mean[2] - 1, mean


def test_rank_normal_orders_like_the_values_and_shares_ties() -> None:
    z = rank_normal([3.0, -math.inf, 1.0, 3.0, 2.0])
    assert z[1] < z[2] < z[4] < z[0] == z[3]
    assert abs(rank_normal([4.0, 1.0, 3.0, 2.0]).sum()) < 1e-12  # symmetric without ties


def test_thompson_picks_distinct_candidates_and_with_no_spread_the_best_by_the_mean() -> None:
    gp = fitted(n=40)
    C = np.random.default_rng(3).random((500, 3))
    picks = thompson_batch(gp, C, n=30, rng=np.random.default_rng(4))
    rows = {tuple(r) for r in picks}
    assert len(rows) == 30 and rows <= {tuple(r) for r in C}
    greedy = thompson_batch(gp, C, n=10, rng=np.random.default_rng(4), spread=0.0)
    mean, _ = gp.posterior(C)
    assert {tuple(r) for r in greedy} == {tuple(r) for r in C[np.argsort(-mean)[:10]]}
    # Thompson's picks are better than the candidates on average, but not all one spot.
    assert smooth(picks).mean() > smooth(C).mean() + 0.3
    assert picks.std(axis=0).min() > 0.02


def test_thompson_draws_jointly_over_at_most_max_joint_candidates_those_that_can_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gp = fitted(n=40)
    C = np.random.default_rng(5).random((surrogate.MAX_JOINT + 700, 3))
    seen: list[int] = []
    posterior = GaussianProcess.posterior

    def spy(self: GaussianProcess, cands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen.append(len(cands))
        return posterior(self, cands)

    monkeypatch.setattr(GaussianProcess, "posterior", spy)
    picks = thompson_batch(gp, C, n=20, rng=np.random.default_rng(6))
    assert seen == [surrogate.MAX_JOINT]  # the cost is bounded: one factor of this size
    # The candidates left out are those of the lowest upper bound: none of them is picked.
    mean, var = gp.marginal(C)
    upper = mean + 3.0 * np.sqrt(var)
    cut = np.sort(upper)[-surrogate.MAX_JOINT]
    chosen = {tuple(r) for r in picks}
    assert all(upper[i] >= cut for i in range(len(C)) if tuple(C[i]) in chosen)
    # A round bigger than the cap is still drawn among enough candidates to be distinct.
    seen.clear()
    big = thompson_batch(gp, C, n=surrogate.MAX_JOINT + 10, rng=np.random.default_rng(6))
    assert seen == [surrogate.MAX_JOINT + 10] and len({tuple(r) for r in big}) == len(big)


def test_marginal_is_the_diagonal_of_the_posterior() -> None:
    gp = fitted(n=30)
    C = np.random.default_rng(8).random((50, 3))
    mean, cov = gp.posterior(C)
    m, v = gp.marginal(C)
    np.testing.assert_allclose(m, mean, atol=1e-10)
    np.testing.assert_allclose(v, np.clip(np.diag(cov), 0.0, None), atol=1e-8)


def c2f(placement: str, seed: int) -> CoarseToFineStrategy:
    return c2f_of(seed=seed, placement=placement)  # 3 rounds of 20 over C2F_SPACE


def test_model_placement_finds_more_than_uniform_placement_in_the_same_boxes() -> None:
    model, uniform, wins = [], [], 0
    for seed in range(20):
        a = max(v for _, v in run_c2f(c2f("model", seed), narrow)[1] if v is not None)
        b = max(v for _, v in run_c2f(c2f("uniform", seed), narrow)[1] if v is not None)
        model.append(a)
        uniform.append(b)
        wins += a > b
    assert np.median(model) > np.median(uniform) + 0.02, (np.median(model), np.median(uniform))
    assert wins >= 14, wins


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_model_placement_stays_in_the_box_and_follows_the_direction(direction: str) -> None:
    strategy = c2f("model", seed=3)
    strategy.direction = direction  # type: ignore[assignment]
    sign = 1.0 if direction == "maximize" else -1.0
    _, first = strategy.suggest(round_index=0)
    history = [(p, sign * narrow(p)) for p in first]
    box, params = strategy.suggest(round_index=1, history=history)
    assert box is not None and all(box.contains(strategy.space.encode(p)) for p in params)
    uniform = Box.map(box, np.random.default_rng(0).random((20, strategy.space.dims)))
    placed = np.mean([narrow(p) for p in params])
    assert placed > np.mean([narrow(strategy.space.decode(u)) for u in uniform])


def test_failed_trials_count_as_the_worst_for_the_model() -> None:
    strategy = c2f("model", seed=0)
    _, first = strategy.suggest(round_index=0)
    # The failed trials are the ones the function likes: the model must steer away.
    values = [narrow(p) for p in first]
    cut = sorted(values)[-5]
    history = [(p, None if v >= cut else v) for p, v in zip(first, values, strict=True)]
    gp = strategy.model(history)
    assert gp is not None
    X = np.array([strategy.space.encode(p) for p, _ in history])
    mean, _ = gp.posterior(X)
    failed = [v is None for _, v in history]
    assert mean[failed].mean() < mean[~np.array(failed)].mean()


def test_too_few_finished_trials_leave_the_round_uniform() -> None:
    strategy = c2f("model", seed=0)
    history = [({"learning_rate": 1e-3, "beta1": 0.9, "init": "he"}, 1.0)] * 2
    assert strategy.model(history) is None
    assert strategy.model([(p, None) for p, _ in history] * 5) is None
    _, params = strategy.suggest(round_index=1, history=history)
    assert len(params) == 20


def test_equal_values_and_an_only_categorical_space_still_place_a_whole_round() -> None:
    strategy = c2f("model", seed=1)
    _, first = strategy.suggest(round_index=0)
    box, params = strategy.suggest(round_index=1, history=[(p, 0.5) for p in first])
    assert box is not None and len(params) == 20
    assert all(box.contains(strategy.space.encode(p)) for p in params)
    only = CoarseToFineStrategy(
        space=SearchSpace({"init": C2F_SPACE["init"]}),
        seed=0,
        rounds=2,
        trials_per_round=6,
        keep_top=0.5,
        margin=0.1,
        direction="maximize",
    )
    inits = ["zeros", "random"] * 3 + ["xavier", "he"] * 3  # the better half: xavier and he
    history = [({"init": c}, float(i)) for i, c in enumerate(inits)]
    _, params = only.suggest(round_index=1, history=history)
    assert {p["init"] for p in params} <= {"xavier", "he"} and len(params) == 6


def test_the_final_batch_is_distinct_starts_at_the_best_expected_improvement_and_spreads() -> None:
    gp = fitted(n=40)
    C = np.random.default_rng(3).random((500, 3))
    best = float(np.max(gp.fitted_mean()))
    picks = surrogate.best_of_batch(gp, C, n=12, best=best, rng=np.random.default_rng(4))
    rows = [tuple(r) for r in picks]
    assert len(set(rows)) == 12 and set(rows) <= {tuple(r) for r in C}
    # Its first picks are where the draws' mean gain over the best is highest: near the
    # best by the mean, as good on the true function as the best candidates.
    mean, _ = gp.posterior(C)
    assert picks[0].tolist() in C[np.argsort(-mean)[:25]].tolist()
    assert smooth(picks[:4]).min() > np.sort(smooth(C))[-40]
    # Each later pick pays only for what the earlier ones may not reach: once the peak is
    # covered, the rest go where the model is unsure, not to one spot.
    assert np.ptp(picks, axis=0).min() > 0.3
    again = surrogate.best_of_batch(gp, C, n=12, best=best, rng=np.random.default_rng(4))
    assert again.tolist() == picks.tolist()

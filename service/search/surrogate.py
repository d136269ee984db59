"""A Gaussian-process model of a study's results over the unit box, placing coarse-to-fine trials.

A box says where to look; this decides where inside it. Trial values are noisy (a dev
accuracy moves by a point or two with a small change of any hyperparameter), so what a
round should find is the region whose *mean* is best, and put many trials there. A GP
with a noise term estimates that mean from every finished trial - the bad ones say
where not to go - and Thompson sampling turns it into a batch (`acquisition`): each
trial of the round is the best candidate of its own draw from the posterior, so a
round spreads over the places that may be best in proportion to how likely each is.

Choices, and why:
- Values are standardized after a Yeo-Johnson power transform fitted to them
  (`warped`, as HEBO does): a long tail of bad values (a diverged trial at chance level,
  a function's far walls) is made compact, so it does not flatten the model of the
  region that matters, while how much better the best trials are is kept - Gaussian
  ranks (`rank_normal`), used before, spaced the best ones evenly and lost that
  (bench/search_vs_optuna.py, seeds 0-11: better or equal on 8 of 10 functions). A
  failed trial counts as the worst value less one spread.
- Matern 5/2 with one length scale per coordinate (ARD), fitted by maximum marginal
  likelihood with a weak prior; an unordered (categorical) coordinate uses a mismatch
  distance, not the distance between its cells' positions.
- The fitted hyperparameters are rounded (to 0.01 in log space) before they are used,
  so that BLAS rounding on another machine cannot move them and the same history gives
  the same trials everywhere; candidates come from the round's own seeded generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular
from scipy.optimize import minimize
from scipy.stats import norm, rankdata, yeojohnson
from threadpoolctl import threadpool_limits

# The model is fitted on at most this many trials (the best half of them and the rest
# spread over the ranking): its cost grows with their cube, and a round waits on it (the
# service's planner opens it while the workers idle). The best 80 of a big study carry
# what the next round needs; the rest only say roughly where not to go.
MAX_POINTS = 160
# Candidates per round: at least this many, and this many per trial to place.
MIN_CANDIDATES = 1024
CANDIDATES_PER_TRIAL = 8
MAX_CANDIDATES = 2048
# A round's joint posterior draws are over at most this many candidates, those of the
# highest upper bound (mean + 3 sd): one beyond them is the best of a draw about once in
# a thousand, and the draws' cost is the cube of their count (a 2,048-candidate round spent
# two thirds of its time factoring their covariance).
MAX_JOINT = 1024
_UPPER_SD = 3.0
# A final round's batch is chosen on this many joint draws (`best_of_batch`).
FINAL_DRAWS = 256
# Bounds of the hyperparameters (log space): length scales on the unit box, the signal
# and noise variances of rank-normalized values (variance about 1).
_LOG_LENGTH = (math.log(0.03), math.log(20.0))
_LOG_SIGNAL = (math.log(0.05), math.log(20.0))
_LOG_NOISE = (math.log(1e-4), math.log(2.0))
# Weak log-normal prior on each length scale, centred on half the box.
_PRIOR_MEAN, _PRIOR_SD = math.log(0.5), 1.5
_ROUND = 0.01
_JITTER = 1e-8


def _matern(r2: np.ndarray, signal: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matern 5/2 at scaled squared distances `r2`, with ``s = sqrt(5 r2)`` and ``exp(-s)``."""
    s = np.sqrt(5.0 * r2)
    e = np.exp(-s)
    return signal * (1.0 + s + s * s / 3.0) * e, s, e


def rank_normal(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Gaussian scores of `values` by rank (ties share one); higher value, higher score."""
    v = np.asarray(values, dtype=float)
    return np.asarray(norm.ppf((rankdata(v) - 0.5) / len(v)), dtype=float)


def warped(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Standardized `values` after a Yeo-Johnson power transform fitted to them (higher is
    better); -inf (a failed trial) becomes the worst finite value less one spread."""
    v = np.asarray(values, dtype=float)
    finite = np.isfinite(v)
    f = v[finite]
    spread = float(f.std()) or 1.0
    z = (f - f.mean()) / spread
    # Fitted on the negated values: the transform that makes a long tail of bad values
    # (a diverged run, a function's far walls) compact while the best stay spread.
    t = -yeojohnson(-z)[0]
    t = (t - t.mean()) / (float(t.std()) or 1.0)
    out = np.full(len(v), float(t.min()) - 1.0 if t.size else -1.0)
    out[finite] = t
    return out


class GaussianProcess:
    """A fitted GP: Matern 5/2, ARD, constant zero mean on rank-normal targets.

    Parameters
    ----------
    X : (n, d) unit coordinates; ``nan`` (an inactive coordinate) is treated as 0.5
    y : (n,) targets, higher is better
    unordered : (d,) whether each coordinate is categorical (mismatch distance)
    cells : (d,) the cell count of each unordered coordinate (unused for ordered ones)
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        unordered: Sequence[bool],
        cells: Sequence[int],
    ) -> None:
        self.unordered = np.asarray(unordered, dtype=bool)
        self.cells = np.maximum(np.asarray(cells, dtype=int), 1)
        self.X = self._features(X)
        self.y = np.asarray(y, dtype=float)
        d = self.X.shape[1]
        # Matrices of a few hundred rows: BLAS threads cost more than they bring, and the
        # service's other requests (and embedded workers) want the cores.
        with threadpool_limits(1):
            self.theta = self._fit(d)
            self._factor()

    def _features(self, X: np.ndarray) -> np.ndarray:
        F = np.where(np.isnan(X), 0.5, np.asarray(X, dtype=float))
        if self.unordered.any():  # a categorical's cell index: equal or not, nothing between
            k = self.cells[self.unordered]
            F[:, self.unordered] = np.minimum(np.floor(F[:, self.unordered] * k), k - 1)
        return F

    def _coordinate_sq(self, a: np.ndarray, b: np.ndarray, j: int) -> np.ndarray:
        """Squared distances along coordinate `j` between values `a` and `b`: (len a, len b)."""
        diff = a[:, None] - b[None, :]
        if self.unordered[j]:
            return (diff != 0).astype(float)
        return diff * diff

    def _kernel(self, A: np.ndarray, B: np.ndarray, theta: np.ndarray) -> np.ndarray:
        d = A.shape[1]
        inv_l = np.exp(-theta[:d])
        # Ordered coordinates at once, |a|^2 + |b|^2 - 2ab on scaled points (one product,
        # where a loop over coordinates took most of a big round's time); categorical ones
        # one at a time. Memory (len(A), len(B)), not times the dimensions.
        ordered = ~self.unordered
        a, b = A[:, ordered] * inv_l[ordered], B[:, ordered] * inv_l[ordered]
        r2 = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
        np.maximum(r2, 0.0, out=r2)
        for j in np.flatnonzero(self.unordered):
            r2 += self._coordinate_sq(A[:, j], B[:, j], int(j)) * inv_l[j] ** 2
        return _matern(r2, math.exp(theta[d]))[0]

    def _sq_dists(self) -> np.ndarray:
        """Per coordinate, the squared distances between the fitted points: (n, n, d)."""
        cols = range(self.X.shape[1])
        return np.stack([self._coordinate_sq(self.X[:, j], self.X[:, j], j) for j in cols], -1)

    def _neg_log_posterior(self, theta: np.ndarray, D: np.ndarray) -> tuple[float, np.ndarray]:
        """The negative log marginal likelihood plus the length-scale prior, and its gradient.

        With ``s = sqrt(5) r``, Matern 5/2 is ``k = signal (1 + s + s^2/3) exp(-s)`` and
        ``dk/dlog(l_j) = 5/3 signal (1 + s) exp(-s) D_j / l_j^2``; the gradient of the
        likelihood is ``1/2 tr((K^-1 - alpha alpha^T) dK)``.
        """
        d = self.X.shape[1]
        inv_l2 = np.exp(-2.0 * theta[:d])
        signal, noise = math.exp(theta[d]), math.exp(theta[d + 1])
        scaled = D * inv_l2
        K, s, e = _matern(scaled.sum(axis=-1), signal)
        K[np.diag_indices_from(K)] += noise + _JITTER
        try:
            L = cholesky(K, lower=True)
        except np.linalg.LinAlgError:
            return 1e10, np.zeros_like(theta)
        alpha = cho_solve((L, True), self.y)
        nll = 0.5 * self.y @ alpha + np.log(np.diag(L)).sum()
        prior_z = (theta[:d] - _PRIOR_MEAN) / _PRIOR_SD
        W = cho_solve((L, True), np.eye(len(K))) - np.outer(alpha, alpha)
        common = (5.0 / 3.0) * signal * (1.0 + s) * e * W
        grad = np.empty_like(theta)
        grad[:d] = 0.5 * np.einsum("ab,abj->j", common, scaled) + prior_z / _PRIOR_SD
        grad[d] = 0.5 * np.sum(W * (K - np.diag(np.full(len(K), noise + _JITTER))))
        grad[d + 1] = 0.5 * noise * np.trace(W)
        return float(nll + 0.5 * prior_z @ prior_z), grad

    def _fit(self, d: int) -> np.ndarray:
        bounds = [_LOG_LENGTH] * d + [_LOG_SIGNAL, _LOG_NOISE]
        D = self._sq_dists()
        # Fixed starting points (short, middle and long scales): deterministic, no rng.
        # Only the most likely of them is optimized: optimizing all three cost three times
        # as much and ended, on the search bench, at the same optimum almost every time.
        starts = [
            np.array([log_length] * d + [0.0, math.log(0.1)])
            for log_length in (math.log(0.2), math.log(0.5), math.log(2.0))
        ]
        start = min(starts, key=lambda t: self._neg_log_posterior(t, D)[0])
        res = minimize(
            self._neg_log_posterior,
            start,
            args=(D,),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            # The result is rounded to 0.01 in log space: no need to polish further.
            options={"maxiter": 100, "ftol": 1e-7},
        )
        lows, highs = zip(*bounds, strict=True)
        return np.clip(np.round(np.asarray(res.x) / _ROUND) * _ROUND, lows, highs)

    def _factor(self) -> None:
        d = self.X.shape[1]
        K = self._kernel(self.X, self.X, self.theta)
        K[np.diag_indices_from(K)] += math.exp(self.theta[d + 1]) + _JITTER
        self._L = cholesky(K, lower=True)
        self._alpha = cho_solve((self._L, True), self.y)

    @property
    def length_scales(self) -> np.ndarray:
        return np.exp(self.theta[: self.X.shape[1]])

    @property
    def signal(self) -> float:
        """The prior variance of the latent function."""
        return math.exp(self.theta[self.X.shape[1]])

    @property
    def noise(self) -> float:
        """The variance of a trial's value about the latent function."""
        return math.exp(self.theta[self.X.shape[1] + 1])

    def fitted_mean(self) -> np.ndarray:
        """The posterior mean at the fitted points: ``K alpha = y - noise alpha``."""
        return self.y - (self.noise + _JITTER) * self._alpha

    def marginal(self, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean (M,) and variance (M,) of the latent function at candidates `C`, without
        their covariance (linear in M, where `posterior` is quadratic)."""
        Kc = self._kernel(self._features(C), self.X, self.theta)
        V = solve_triangular(self._L, Kc.T, lower=True)
        var = self.signal - np.einsum("ij,ij->j", V, V)
        return Kc @ self._alpha, np.maximum(var, 0.0)

    def posterior(self, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean (M,) and covariance (M, M) of the latent function at candidates `C`."""
        F = self._features(C)
        Kc = self._kernel(F, self.X, self.theta)
        mean = Kc @ self._alpha
        V = solve_triangular(self._L, Kc.T, lower=True)
        cov = self._kernel(F, F, self.theta) - V.T @ V
        return mean, cov


def thompson_batch(
    gp: GaussianProcess,
    candidates: np.ndarray,
    *,
    n: int,
    rng: np.random.Generator,
    spread: float = 1.0,
) -> np.ndarray:
    """`n` distinct rows of `candidates`, each the best of its own posterior draw.

    Draws are joint over the candidates (one Cholesky factor of their covariance), so a
    draw is a plausible function, not independent noise per point; over the `MAX_JOINT`
    of highest upper bound when there are more (and at least `n`).
    """
    candidates, draws = joint_draws(
        gp, candidates, keep=max(MAX_JOINT, n), draws=n, rng=rng, spread=spread
    )
    m = len(candidates)
    taken = np.zeros(m, dtype=bool)
    picks = []
    for k in range(n):
        column = np.where(taken, -np.inf, draws[:, k])
        i = int(np.argmax(column))
        taken[i] = True
        picks.append(i)
    return candidates[picks]


def best_of_batch(
    gp: GaussianProcess,
    candidates: np.ndarray,
    *,
    n: int,
    best: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """`n` distinct rows of `candidates` that together most raise the expected best value:
    greedily, each the one whose value most raises ``E[max(best, picks so far)]`` over
    `FINAL_DRAWS` joint posterior draws (Monte Carlo q-EI).

    A round that no later round will learn from should be judged by the best trial it
    finds, not by what it teaches the model, which is what Thompson sampling spends on."""
    candidates, draws = joint_draws(
        gp, candidates, keep=max(MAX_JOINT, n), draws=FINAL_DRAWS, rng=rng, spread=1.0
    )
    current = np.full(draws.shape[1], best)
    taken = np.zeros(len(candidates), dtype=bool)
    picks = []
    for _ in range(n):
        gain = np.maximum(draws - current[None, :], 0.0).mean(axis=1)
        i = int(np.argmax(np.where(taken, -np.inf, gain)))
        taken[i] = True
        picks.append(i)
        current = np.maximum(current, draws[i])
    return candidates[picks]


def joint_draws(
    gp: GaussianProcess,
    candidates: np.ndarray,
    *,
    keep: int,
    draws: int,
    rng: np.random.Generator,
    spread: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The candidates drawn over (the `keep` of highest upper bound, in their order) and
    `draws` joint posterior draws at them: (m, d), (m, draws)."""
    with threadpool_limits(1):
        if len(candidates) > keep:
            m_mean, m_var = gp.marginal(candidates)
            upper = m_mean + _UPPER_SD * spread * np.sqrt(m_var)
            candidates = candidates[np.sort(np.argsort(-upper, kind="stable")[:keep])]
        mean, cov = gp.posterior(candidates)
        m = len(candidates)
        scale = max(float(np.mean(np.diag(cov))), 1e-12)
        for jitter in (1e-8, 1e-6, 1e-4, 1e-2):
            try:
                L = cholesky(cov + jitter * scale * np.eye(m), lower=True)
                break
            except np.linalg.LinAlgError:
                continue
        else:  # numerically hopeless: independent draws from the marginal variances
            L = np.diag(np.sqrt(np.clip(np.diag(cov), 0.0, None)))
        return candidates, mean[:, None] + spread * (L @ rng.standard_normal((m, draws)))


def fit_indices(n: int) -> np.ndarray:
    """Which of `n` ranked (best first) trials the model is fitted on, at most `MAX_POINTS`:
    the best half of those, and the rest spread evenly over the ranking."""
    if n <= MAX_POINTS:
        return np.arange(n)
    head = MAX_POINTS // 2
    rest = np.linspace(head, n - 1, MAX_POINTS - head).round().astype(int)
    return np.concatenate([np.arange(head), rest])


def candidate_count(n: int) -> int:
    return int(min(MAX_CANDIDATES, max(MIN_CANDIDATES, CANDIDATES_PER_TRIAL * n)))

"""Where a coarse-to-fine round's trials go inside its box: Thompson sampling, in a
candidate set that reaches the optimum.

A round's trials run at once, none seeing another's result, so the round is chosen as a
batch: each trial is the best candidate of its own joint draw from the model's posterior
(`surrogate.thompson_batch`), so the round spreads over the places that may be best in
proportion to how likely each is - the model's own uncertainty decides how much a round
explores, and parallel Thompson sampling needs no penalty between the trials of a batch.
The last round, which no later round learns from, is chosen instead for the best value
it may find (`surrogate.best_of_batch`, a Monte Carlo q-EI over the same joint draws),
and the box a later round is placed in is narrowed to where `BOX_DRAWS` draws peak
(`draw_maxima`; see `CoarseToFineStrategy`).

What this module adds is where the candidates come from. Scrambled Sobol points cover
the box, but in four or more dimensions a thousand of them rarely come close enough to
an optimum for the model to say so. So, as a trust region's local search does, there
are also candidates near the best finished trials inside the box, and near the
candidates of highest expected improvement among those (a cheap second pass), each
moving a random subset of the coordinates by a few shares of the box. All candidates
are drawn in the box's own coordinates (`Box.map`), so every trial stays in the box the
dashboard draws.

Measured on bench/search_vs_optuna.py (seeds 0-11, 60 trials, ten test functions),
a greedy batch of expected improvement or of an upper confidence bound with the kriging
believer (each pick believed at its mean, the variance shrunk around it) lost to plain
Thompson sampling on nine of ten: it spends a round's later trials filling unexplored
corners, which a three-round budget cannot afford.

Tried since and not kept, each paired against this placement on the suite's multimodal
and noisy functions (Hartmann 6, Ackley 4, Hartmann 6 noisy; seeds 12-35, 60 trials;
differences in the functions' own units): drawing the round again among candidates
added next to its picks (Hartmann 6 -0.09 +- 0.05, Ackley 4 -0.83 +- 0.32), wider
draws (x1.5: -0.27 +- 0.08 on Hartmann 6) or narrower ones (x0.5: Ackley 4 -1.65 +-
0.44), a third as many or twice as many local candidates (-0.10 +- 0.05, -0.02 +- 0.05
on Hartmann 6), a length-scale prior centred on the whole box (Ackley 4 -0.57 +- 0.33);
on seeds 0-11, Optuna's Gamma(1.1, 30) prior on the noise, and anchors ranked by the
model's mean instead of their values, moved neither family by a standard error.

Tried for the multimodal family and not kept (seeds 0-35, 60 trials; the family's paired
difference on the bench's normalized scale, wins/ties/losses, then per function in its
own units): a continuous maximum for each draw - pathwise draws (1,024 random Fourier
features of the Matern kernel for the prior, the exact update by the fitted trials),
each climbed by projected Adam steps from its four best candidates - lost -0.164 +-
0.037 (35/0/73; Hartmann 6 -0.23 +- 0.07, Levy 6 -3.6 +- 1.0): the climbs moved about
0.2 length scales, towards more variance and a lower mean, so the round explored more
than among the candidates, which crowd near the best trials; each Thompson pick moved up
the posterior mean instead (at most 0.25 length scales): -0.165 +- 0.034 (Ackley 4
-4.7 +- 0.5), the picks bunched on the mean's few peaks; q-EI for every round, not only
the last: +0.005 +- 0.027 (62/0/46) against Thompson sampling, no gain for a batch that
teaches less; the box from the draws' peaks over the whole space rather than inside the
box around the best trials: -0.098 +- 0.031 (Levy 6 -2.5 +- 0.9), and the whole space
as every round's box: Hartmann 6 -0.13 +- 0.06 - the zoom's denser candidates matter;
32 draws for the box instead of 64: +0.018 +- 0.022, within noise.

Tried next for the multimodal family, none kept (seeds 0-35, 60 trials, paired against
this placement; family on the normalized scale, wins/ties/losses, then per function):
- the output transform (`surrogate.warped`): none, values only standardized as Optuna's
  GPSampler does, -0.072 +- 0.033 (43/0/65; Ackley 4 -2.2 +- 0.5); Gaussian ranks again
  -0.054 +- 0.025 (Ackley 4 -2.1 +- 0.5); the power transform only where it compresses
  the bad values (lambda <= 1, else none) -0.075 +- 0.023: on Hartmann 6 and Ackley 4
  it placed the same trials as no transform on every seed (lambda above 1), so the
  transform that pays (Ackley 4) is the one that spreads the plateau's many bad values;
  the log of the distance below the best (as for a funnel) -0.246 +- 0.038 (Ackley 4
  -6.5 +- 0.6), the log of the height above the worst (plus 0.1 or 1 spread) -0.092 +-
  0.032 (Hartmann 6 +0.06 +- 0.05 but Levy 6 -3.4 +- 0.8) and -0.018 +- 0.031: each
  function wants its own; choosing among the power transform and those two logs by the
  model's evidence (its marginal likelihood with the transform's Jacobian) took the log
  on Hartmann 6 (+0.066 +- 0.053, 25/0/11) and the power transform on Levy 6, +0.014 +-
  0.014 on the family and no family moved by a standard error (valleys +0.004 +- 0.010,
  plateaus +0.008 +- 0.006, noisy -0.010 +- 0.019): not worth three fits a round;
- the model: GPSampler's priors (-(0.1/lambda + 0.1 lambda) on each inverse squared
  length scale, Gamma(2, 1) on the signal) -0.019 +- 0.032 (Levy 6 -0.6 +- 0.9); all
  three starting points optimized, not only the likeliest, +0.004 +- 0.006 (97 of 108
  ties: the same optimum); Matern 3/2 +0.026 +- 0.027 (57/0/51; Levy 6 +1.0 +- 0.7,
  Ackley 4 -0.2 +- 0.3); the hyperparameters' uncertainty (three more models drawn from
  a Laplace approximation around the fit, the draws split over the four) +0.002 +- 0.025;
- the candidates: scored at the trial each decodes to (a discrete value's cell, an
  absent layer's width as the fitted trials have it) -0.020 +- 0.017 (Levy 6 -0.6 +-
  0.5), and with an absent layer's width taken as the last present one, Levy 6 -0.03 +-
  0.84; the top candidates climbed up the log expected improvement (L-BFGS-B, analytic
  gradient) and added, every round -0.025 +- 0.033, the last round only -0.040 +- 0.022
  (Levy 6 -1.1 +- 0.6);
- the box: a trust region centred on the best trial, 0.8 of the space wide, scaled by
  the length scales, -0.125 +- 0.031 (Levy 6 -2.9 +- 0.8; 0.4 wide -0.056 +- 0.035, 1.6
  wide -0.150 +- 0.032), the best trial of Levy 6 sits in the wrong ripple; the last
  round's q-EI on 1,024 draws rather than 256: -0.027 +- 0.021.
What the gap is (seeds 0-11): against GPSampler in batches of 20 (``gp/b``) this
placement is +0.32 +- 0.15 (25/0/11) where it is -0.16 +- 0.05 against GPSampler told
every result (Levy 6: GPSampler's median best -1.7 one at a time, -7.2 in batches); on
Hartmann 6 the best trial is as good whether the optimum lies in the last round's box
(20 of 36 seeds, mean best 2.88) or not (2.81), and the maximum of the model's mean
after 40 trials scores less than the last round's best (2.21 against 2.79, seeds 0-11):
the model after two rounds, not the box or the last round's choice, limits it.

Tried later (seeds 0-35, 60 trials; against GPSampler one trial at a time this placement
is -0.133 +- 0.030 there: Hartmann 6 -0.30 +- 0.07, Levy 6 -2.3 +- 0.7, Ackley 4 +0.16 +-
0.29), none kept: the last round chosen among the local candidates only, as its picks lay
0.6-0.9 from the best trial where the model's mean was highest and the true values were
not, -0.054 +- 0.022 (Ackley 4 -1.3 +- 0.3: the far picks are the ones that find another
basin); the length-scale prior centred on 0.3 of the box, -0.013 +- 0.026; a noise floor
of 1e-6 rather than 1e-4 for noiseless functions, -0.016 +- 0.009. And an additive part
in the kernel (half the prior variance a sum of one-dimensional Matern 5/2 kernels on the
same length scales, so that a main effect learned along one coordinate holds where the
others were never tried with it; the fitted model did carry it there): multimodal +0.030
+- 0.026 (65/0/43; Levy 6 +0.5 +- 0.7, Hartmann 6 +0.05 +- 0.04), valleys +0.006 +- 0.019,
plateaus +0.009 +- 0.007, noisy +0.067 +- 0.084 (Hartmann 6 noisy -0.18 +- 0.08), trainer
-0.024 +- 0.020: no family moved by a standard error, for twice the model's time (0.70 s
against 0.37 s for 1,000 trials and a 512-trial round); a quarter or three quarters of the
variance, or the share fitted by the likelihood (it swung between 0.02 and 0.95 with 20 to
40 trials), moved the multimodal family as little (+0.035 to +0.053 +- 0.03).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import log_ndtr
from threadpoolctl import threadpool_limits

from service.search.surrogate import (
    MAX_CANDIDATES,
    GaussianProcess,
    best_of_batch,
    candidate_count,
    thompson_batch,
)

if TYPE_CHECKING:
    from service.search.space import Box

# Local candidates: this many around each of the best finished trials, at these spreads
# (shares of the box along each coordinate), and as many again around the best
# candidates of the first pass, at the smaller spreads.
LOCAL_PER_POINT = 48
LOCAL_SPREADS = (0.03, 0.1, 0.25)
ANCHORS = 8
REFINE = 8
LOCAL = (ANCHORS + REFINE) * LOCAL_PER_POINT
# The most candidates a round is chosen among: the draws are joint over all of them, so
# their covariance (this many squared) and its Cholesky factor bound the round's cost.
MAX_POOL = MAX_CANDIDATES
# How many posterior draws' peaks set the round's box.
BOX_DRAWS = 64
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def log_ei(mean: np.ndarray, sd: np.ndarray, best: float) -> np.ndarray:
    """log E[max(f - best, 0)] for f ~ N(mean, sd^2), finite however far below `best`."""
    sd = np.maximum(sd, 1e-12)
    z = (mean - best) / sd
    out = np.empty_like(z)
    near = z > -6.0
    zn = z[near]
    # h(z) = z Phi(z) + phi(z), summed in log space.
    out[near] = np.log(
        np.maximum(zn * np.exp(log_ndtr(zn)) + np.exp(-0.5 * zn * zn - _LOG_SQRT_2PI), 1e-300)
    )
    zf = z[~near]  # h(z) ~ phi(z) / z^2 for z -> -inf
    out[~near] = -0.5 * zf * zf - _LOG_SQRT_2PI - 2.0 * np.log(-zf)
    return out + np.log(sd)


def local_points(
    centres: np.ndarray, *, per_point: int, spreads: tuple[float, ...], rng: np.random.Generator
) -> np.ndarray:
    """Gaussian perturbations of `centres` (box coordinates, in [0, 1]), reflected at the
    edges (clipping would pile distinct candidates onto one edge value).

    Each perturbation moves a random subset of the coordinates (every one in low
    dimensions, about five in many), as a trust region's local search does."""
    if len(centres) == 0:
        return np.empty((0, centres.shape[1]))
    d = centres.shape[1]
    rows = np.repeat(centres, per_point, axis=0)
    spread = np.resize(np.array(spreads), len(rows))
    step = rng.standard_normal(rows.shape) * spread[:, None]
    moved = rng.random(rows.shape) < min(1.0, 5.0 / max(d, 1))
    moved[np.arange(len(rows)), rng.integers(0, d, len(rows))] = True  # at least one
    out = np.abs(rows + np.where(moved, step, 0.0))
    return np.clip(np.where(out > 1.0, 2.0 - out, out), 0.0, 1.0)


def uniform_count(n: int) -> int:
    """How many Sobol candidates cover the box for a round placing `n` trials by the model."""
    return min(candidate_count(n), MAX_POOL - LOCAL)


def pool_size(n: int) -> int:
    """How many candidates a round placing `n` trials by the model is chosen among, at most."""
    return uniform_count(n) + LOCAL


def draw_maxima(
    gp: GaussianProcess,
    box: Box,
    *,
    uniform: np.ndarray,
    anchors: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Where `BOX_DRAWS` posterior draws peak in `box` (unit points), among the same kind
    of candidates a round is placed among."""
    return thompson_batch(
        gp, candidates(gp, box, uniform=uniform, anchors=anchors, rng=rng), n=BOX_DRAWS, rng=rng
    )


def candidates(
    gp: GaussianProcess,
    box: Box,
    *,
    uniform: np.ndarray,
    anchors: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Unit points in `box`: `uniform` mapped into it, and local ones around `anchors` and
    around the candidates of highest expected improvement among those."""
    with threadpool_limits(1):
        local = local_points(
            anchors[:ANCHORS], per_point=LOCAL_PER_POINT, spreads=LOCAL_SPREADS, rng=rng
        )
        Z = np.vstack([uniform, local])
        C = box.map(Z)
        mean, var = gp.marginal(C)
        first = log_ei(mean, np.sqrt(var), float(np.max(gp.fitted_mean())))
        top = Z[np.argsort(-first, kind="stable")[:REFINE]]
        refined = local_points(top, per_point=LOCAL_PER_POINT, spreads=LOCAL_SPREADS[:2], rng=rng)
        return np.vstack([C, box.map(refined)])


def place_batch(
    gp: GaussianProcess,
    box: Box,
    *,
    uniform: np.ndarray,
    anchors: np.ndarray,
    n: int,
    rng: np.random.Generator,
    final: bool = False,
) -> np.ndarray:
    """`n` unit points in `box` chosen by Thompson sampling among candidates built from
    `uniform` (box coordinates covering [0, 1]^d) and `anchors` (box coordinates of the
    best finished trials inside the box, best first)."""
    C = candidates(gp, box, uniform=uniform, anchors=anchors, rng=rng)
    if final:
        return best_of_batch(gp, C, n=n, best=float(np.max(gp.fitted_mean())), rng=rng)
    return thompson_batch(gp, C, n=n, rng=rng)

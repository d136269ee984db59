"""Search strategies (grid, random, sobol, coarse_to_fine), all drawing points in the unit box.

The unit box, a space's transform into it (`SearchSpace`) and its regions (`Box`) are
`service.search.space`'s; they are imported from here too. Strategies only produce unit
points and boxes, so none of them branches on a distribution's type. Each sampler owns
a ``np.random.default_rng`` seeded with ``(seed, round_index)``: the same spec, seed,
round and history give the same trials.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from service.search.distributions import ScalarDistribution
from service.search.space import EDGE, Axis, Box, SearchSpace

if TYPE_CHECKING:
    from service.search import surrogate

__all__ = [
    "Axis",
    "Box",
    "CoarseToFineStrategy",
    "GridStrategy",
    "RandomStrategy",
    "SearchSpace",
    "SobolStrategy",
    "Strategy",
]

Direction = Literal["maximize", "minimize"]
Placement = Literal["model", "uniform"]
History = Sequence[tuple[Mapping[str, Any], float | None]]

# Coarse-to-fine: the narrowest a new box gets along a continuous coordinate, as a share
# of the whole axis. Without a floor, a single best point (or several equal ones) would
# collapse the box to nothing and every later trial would repeat it.
MIN_BOX_WIDTH = 0.02
# Coarse-to-fine's model needs this many finished trials; with fewer, a round is uniform.
MIN_MODEL_TRIALS = 3
# Coarse-to-fine's box spans at least this many best trials, whatever `keep_top` says.
# The best quarter of a round of 10 is 3 trials, of a round of 5 two: a box around so few
# is a guess that shuts out the rest of the space (an unordered axis keeps only the
# choices they used), and every later round stays in it. Rounds of 20 or more, the
# default's, are unchanged (0.25 * 20 = 5). Against a floor of one, paired per seed on
# the normalized scale (bench/search_vs_optuna.py, seeds 0-35, 60 trials): rounds of 10
# multimodal +0.067 +- 0.031, valleys +0.059 +- 0.037, noisy +0.033 +- 0.052, plateaus
# +0.088 +- 0.068; rounds of 5 +0.37 to +0.84 on every family. A larger floor does not
# help rounds of 20: 8 and 10 moved no family by a standard error (multimodal -0.022 +-
# 0.025 and -0.007 +- 0.024).
MIN_BOX_TRIALS = 5


class Sampler(ABC):
    """Uniform points of the unit box, from a generator this sampler owns."""

    def __init__(self, *, seed: int | Sequence[int]) -> None:
        self.rng = np.random.default_rng(list(seed) if isinstance(seed, Sequence) else seed)

    @abstractmethod
    def sample(self, *, n: int, dims: int) -> np.ndarray:
        """`n` points, shape ``(n, dims)``, each coordinate in [0, 1)."""


class RandomSampler(Sampler):
    """Independent uniform points."""

    def sample(self, *, n: int, dims: int) -> np.ndarray:
        return self.rng.random((n, dims))


class SobolSampler(Sampler):
    """Scrambled Sobol points: quasi-random, covering the box more evenly than random.

    Draws the next power of two and keeps the first `n`, which keeps scipy's balance
    warning quiet; the first `n` of a Sobol sequence are still low-discrepancy.
    scipy.stats is imported here, not with the module: it takes half a second, which
    every command that reads a spec (`caviar validate`, a random search) would pay.
    """

    def sample(self, *, n: int, dims: int) -> np.ndarray:
        if dims == 0:
            return np.empty((n, 0))
        from scipy.stats import qmc

        engine = qmc.Sobol(d=dims, scramble=True, seed=self.rng)
        return engine.random_base2(max(0, math.ceil(math.log2(max(n, 1)))))[:n]


class Strategy(ABC):
    """Turns a space into rounds of parameter sets."""

    rounds: int = 1

    def __init__(self, *, space: SearchSpace, seed: int) -> None:
        self.space = space
        self.seed = seed

    @abstractmethod
    def trials_in_round(self, round_index: int) -> int:
        """How many trials `suggest` returns for `round_index`."""

    @abstractmethod
    def suggest(
        self, *, round_index: int, history: History = ()
    ) -> tuple[Box | None, list[dict[str, Any]]]:
        """The region sampled (or None) and the parameters of each trial of a round."""

    @property
    def total_trials(self) -> int:
        return sum(self.trials_in_round(r) for r in range(self.rounds))

    def _check_round(self, round_index: int) -> None:
        if not 0 <= round_index < self.rounds:
            raise ValueError(
                f"round_index: must be in [0, {self.rounds - 1}] for "
                f"{type(self).__name__} (got {round_index})"
            )

    def _decode(self, u: np.ndarray) -> list[dict[str, Any]]:
        return [self.space.decode(row) for row in u]


class GridStrategy(Strategy):
    """The Cartesian product, `points` per continuous axis laid out on its scale."""

    def __init__(self, *, space: SearchSpace, seed: int, points: int) -> None:
        super().__init__(space=space, seed=seed)
        self.points = points

    def trials_in_round(self, round_index: int) -> int:
        return self.space.grid_size(self.points)

    def suggest(
        self, *, round_index: int, history: History = ()
    ) -> tuple[Box | None, list[dict[str, Any]]]:
        self._check_round(round_index)
        return None, self._decode(self.space.grid(self.points))


class RandomStrategy(Strategy):
    """`trials` independent points from a sampler (uniform random, or Sobol)."""

    sampler_class: type[Sampler] = RandomSampler

    def __init__(self, *, space: SearchSpace, seed: int, trials: int) -> None:
        super().__init__(space=space, seed=seed)
        self.trials = trials

    def trials_in_round(self, round_index: int) -> int:
        return self.trials

    def suggest(
        self, *, round_index: int, history: History = ()
    ) -> tuple[Box | None, list[dict[str, Any]]]:
        self._check_round(round_index)
        sampler = self.sampler_class(seed=(self.seed, round_index))
        return None, self._decode(sampler.sample(n=self.trials, dims=self.space.dims))


class SobolStrategy(RandomStrategy):
    """Like random, from a scrambled, seeded Sobol sequence."""

    sampler_class = SobolSampler


class CoarseToFineStrategy(Strategy):
    """Round 0 samples the whole box; each later round samples the box around the best.

    (Given a history at round 0 - the trials of a study being zoomed into - round 0
    already samples the box around that history's best.)

    Where in the box a round's trials go is `placement`: ``model`` (the default) fits a
    Gaussian process to every finished trial (`service.search.surrogate`) and places the
    round by Thompson sampling among candidates covering the box and candidates near its
    best trials (`service.search.acquisition`), so a round puts most of its trials where
    the best mean value probably is, still spread over the places that may be;
    ``uniform`` draws them uniformly in the box. Either way they are inside it.

    The box of round r >= 1 is built from every finished trial so far: the best
    `keep_top` fraction, and never fewer than `MIN_BOX_TRIALS` of them (failed trials,
    value None, rank last), and per coordinate the
    span of their unit coordinates widened by `margin` times that span on each side
    (at least `MIN_BOX_WIDTH` wide, widened to whole values on a discrete axis) and
    clipped to the unit interval - that is, to the original bounds, on each axis's own
    scale. An unordered (categorical) axis keeps the choices seen among the best.
    With the model, that box is then narrowed to where the model says the best may be
    (`_zoom`): along each ordered coordinate, to the span of the peaks of
    `acquisition.BOX_DRAWS` posterior draws in it and of the best trial, widened by
    `margin` the same way - so the model's uncertainty sets how far a round zooms, and
    the round's candidates crowd where its trials will go. A zoom's round 0 keeps the box
    its preview showed. The last round, which no later one learns from, is placed for the
    best value it may find (`surrogate.best_of_batch`) rather than by Thompson sampling.
    Both together, against the placement before them (bench/search_vs_optuna.py, seeds
    0-35, 60 trials, paired on the normalized scale): valleys +0.041 +- 0.024 (63/0/45),
    multimodal +0.008 +- 0.026, plateaus +0.006 +- 0.013, noisy -0.031 +- 0.096.
    """

    def __init__(
        self,
        *,
        space: SearchSpace,
        seed: int,
        rounds: int,
        trials_per_round: int,
        keep_top: float,
        margin: float,
        direction: Direction,
        placement: Placement = "model",
        # Sobol: a first round that covers the space evenly gives the model a better
        # start (bench/search_vs_optuna.py: +0.002 paired against random draws), and the
        # candidates among which Thompson sampling chooses cover the box evenly too.
        sampler_class: type[Sampler] = SobolSampler,
    ) -> None:
        super().__init__(space=space, seed=seed)
        self.rounds = rounds
        self.trials_per_round = trials_per_round
        self.keep_top = keep_top
        self.margin = margin
        self.direction = direction
        self.placement = placement
        self.sampler_class = sampler_class

    def trials_in_round(self, round_index: int) -> int:
        return self.trials_per_round

    def suggest(
        self, *, round_index: int, history: History = ()
    ) -> tuple[Box | None, list[dict[str, Any]]]:
        from service.search import acquisition, surrogate  # scipy, only once a round is placed

        self._check_round(round_index)
        # Round 0 with a history is a zoom into another study: its first box comes from
        # that study's trials. Without one, box() is the whole space.
        box = self.box(history=history)
        sampler = self.sampler_class(seed=(self.seed, round_index))
        n = self.trials_per_round
        modelled = min(n, surrogate.MAX_CANDIDATES // surrogate.CANDIDATES_PER_TRIAL)
        gp = self.model(history) if self.placement == "model" else None
        if gp is None:
            return box, self._decode(box.map(sampler.sample(n=n, dims=self.space.dims)))
        uniform = sampler.sample(n=acquisition.uniform_count(modelled), dims=self.space.dims)
        if round_index > 0:  # a zoom's first round keeps the box its preview showed
            anchors = self._anchors(box, history)
            maxima = acquisition.draw_maxima(
                gp, box, uniform=uniform, anchors=anchors, rng=sampler.rng
            )
            # The best trial so far stays inside, as in the box around the best.
            box = self._zoom(box, np.vstack([maxima, box.map(anchors[:1])]))
        u = acquisition.place_batch(
            gp,
            box,
            uniform=uniform,
            anchors=self._anchors(box, history),
            n=modelled,
            rng=sampler.rng,
            final=round_index == self.rounds - 1,
        )
        if modelled < n:  # a round too big to place by the model: the rest uniformly
            u = np.vstack([u, box.map(sampler.sample(n=n - modelled, dims=self.space.dims))])
        return box, self._decode(u)

    def _zoom(self, box: Box, maxima: np.ndarray) -> Box:
        """`box` narrowed, along each ordered coordinate it spans as one interval, to the
        span of `maxima` (unit points: where the model's draws peak, and the best trial)
        widened by `margin`."""
        intervals = []
        for j, axis in enumerate(self.space.axes):
            iv = box.intervals[j]
            if axis.distribution.ordered and len(iv) == 1:
                lo, hi = self._span(maxima[:, j], axis.distribution)
                lo, hi = max(lo, iv[0][0]), min(hi, iv[0][1])
                if lo < hi:
                    iv = [(lo, hi)]
            intervals.append(iv)
        return Box(intervals)

    def model(self, history: History) -> surrogate.GaussianProcess | None:
        """A GP of `history`'s values (power-transformed, higher is better), or None with fewer
        than `MIN_MODEL_TRIALS` finished trials.

        Failed trials take the worst value: they tell the model where not to go.
        """
        from service.search import surrogate

        ranked = self.ranked(history)
        sign = 1.0 if self.direction == "maximize" else -1.0
        values = [sign * v if v is not None and math.isfinite(v) else -math.inf for _, v in ranked]
        if sum(math.isfinite(v) for v in values) < MIN_MODEL_TRIALS or self.space.dims == 0:
            return None
        keep = surrogate.fit_indices(len(ranked))  # ranks over all trials; encode only these
        y = surrogate.warped(values)[keep]
        X = np.array([self.space.encode(ranked[i][0]) for i in keep]).reshape(len(keep), -1)
        return surrogate.GaussianProcess(
            X,
            y,
            unordered=[not a.distribution.ordered for a in self.space.axes],
            cells=[a.distribution.cells or 1 for a in self.space.axes],
        )

    def _anchors(self, box: Box, history: History) -> np.ndarray:
        """The best finished trials inside `box`, best first, in the box's coordinates;
        an inactive coordinate (nan) is put mid-box."""
        from service.search import acquisition

        finished = [p for p, v in self.ranked(history) if v is not None and math.isfinite(v)]
        points = [u for u in (self.space.encode(p) for p in finished[: 4 * acquisition.ANCHORS])]
        inside = [u for u in points if box.contains(u)][: acquisition.ANCHORS]
        if not inside:
            return np.empty((0, self.space.dims))
        z = box.unmap(np.array(inside))
        return np.where(np.isnan(z), 0.5, z)

    def ranked(self, history: History) -> list[tuple[Mapping[str, Any], float | None]]:
        """Finished trials best first; failed (None, nan) last; ties broken by parameters.

        Sorting on the parameters too makes the result independent of the order the
        service happens to list trials in.
        """
        sign = -1.0 if self.direction == "maximize" else 1.0

        def key(item: tuple[Mapping[str, Any], float | None]) -> tuple[int, float, str]:
            params, value = item
            if value is None or not math.isfinite(value):
                return (1, 0.0, _params_key(params))
            return (0, sign * value, _params_key(params))

        return sorted(history, key=key)

    def top(self, history: History) -> list[Mapping[str, Any]]:
        """The best `keep_top` fraction of `history`, at least `MIN_BOX_TRIALS` trials."""
        ranked = self.ranked(history)
        n = max(MIN_BOX_TRIALS, math.ceil(self.keep_top * len(ranked)))
        best = ranked[:n]
        finished = [p for p, v in best if v is not None and math.isfinite(v)]
        # Failed trials count as the worst, so they shape the box only when nothing finished.
        return finished or [p for p, _ in best]

    def box(self, *, history: History) -> Box:
        """The region the next round samples, from all finished trials in `history`."""
        if not history or all(v is None or not math.isfinite(v) for _, v in history):
            return Box.full(self.space.dims)
        points = np.array([self.space.encode(p) for p in self.top(history)])
        intervals: list[list[tuple[float, float]]] = []
        for j, axis in enumerate(self.space.axes):
            column = points[:, j]
            seen = column[~np.isnan(column)]
            if seen.size == 0:  # no best trial used this coordinate: nothing learnt
                intervals.append([(0.0, 1.0)])
            elif axis.distribution.ordered:
                intervals.append([self._span(seen, axis.distribution)])
            else:
                cells = sorted({axis.distribution.unit_cell(x) for x in seen})
                intervals.append(_merge(cells))
        return Box(intervals)

    def _span(self, seen: np.ndarray, d: ScalarDistribution) -> tuple[float, float]:
        lo, hi = float(seen.min()), float(seen.max())
        pad = max(self.margin * (hi - lo), (MIN_BOX_WIDTH - (hi - lo)) / 2, 0.0)
        lo, hi = max(lo - pad, 0.0), min(hi + pad, 1.0)
        # Clipped at an edge: keep the minimum width by growing inwards.
        if lo == 0.0:
            hi = max(hi, MIN_BOX_WIDTH)
        if hi == 1.0:
            lo = min(lo, 1.0 - MIN_BOX_WIDTH)
        if d.cells:
            lo, hi = d.unit_cell(lo)[0], d.unit_cell(min(hi, 1.0 - EDGE))[1]
        return (lo, hi)


def _merge(cells: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in cells:
        if out and a <= out[-1][1] + EDGE:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _params_key(params: Mapping[str, Any]) -> str:
    try:
        return json.dumps(params, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(sorted(params.items()))

"""The suite's problems: test functions over TrainConfig fields, and the trainer itself.

A synthetic problem lays a test function over real TrainConfig fields: each field's
value goes through its distribution's own scale (`to_unit`: log, one_minus_log, linear,
int, stepped, categorical) to a unit coordinate, which is stretched onto the function's
box. A categorical field puts each choice at a fixed, unordered position; a ``layers``
field (conditional depth + widths) gives two coordinates, its depth and the mean of the
widths of the layers that exist - so every active width has to be right at once. Both
sides meet the same function of the same parameter values: Caviar proposes them through
its spec, Optuna through ``trial.suggest_*`` on the same ranges and scales.

A problem's value is maximized (a function's minus value); the noisy problems add
Gaussian noise to what the search sees and score a run by the noiseless value of the
trial it would report as best (its best observed one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.search_suite import functions
from service.search.distributions import Distribution, distribution_from_json
from service.spec.planning import merge_params
from trainer import TrainConfig, load_dataset, train
from trainer.datasets import Dataset

# The fields a synthetic problem can use, each with its range on a real scale.
SLOTS: dict[str, dict[str, Any]] = {
    "learning_rate": {"type": "float", "low": 1e-5, "high": 1.0, "scale": "log"},
    "beta1": {"type": "float", "low": 0.5, "high": 0.999, "scale": "one_minus_log"},
    "beta2": {"type": "float", "low": 0.9, "high": 0.9999, "scale": "one_minus_log"},
    "l2": {"type": "float", "low": 1e-6, "high": 10.0, "scale": "log"},
    "keep_prob": {"type": "float", "low": 0.3, "high": 1.0},
    "keep_prob_steps": {"type": "float", "low": 0.3, "high": 1.0, "step": 0.05},
    "init_scale": {"type": "float", "low": 1e-3, "high": 1.0, "scale": "log"},
    "decay_rate": {"type": "float", "low": 0.0, "high": 1.0},
    "epochs": {"type": "int", "low": 5, "high": 40, "scale": "log"},
    "batch_size": {"type": "int", "low": 16, "high": 256, "step": 16},
    "decay_every": {"type": "int", "low": 1, "high": 8},
    "init": {"type": "categorical", "choices": ["he", "xavier", "random"]},
    "activation": {"type": "categorical", "choices": ["relu", "tanh", "sigmoid", "leaky_relu"]},
    "hidden_layers": {
        "type": "layers",
        "depth": {"low": 1, "high": 3},
        "units": {"low": 2, "high": 64, "scale": "log"},
    },
}
# Where each choice of a categorical lands on its function coordinate: fixed, unordered.
CHOICE_POSITIONS = {
    "init": {"he": 0.78, "xavier": 0.12, "random": 0.45},
    "activation": {"relu": 0.33, "tanh": 0.9, "sigmoid": 0.05, "leaky_relu": 0.6},
}
FAMILIES = ("multimodal", "valley", "plateau", "noisy", "trainer")


@dataclass(frozen=True)
class Problem:
    """One thing to maximize: `space` (path -> spec distribution JSON) and `evaluate`."""

    name: str
    family: str
    space: dict[str, dict[str, Any]]
    function: str = ""  # synthetic: a name of functions.FUNCTIONS
    fields: tuple[str, ...] = ()  # synthetic: the SLOTS feeding its coordinates, in order
    noise: float = 0.0
    dataset: dict[str, Any] = field(default_factory=dict)  # trainer problems
    model: dict[str, Any] = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        return bool(self.function)

    def distributions(self) -> dict[str, Distribution]:
        return {p: distribution_from_json(d) for p, d in self.space.items()}

    def dims(self) -> int:
        return sum(d.dims for d in self.distributions().values())

    def best_possible(self) -> float | None:
        """The known best value (a synthetic function's minus minimum), else None."""
        if not self.synthetic:
            return None
        return -functions.minimum(self.function, self.function_dims())

    def function_dims(self) -> int:
        return sum(2 if SLOTS[f]["type"] == "layers" else 1 for f in self.fields)


def synthetic(
    name: str, family: str, function: str, fields: list[str], noise: float = 0.0
) -> Problem:
    space = {("keep_prob" if f == "keep_prob_steps" else f): SLOTS[f] for f in fields}
    return Problem(name, family, space, function=function, fields=tuple(fields), noise=noise)


PROBLEMS: list[Problem] = [
    synthetic(
        "hartmann6", "multimodal", "hartmann6",
        ["learning_rate", "beta1", "l2", "keep_prob", "beta2", "init_scale"],
    ),
    synthetic(
        "ackley4", "multimodal", "ackley", ["learning_rate", "l2", "keep_prob", "init_scale"]
    ),
    synthetic(
        "levy6", "multimodal", "levy",
        ["learning_rate", "beta1", "l2", "keep_prob", "hidden_layers"],
    ),
    synthetic("branin2", "valley", "branin", ["learning_rate", "beta1"]),
    synthetic("rosenbrock4", "valley", "rosenbrock", ["learning_rate", "l2", "keep_prob", "beta2"]),
    synthetic("camel2", "valley", "six_hump_camel", ["l2", "decay_rate"]),
    synthetic("step4", "plateau", "step", ["batch_size", "init", "keep_prob_steps", "decay_every"]),
    synthetic(
        "hartmann3_steps", "plateau", "hartmann3", ["keep_prob_steps", "epochs", "activation"]
    ),
    synthetic(
        "hartmann6_noisy", "noisy", "hartmann6",
        ["learning_rate", "beta1", "l2", "keep_prob", "beta2", "init_scale"], noise=0.2,
    ),
    synthetic("branin2_noisy", "noisy", "branin", ["l2", "keep_prob"], noise=2.0),
    Problem(
        "breast_cancer", "trainer",
        {
            "learning_rate": SLOTS["learning_rate"],
            "beta1": SLOTS["beta1"],
            "l2": SLOTS["l2"],
            "keep_prob": SLOTS["keep_prob"],
        },
        dataset={"name": "breast_cancer"},
        model={"hidden_layers": [16, 8], "optimizer": "adam", "epochs": 20, "batch_size": 32},
    ),
    Problem(
        "moons_layers", "trainer",
        {
            "learning_rate": SLOTS["learning_rate"],
            "l2": SLOTS["l2"],
            "hidden_layers": {
                "type": "layers", "depth": {"low": 1, "high": 3},
                "units": {"low": 2, "high": 32, "scale": "log"},
            },
        },
        dataset={"name": "moons", "n_samples": 600, "noise": 0.35},
        model={"optimizer": "adam", "epochs": 20, "batch_size": 32},
    ),
    Problem(
        "digits", "trainer",
        {
            "learning_rate": SLOTS["learning_rate"],
            "l2": SLOTS["l2"],
            "hidden_layers.0": {"type": "int", "low": 4, "high": 64, "scale": "log"},
            "beta1": {"type": "float", "low": 0.0, "high": 0.99},
        },
        dataset={"name": "digits"},
        model={"hidden_layers": [32], "optimizer": "momentum", "epochs": 6, "batch_size": 64},
    ),
]  # fmt: skip
BY_NAME = {p.name: p for p in PROBLEMS}


class Objective:
    """A problem made callable for one seed: params -> (value seen, value scored)."""

    def __init__(self, problem: Problem, seed: int) -> None:
        self.problem = problem
        self.seed = seed
        self.dists = problem.distributions()
        self.noise_rng = np.random.default_rng([seed, 7])
        self.data: Dataset | None = None
        self.base: dict[str, Any] = {}
        if not problem.synthetic:
            spec = dict(problem.dataset)
            spec.setdefault("seed", seed)
            self.data = load_dataset(spec)
            self.base = TrainConfig(**(problem.model | {"seed": seed})).model_dump(mode="json")
        else:
            self.lo, self.hi = functions.domain(problem.function, problem.function_dims())

    def __call__(self, params: Mapping[str, Any]) -> tuple[float, float]:
        if self.data is not None:
            value = self._train(params)
            return value, value
        x = self.lo + self.coordinates(params) * (self.hi - self.lo)
        true = -functions.FUNCTIONS[self.problem.function](x)
        seen = true + self.problem.noise * float(self.noise_rng.standard_normal())
        return seen, true

    def coordinates(self, params: Mapping[str, Any]) -> np.ndarray:
        out: list[float] = []
        for slot in self.problem.fields:
            path = "keep_prob" if slot == "keep_prob_steps" else slot
            value, dist = params[path], self.dists[path]
            if slot in CHOICE_POSITIONS:
                out.append(CHOICE_POSITIONS[slot][value])
            elif SLOTS[slot]["type"] == "layers":
                u = dist.to_unit(value)
                widths = [w for w in u[1:] if not math.isnan(w)]
                out += [u[0], float(np.mean(widths))]
            else:
                out.append(dist.to_unit(value)[0])
        return np.clip(np.array(out), 0.0, 1.0)

    def _train(self, params: Mapping[str, Any]) -> float:
        assert self.data is not None
        result = train(TrainConfig(**merge_params(self.base, params)), self.data)
        value = result.history[-1]["dev_accuracy"] if result.history else None
        if result.status != "completed" or value is None or not math.isfinite(value):
            return 0.0
        return float(value)

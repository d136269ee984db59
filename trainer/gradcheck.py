"""Gradient checking: backpropagation against two-sided differences, overall and per parameter.

``gradient_check(model, X, y)`` returns ``||g - g_approx|| / (||g|| + ||g_approx||)``, with
``g`` from backpropagation and ``g_approx[i] = (J(theta + eps e_i) - J(theta - eps e_i)) /
(2 eps)`` for every component of the model's parameter vector. In float64, values around
1e-7 or below mean the gradient is right; 1e-3 or above means a bug. It is meant for small
models and a handful of examples (two cost evaluations per parameter); in float32 the
differences drown in rounding, so build the model with ``dtype="float64"``.

``check_gradients`` does the same and says where: the difference over each named
parameter (``W1``, ``b1``, ...) beside the overall one, and the course's verdict
(:func:`verdict`). ``check_network`` checks the network a config builds on a data set,
in float64, on a small batch of its training examples: what ``caviar gradcheck`` and a
trial with ``execution.gradient_check`` run before training.

The cost is evaluated in training mode, so dropout and batch statistics are part of what
is checked. Every evaluation restarts the model's generator from the same state, so each
one draws the same dropout mask; batch norm's running averages, which a training pass
updates, are restored afterwards, and the parameters are left exactly as they were.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainer.config import TrainConfig
from trainer.datasets import Dataset
from trainer.model import Model

# The course's thresholds on the relative difference (epsilon 1e-7, float64).
GREAT = 1e-7  # below: the gradient is right
FINE = 1e-5  # below: probably right (a ReLU kink crossed, say)
WRONG = 1e-3  # above: there is a bug in backpropagation

# Cost evaluations per parameter are what a check costs: a trial's check looks at most
# this many components of each parameter, at random, so a wide network is checked in a
# fraction of a second while every parameter still is.
TRIAL_COMPONENTS = 100
TRIAL_EXAMPLES = 16


def verdict(difference: float) -> str:
    """The course's reading of a relative difference: correct (< 1e-7), fine (< 1e-5),
    suspicious (up to 1e-3), or wrong (> 1e-3, or not a number)."""
    if not math.isfinite(difference) or difference > WRONG:
        return "wrong"
    if difference < GREAT:
        return "correct"
    return "fine" if difference < FINE else "suspicious"


def relative_difference(analytic: Any, numeric: Any) -> float:
    """``||a - n|| / (||a|| + ||n||)``; 0.0 when both are zero."""
    denominator = float(np.linalg.norm(analytic) + np.linalg.norm(numeric))
    if denominator == 0.0:
        return 0.0
    return float(np.linalg.norm(analytic - numeric)) / denominator


@dataclass(frozen=True)
class GradientReport:
    """A gradient check's numbers: the overall difference, each parameter's, the verdict."""

    difference: float
    parameters: dict[str, float]
    shapes: dict[str, list[int]]
    examples: int  # training examples in the batch
    checked: int  # components of the parameter vector compared
    total: int  # components it has
    epsilon: float
    verdict: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", verdict(self.difference))

    @property
    def passed(self) -> bool:
        """Whether training may go on: anything but wrong."""
        return self.verdict != "wrong"

    def worst(self) -> str | None:
        """The parameter whose difference is largest (None for a model without any)."""
        return max(self.parameters, key=lambda n: self.parameters[n], default=None)

    def summary(self) -> str:
        """One line with the numbers: what a failed trial's error says."""
        worst = self.worst()
        where = f"; worst {worst} {self.parameters[worst]:.3g}" if worst is not None else ""
        return (
            f"gradient check {self.verdict}: relative difference {self.difference:.3g} "
            f"(< {GREAT:g} correct, < {FINE:g} fine, > {WRONG:g} wrong){where}; "
            f"{self.checked} of {self.total} components on {self.examples} examples"
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-able, as a trial stores it (a difference that is not finite is None)."""

        def number(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "difference": number(self.difference),
            "verdict": self.verdict,
            "parameters": {name: number(d) for name, d in self.parameters.items()},
            "shapes": self.shapes,
            "examples": self.examples,
            "checked": self.checked,
            "total": self.total,
            "epsilon": self.epsilon,
        }


def _differences(
    model: Model, X: Any, y: Any, indices: np.ndarray, epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    """Backpropagation's and the two-sided differences' gradient at `indices` of the vector."""
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    X = model.prepare_inputs(X)
    y = model.prepare_targets(y, X.shape[0])
    theta = model.vector
    saved_theta = theta.copy()
    saved_buffers = {name: buf.copy() for name, buf in model.buffers.items()}
    rng_state = copy.deepcopy(model.rng.bit_generator.state)

    def cost() -> float:
        model.rng.bit_generator.state = copy.deepcopy(rng_state)
        return model.loss(X, y, training=True)[0]

    try:
        model.rng.bit_generator.state = copy.deepcopy(rng_state)
        model.compute_grads(X, y)
        analytic = model.grad_vector[indices].astype(np.float64)
        numeric = np.empty_like(analytic)
        for k, i in enumerate(indices):
            original = theta[i]
            theta[i] = original + epsilon
            plus = cost()
            theta[i] = original - epsilon
            minus = cost()
            theta[i] = original
            numeric[k] = (plus - minus) / (2.0 * epsilon)
    finally:
        theta[...] = saved_theta
        for name, buf in model.buffers.items():
            buf[...] = saved_buffers[name]
        model.rng.bit_generator.state = rng_state
    return analytic, numeric


def gradient_check(model: Model, X: Any, y: Any, epsilon: float = 1e-7) -> float:
    """Relative difference between the analytic and the numerical gradient.

    Parameters
    ----------
    model : Model
        Its parameters are perturbed in place and restored.
    X : array_like, shape (m, n_features)
    y : array_like, shape (m,) (or (m, k) for regression)
    epsilon : float
        Half the width of the two-sided difference.

    Returns
    -------
    float
        ``||g - g_approx|| / (||g|| + ||g_approx||)``; 0.0 when both gradients are zero.
    """
    indices = np.arange(model.vector.shape[0])
    return relative_difference(*_differences(model, X, y, indices, epsilon))


def check_gradients(
    model: Model,
    X: Any,
    y: Any,
    *,
    epsilon: float = 1e-7,
    max_per_parameter: int | None = None,
    seed: int = 0,
) -> GradientReport:
    """:func:`gradient_check` over each parameter and overall, with the course's verdict.

    Parameters
    ----------
    max_per_parameter : int, optional
        Compare at most this many components of each parameter, drawn at random with
        ``seed`` (default: every component, as the course does).
    """
    chosen: list[np.ndarray] = []
    names: list[str] = []
    draw = np.random.default_rng(seed)
    for name, offset, shape in model.layout:
        size = int(np.prod(shape))
        picks = np.arange(offset, offset + size)
        if max_per_parameter is not None and size > max_per_parameter:
            picks = np.sort(draw.choice(picks, size=max_per_parameter, replace=False))
        chosen.append(picks)
        names.append(name)
    indices = np.concatenate(chosen) if chosen else np.zeros(0, np.intp)
    analytic, numeric = _differences(model, X, y, indices, epsilon)
    per_parameter: dict[str, float] = {}
    start = 0
    for name, picks in zip(names, chosen, strict=True):
        end = start + picks.shape[0]
        per_parameter[name] = relative_difference(analytic[start:end], numeric[start:end])
        start = end
    order = list(model.params)  # W1, b1, W2, ...: the model's natural order
    return GradientReport(
        difference=relative_difference(analytic, numeric),
        parameters={name: per_parameter[name] for name in order},
        shapes={name: list(model.params[name].shape) for name in order},
        examples=int(np.asarray(X).shape[0]),
        checked=int(indices.shape[0]),
        total=int(model.vector.shape[0]),
        epsilon=epsilon,
    )


def check_network(
    config: TrainConfig,
    dataset: Dataset,
    *,
    examples: int = TRIAL_EXAMPLES,
    max_per_parameter: int | None = None,
    epsilon: float = 1e-7,
) -> GradientReport:
    """Check the network `config` builds for `dataset`, as its training would start.

    The same layers, initialization (the config's seed) and regularization, in float64
    whatever the config's dtype, on the first `examples` training examples.
    """
    if examples < 1:
        raise ValueError(f"examples must be >= 1, got {examples}")
    if len(dataset.X_train) == 0:
        raise ValueError("the data set has no training examples to check on")
    in_float64 = config.model_copy(update={"dtype": "float64"})
    model = Model(
        in_float64,
        dataset.n_features,
        dataset.n_outputs,
        dataset.task,
        rng=np.random.default_rng(config.seed),
    )
    X, y = dataset.X_train[:examples], dataset.y_train[:examples]
    return check_gradients(
        model, X, y, epsilon=epsilon, max_per_parameter=max_per_parameter, seed=config.seed
    )


class GradientCheckFailed(RuntimeError):
    """A network whose backpropagation is wrong; `report` says by how much and where."""

    def __init__(self, report: GradientReport) -> None:
        super().__init__(report.summary())
        self.report = report


def check_trial(config: TrainConfig, dataset: Dataset) -> GradientReport:
    """What a trial with ``execution.gradient_check`` runs before it trains: its network
    on `TRIAL_EXAMPLES` training examples, at most `TRIAL_COMPONENTS` components of each
    parameter (a fraction of a second even for a wide network)."""
    return check_network(
        config, dataset, examples=TRIAL_EXAMPLES, max_per_parameter=TRIAL_COMPONENTS
    )

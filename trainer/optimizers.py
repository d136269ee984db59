"""Update rules: gradient descent, momentum, RMSprop and Adam over one small base.

The one contract every rule obeys (as in CS231n's ``optim.py``): ``step(lr)`` reads the
gradient of all parameters from the model's ``grad_vector`` and updates its ``vector``
in place, keeping whatever state it needs between calls. State is per parameter and
keyed by the parameter's name (``optimizer.state["W1"]["v"]``), but, like the
parameters, it lives in contiguous buffers with a view per name: an update is a few
element-wise passes over the whole model instead of a few per layer, the accepted
trade-off being that every rule must be written element-wise (which all four are).

With ``g`` the gradient, ``lr`` the rate in force and ``t`` the step counted from 1:

- gd:        ``theta -= lr * g``
- momentum:  ``v = beta1 * v + (1 - beta1) * g``; ``theta -= lr * v``
- rmsprop:   ``s = beta2 * s + (1 - beta2) * g**2``; ``theta -= lr * g / (sqrt(s) + eps)``
  (each parameter with its own ``s``: ``b`` is divided by ``sqrt(Sdb)``, not ``sqrt(SdW)``)
- adam:      ``v`` and ``s`` as above, ``v_hat = v / (1 - beta1**t)``,
  ``s_hat = s / (1 - beta2**t)``, ``theta -= lr * v_hat / (sqrt(s_hat) + eps)``
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trainer.config import TrainConfig
from trainer.layers import Array

# Layout of a model's vector: (name, offset, shape) per parameter.
Layout = list[tuple[str, int, tuple[int, ...]]]


class Optimizer:
    """Base of the update rules.

    Parameters
    ----------
    vector : ndarray, shape (n,)
        The parameters, updated in place.
    grad_vector : ndarray, shape (n,)
        Their gradient, read by ``step``.
    layout : list of (name, offset, shape)
        Where each named parameter lives in ``vector``, to key the state by name.
    config : TrainConfig
        ``beta1``, ``beta2`` and ``epsilon`` are read from it.
    """

    #: names of the state arrays this rule keeps per parameter
    slots: tuple[str, ...] = ()

    def __init__(
        self, vector: Array, grad_vector: Array, layout: Layout, config: TrainConfig
    ) -> None:
        if vector.shape != grad_vector.shape or vector.dtype != grad_vector.dtype:
            raise ValueError("vector and grad_vector must have the same shape and dtype")
        self.vector, self.grad = vector, grad_vector
        self.beta1, self.beta2, self.eps = config.beta1, config.beta2, config.epsilon
        self.t = 0
        n = vector.shape[0]
        self.buffers: dict[str, Array] = {slot: np.zeros(n, vector.dtype) for slot in self.slots}
        self.state: dict[str, dict[str, Array]] = {
            name: {
                slot: buf[offset : offset + math.prod(shape)].reshape(shape)
                for slot, buf in self.buffers.items()
            }
            for name, offset, shape in layout
        }
        # The one scratch vector: every rule computes its update into it, so a step
        # allocates nothing. (Processing the vector in cache-sized blocks was measured
        # and lost: per-call overhead outweighed the cache reuse at every block size.)
        self._tmp: Array = np.empty(n, vector.dtype)

    def step(self, lr: float) -> None:
        """Apply one update with learning rate ``lr`` (a Python float, so float32 stays)."""
        self.t += 1
        self._update(self.vector, self.grad, float(lr), self._tmp)

    def _update(
        self, theta: Array, g: Array, lr: float, tmp: Array
    ) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Copies of the state buffers and the step count (for checkpoints)."""
        return {"t": self.t, **{slot: buf.copy() for slot, buf in self.buffers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.t = int(state["t"])
        for slot, buf in self.buffers.items():
            buf[...] = state[slot]


class GradientDescent(Optimizer):
    """Plain (mini-batch) gradient descent: ``theta -= lr * g``."""

    def _update(self, theta: Array, g: Array, lr: float, tmp: Array) -> None:
        np.multiply(g, lr, out=tmp)
        theta -= tmp


class Momentum(Optimizer):
    """Gradient descent on the exponentially weighted average of the gradients."""

    slots = ("v",)

    def _update(self, theta: Array, g: Array, lr: float, tmp: Array) -> None:
        v = self.buffers["v"]
        v *= self.beta1
        np.multiply(g, 1.0 - self.beta1, out=tmp)
        v += tmp
        np.multiply(v, lr, out=tmp)
        theta -= tmp


class RMSprop(Optimizer):
    """Divide each gradient by the root of its own running mean square."""

    slots = ("s",)

    def _update(self, theta: Array, g: Array, lr: float, tmp: Array) -> None:
        s = self.buffers["s"]
        s *= self.beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - self.beta2
        s += tmp
        np.sqrt(s, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)
        tmp *= lr
        theta -= tmp


class Adam(Optimizer):
    """Momentum and RMSprop together, both bias-corrected with the step count ``t``."""

    slots = ("v", "s")

    def _update(self, theta: Array, g: Array, lr: float, tmp: Array) -> None:
        v, s = self.buffers["v"], self.buffers["s"]
        v *= self.beta1
        np.multiply(g, 1.0 - self.beta1, out=tmp)
        v += tmp
        s *= self.beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - self.beta2
        s += tmp
        # lr * v_hat / (sqrt(s_hat) + eps), with v_hat = v / c1 and s_hat = s / c2, is
        # lr * sqrt(c2) / c1 * v / (sqrt(s) + eps * sqrt(c2)): the same value with one pass
        # fewer, the corrections folded into two scalars (t is already this step's count).
        root_c2 = math.sqrt(1.0 - self.beta2**self.t)
        c1 = 1.0 - self.beta1**self.t
        np.sqrt(s, out=tmp)
        tmp += self.eps * root_c2
        np.divide(v, tmp, out=tmp)
        tmp *= lr * root_c2 / c1
        theta -= tmp


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "gd": GradientDescent,
    "momentum": Momentum,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def make_optimizer(
    config: TrainConfig, vector: Array, grad_vector: Array, layout: Layout
) -> Optimizer:
    """The optimizer named by ``config.optimizer`` over the given buffers."""
    return OPTIMIZERS[config.optimizer](vector, grad_vector, layout, config)

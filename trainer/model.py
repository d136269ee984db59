"""The network: a stack of layers over one contiguous parameter buffer, with cost and gradients.

A :class:`Model` is built from a :class:`~trainer.config.TrainConfig` and the data's
shape: ``n_features`` inputs, ``n_outputs`` output units and a ``task`` ("binary" when
omitted and ``n_outputs == 1``, "multiclass" when omitted and ``n_outputs > 1``;
"regression" only when asked for). Hidden layer ``l`` is
``Dense(W_l[, b_l]) -> [BatchNorm(gamma_l, beta_l)] -> activation -> [Dropout]``; the output
layer is ``Dense(W_L, b_L)`` followed by the task's head (:mod:`trainer.losses`).

All learned parameters live in one vector, ``model.vector``, with the weight matrices
first; ``model.params`` holds named views into it (``W1`` ``(n1, n0)``, ``b1`` ``(n1,)``,
``gamma1``, ``beta1``, ...), and ``model.grads`` the same views into ``model.grad_vector``.
One buffer lets the optimizer update every parameter in a handful of passes, lets
gradient checking perturb "the whole parameter vector" directly, and puts L2 in exactly
one place: the weights are the slice ``vector[:n_weights]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from trainer.config import TrainConfig
from trainer.layers import Activation, Array, BatchNorm, Dense, Dropout, Layer
from trainer.losses import TASKS, Head


def default_task(n_outputs: int) -> str:
    """The task implied by the number of output units: binary for 1, multiclass above."""
    return "binary" if n_outputs == 1 else "multiclass"


class Model:
    """A fully connected network with the config's layers, initialization and regularization.

    Parameters
    ----------
    config : TrainConfig
        Layers, activation, init, L2, dropout, batch norm and dtype are read from it.
    n_features : int
        Inputs per example (``n[0]``).
    n_outputs : int
        Output units: 1 for binary, the number of classes for multiclass, the number of
        targets for regression.
    task : str, optional
        "binary", "multiclass" or "regression"; by default binary for one output and
        multiclass for more.
    rng : numpy.random.Generator, optional
        The run's generator, used for the initial weights and the dropout masks; by
        default ``np.random.default_rng(config.seed)``.

    Attributes
    ----------
    params, grads : dict of str to ndarray
        Named views into ``vector`` and ``grad_vector``; ``W{l}`` is ``(n[l], n[l-1])``.
    buffers : dict of str to ndarray
        Batch norm's running averages, ``running_mean{l}`` and ``running_var{l}`` (n[l],).
    vector, grad_vector : ndarray, shape (n_params,)
        The contiguous buffers behind ``params`` and ``grads``.
    n_weights : int
        Length of the leading slice of ``vector`` that holds the weight matrices.
    """

    def __init__(
        self,
        config: TrainConfig,
        n_features: int,
        n_outputs: int = 1,
        task: str | None = None,
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        if n_features < 1 or n_outputs < 1:
            raise ValueError(
                f"n_features and n_outputs must be >= 1, got {n_features}, {n_outputs}"
            )
        task = default_task(n_outputs) if task is None else task
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.config = config
        self.task = task
        self.n_features, self.n_outputs = int(n_features), int(n_outputs)
        self.dtype = np.dtype(config.dtype)
        self.rng = np.random.default_rng(config.seed) if rng is None else rng
        self.sizes = [self.n_features, *config.hidden_layers, self.n_outputs]
        self._build()
        self.initialize()

    # -- construction -------------------------------------------------------------------

    def _build(self) -> None:
        cfg, sizes, dtype = self.config, self.sizes, self.dtype
        n_layers = len(sizes) - 1
        bn = cfg.batch_norm
        # Layout: every W first (the L2 slice), then b / gamma / beta layer by layer.
        shapes: list[tuple[str, tuple[int, ...]]] = []
        for layer in range(1, n_layers + 1):
            shapes.append((f"W{layer}", (sizes[layer], sizes[layer - 1])))
        self.n_weights = sum(int(np.prod(shape)) for _, shape in shapes)
        for layer in range(1, n_layers + 1):
            if bn and layer < n_layers:
                shapes += [(f"gamma{layer}", (sizes[layer],)), (f"beta{layer}", (sizes[layer],))]
            else:
                shapes.append((f"b{layer}", (sizes[layer],)))
        total = sum(int(np.prod(shape)) for _, shape in shapes)
        self.vector: Array = np.zeros(total, dtype)
        self.grad_vector: Array = np.zeros(total, dtype)
        views: dict[str, Array] = {}
        grad_views: dict[str, Array] = {}
        offset = 0
        self.layout: list[tuple[str, int, tuple[int, ...]]] = []
        for name, shape in shapes:
            size = int(np.prod(shape))
            self.layout.append((name, offset, shape))
            views[name] = self.vector[offset : offset + size].reshape(shape)
            grad_views[name] = self.grad_vector[offset : offset + size].reshape(shape)
            offset += size
        # Public dicts in the natural order W1, b1 (or gamma1, beta1), W2, ...
        order = sorted(views, key=lambda n: (int(re.sub(r"\D", "", n)), n[0] != "W"))
        self.params: dict[str, Array] = {name: views[name] for name in order}
        self.grads: dict[str, Array] = {name: grad_views[name] for name in order}

        hidden = cfg.hidden_layers
        self._buffer_vector: Array = np.zeros(2 * sum(hidden) if bn else 0, dtype)
        self.buffers: dict[str, Array] = {}
        layers: list[Layer] = []
        start = 0
        for layer in range(1, n_layers + 1):
            last = layer == n_layers
            W, dW = views[f"W{layer}"], grad_views[f"W{layer}"]
            if bn and not last:
                layers.append(Dense(W, dW, None, None, (f"W{layer}", ""), needs_dx=layer > 1))
                n = sizes[layer]
                mean = self._buffer_vector[start : start + n]
                var = self._buffer_vector[start + n : start + 2 * n]
                start += 2 * n
                self.buffers[f"running_mean{layer}"] = mean
                self.buffers[f"running_var{layer}"] = var
                layers.append(
                    BatchNorm(
                        views[f"gamma{layer}"],
                        grad_views[f"gamma{layer}"],
                        views[f"beta{layer}"],
                        grad_views[f"beta{layer}"],
                        mean,
                        var,
                        (f"gamma{layer}", f"beta{layer}"),
                        momentum=cfg.bn_momentum,
                        eps=cfg.bn_epsilon,
                    )
                )
            else:
                b, db = views[f"b{layer}"], grad_views[f"b{layer}"]
                layers.append(Dense(W, dW, b, db, (f"W{layer}", f"b{layer}"), needs_dx=layer > 1))
            if not last:
                layers.append(Activation(cfg.activation, dtype, cfg.leaky_slope))
                if cfg.keep_prob < 1.0:
                    layers.append(Dropout(cfg.keep_prob, self.rng, dtype))
        self.layers = layers
        self.head = Head(self.task, self.n_outputs, dtype)
        # Scratch for L2's gradient term, so that adding it allocates nothing.
        self._l2_scratch: Array = np.empty(self.n_weights, dtype)

    def initialize(self) -> None:
        """Draw the initial parameters from ``self.rng`` per ``config.init``.

        zeros: every weight 0 (kept to show the symmetry problem); random: N(0, 1) times
        ``init_scale``; xavier: N(0, 1) * sqrt(1 / n[l-1]); he: N(0, 1) * sqrt(2 / n[l-1]).
        Biases and ``beta`` start at 0, ``gamma`` at 1; running means at 0, variances at 1.
        The draws are made in float64 and then cast, so a float32 and a float64 run with the
        same seed start from the same weights (up to rounding).
        """
        cfg = self.config
        for name, view in self.params.items():
            if name.startswith("W") and cfg.init != "zeros":
                fan_in = view.shape[1]
                scale = {
                    "random": cfg.init_scale,
                    "xavier": np.sqrt(1.0 / fan_in),
                    "he": np.sqrt(2.0 / fan_in),
                }[cfg.init]
                view[...] = self.rng.standard_normal(view.shape) * scale
            elif name.startswith("gamma"):
                view[...] = 1.0
            else:
                view[...] = 0.0
        for name, buffer in self.buffers.items():
            buffer[...] = 1.0 if name.startswith("running_var") else 0.0

    # -- parameters ---------------------------------------------------------------------

    def get_params(self) -> dict[str, Array]:
        """A copy of the parameters and, with batch norm, the running averages.

        Returns
        -------
        dict of str to ndarray
            ``W{l}``, ``b{l}``/``gamma{l}``, ``beta{l}`` and ``running_mean{l}``,
            ``running_var{l}``: everything needed to predict, and to start a run from.
        """
        out = {name: view.copy() for name, view in self.params.items()}
        out.update({name: buf.copy() for name, buf in self.buffers.items()})
        return out

    def set_params(self, params: Mapping[str, Any]) -> None:
        """Copy ``params`` into the model (cast to its dtype).

        Every key of ``self.params`` is required with its exact shape; the running
        averages are optional (kept as they are when absent). Unknown keys are an error,
        so a checkpoint of another architecture cannot be half-loaded.
        """
        known = set(self.params) | set(self.buffers)
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown parameter names {unknown}; this model has {sorted(known)}")
        missing = sorted(set(self.params) - set(params))
        if missing:
            raise ValueError(f"missing parameters {missing}")
        for name, value in params.items():
            target = self.params.get(name)
            if target is None:
                target = self.buffers[name]
            array = np.asarray(value)
            if array.shape != target.shape:
                raise ValueError(
                    f"parameter {name} has shape {array.shape}, this model needs {target.shape}"
                )
            if not np.all(np.isfinite(array)):
                raise ValueError(f"parameter {name} has NaN or infinite values")
            target[...] = array

    # -- computation --------------------------------------------------------------------

    def _logits(self, X: Array, *, training: bool) -> Array:
        A = X
        for layer in self.layers:
            A = layer.forward(A, training=training)
        return A

    def _l2_cost(self, m: int) -> float:
        lam = self.config.l2
        if lam == 0.0:
            return 0.0
        w = self.vector[: self.n_weights]
        return lam / (2.0 * m) * float(np.dot(w, w))

    def compute_grads(self, X: Array, y: Array) -> tuple[float, int | None]:
        """One training-mode forward and backward; fills ``grad_vector`` in place.

        This is the L2 term's one place: cost ``+ lambda / (2 m) * sum ||W||^2`` and
        gradient ``+ lambda / m * W``, with ``m`` the examples in ``X``.

        Parameters
        ----------
        X : ndarray, shape (m, n_features), the model's dtype, C-contiguous
        y : ndarray, shape (m,) (or (m, k) for regression)
            Targets as :meth:`prepare_targets` makes them.

        Returns
        -------
        cost : float
            Mean loss plus the L2 term (may be NaN or inf if the run diverged).
        correct : int or None
            Correct predictions in training mode (None for regression).
        """
        m = X.shape[0]
        Z = self._logits(X, training=True)
        loss, correct, dZ = self.head.loss(Z, y, grad=True)
        assert dZ is not None
        d = dZ
        for layer in reversed(self.layers):
            d = layer.backward(d)
        lam = self.config.l2
        if lam != 0.0:
            w = self.vector[: self.n_weights]
            np.multiply(w, lam / m, out=self._l2_scratch)
            self.grad_vector[: self.n_weights] += self._l2_scratch
        return loss + self._l2_cost(m), correct

    def loss(self, X: Array, y: Array, *, training: bool) -> tuple[float, int | None]:
        """Cost (mean loss + L2 term) and correct predictions, without gradients."""
        m = X.shape[0]
        Z = self._logits(X, training=training)
        loss, correct, _ = self.head.loss(Z, y, grad=False)
        return loss + self._l2_cost(m), correct

    def prepare_inputs(self, X: Any) -> Array:
        """``X`` as a C-contiguous (m, n_features) array of the model's dtype (no copy if it is)."""
        X = np.ascontiguousarray(X, dtype=self.dtype)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (m, {self.n_features}), got {X.shape}")
        return X

    def prepare_targets(self, y: Any, m: int) -> Array:
        """Targets in the form the head expects: float 0/1, integer classes or float values."""
        y = np.asarray(y)
        if self.task == "multiclass":
            if y.shape != (m,):
                raise ValueError(f"multiclass labels must have shape ({m},), got {y.shape}")
            if y.size and (y.min() < 0 or y.max() >= self.n_outputs):
                raise ValueError(f"class labels must be integers in [0, {self.n_outputs})")
            return np.ascontiguousarray(y, dtype=np.intp)
        k = self.n_outputs
        if y.shape not in ((m,), (m, k)) or (y.ndim == 1 and k != 1):
            raise ValueError(f"targets must have shape ({m},) or ({m}, {k}), got {y.shape}")
        return np.ascontiguousarray(y.reshape(m, k), dtype=self.dtype)

    def cost_and_grads(
        self, X: Any, y: Any, *, update_averages: bool = True
    ) -> tuple[float, dict[str, Array]]:
        """Cost and gradients in training mode (dropout on, batch statistics).

        As a training step's forward pass does, this moves batch norm's running averages
        (the mean and variance ``predict`` uses) towards this batch's statistics, and
        draws dropout masks from the model's generator: calling it changes what the
        model predicts. ``update_averages=False`` leaves the running averages as they
        were (a gradient check, a cost measured on the side).

        Parameters
        ----------
        X : array_like, shape (m, n_features)
        y : array_like, shape (m,) (or (m, k) for regression)
        update_averages : bool, default True
            Whether batch norm's running averages take this batch into account.

        Returns
        -------
        cost : float
        grads : dict of str to ndarray
            Copies, with the keys and shapes of ``params``.
        """
        X = self.prepare_inputs(X)
        kept = {k: v.copy() for k, v in self.buffers.items()} if not update_averages else {}
        cost, _ = self.compute_grads(X, self.prepare_targets(y, X.shape[0]))
        for name, value in kept.items():
            self.buffers[name][...] = value
        return cost, {name: g.copy() for name, g in self.grads.items()}

    def predict_proba(self, X: Any) -> Array:
        """Output in inference mode (running batch-norm averages, no dropout).

        Returns
        -------
        ndarray
            Binary: (m,) probabilities of class 1. Multiclass: (m, k) probabilities.
            Regression: (m,) values for one target, (m, k) for more.
        """
        X = self.prepare_inputs(X)
        out = self.head.output(self._logits(X, training=False)).copy()
        return out[:, 0] if self.n_outputs == 1 else out

    def predict(self, X: Any) -> Array:
        """Predictions in inference mode: class indices (m,) or regression values.

        Binary predicts 1 where the probability exceeds 0.5; multiclass the most probable
        class; regression the output itself.
        """
        proba = self.predict_proba(X)
        if self.task == "binary":
            return (proba > 0.5).astype(np.intp)
        if self.task == "multiclass":
            return np.argmax(proba, axis=1)
        return proba

    def evaluate(self, X: Any, y: Any) -> tuple[float, float | None]:
        """Cost and accuracy in inference mode (accuracy None for regression)."""
        X = self.prepare_inputs(X)
        cost, correct = self.loss(X, self.prepare_targets(y, X.shape[0]), training=False)
        return cost, None if correct is None else correct / X.shape[0]

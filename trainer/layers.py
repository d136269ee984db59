"""The network's layers: dense, batch norm, activation and inverted dropout, each with its backward.

Every layer obeys one contract (joelnet's ``nn.py``, CS231n's ``layers.py``):
``forward(X, *, training)`` returns the layer's output and, in training, caches what the
backward needs; ``backward(dY)`` returns ``dX`` and writes the gradients of the layer's
parameters into ``grads`` under the keys of ``params``. Rows are examples: ``X`` is
``(m, n_in)``.

Speed is part of the contract. A layer's parameters and gradients are views into the
model's contiguous buffers, so the optimizer updates all of them in one pass; every
intermediate array is taken from a :class:`Workspace` keyed by the number of rows, so a
training run allocates its per-mini-batch arrays once (one set for the full batches, one
for the smaller last batch) and then only writes into them. The accepted trade-off: an
array a layer returns is overwritten by the next call with the same number of rows, so
callers that keep results (``Model.predict``) copy them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Array = np.ndarray[Any, np.dtype[Any]]

# How many distinct row counts a workspace keeps arrays for: full batches, the last
# smaller batch, the dev set and one more (a user's predict) before the oldest is dropped.
WORKSPACE_ROW_COUNTS = 4


class Workspace:
    """Reusable arrays of one layer, keyed by the number of rows ``m`` and a name.

    Parameters
    ----------
    dtype : numpy dtype
        The dtype of every float array (the run's dtype: no float64 in a float32 run).
    """

    def __init__(self, dtype: np.dtype[Any]) -> None:
        self.dtype = dtype
        # One flat dict keyed by (m, name): a hit, the per-mini-batch case, is one lookup.
        self._arrays: dict[tuple[int, str], Array] = {}
        self._rows: list[int] = []  # row counts held, oldest first

    def get(
        self,
        m: int,
        name: str,
        shape: tuple[int, ...],
        dtype: Any = None,
        init: Callable[[Array], object] | None = None,
    ) -> Array:
        """Return the array ``name`` of shape ``shape`` for ``m`` rows, allocating it once.

        ``init``, if given, fills a newly allocated array (for constants such as row offsets).
        """
        array = self._arrays.get((m, name))
        if array is not None:
            return array
        if m not in self._rows:
            self._rows.append(m)
            if len(self._rows) > WORKSPACE_ROW_COUNTS:
                # Forget the oldest row count (a one-off predict, usually), not the batches.
                old = self._rows.pop(0)
                for key in [key for key in self._arrays if key[0] == old]:
                    del self._arrays[key]
        array = np.empty(shape, dtype=self.dtype if dtype is None else dtype)
        if init is not None:
            init(array)
        self._arrays[(m, name)] = array
        return array

    def arrays(self) -> list[Array]:
        """Every array held (for tests and memory accounting)."""
        return list(self._arrays.values())


class Layer:
    """Base of all layers: ``params`` and ``grads`` share keys; both may be empty."""

    def __init__(self, dtype: np.dtype[Any]) -> None:
        self.params: dict[str, Array] = {}
        self.grads: dict[str, Array] = {}
        self.ws = Workspace(dtype)

    def forward(self, X: Array, *, training: bool) -> Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dY: Array) -> Array:  # pragma: no cover - abstract
        raise NotImplementedError


class Dense(Layer):
    """Affine layer ``Z = X W^T + b`` with ``W`` of shape ``(n_out, n_in)`` and ``b`` ``(n_out,)``.

    Parameters
    ----------
    W, dW : ndarray, shape (n_out, n_in)
        Weights and their gradient (views into the model's buffers).
    b, db : ndarray, shape (n_out,), or None
        Bias and its gradient; None for a layer followed by batch norm, whose ``beta``
        takes the bias's role (the mean subtraction would cancel ``b``).
    names : tuple of str
        The keys of ``W`` and ``b`` in ``params`` ("W1", "b1").
    needs_dx : bool
        False for the first layer: nobody consumes ``dX`` of the input, so the matmul
        that would compute it is skipped.
    """

    def __init__(
        self,
        W: Array,
        dW: Array,
        b: Array | None,
        db: Array | None,
        names: tuple[str, str],
        *,
        needs_dx: bool,
    ) -> None:
        super().__init__(W.dtype)
        self.W, self.dW, self.b, self.db = W, dW, b, db
        self.params[names[0]], self.grads[names[0]] = W, dW
        if b is not None and db is not None:
            self.params[names[1]], self.grads[names[1]] = b, db
        self.needs_dx = needs_dx
        self._X: Array | None = None

    def forward(self, X: Array, *, training: bool) -> Array:
        m = X.shape[0]
        Z = self.ws.get(m, "Z", (m, self.W.shape[0]))
        np.matmul(X, self.W.T, out=Z)
        if self.b is not None:
            Z += self.b
        self._X = X if training else None
        return Z

    def backward(self, dY: Array) -> Array:
        X = self._X
        if X is None:
            raise RuntimeError("Dense.backward needs a forward pass with training=True first")
        np.matmul(dY.T, X, out=self.dW)
        if self.db is not None:
            np.add.reduce(dY, axis=0, out=self.db)
        m = dY.shape[0]
        dX = self.ws.get(m, "dX", (m, self.W.shape[1]))
        if self.needs_dx:
            np.matmul(dY, self.W, out=dX)
        return dX


class BatchNorm(Layer):
    """Batch normalization of ``Z`` per unit: ``gamma * (Z - mu) / sqrt(var + eps) + beta``.

    In training, ``mu`` and ``var`` are the mini-batch's (``var`` divides by ``m``, as in
    the course) and the running averages move toward them:
    ``running = momentum * running + (1 - momentum) * batch``. At inference the running
    averages are used, so one example gets the same output alone as inside a batch.

    Parameters
    ----------
    gamma, dgamma, beta, dbeta : ndarray, shape (n,)
        Scale and shift with their gradients (views into the model's buffers).
    running_mean, running_var : ndarray, shape (n,)
        The exponentially weighted averages used at inference (updated in place).
    names : tuple of str
        The keys of ``gamma`` and ``beta`` ("gamma1", "beta1").
    momentum : float
        Weight of the old running average (``bn_momentum``).
    eps : float
        Added to the variance inside the square root (``bn_epsilon``).
    """

    def __init__(
        self,
        gamma: Array,
        dgamma: Array,
        beta: Array,
        dbeta: Array,
        running_mean: Array,
        running_var: Array,
        names: tuple[str, str],
        *,
        momentum: float,
        eps: float,
    ) -> None:
        super().__init__(gamma.dtype)
        self.gamma, self.dgamma, self.beta, self.dbeta = gamma, dgamma, beta, dbeta
        self.params[names[0]], self.grads[names[0]] = gamma, dgamma
        self.params[names[1]], self.grads[names[1]] = beta, dbeta
        self.running_mean, self.running_var = running_mean, running_var
        self.momentum, self.eps = float(momentum), float(eps)
        self._m = 0
        n = gamma.shape[0]
        # Per-unit vectors are allocated once, whatever the batch size.
        self._mu = np.empty(n, gamma.dtype)
        self._var = np.empty(n, gamma.dtype)
        self._inv_std = np.empty(n, gamma.dtype)
        self._vec = np.empty(n, gamma.dtype)
        # Inference has its own vectors, so predicting between a training forward and its
        # backward cannot corrupt the batch statistics the backward needs.
        self._scale = np.empty(n, gamma.dtype)
        self._shift = np.empty(n, gamma.dtype)

    def forward(self, X: Array, *, training: bool) -> Array:
        m, n = X.shape
        out = self.ws.get(m, "out", (m, n))
        if not training:
            # scale = gamma / sqrt(running_var + eps); out = (X - running_mean) * scale + beta
            scale, shift = self._scale, self._shift
            np.add(self.running_var, self.eps, out=scale)
            np.sqrt(scale, out=scale)
            np.divide(self.gamma, scale, out=scale)
            np.multiply(self.running_mean, scale, out=shift)
            np.subtract(self.beta, shift, out=shift)
            np.multiply(X, scale, out=out)
            out += shift
            return out
        xhat = self.ws.get(m, "xhat", (m, n))
        # Reductions call the ufunc directly: np.mean/np.sum wrappers cost more than the
        # arithmetic on a course-size layer.
        np.add.reduce(X, axis=0, out=self._mu)
        self._mu *= 1.0 / m
        np.subtract(X, self._mu, out=xhat)
        np.multiply(xhat, xhat, out=out)  # `out` doubles as scratch for the squares
        np.add.reduce(out, axis=0, out=self._var)
        self._var *= 1.0 / m
        np.add(self._var, self.eps, out=self._inv_std)
        np.sqrt(self._inv_std, out=self._inv_std)
        np.reciprocal(self._inv_std, out=self._inv_std)
        xhat *= self._inv_std
        np.multiply(xhat, self.gamma, out=out)
        out += self.beta
        keep = self.momentum
        for running, batch in ((self.running_mean, self._mu), (self.running_var, self._var)):
            running *= keep
            np.multiply(batch, 1.0 - keep, out=self._vec)
            running += self._vec
        self._m = m
        return out

    def backward(self, dY: Array) -> Array:
        """Return ``dZ = gamma * inv_std / m * (m dY - sum(dY) - xhat * sum(dY xhat))``.

        ``dY`` (m, n) is overwritten: it is the next layer's scratch and nobody reads it
        after this layer.
        """
        m, n = dY.shape
        if self._m != m:
            raise RuntimeError("BatchNorm.backward needs a forward pass with training=True first")
        xhat = self.ws.get(m, "xhat", (m, n))
        tmp = self.ws.get(m, "out", (m, n))
        np.add.reduce(dY, axis=0, out=self.dbeta)
        np.multiply(dY, xhat, out=tmp)
        np.add.reduce(tmp, axis=0, out=self.dgamma)
        dY *= m
        dY -= self.dbeta
        np.multiply(xhat, self.dgamma, out=tmp)
        dY -= tmp
        np.multiply(self.gamma, self._inv_std, out=self._vec)
        self._vec *= 1.0 / m
        dY *= self._vec
        return dY


class Activation(Layer):
    """Element-wise nonlinearity: relu, leaky_relu, tanh or sigmoid.

    Parameters
    ----------
    kind : str
        One of "relu", "leaky_relu", "tanh", "sigmoid".
    dtype : numpy dtype
        The run's dtype.
    leaky_slope : float
        Slope for ``Z < 0`` with leaky_relu (``0 <= slope < 1``).
    """

    KINDS = ("relu", "leaky_relu", "tanh", "sigmoid")

    def __init__(self, kind: str, dtype: np.dtype[Any], leaky_slope: float = 0.01) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"activation must be one of {self.KINDS}, got {kind!r}")
        super().__init__(dtype)
        self.kind = kind
        self.slope = float(leaky_slope)
        self._Z: Array | None = None
        self._A: Array | None = None

    def forward(self, X: Array, *, training: bool) -> Array:
        m, n = X.shape
        A = self.ws.get(m, "A", (m, n))
        if self.kind == "relu":
            np.maximum(X, 0, out=A)
        elif self.kind == "leaky_relu":
            # max(z, slope * z) is z for z > 0 and slope * z otherwise, since slope < 1.
            np.multiply(X, self.slope, out=A)
            np.maximum(X, A, out=A)
        elif self.kind == "tanh":
            np.tanh(X, out=A)
        else:
            sigmoid(X, out=A)
        if training:
            self._Z, self._A = X, A
        return A

    def backward(self, dY: Array) -> Array:
        """Return ``dY * g'(Z)``, computed in place in ``dY`` (the next layer's scratch)."""
        Z, A = self._Z, self._A
        if Z is None or A is None:
            raise RuntimeError("Activation.backward needs a forward pass with training=True")
        m, n = dY.shape
        if self.kind in ("relu", "leaky_relu"):
            mask = self.ws.get(m, "mask", (m, n), np.bool_)
            np.greater(Z, 0, out=mask)
            if self.kind == "relu":
                np.multiply(dY, mask, out=dY)
            else:
                slope = self.ws.get(m, "slope", (m, n))
                # g'(z) = 1 for z > 0, slope otherwise = slope + (1 - slope) * [z > 0]
                np.multiply(mask, 1.0 - self.slope, out=slope)
                slope += self.slope
                dY *= slope
            return dY
        tmp = self.ws.get(m, "tmp", (m, n))
        if self.kind == "tanh":
            np.multiply(A, A, out=tmp)  # g'(z) = 1 - tanh(z)^2
            np.subtract(1.0, tmp, out=tmp)
        else:
            np.subtract(1.0, A, out=tmp)  # g'(z) = s(z) (1 - s(z))
            tmp *= A
        dY *= tmp
        return dY


class Dropout(Layer):
    """Inverted dropout: in training keep each unit with ``keep_prob`` and divide by it.

    The same mask multiplies the forward activations and the backward gradient; at
    inference the layer is the identity (the division in training keeps expectations
    equal, so nothing is rescaled at test time).

    Parameters
    ----------
    keep_prob : float
        Probability of keeping a unit, in (0, 1].
    rng : numpy.random.Generator
        The run's one generator (the masks are part of the run's seeded randomness).
    dtype : numpy dtype
        The run's dtype.
    """

    def __init__(self, keep_prob: float, rng: np.random.Generator, dtype: np.dtype[Any]) -> None:
        super().__init__(dtype)
        self.keep_prob = float(keep_prob)
        self.rng = rng
        self._mask: Array | None = None

    def forward(self, X: Array, *, training: bool) -> Array:
        if not training or self.keep_prob >= 1.0:
            return X
        m, n = X.shape
        mask = self.ws.get(m, "mask", (m, n))
        keep = self.ws.get(m, "keep", (m, n), np.bool_)
        out = self.ws.get(m, "out", (m, n))
        self.rng.random(out=mask, dtype=mask.dtype)
        np.less(mask, self.keep_prob, out=keep)
        np.copyto(mask, keep)
        mask *= 1.0 / self.keep_prob
        np.multiply(X, mask, out=out)
        self._mask = mask
        return out

    def backward(self, dY: Array) -> Array:
        if self.keep_prob >= 1.0:
            return dY
        if self._mask is None:
            raise RuntimeError("Dropout.backward needs a forward pass with training=True first")
        dY *= self._mask
        return dY


def sigmoid(Z: Array, out: Array | None = None) -> Array:
    """Logistic function ``1 / (1 + exp(-Z))``, never overflowing for any finite ``Z``.

    float64: as ``(1 + tanh(Z / 2)) / 2``. float32 (and any other type): as ``exp(-|Z|)``
    over ``1 + exp(-|Z|)`` below 0 and 1 over it above; the tanh form rounds ``tanh`` to
    -1 in float32 below about Z = -17, so every small probability became exactly 0
    (float64's tanh holds them, and its results stay as they were, to the bit).

    Parameters
    ----------
    Z : ndarray, any shape
    out : ndarray of Z's shape and dtype, optional

    Returns
    -------
    ndarray, Z's shape, values in [0, 1]
    """
    if out is None:
        out = np.empty_like(Z)
    if Z.dtype == np.float64:
        np.multiply(Z, 0.5, out=out)
        np.tanh(out, out=out)
        out *= 0.5
        out += 0.5
        return out
    positive = Z >= 0  # before `out` is written: it may be Z itself
    np.abs(Z, out=out)
    np.negative(out, out=out)
    with np.errstate(under="ignore"):  # exp(-|Z|) of a huge |Z| is 0, as it should be
        np.exp(out, out=out)  # e = exp(-|Z|), in [0, 1]
        denominator = out + 1
        np.copyto(out, 1, where=positive)  # the numerator: 1 above 0, e below
        out /= denominator
    return out

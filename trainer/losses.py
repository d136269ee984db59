"""Output layers with their losses, one per task: sigmoid, softmax and linear heads.

A head turns the last layer's ``Z`` (m, k) into the network's output and, against the
labels, into the mean loss over the ``m`` examples, the number of correct predictions
and ``dZ = d(mean loss)/dZ``. Each pairs the activation with its loss so that ``dZ``
takes the well-known stable forms (``A - Y`` over ``m`` for both cross-entropies) and the
cost never takes the log of a rounded-to-zero probability:

- binary: sigmoid + cross-entropy, labels (m,) of 0/1, ``k = 1``;
- multiclass: softmax + cross-entropy, labels (m,) of integers in ``[0, k)``;
- regression: identity + mean squared error (mean over examples and outputs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.layers import Array, Workspace, sigmoid

TASKS = ("binary", "multiclass", "regression")


def softmax(Z: Array, out: Array | None = None) -> Array:
    """Row-wise softmax, shifted by each row's maximum so that ``exp`` cannot overflow.

    Parameters
    ----------
    Z : ndarray, shape (m, k)
    out : ndarray, shape (m, k), optional

    Returns
    -------
    ndarray, shape (m, k)
        Non-negative rows summing to 1; ``softmax(Z + c) == softmax(Z)`` for a per-row ``c``.
    """
    if out is None:
        out = np.empty_like(Z)
    np.subtract(Z, Z.max(axis=1, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out


class Head:
    """Output activation and loss for one task.

    Parameters
    ----------
    task : str
        "binary", "multiclass" or "regression".
    n_outputs : int
        Units of the output layer: 1 for binary, the number of classes for multiclass.
    dtype : numpy dtype
        The run's dtype.
    """

    def __init__(self, task: str, n_outputs: int, dtype: np.dtype[Any]) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if task == "binary" and n_outputs != 1:
            raise ValueError(f"a binary task has one output unit, got n_outputs={n_outputs}")
        if task == "multiclass" and n_outputs < 2:
            raise ValueError(f"a multiclass task needs n_outputs >= 2, got {n_outputs}")
        self.task, self.k = task, n_outputs
        self.ws = Workspace(dtype)

    def output(self, Z: Array) -> Array:
        """Return the network's output for ``Z`` (m, k): probabilities or values (a workspace
        array, overwritten by the next call with the same ``m``)."""
        m = Z.shape[0]
        A = self.ws.get(m, "A", Z.shape)
        if self.task == "binary":
            return sigmoid(Z, out=A)
        if self.task == "multiclass":
            return softmax(Z, out=A)
        np.copyto(A, Z)
        return A

    def loss(self, Z: Array, y: Array, *, grad: bool) -> tuple[float, int | None, Array | None]:
        """Mean loss of ``Z`` against ``y``, correct predictions and ``dZ``.

        Parameters
        ----------
        Z : ndarray, shape (m, k)
        y : ndarray
            Binary: (m,) or (m, 1) of 0/1 in the run's dtype. Multiclass: (m,) of integer
            class indices. Regression: (m,) or (m, k) in the run's dtype.
        grad : bool
            Also compute ``dZ`` (m, k) = the derivative of the mean loss.

        Returns
        -------
        loss : float
            Mean over the ``m`` examples (for regression, over examples and outputs).
        correct : int or None
            Correct predictions (None for regression).
        dZ : ndarray, shape (m, k), or None
            A workspace array when ``grad`` is true.
        """
        m, k = Z.shape
        ws = self.ws
        dZ = ws.get(m, "dZ", (m, k)) if grad else None
        if self.task == "multiclass":
            return self._softmax_loss(Z, y, dZ)
        Y = y.reshape(m, k)
        tmp = ws.get(m, "tmp", (m, k))
        if self.task == "regression":
            np.subtract(Z, Y, out=tmp)
            if dZ is not None:
                np.multiply(tmp, 2.0 / (m * k), out=dZ)
            tmp *= tmp
            return float(np.add.reduce(tmp, axis=None)) / (m * k), None, dZ
        # Binary cross-entropy from logits: max(z, 0) - z y + log(1 + exp(-|z|)).
        tmp2 = ws.get(m, "tmp2", (m, k))
        np.abs(Z, out=tmp)
        np.negative(tmp, out=tmp)
        np.exp(tmp, out=tmp)
        np.log1p(tmp, out=tmp)
        np.maximum(Z, 0, out=tmp2)
        tmp += tmp2
        np.multiply(Z, Y, out=tmp2)
        tmp -= tmp2
        cost = float(np.add.reduce(tmp, axis=None)) / m
        if dZ is not None:
            sigmoid(Z, out=dZ)
            dZ -= Y
            dZ *= 1.0 / m
        predicted = ws.get(m, "predicted", (m, k), np.bool_)
        actual = ws.get(m, "actual", (m, k), np.bool_)
        np.greater(Z, 0, out=predicted)
        np.greater(Y, 0.5, out=actual)
        np.equal(predicted, actual, out=predicted)
        return cost, int(np.count_nonzero(predicted)), dZ

    def _softmax_loss(
        self, Z: Array, y: Array, dZ: Array | None
    ) -> tuple[float, int | None, Array | None]:
        # loss_i = log(sum_j exp(Z_ij - max_i)) - (Z_i[y_i] - max_i), on max-shifted rows.
        m, k = Z.shape
        ws = self.ws
        P = ws.get(m, "P", (m, k))
        row_max = ws.get(m, "row_max", (m, 1))
        row_sum = ws.get(m, "row_sum", (m, 1))
        log_sum = ws.get(m, "log_sum", (m, 1))
        picked = ws.get(m, "picked", (m,))
        labels = ws.get(m, "labels", (m,), np.intp)
        hits = ws.get(m, "hits", (m,), np.bool_)
        # flat[i] = i * k + y_i indexes (i, y_i) in the flattened rows.
        row_starts = ws.get(
            m, "row_starts", (m,), np.intp, init=lambda a: np.copyto(a, np.arange(m) * k)
        )
        flat = ws.get(m, "flat", (m,), np.intp)
        np.add(row_starts, y, out=flat, casting="unsafe")
        np.maximum.reduce(Z, axis=1, keepdims=True, out=row_max)
        np.subtract(Z, row_max, out=P)
        np.exp(P, out=P)
        np.add.reduce(P, axis=1, keepdims=True, out=row_sum)
        np.log(row_sum, out=log_sum)
        np.take(Z.reshape(-1), flat, out=picked, mode="clip")
        picked -= row_max[:, 0]
        cost = (float(np.add.reduce(log_sum, axis=None)) - float(np.add.reduce(picked))) / m
        np.argmax(Z, axis=1, out=labels)
        np.equal(labels, y, out=hits)
        correct = int(np.count_nonzero(hits))
        if dZ is not None:
            # softmax minus one at the label, over m.
            np.divide(P, row_sum, out=dZ)
            np.take(dZ.reshape(-1), flat, out=picked, mode="clip")
            picked -= 1.0
            np.put(dZ.reshape(-1), flat, picked, mode="clip")
            dZ *= 1.0 / m
        return cost, correct, dZ

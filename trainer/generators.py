"""The seeded 2-D generators of data sets: moons, circles, spirals, blobs, xor.

Written with NumPy and drawn from the generator passed in, so a spec gives the same data
on every machine; ``noise`` is the standard deviation of Gaussian noise added to the
points (for spirals, to the angle, in radians).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from trainer.layers import Array

# (n, noise, rng, n_classes) -> the points and their classes, in drawing order.
Draw = Callable[[int, float, np.random.Generator, int | None], tuple[Array, Array]]


def generate(
    name: str, n: int, noise: float, rng: np.random.Generator, n_classes: int | None
) -> tuple[Array, Array]:
    """``n`` points of generator ``name`` and their class indices, in a random order.

    ``n_classes`` is for spirals and blobs (the others always have 2 classes).
    """
    draw = _DRAWS.get(name)
    if draw is None:  # pragma: no cover - guarded by the caller
        raise ValueError(f"unknown generator {name!r}")
    X, y = draw(n, noise, rng, n_classes)
    order = rng.permutation(n)
    return X[order], y[order].astype(np.int64)


def _moons(n: int, noise: float, rng: np.random.Generator, _: int | None) -> tuple[Array, Array]:
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0.0, np.pi, n_out)
    t_in = np.linspace(0.0, np.pi, n_in)
    X = np.concatenate(
        [
            np.stack([np.cos(t_out), np.sin(t_out)], axis=1),
            np.stack([1.0 - np.cos(t_in), 0.5 - np.sin(t_in)], axis=1),
        ]
    )
    y = np.repeat([0, 1], [n_out, n_in])
    X = X + rng.normal(scale=noise, size=X.shape) if noise else X
    return X, y


def _circles(n: int, noise: float, rng: np.random.Generator, _: int | None) -> tuple[Array, Array]:
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0.0, 2 * np.pi, n_out, endpoint=False)
    t_in = np.linspace(0.0, 2 * np.pi, n_in, endpoint=False)
    factor = 0.5  # radius of the inner circle relative to the outer one
    X = np.concatenate(
        [
            np.stack([np.cos(t_out), np.sin(t_out)], axis=1),
            factor * np.stack([np.cos(t_in), np.sin(t_in)], axis=1),
        ]
    )
    y = np.repeat([0, 1], [n_out, n_in])
    X = X + rng.normal(scale=noise, size=X.shape) if noise else X
    return X, y


def _spirals(
    n: int, noise: float, rng: np.random.Generator, n_classes: int | None
) -> tuple[Array, Array]:
    # CS231n's spirals: arm c turns through 4 radians from c * 4, radius 0 to 1.
    assert n_classes is not None
    counts = _split_count(n, n_classes)
    parts, labels = [], []
    for c, count in enumerate(counts):
        r = np.linspace(0.0, 1.0, count)
        theta = np.linspace(c * 4.0, (c + 1) * 4.0, count) + rng.normal(scale=noise, size=count)
        parts.append(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))
        labels.append(np.full(count, c))
    return np.concatenate(parts), np.concatenate(labels)


def _blobs(
    n: int, noise: float, rng: np.random.Generator, n_classes: int | None
) -> tuple[Array, Array]:
    # Gaussian blobs of standard deviation `noise` around centres on a circle of radius 2.
    assert n_classes is not None
    counts = _split_count(n, n_classes)
    angles = 2 * np.pi * np.arange(n_classes) / n_classes
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    y = np.repeat(np.arange(n_classes), counts)
    X = centres[y] + rng.normal(scale=noise, size=(n, 2))
    return X, y


def _xor(n: int, noise: float, rng: np.random.Generator, _: int | None) -> tuple[Array, Array]:
    X = rng.uniform(-1.0, 1.0, size=(n, 2))
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(np.int64)
    X = X + rng.normal(scale=noise, size=X.shape) if noise else X
    return X, y


def _split_count(n: int, k: int) -> list[int]:
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


_DRAWS: dict[str, Draw] = {
    "moons": _moons,
    "circles": _circles,
    "spirals": _spirals,
    "blobs": _blobs,
    "xor": _xor,
}
# The names a spec may give, in the order error messages list them.
GENERATORS = tuple(_DRAWS)

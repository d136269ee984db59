"""Standard test functions of the hyperparameter-optimization literature, to be minimized.

Each takes a point of its own domain (a 1-d array) and returns a float; `DOMAINS` gives
each one's box and `MINIMA` its known global minimum (per dimension count where it
depends on it). Formulas as in Surjanovic & Bingham's Virtual Library of Simulation
Experiments; Ackley's box is shifted so that its optimum is not at the centre, where a
first quasi-random point would find it by chance.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

_H6_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H6_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)
_H3_A = np.array([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]])
_H3_P = 1e-4 * np.array(
    [[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]]
)
_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6(x: np.ndarray) -> float:
    return float(-_ALPHA @ np.exp(-np.sum(_H6_A * (x - _H6_P) ** 2, axis=1)))


def hartmann3(x: np.ndarray) -> float:
    return float(-_ALPHA @ np.exp(-np.sum(_H3_A * (x - _H3_P) ** 2, axis=1)))


def branin(x: np.ndarray) -> float:
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return float((x[1] - b * x[0] ** 2 + c * x[0] - 6) ** 2 + 10 * (1 - t) * math.cos(x[0]) + 10)


def six_hump_camel(x: np.ndarray) -> float:
    a, b = x[0], x[1]
    return float((4 - 2.1 * a**2 + a**4 / 3) * a**2 + a * b + (-4 + 4 * b**2) * b**2)


def log_rosenbrock(x: np.ndarray) -> float:
    """log10(1 + Rosenbrock): the valley's floor spans the same decades as its walls."""
    f = np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    return float(math.log10(1.0 + f))


def log_dixon_price(x: np.ndarray) -> float:
    i = np.arange(2, len(x) + 1)
    f = (x[0] - 1) ** 2 + np.sum(i * (2 * x[1:] ** 2 - x[:-1]) ** 2)
    return float(math.log10(1.0 + f))


def ackley(x: np.ndarray) -> float:
    d = len(x)
    s1 = -0.2 * math.sqrt(float(np.sum(x**2)) / d)
    s2 = float(np.sum(np.cos(2 * math.pi * x))) / d
    return float(-20 * math.exp(s1) - math.exp(s2) + 20 + math.e)


def levy(x: np.ndarray) -> float:
    w = 1 + (x - 1) / 4
    head = math.sin(math.pi * w[0]) ** 2
    mid = np.sum((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(math.pi * w[:-1] + 1) ** 2))
    tail = (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)
    return float(head + mid + tail)


def styblinski_tang(x: np.ndarray) -> float:
    return float(np.sum(x**4 - 16 * x**2 + 5 * x) / 2)


def step(x: np.ndarray) -> float:
    """De Jong's step function around 1.5: flat terraces, a plateau at the bottom."""
    return float(np.sum(np.floor(x - 1.5 + 0.5) ** 2))


FUNCTIONS: dict[str, Callable[[np.ndarray], float]] = {
    "hartmann6": hartmann6,
    "hartmann3": hartmann3,
    "branin": branin,
    "six_hump_camel": six_hump_camel,
    "rosenbrock": log_rosenbrock,
    "dixon_price": log_dixon_price,
    "ackley": ackley,
    "levy": levy,
    "styblinski_tang": styblinski_tang,
    "step": step,
}
DOMAINS: dict[str, list[tuple[float, float]] | tuple[float, float]] = {
    "hartmann6": (0.0, 1.0),
    "hartmann3": (0.0, 1.0),
    "branin": [(-5.0, 10.0), (0.0, 15.0)],
    "six_hump_camel": [(-3.0, 3.0), (-2.0, 2.0)],
    "rosenbrock": (-5.0, 10.0),
    "dixon_price": (-10.0, 10.0),
    "ackley": (-15.0, 30.0),
    "levy": (-10.0, 10.0),
    "styblinski_tang": (-5.0, 5.0),
    "step": (-5.12, 5.12),
}


def minimum(name: str, dims: int) -> float:
    """The known global minimum of function `name` in `dims` dimensions."""
    fixed = {"hartmann6": -3.32237, "hartmann3": -3.86278, "branin": 0.397887}
    fixed |= {"six_hump_camel": -1.0316}
    if name in fixed:
        return fixed[name]
    if name == "styblinski_tang":
        return -39.16599 * dims
    return 0.0


def domain(name: str, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of function `name`'s box in `dims` dimensions."""
    d = DOMAINS[name]
    pairs = d if isinstance(d, list) else [d] * dims
    if len(pairs) != dims:
        raise ValueError(f"{name} is defined in {len(pairs)} dimensions, not {dims}")
    lo, hi = zip(*pairs, strict=True)
    return np.array(lo), np.array(hi)

"""Learning-rate decay: the rate in force at an epoch (or mini-batch step).

The formulas are those of docs/spec.md (`lr_decay`).

With ``e`` the epoch counted from 0 (the mini-batch step from 0 when ``decay_per`` is
"step") and ``t = floor(e / decay_every)``, a staircase when ``decay_every > 1``:

- none:          ``lr0``
- inverse_time:  ``lr0 / (1 + decay_rate * t)``
- exponential:   ``lr0 * decay_rate ** t``
- inverse_sqrt:  ``lr0 / sqrt(1 + decay_rate * t)``
"""

from __future__ import annotations

import math

from trainer.config import TrainConfig


def learning_rate(config: TrainConfig, e: int) -> float:
    """The learning rate in force at epoch or step ``e`` (counted from 0).

    Parameters
    ----------
    config : TrainConfig
        ``learning_rate``, ``lr_decay``, ``decay_rate`` and ``decay_every`` are read.
    e : int
        The epoch, or the mini-batch step when ``config.decay_per == "step"``.

    Returns
    -------
    float
        A Python float, so that multiplying a float32 array by it stays float32.
    """
    if e < 0:
        raise ValueError(f"e must be >= 0, got {e}")
    lr0, rate = float(config.learning_rate), float(config.decay_rate)
    t = e // config.decay_every
    if config.lr_decay == "none":
        return lr0
    if config.lr_decay == "inverse_time":
        return lr0 / (1.0 + rate * t)
    if config.lr_decay == "exponential":
        return lr0 * rate**t
    if config.lr_decay == "inverse_sqrt":
        return lr0 / math.sqrt(1.0 + rate * t)
    raise ValueError(f"unknown lr_decay {config.lr_decay!r}")

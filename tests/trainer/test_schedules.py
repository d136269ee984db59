"""Learning-rate decay exactly as docs/spec.md defines it, staircase included."""

from __future__ import annotations

import math

import pytest

from trainer import TrainConfig
from trainer.schedules import learning_rate


@pytest.mark.parametrize(
    ("decay", "expected"),
    [
        ("none", lambda t: 0.1),
        ("inverse_time", lambda t: 0.1 / (1 + 0.5 * t)),
        ("exponential", lambda t: 0.1 * 0.5**t),
        ("inverse_sqrt", lambda t: 0.1 / math.sqrt(1 + 0.5 * t)),
    ],
)
@pytest.mark.parametrize("every", [1, 3])
def test_each_decay_with_and_without_staircase(decay: str, expected, every: int) -> None:
    cfg = TrainConfig(learning_rate=0.1, lr_decay=decay, decay_rate=0.5, decay_every=every)
    for e in range(10):
        assert learning_rate(cfg, e) == pytest.approx(expected(e // every), rel=1e-15)


def test_staircase_holds_the_rate_for_decay_every_epochs() -> None:
    cfg = TrainConfig(learning_rate=1.0, lr_decay="inverse_time", decay_rate=1.0, decay_every=2)
    assert [learning_rate(cfg, e) for e in range(6)] == [1.0, 1.0, 0.5, 0.5, 1 / 3, 1 / 3]


def test_rate_is_a_python_float() -> None:
    cfg = TrainConfig(lr_decay="exponential", decay_rate=0.9)
    assert type(learning_rate(cfg, 7)) is float


def test_negative_epoch_is_rejected() -> None:
    with pytest.raises(ValueError, match="e must be >= 0"):
        learning_rate(TrainConfig(), -1)

"""Caviar's trainer: NumPy neural networks with every technique of the course, no service code."""

from trainer.config import TrainConfig

__all__ = ["TrainConfig"]

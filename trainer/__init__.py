"""Caviar's trainer: NumPy neural networks with every technique of the course, no service code.

The public API (DESIGN.md, "trainer Python API")::

    from trainer import TrainConfig, Model, train, gradient_check, load_dataset

    ds = load_dataset({"name": "moons", "n_samples": 300, "noise": 0.2, "seed": 3})
    result = train(TrainConfig(hidden_layers=[5, 2], epochs=50), ds)
    result.history[-1]["dev_accuracy"], result.status, result.model.predict(ds.X_dev)
"""

from trainer.config import TrainConfig
from trainer.datasets import Dataset, dataset_from_arrays, load_dataset
from trainer.gradcheck import gradient_check
from trainer.model import Model
from trainer.training import TrainResult, train

__all__ = [
    "Dataset",
    "Model",
    "TrainConfig",
    "TrainResult",
    "dataset_from_arrays",
    "gradient_check",
    "load_dataset",
    "train",
]

"""Caviar's trainer: NumPy neural networks with every technique of the course, no service code.

The public API::

    from trainer import TrainConfig, Model, train, gradient_check, load_dataset

    ds = load_dataset({"name": "moons", "n_samples": 300, "noise": 0.2, "seed": 3})
    result = train(TrainConfig(hidden_layers=[5, 2], epochs=50), ds)
    result.history[-1]["dev_accuracy"], result.status, result.model.predict(ds.X_dev)

    # Pause and resume exactly, or fork with new hyperparameters from epoch k:
    saved = []
    train(cfg, ds, checkpoint_every=10, on_checkpoint=saved.append)
    ckpt = Checkpoint.from_bytes(saved[0].to_bytes())
    train(cfg.model_copy(update={"learning_rate": 1e-4}), ds, resume=ckpt)
"""

from trainer.checkpoint import Checkpoint, CheckpointError
from trainer.config import TrainConfig
from trainer.datasets import Dataset, dataset_from_arrays, load_dataset
from trainer.gradcheck import gradient_check
from trainer.model import Model
from trainer.training import TrainResult, train

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Dataset",
    "Model",
    "TrainConfig",
    "TrainResult",
    "dataset_from_arrays",
    "gradient_check",
    "load_dataset",
    "train",
]

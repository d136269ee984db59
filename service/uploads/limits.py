"""What an upload may hold (its caps), the arrays read from one, and its output units."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from service.settings import Settings
from trainer.datasets import MAX_INFERRED_CLASSES


class UploadRefused(ValueError):
    """A file that cannot be used, with the reason for the person who sent it."""


@dataclass(frozen=True)
class UploadCaps:
    """What an uploaded file may hold; each is checked while the file is read."""

    max_rows: int
    max_features: int
    max_values: int  # rows x feature columns
    max_classes: int  # distinct labels of a classification, or regression targets
    max_array_bytes: int  # what X and y take once read (an NPZ's, inflated)

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadCaps:
        return cls(
            max_rows=settings.max_samples,
            max_features=settings.max_features,
            max_values=settings.max_dataset_values,
            max_classes=settings.max_classes,
            max_array_bytes=settings.max_dataset_array_bytes,
        )


@dataclass(frozen=True)
class DataFile:
    """X, y and the feature names, as `trainer.datafiles.read_file` returns them."""

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str] = field(default_factory=list)


def label_outputs(y: np.ndarray, task: str | None) -> int:
    """Output units a model of these labels has, as `trainer.dataset_from_arrays` infers them.

    1 for binary and for regression on one target, k for k targets, and the number of
    distinct labels for multiclass.
    """
    if y.ndim == 2:
        return int(y.shape[1])
    if task == "regression" or task == "binary":
        return 1
    if y.dtype.kind == "f":
        finite = y[np.isfinite(y)]
        distinct = np.unique(finite)
        if task is None and (
            len(distinct) == 2
            or not np.all(distinct == np.round(distinct))
            or len(distinct) > MAX_INFERRED_CLASSES
        ):
            return 1
        return len(distinct)
    n = len(np.unique(y))
    return 1 if task is None and n == 2 else n


def check_outputs(y: np.ndarray, task: str | None, caps: UploadCaps, *, what: str) -> int:
    """`label_outputs`, refused when over `caps.max_classes`."""
    outputs = label_outputs(y, task)
    if outputs > caps.max_classes:
        raise UploadRefused(
            f"{what} makes {outputs} output units (one per class, or per regression "
            f"target); at most {caps.max_classes} (max_classes)"
        )
    return outputs

"""Data sets: seeded 2-D generators, two shipped real data sets, and users' CSV or NPZ files.

``load_dataset(spec)`` takes the ``dataset`` block of a search spec and returns a
:class:`Dataset`: a stratified train/dev split (random for regression) whose features
are standardized with the mean and standard deviation of the training part only, so
nothing about the dev set leaks into training.

- Generators (``n_samples``, ``noise``): moons, circles, spirals, blobs, xor. Written
  with NumPy and drawn from ``np.random.default_rng(seed)``, so a spec gives the same data
  on every machine. ``noise`` is the standard deviation of Gaussian noise added to the
  points (for spirals, to the angle, in radians). spirals and blobs take ``n_classes``
  (defaults 2 and 3).
- Shipped: digits (8x8 images, 1,797 examples, 10 classes) and breast_cancer (Wisconsin
  diagnostic, 569 examples, 30 features, binary), compressed in ``trainer/data/`` (see
  its PROVENANCE.md).
- Users' files: ``{"path": ..., "label_column": ...}``; CSV with a header row (the label
  column may hold numbers or strings) or NPZ with arrays ``X`` (m, n) and ``y`` (m,)
  (``label_column`` names ``y``'s array if it is not called "y").

Every key takes a default except ``name``/``path``: ``dev_fraction`` 0.2, ``seed`` 0,
``standardize`` true, ``task`` inferred (two classes: binary; integer or string labels
with more: multiclass; other numbers: regression) unless given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from trainer.datafiles import read_file
from trainer.generators import GENERATORS, generate
from trainer.layers import Array

SHIPPED = ("digits", "breast_cancer")
DATA_DIR = Path(__file__).resolve().parent / "data"
MAX_SAMPLES = 1_000_000  # a generator request above this is a typo, not a data set
# Integer-valued labels with at most this many distinct values are inferred as classes.
MAX_INFERRED_CLASSES = 100

_COMMON_KEYS = {"dev_fraction", "seed", "standardize", "task"}
_GENERATOR_KEYS = _COMMON_KEYS | {"name", "n_samples", "noise", "n_classes"}
_SHIPPED_KEYS = _COMMON_KEYS | {"name"}
_FILE_KEYS = _COMMON_KEYS | {"path", "label_column", "name"}


@dataclass(frozen=True)
class Dataset:
    """A train/dev split ready for training.

    Attributes
    ----------
    name : str
    task : str
        "binary", "multiclass" or "regression".
    X_train : ndarray, shape (m_train, n_features), float64
    y_train : ndarray, shape (m_train,)
        Class indices (int64) for classification; float64 values for regression, shape
        (m_train,) or (m_train, k).
    X_dev, y_dev : ndarrays, shapes (m_dev, n_features) and (m_dev,)
        Empty (0 rows) when ``dev_fraction`` is 0.
    n_classes : int or None
        Classes for classification, None for regression.
    classes : list or None
        The original label of each class index (for users' files with string labels).
    feature_names : list of str
    mean, std : ndarray, shape (n_features,), or None
        The standardization fitted on the training part (None when not standardized);
        apply ``(X - mean) / std`` to new data before ``predict``.
    """

    name: str
    task: str
    X_train: Array
    y_train: Array
    X_dev: Array
    y_dev: Array
    n_classes: int | None
    classes: list[Any] | None = None
    feature_names: list[str] = field(default_factory=list)
    mean: Array | None = None
    std: Array | None = None

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_outputs(self) -> int:
        """Output units the model needs: 1 (binary), n_classes, or regression targets."""
        if self.task == "binary":
            return 1
        if self.task == "multiclass":
            assert self.n_classes is not None
            return self.n_classes
        return 1 if self.y_train.ndim == 1 else int(self.y_train.shape[1])


# -- public entry points ------------------------------------------------------------------


def load_dataset(spec: Mapping[str, Any]) -> Dataset:
    """Build the data set a spec's ``dataset`` block describes.

    Parameters
    ----------
    spec : mapping
        ``{"name": "moons", "n_samples": 300, "noise": 0.2, "dev_fraction": 0.2,
        "seed": 3}``, ``{"name": "digits"}`` or ``{"path": "data.csv",
        "label_column": "y"}``; see the module docstring for every key.

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        On an unknown name or key, an out-of-range value, or bad data in a file; the
        message names the problem.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"a dataset spec must be a mapping, got {type(spec).__name__}")
    spec = dict(spec)
    name = spec.get("name")
    if "path" in spec:
        _check_keys(spec, _FILE_KEYS, "a dataset file")
        path = Path(str(spec["path"]))
        X, y, feature_names = read_file(path, spec.get("label_column"))
        return dataset_from_arrays(
            X,
            y,
            name=str(name or path.name),
            feature_names=feature_names,
            **_common(spec),
        )
    if name in GENERATORS:
        _check_keys(spec, _GENERATOR_KEYS, f"generator {name!r}")
        n_samples = _int(spec, "n_samples", 1000, low=4, high=MAX_SAMPLES)
        noise = _float(spec, "noise", 0.2, low=0.0, high=1e3)
        seed = _int(spec, "seed", 0, low=0, high=2**63 - 1)
        rng = np.random.default_rng(seed)
        n_classes = None
        if name in ("spirals", "blobs"):
            n_classes = _int(spec, "n_classes", 2 if name == "spirals" else 3, low=2, high=50)
        elif "n_classes" in spec:
            raise ValueError(f"n_classes: {name} always has 2 classes")
        X, y = generate(str(name), n_samples, noise, rng, n_classes)
        return dataset_from_arrays(
            X, y, name=str(name), feature_names=["x1", "x2"], rng=rng, **_common(spec)
        )
    if name in SHIPPED:
        _check_keys(spec, _SHIPPED_KEYS, f"data set {name!r}")
        with np.load(DATA_DIR / f"{name}.npz", allow_pickle=False) as data:
            X, y = data["X"].astype(np.float64), data["y"].astype(np.int64)
            feature_names = [str(f) for f in data["feature_names"]]
            classes = [str(c) for c in data["target_names"]]
        ds = dataset_from_arrays(X, y, name=str(name), feature_names=feature_names, **_common(spec))
        return replace(ds, classes=classes)  # names, not the sorted label values
    known = ", ".join((*GENERATORS, *SHIPPED))
    raise ValueError(f"unknown dataset name {name!r}: expected one of {known}, or a path")


def dataset_from_arrays(
    X: Any,
    y: Any,
    *,
    name: str = "arrays",
    task: str | None = None,
    dev_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
    feature_names: list[str] | None = None,
    rng: np.random.Generator | None = None,
) -> Dataset:
    """Validate ``X`` and ``y``, split them (stratified) and standardize on the train part.

    Parameters
    ----------
    X : array_like, shape (m, n_features)
        Numbers, finite.
    y : array_like, shape (m,) (or (m, k) for regression)
        Class labels (numbers or strings) or regression targets.
    task : str, optional
        "binary", "multiclass" or "regression"; inferred from ``y`` when omitted.
    dev_fraction : float
        Share of examples held out for the dev set, in [0, 1).
    seed : int
        Seeds the split when ``rng`` is not given.
    standardize : bool
        Scale features to zero mean and unit variance using the training part's statistics.
    feature_names : list of str, optional
    rng : numpy.random.Generator, optional
        Generator to split with (the generators pass the one that drew the data).

    Returns
    -------
    Dataset
    """
    X = _as_features(X)
    y_raw = np.asarray(y)
    _check_shapes(X, y_raw, task, dev_fraction)
    task = _infer_task(y_raw) if task is None else task
    if task not in ("binary", "multiclass", "regression"):
        raise ValueError(f"task must be binary, multiclass or regression, got {task!r}")
    y_arr, n_classes, classes = _encode_labels(y_raw, task)
    m = X.shape[0]
    if m < 2:
        raise ValueError(f"need at least 2 examples, got {m}")
    if rng is None:
        rng = np.random.default_rng(seed)
    train_idx, dev_idx = _split(y_arr if task != "regression" else None, m, dev_fraction, rng)
    X_train, X_dev = X[train_idx], X[dev_idx]
    mean = std = None
    if standardize:
        mean, std = _standardization(X_train)
        X_train = (X_train - mean) / std
        X_dev = (X_dev - mean) / std
    names = feature_names if feature_names is not None else [f"x{i + 1}" for i in range(X.shape[1])]
    if len(names) != X.shape[1]:
        raise ValueError(f"{len(names)} feature names for {X.shape[1]} features")
    return Dataset(
        name=name,
        task=task,
        X_train=np.ascontiguousarray(X_train),
        y_train=np.ascontiguousarray(y_arr[train_idx]),
        X_dev=np.ascontiguousarray(X_dev),
        y_dev=np.ascontiguousarray(y_arr[dev_idx]),
        n_classes=n_classes,
        classes=classes,
        feature_names=list(names),
        mean=mean,
        std=std,
    )


def _check_shapes(X: Array, y: Array, task: str | None, dev_fraction: float) -> None:
    if y.ndim not in (1, 2) or (y.ndim == 2 and task != "regression"):
        raise ValueError(
            f"y must have shape (m,), got {y.shape}"
            + ("" if task == "regression" else " (2-D targets need task='regression')")
        )
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}: they must match")
    if not 0.0 <= dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be in [0, 1), got {dev_fraction}")


def _encode_labels(y: Array, task: str) -> tuple[Array, int | None, list[Any] | None]:
    """(targets as trained on, number of classes, the original label of each class index).

    Regression targets become float64; class labels (numbers or strings) become int64
    indices into their sorted unique values.
    """
    if task == "regression":
        if y.dtype.kind not in "biuf":
            raise ValueError(f"regression targets must be numbers, got dtype {y.dtype}")
        targets = y.astype(np.float64)
        if not np.all(np.isfinite(targets)):
            raise ValueError(f"y has NaN or infinite values (at row {_first_bad_row(targets)})")
        return targets, None, None
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError(f"y has NaN or infinite values (at row {_first_bad_row(y)})")
    uniques, inverse = np.unique(y, return_inverse=True)
    n_classes = len(uniques)
    if n_classes < 2:
        only = uniques[0].item() if n_classes else None
        raise ValueError(f"y has a single class ({only!r}): classification needs at least 2")
    if task == "binary" and n_classes != 2:
        raise ValueError(f"task 'binary' needs exactly 2 classes, y has {n_classes}")
    return inverse.reshape(-1).astype(np.int64), n_classes, [u.item() for u in uniques]


def _standardization(X_train: Array) -> tuple[Array, Array]:
    """The mean and standard deviation of each feature over the training part."""
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0.0] = 1.0  # a constant feature stays 0 instead of dividing by zero
    return mean, std


# -- splitting and validation -----------------------------------------------------------------


def _split(
    y: Array | None, m: int, dev_fraction: float, rng: np.random.Generator
) -> tuple[Array, Array]:
    """Train and dev indices; per class (stratified) when ``y`` holds class indices."""
    if dev_fraction == 0.0:
        return rng.permutation(m), np.empty(0, np.int64)
    groups = [np.arange(m)] if y is None else [np.flatnonzero(y == c) for c in np.unique(y)]
    train, dev = [], []
    for group in groups:
        group = rng.permutation(group)
        # Round per class, but leave every class at least one training example.
        n_dev = min(round(len(group) * dev_fraction), len(group) - 1)
        dev.append(group[:n_dev])
        train.append(group[n_dev:])
    dev_idx = np.concatenate(dev)
    if dev_idx.size == 0:
        raise ValueError(
            f"dev_fraction {dev_fraction} of {m} examples leaves an empty dev set: "
            "use more examples, a larger dev_fraction, or dev_fraction 0"
        )
    return rng.permutation(np.concatenate(train)), rng.permutation(dev_idx)


def _as_features(X: Any) -> Array:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (m examples, n features), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X is empty (shape {X.shape})")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"X must hold numbers, got dtype {X.dtype}")
    X = X.astype(np.float64)
    if not np.all(np.isfinite(X)):
        row, col = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(f"X has NaN or infinite values (first at row {row}, column {col})")
    return X


def _first_bad_row(y: Array) -> int:
    bad = ~np.isfinite(y)
    return int(np.argwhere(bad)[0][0])


def _infer_task(y: Array) -> str:
    if y.ndim == 2:
        return "regression"
    if y.dtype.kind in "biuUSO":
        n = len(np.unique(y))
        return "binary" if n == 2 else "multiclass"
    finite = y[np.isfinite(y)]
    n = len(np.unique(finite))
    if n == 2:
        return "binary"
    if np.all(finite == np.round(finite)) and n <= MAX_INFERRED_CLASSES:
        return "multiclass"
    return "regression"


def _check_keys(spec: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} for {what}; allowed: {sorted(allowed)}")


def _int(spec: dict[str, Any], key: str, default: int, *, low: int, high: int) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{key} must be in [{low}, {high}], got {value}")
    return int(value)


def _float(spec: dict[str, Any], key: str, default: float, *, low: float, high: float) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{key} must be a number, got {value!r}")
    if not (math.isfinite(float(value)) and low <= value <= high):
        raise ValueError(f"{key} must be in [{low}, {high}], got {value}")
    return float(value)


def _common(spec: dict[str, Any]) -> dict[str, Any]:
    standardize = spec.get("standardize", True)
    if not isinstance(standardize, bool):
        raise ValueError(f"standardize must be true or false, got {standardize!r}")
    task = spec.get("task")
    if task is not None and task not in ("binary", "multiclass", "regression"):
        raise ValueError(f"task must be binary, multiclass or regression, got {task!r}")
    dev_fraction = _float(spec, "dev_fraction", 0.2, low=0.0, high=1.0)
    if dev_fraction >= 1.0:
        raise ValueError(f"dev_fraction must be in [0, 1), got {dev_fraction}")
    return {
        "task": task,
        "dev_fraction": dev_fraction,
        "seed": _int(spec, "seed", 0, low=0, high=2**63 - 1),
        "standardize": standardize,
    }

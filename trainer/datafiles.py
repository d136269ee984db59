"""Users' data files: a CSV with a header row, or an NPZ archive with arrays ``X`` and ``y``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from trainer.layers import Array


def read_file(path: Path, label_column: Any) -> tuple[Array, Array, list[str]]:
    """(X, y, feature names) from a .csv (or .txt) or .npz file; ValueError naming the problem."""
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"data file {path.name!r} is empty")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path, label_column)
    if suffix in (".csv", ".txt"):
        return _read_csv(path, label_column)
    raise ValueError(f"data file {path.name!r}: expected a .csv or .npz file")


def _read_npz(path: Path, label_column: Any) -> tuple[Array, Array, list[str]]:
    y_key = "y" if label_column is None else str(label_column)
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # a corrupt archive raises one of several types
        raise ValueError(f"data file {path.name!r} is not a readable NPZ archive: {exc}") from exc
    with data:
        keys = list(data.keys())
        if "X" not in keys or y_key not in keys:
            raise ValueError(
                f"NPZ file {path.name!r} needs arrays 'X' and {y_key!r}; it has {keys}"
            )
        X, y = data["X"], data[y_key]
    if X.ndim == 2 and X.shape[0] == 0:
        raise ValueError(f"data file {path.name!r} has no examples")
    names = [f"x{i + 1}" for i in range(X.shape[1])] if X.ndim == 2 else []
    return X, y, names


def _read_csv(path: Path, label_column: Any) -> tuple[Array, Array, list[str]]:
    if label_column is None:
        raise ValueError("label_column is required for a CSV file: name the column with y")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"data file {path.name!r} is empty")
    header = [cell.strip() for cell in rows[0]]
    body = rows[1:]
    if not body:
        raise ValueError(f"data file {path.name!r} has a header but no data rows")
    if str(label_column) not in header:
        raise ValueError(f"label column {str(label_column)!r} not found; the columns are {header}")
    label_at = header.index(str(label_column))
    if len(header) < 2:
        raise ValueError(f"data file {path.name!r} has no feature columns besides the label")
    features = [name for i, name in enumerate(header) if i != label_at]
    X = np.empty((len(body), len(features)), np.float64)
    labels: list[str] = []
    for r, row in enumerate(body, start=2):  # row 1 is the header
        if len(row) != len(header):
            raise ValueError(
                f"data file {path.name!r}, line {r}: {len(row)} values for {len(header)} columns"
            )
        labels.append(row[label_at].strip())
        values = [cell for i, cell in enumerate(row) if i != label_at]
        for c, cell in enumerate(values):
            try:
                X[r - 2, c] = float(cell)
            except ValueError:
                raise ValueError(
                    f"data file {path.name!r}, line {r}, column {features[c]!r}: "
                    f"{cell.strip()!r} is not a number"
                ) from None
    if not np.all(np.isfinite(X)):
        row, col = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(
            f"data file {path.name!r} has NaN or infinite values "
            f"(first at line {row + 2}, column {features[col]!r})"
        )
    if any(label == "" for label in labels):
        raise ValueError(f"data file {path.name!r}: the label column has empty values")
    y: Array
    try:
        y = np.array([float(label) for label in labels])
    except ValueError:
        y = np.array(labels)
    return X, y, features

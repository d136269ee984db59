"""load_dataset: generators, shipped data, users' CSV/NPZ files, the split and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer import dataset_from_arrays, load_dataset
from trainer.datasets import GENERATORS


@pytest.mark.parametrize("name", GENERATORS)
def test_generators_are_seeded_and_split(name: str) -> None:
    spec = {"name": name, "n_samples": 300, "noise": 0.2, "dev_fraction": 0.2, "seed": 3}
    a, b = load_dataset(spec), load_dataset(spec)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_dev, b.y_dev)
    assert a.X_train.shape == (240, 2) and a.X_dev.shape == (60, 2)
    assert a.y_train.dtype == np.int64 and a.n_classes == len(np.unique(a.y_train))
    c = load_dataset({**spec, "seed": 4})
    assert not np.array_equal(a.X_train, c.X_train)


def test_tasks_and_outputs() -> None:
    assert load_dataset({"name": "moons"}).task == "binary"
    blobs = load_dataset({"name": "blobs", "n_classes": 4, "n_samples": 200})
    assert blobs.task == "multiclass" and blobs.n_outputs == 4
    spirals = load_dataset({"name": "spirals", "n_classes": 3, "n_samples": 300})
    assert spirals.n_classes == 3


def test_split_is_stratified() -> None:
    X = np.arange(200.0).reshape(100, 2)
    y = np.array([0] * 80 + [1] * 20)
    ds = dataset_from_arrays(X, y, dev_fraction=0.25, seed=1)
    assert np.bincount(ds.y_dev).tolist() == [20, 5]
    assert np.bincount(ds.y_train).tolist() == [60, 15]


def test_standardization_is_fitted_on_the_training_part_only() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(loc=5.0, scale=3.0, size=(200, 3))
    y = rng.integers(0, 2, 200)
    ds = dataset_from_arrays(X, y, seed=0)
    np.testing.assert_allclose(ds.X_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(ds.X_train.std(axis=0), 1.0)
    assert not np.allclose(ds.X_dev.mean(axis=0), 0.0, atol=1e-3)  # dev's own stats not used
    assert ds.mean is not None and ds.std is not None
    raw = dataset_from_arrays(X, y, seed=0, standardize=False)
    np.testing.assert_allclose((raw.X_train - ds.mean) / ds.std, ds.X_train)


def test_shipped_data_sets() -> None:
    digits = load_dataset({"name": "digits", "dev_fraction": 0.2})
    assert digits.task == "multiclass" and digits.n_classes == 10 and digits.n_features == 64
    assert len(digits.X_train) + len(digits.X_dev) == 1797
    cancer = load_dataset({"name": "breast_cancer"})
    assert cancer.task == "binary" and cancer.n_features == 30
    assert len(cancer.y_train) + len(cancer.y_dev) == 569
    assert cancer.classes == ["malignant", "benign"]


def test_csv_with_string_labels(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    rows = ["a,b,y"] + [f"{i},{i % 7},{'cat' if i % 3 else 'dog'}" for i in range(30)]
    path.write_text("\n".join(rows) + "\n")
    ds = load_dataset({"path": str(path), "label_column": "y", "dev_fraction": 0.2, "seed": 0})
    assert ds.task == "binary" and ds.classes == ["cat", "dog"]
    assert ds.feature_names == ["a", "b"] and ds.n_features == 2
    assert len(ds.y_train) + len(ds.y_dev) == 30


def test_csv_regression_and_npz(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    rows = ["x,target"] + [f"{i},{i * 0.37 + 0.01}" for i in range(40)]
    path.write_text("\n".join(rows))
    assert load_dataset({"path": str(path), "label_column": "target"}).task == "regression"
    npz = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, X=rng.normal(size=(50, 3)), y=rng.integers(0, 3, 50))
    ds = load_dataset({"path": str(npz), "dev_fraction": 0.2, "seed": 0})
    assert ds.task == "multiclass" and ds.n_features == 3


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "label", "message"),
    [
        ("", "y", "is empty"),
        ("a,y\n", "y", "no data rows"),
        ("a,b\n1,0\n2,1\n", "y", "label column 'y' not found"),
        ("a,y\n1,0\nnan,1\n3,0\n4,1\n", "y", "NaN or infinite"),
        ("a,y\n1,0\ninf,1\n3,0\n4,1\n", "y", "NaN or infinite"),
        ("a,y\n1,0\n2,0\n3,0\n", "y", "single class"),
        ("a,y\n1,0\nhello,1\n", "y", "'hello' is not a number"),
        ("a,b,y\n1,2,0\n3,1\n", "y", "line 3: 2 values for 3 columns"),
    ],
)
def test_bad_csv_gets_a_clear_error(tmp_path: Path, text: str, label: str, message: str) -> None:
    path = _write(tmp_path, "bad.csv", text)
    with pytest.raises(ValueError, match=message):
        load_dataset({"path": path, "label_column": label})


def test_bad_arrays_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="X has 4 rows but y has 3"):
        dataset_from_arrays(np.zeros((4, 2)), np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="X must be 2-D"):
        dataset_from_arrays(np.zeros(4), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="y must have shape"):
        dataset_from_arrays(np.zeros((4, 2)), np.zeros((4, 2)))
    npz = tmp_path / "bad.npz"
    np.savez(npz, features=np.zeros((3, 2)), y=np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="needs arrays 'X' and 'y'"):
        load_dataset({"path": str(npz)})
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        load_dataset({"path": str(empty)})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "nope"}, "unknown dataset name 'nope'"),
        ({"name": "moons", "n_sample": 10}, r"unknown key\(s\) \['n_sample'\]"),
        ({"name": "moons", "n_samples": 2}, "n_samples must be in"),
        ({"name": "moons", "noise": -1}, "noise must be in"),
        ({"name": "moons", "dev_fraction": 1.0}, "dev_fraction must be in"),
        ({"name": "moons", "n_classes": 3}, "always has 2 classes"),
        ({"name": "digits", "noise": 0.1}, "unknown key"),
        ({"path": "/no/such/file.csv", "label_column": "y"}, "does not exist"),
    ],
)
def test_bad_specs_name_the_problem(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset(spec)

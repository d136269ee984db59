"""Extract the two real data sets shipped in trainer/data/ from scikit-learn's bundled copies.

Run once, by hand, with scikit-learn installed (it is not a dependency of the package):

    python scripts/extract_datasets.py

It writes ``trainer/data/digits.npz`` and ``trainer/data/breast_cancer.npz``, each with
arrays ``X`` (m, n), ``y`` (m,), ``feature_names`` (n,) and ``target_names`` (k,), and
prints their SHA-256 so trainer/data/PROVENANCE.md can record them. scikit-learn reads
both from files inside its own package (no download), so the result is reproducible
for a given scikit-learn version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import sklearn
from sklearn.datasets import load_breast_cancer, load_digits

OUT = Path(__file__).resolve().parent.parent / "trainer" / "data"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    cancer = load_breast_cancer()
    arrays = {
        # Pixel intensities are the integers 0..16: uint8 keeps the file small and exact.
        "digits": (
            digits.data.astype(np.uint8),
            digits.target.astype(np.int64),
            np.array(digits.feature_names),
            np.array([str(t) for t in digits.target_names]),
        ),
        "breast_cancer": (
            cancer.data.astype(np.float64),
            cancer.target.astype(np.int64),
            np.array(cancer.feature_names),
            np.array(cancer.target_names),
        ),
    }
    assert np.array_equal(arrays["digits"][0], digits.data), "digits are not integers 0..16"
    print(f"scikit-learn {sklearn.__version__}")
    for name, (X, y, features, targets) in arrays.items():
        path = OUT / f"{name}.npz"
        np.savez_compressed(path, X=X, y=y, feature_names=features, target_names=targets)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{path.name}: X {X.shape} {X.dtype}, {len(targets)} classes, sha256 {digest}")


if __name__ == "__main__":
    main()

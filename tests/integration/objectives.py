"""Objective functions of a user's own, importable where the test workers run.

`sgd_digits` tunes a real estimator: scikit-learn's SGDClassifier on the shipped digits,
one `partial_fit` pass per epoch, reporting the dev accuracy; it returns when the
pruner stops it and keeps the model as its checkpoint. The others each end one way: a
function that raises, returns NaN, never reports, or counts its epochs slowly;
`opaque_state` keeps checkpoints that are no archive the service knows, and checks that
each later attempt gets back exactly the bytes it kept.
"""

from __future__ import annotations

import os
import pickle
import struct
import time
import zipfile
from functools import cache
from io import BytesIO
from typing import Any

import numpy as np


@cache
def _digits() -> tuple[Any, Any, Any, Any]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    return tuple(train_test_split(X, y, test_size=0.25, random_state=0))


def sgd_digits(params: dict[str, Any], trial: Any) -> float:
    from sklearn.linear_model import SGDClassifier

    X_train, X_dev, y_train, y_dev = _digits()
    state = trial.resume()
    if state is not None:
        model = pickle.loads(state)
    else:
        model = SGDClassifier(
            alpha=params["alpha"],
            eta0=params.get("eta0", 0.01),
            learning_rate="constant",
            random_state=params.get("seed", 0),
        )
    accuracy = 0.0
    pause = float(params.get("sleep", 0.0))
    for epoch in range(trial.start_epoch + 1, params["epochs"] + 1):
        model.partial_fit(X_train, y_train, classes=np.arange(10))
        accuracy = float(model.score(X_dev, y_dev))
        trial.report(epoch, accuracy=accuracy, train_accuracy=float(model.score(X_train, y_train)))
        trial.checkpoint(pickle.dumps(model))
        if pause:
            time.sleep(pause)
        if trial.should_stop():
            break
    return accuracy


def raises(params: dict[str, Any], trial: Any) -> float:
    trial.report(1, loss=1.0)
    raise ValueError(f"alpha {params['alpha']} is not one I take")


def returns_nan(params: dict[str, Any], trial: Any) -> float:
    return float("nan")


def never_reports(params: dict[str, Any], trial: Any) -> dict[str, float]:
    x = float(params["x"])
    return {"loss": (x - 0.3) ** 2, "x_seen": x}


def write_pid_then_count(params: dict[str, Any], trial: Any) -> float:
    """Counts epochs slowly, after writing its process's id where the test can read it."""
    folder = params.get("pid_dir")
    if folder:
        with open(os.path.join(folder, f"{os.getpid()}-{trial.trial_id}"), "w") as f:
            f.write(str(os.getpid()))
    for epoch in range(trial.start_epoch + 1, params["epochs"] + 1):
        time.sleep(float(params.get("sleep", 0.05)))
        trial.report(epoch, score=float(epoch) * params["x"])
        if trial.should_stop():
            break
    return float(params["epochs"]) * params["x"]


def opaque_blob(kind: str, epoch: int) -> bytes:
    """A function's own checkpoint after `epoch`: 100 zero bytes, or a zip archive laid
    out as torch.save writes one (records under archive/), with no pickle in it."""
    if kind == "zeros":
        return b"\x00" * 100
    out = BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in (
            ("archive/version", b"3\n"),
            ("archive/byteorder", b"little"),
            ("archive/data/0", struct.pack("<4d", epoch, epoch, epoch, epoch)),
        ):
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def opaque_state(params: dict[str, Any], trial: Any) -> float:
    """Counts epochs slowly (score = epoch * x), keeping `opaque_blob(params["blob"],
    epoch)` as its checkpoint; a later attempt raises unless `trial.resume()` is exactly
    the bytes kept at `trial.start_epoch`, and writes them to `out_dir` for the test."""
    kind, start = params["blob"], trial.start_epoch
    got = trial.resume()
    expected = opaque_blob(kind, start) if start else None
    if got != expected:
        raise ValueError(f"resume() gave {got!r} at epoch {start}, not {expected!r}")
    folder = params.get("out_dir")
    if folder:
        with open(os.path.join(folder, f"{trial.trial_id}-{start}-{os.getpid()}.bin"), "wb") as f:
            f.write(got or b"")
    for epoch in range(start + 1, params["epochs"] + 1):
        time.sleep(float(params.get("sleep", 0.05)))
        trial.report(epoch, score=epoch * float(params["x"]), resumed_from=float(start))
        trial.checkpoint(opaque_blob(kind, epoch))
        if trial.should_stop():
            break
    return float(params["epochs"]) * float(params["x"])

"""scikit-learn's SGDClassifier on the digits, for Optuna in digits_optuna.py and for
Caviar in digits.py: docs/own-code.md compares the two.

Each epoch is one pass of `partial_fit` over the training set; the dev accuracy is
reported after it, so that the pruner stops the poor trials early.
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split


def objective(params, trial):
    X, y = load_digits(return_X_y=True)
    X_train, X_dev, y_train, y_dev = train_test_split(
        X / 16.0, y, test_size=0.25, random_state=0, stratify=y
    )
    model = SGDClassifier(
        loss=params["loss"],
        alpha=params["alpha"],
        learning_rate="constant",
        eta0=params["eta0"],
        random_state=0,
    )
    for epoch in range(1, params["epochs"] + 1):
        model.partial_fit(X_train, y_train, classes=np.arange(10))
        accuracy = model.score(X_dev, y_dev)
        trial.report(epoch, accuracy=accuracy)
        if trial.should_stop():
            break
    return accuracy

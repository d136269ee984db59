"""scikit-learn's SGDClassifier on the digits, for Optuna in digits_optuna.py and for
Caviar in digits.py: docs/own-code.md compares the two.

Each epoch is one pass of `partial_fit` over the training set; the dev accuracy is
reported after it, so that the pruner stops the poor trials early.
"""

import numpy as np
import optuna
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split

EPOCHS = 20


def objective(trial):
    X, y = load_digits(return_X_y=True)
    X_train, X_dev, y_train, y_dev = train_test_split(
        X / 16.0, y, test_size=0.25, random_state=0, stratify=y
    )
    model = SGDClassifier(
        loss=trial.suggest_categorical("loss", ["hinge", "log_loss", "modified_huber"]),
        alpha=trial.suggest_float("alpha", 1e-6, 1e-1, log=True),
        learning_rate="constant",
        eta0=trial.suggest_float("eta0", 1e-4, 1.0, log=True),
        random_state=0,
    )
    for epoch in range(1, EPOCHS + 1):
        model.partial_fit(X_train, y_train, classes=np.arange(10))
        accuracy = model.score(X_dev, y_dev)
        trial.report(accuracy, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return accuracy


if __name__ == "__main__":
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    study.optimize(objective, n_trials=30)
    print(study.best_params, study.best_value)

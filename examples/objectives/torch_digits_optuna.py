"""A small PyTorch network on the digits, on the CPU, for Optuna in torch_digits_optuna.py
and for Caviar in torch_digits.py: docs/own-code.md compares the two.

One hidden layer with dropout, trained by Adam on mini-batches of 64; the dev accuracy
is reported after each epoch, so that the pruner stops the poor trials early. The
Caviar objective also checkpoints its state every epoch, so that a trial paused, moved
to another worker or forked goes on from where it was.
"""

import optuna
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

EPOCHS = 20


def digits():
    X, y = load_digits(return_X_y=True)
    split = train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    X_train, X_dev, y_train, y_dev = (torch.as_tensor(a) for a in split)
    return X_train.float(), X_dev.float(), y_train, y_dev


def objective(trial):
    torch.set_num_threads(1)  # a network this small is fastest on one core per process
    torch.manual_seed(0)
    X_train, X_dev, y_train, y_dev = digits()
    hidden = trial.suggest_int("hidden", 16, 256, log=True)
    model = nn.Sequential(
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Dropout(trial.suggest_float("dropout", 0.0, 0.5)),
        nn.Linear(hidden, 10),
    )
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(1, EPOCHS + 1):
        model.train()
        for batch in torch.randperm(len(X_train)).split(64):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(X_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(X_dev).argmax(1) == y_dev).float().mean().item()
        trial.report(accuracy, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return accuracy


if __name__ == "__main__":
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    study.optimize(objective, n_trials=30)
    print(study.best_params, study.best_value)

"""A small PyTorch network on the digits, on the CPU, for Optuna in torch_digits_optuna.py
and for Caviar in torch_digits.py: docs/own-code.md compares the two.

One hidden layer with dropout, trained by Adam on mini-batches of 64; the dev accuracy
is reported after each epoch, so that the pruner stops the poor trials early. The
Caviar objective also checkpoints its state every epoch, so that a trial paused, moved
to another worker or forked goes on from where it was.
"""

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from .torch_state import load, save


def digits():
    X, y = load_digits(return_X_y=True)
    split = train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    X_train, X_dev, y_train, y_dev = (torch.as_tensor(a) for a in split)
    return X_train.float(), X_dev.float(), y_train, y_dev


def objective(params, trial):
    torch.set_num_threads(1)  # a network this small is fastest on one core per process
    torch.manual_seed(0)
    X_train, X_dev, y_train, y_dev = digits()
    hidden = params["hidden"]
    model = nn.Sequential(
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Dropout(params["dropout"]),
        nn.Linear(hidden, 10),
    )
    lr = params["lr"]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    load(trial.resume(), model, optimizer, lr=lr)  # a fork may change the rate
    for epoch in range(trial.start_epoch + 1, params["epochs"] + 1):
        model.train()
        for batch in torch.randperm(len(X_train)).split(64):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(X_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(X_dev).argmax(1) == y_dev).float().mean().item()
        trial.report(epoch, accuracy=accuracy, loss=loss.item())
        trial.checkpoint(save(model, optimizer))
        if trial.should_stop():
            break
    return accuracy

"""The PyTorch example's checkpoints: a run resumed from one goes on exactly as if it had
never stopped, and a fork's changed learning rate wins over the checkpoint's."""

from __future__ import annotations

import torch
from torch import nn

from examples.objectives.torch_digits import digits
from examples.objectives.torch_state import load, save


def _network() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 10))
    return model, torch.optim.Adam(model.parameters(), lr=0.01)


def _epochs(model: nn.Module, optimizer: torch.optim.Optimizer, n: int) -> None:
    X_train, _, y_train, _ = digits()
    model.train()
    for _ in range(n):
        for batch in torch.randperm(len(X_train)).split(64):  # the global generator
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(X_train[batch]), y_train[batch]).backward()
            optimizer.step()


def test_a_resumed_run_goes_on_as_if_it_had_never_stopped() -> None:
    model, optimizer = _network()
    _epochs(model, optimizer, 2)
    state = save(model, optimizer)
    _epochs(model, optimizer, 2)
    straight = [p.detach().clone() for p in model.parameters()]

    torch.manual_seed(123)  # another process's generator: the checkpoint brings its own
    resumed, resumed_optimizer = _network()
    load(state, resumed, resumed_optimizer)
    _epochs(resumed, resumed_optimizer, 2)
    for a, b in zip(straight, resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_forks_learning_rate_wins_and_no_checkpoint_is_a_fresh_start() -> None:
    model, optimizer = _network()
    _epochs(model, optimizer, 1)
    state = save(model, optimizer)
    fork, fork_optimizer = _network()
    load(state, fork, fork_optimizer, lr=0.5)
    assert [g["lr"] for g in fork_optimizer.param_groups] == [0.5]
    assert fork_optimizer.state_dict()["state"]  # Adam's moments came back with it
    fresh, fresh_optimizer = _network()
    before = [p.detach().clone() for p in fresh.parameters()]
    load(None, fresh, fresh_optimizer)
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.parameters(), strict=True))
    assert fresh_optimizer.state_dict()["state"] == {}

"""A PyTorch network's training state as bytes and back: what a Caviar objective hands to
`trial.checkpoint` and gets from `trial.resume()` (see torch_digits.py)."""

import io

import torch


def save(model, optimizer):
    """The model's weights, the optimizer's moments and the random generator, as bytes."""
    buffer = io.BytesIO()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    torch.save({**state, "rng": torch.get_rng_state()}, buffer)
    return buffer.getvalue()


def load(data, model, optimizer, **changes):
    """Put the state `save` made back into `model` and `optimizer` (nothing if `data` is
    None: a fresh start). `changes` (say lr=0.01) override the optimizer's settings the
    checkpoint holds: a fork's new learning rate wins over the one it was trained with."""
    if data is None:
        return
    state = torch.load(io.BytesIO(data), weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    for group in optimizer.param_groups:
        group.update(changes)
    torch.set_rng_state(state["rng"])

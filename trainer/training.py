"""The training loop: mini-batches, optimizer steps, learning-rate decay and per-epoch metrics.

``train(config, dataset)`` runs ``config.epochs`` epochs with one
``np.random.default_rng(config.seed)`` for everything random in the run (initial
weights, shuffling, dropout masks), so the same config and seed give bit-identical
results on the same machine. Each epoch shuffles the training examples, partitions them
into mini-batches of ``batch_size`` (the last one may be smaller; 0 = full batch) and
takes one optimizer step per mini-batch.

Per-epoch metrics, as the course's training loops compute them: ``train_cost`` is the
mean over the epoch's mini-batches of their cost (weighted by their sizes, L2 term
included) and ``train_accuracy`` the share of correct predictions in those same
training-mode passes (dropout on, batch statistics); ``dev_cost`` and ``dev_accuracy``
come from one inference-mode pass over the dev set after the epoch. That keeps the
training loop to one forward and backward per example per epoch; for the accuracy of
the final weights on the training set in inference mode, use ``result.model.evaluate``.

Checkpoints (:mod:`trainer.checkpoint`): ``on_checkpoint`` receives the run's whole state
every ``checkpoint_every`` epochs, after the last epoch, and when ``on_epoch`` asks to
stop, and
``train(config, dataset, resume=checkpoint)`` continues from one exactly, or, with some
hyperparameters changed, as a fork.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from trainer.checkpoint import Checkpoint, check_resumable
from trainer.config import TrainConfig
from trainer.datasets import Dataset
from trainer.layers import Array
from trainer.model import Model
from trainer.optimizers import Optimizer, make_optimizer
from trainer.schedules import learning_rate

Status = Literal["completed", "diverged", "stopped"]
# A run a mini-batch of which costs this many times the run's first (or 1, if that was
# below 1) has diverged, finite or not: at learning rates of 10 to 1e30 runs went on to
# their last epoch at chance accuracy, with costs up to 2.9e29.
EXPLODED = 1e6
OnEpoch = Callable[[dict[str, Any]], Any]
OnCheckpoint = Callable[[Checkpoint], Any]


@dataclass
class TrainResult:
    """What a run produced.

    Attributes
    ----------
    history : list of dict
        One dict per epoch: ``epoch`` (from 1), ``train_cost``, ``train_accuracy``,
        ``dev_cost``, ``dev_accuracy``, ``learning_rate``, ``seconds``; every non-finite
        or undefined value (regression accuracy, an empty dev set, a diverged cost) is None.
    params : dict of str to ndarray
        Copies of the final parameters (and batch norm's running averages). After a
        divergence these are the parameters the failing mini-batch saw: the update it
        asked for is not applied, but they (or the running averages it updated) may
        already be non-finite.
    status : str
        "completed", "diverged" (a non-finite cost or gradient, or a mini-batch's cost
        over ``EXPLODED`` times the run's first mini-batch's, ended the run) or "stopped"
        (``on_epoch`` asked to stop).
    model : Model
        The trained model, ready for ``predict``.
    optimizer_state : dict
        The optimizer's step count and state buffers at the end.
    divergence : str or None
        Why a diverged run diverged, in words; None for any other.
    """

    history: list[dict[str, Any]]
    params: dict[str, Array]
    status: Status
    model: Model
    optimizer_state: dict[str, Any] = field(default_factory=dict)
    divergence: str | None = None


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _wants_stop(answer: Any) -> bool:
    """``on_epoch`` asks to stop with True, "stop", or a mapping whose "stop" is truthy."""
    # Every epoch's usual answer, decided without an isinstance check against an abstract
    # class: that check was half a percent of a worker's time on a tiny network's epochs.
    if answer is None or type(answer) is bool:
        return bool(answer)
    if isinstance(answer, Mapping):
        return bool(answer.get("stop"))
    if isinstance(answer, str):
        return answer.strip().lower() == "stop"
    return bool(answer)


def train(
    config: TrainConfig,
    dataset: Dataset,
    init_params: Mapping[str, Any] | None = None,
    on_epoch: OnEpoch | None = None,
    *,
    resume: Checkpoint | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: OnCheckpoint | None = None,
) -> TrainResult:
    """Train a model for ``config`` on ``dataset``.

    Parameters
    ----------
    config : TrainConfig
    dataset : Dataset
        ``X_train`` (m, n_features) with ``y_train``; ``X_dev``/``y_dev`` may be empty.
    init_params : mapping of str to array_like, optional
        Start from these parameters (the keys of ``model.params``, optionally with batch
        norm's running averages, as ``TrainResult.params`` holds them) instead of the
        config's initialization.
    on_epoch : callable, optional
        Called after every epoch with that epoch's metrics dict; returning True, "stop" or
        ``{"stop": True}`` ends the run after that epoch with status "stopped".
    resume : Checkpoint, optional
        Continue from this checkpoint instead of starting afresh: the run's first epoch is
        ``resume.epoch + 1`` and, with the checkpoint's own config, everything (metrics,
        parameters, in float64 to the last bit) is as if the run had never stopped. A
        fork passes a config that differs in some of
        :data:`trainer.checkpoint.FORKABLE_FIELDS` (learning rate, L2, decay, dropout,
        betas, epochs, ...), which take effect from the next epoch on; the schedule keeps
        its position (the learning rate at epoch ``e`` is the new config's rate at ``e``).
        Any other difference (architecture, dtype, optimizer, init, seed) is a
        ``ValueError`` naming the field. Not combinable with ``init_params``.
    checkpoint_every : int, default 0
        Call ``on_checkpoint`` after every epoch whose number is a multiple of this and
        after the run's last epoch, so a completed run can be continued or forked from
        its end (0: only when ``on_epoch`` asks to stop).
    on_checkpoint : callable, optional
        Receives a :class:`~trainer.checkpoint.Checkpoint` of the state after an epoch:
        every ``checkpoint_every`` epochs, after the last one, and when ``on_epoch`` asks
        to stop (so a pause keeps its state), after ``on_epoch`` returned. Never after a
        diverged epoch.

    Returns
    -------
    TrainResult
        With ``resume``, ``history`` holds only the epochs run here, numbered from
        ``resume.epoch + 1``.
    """
    _check_arguments(config, dataset, init_params, resume, checkpoint_every)
    rng = np.random.default_rng(config.seed)
    model = Model(config, dataset.n_features, dataset.n_outputs, dataset.task, rng=rng)
    if init_params is not None:
        model.set_params(init_params)
    optimizer = make_optimizer(config, model.vector, model.grad_vector, model.layout)
    loop = _Loop(config, model, optimizer, dataset, rng)
    first = 0
    if resume is not None:
        loop.restore(resume)
        first = resume.epoch
    history, status = _run_epochs(loop, first, on_epoch, checkpoint_every, on_checkpoint)
    return TrainResult(
        history=history,
        params=model.get_params(),
        status=status,
        model=model,
        optimizer_state=optimizer.state_dict(),
        divergence=loop.divergence if status == "diverged" else None,
    )


def _check_arguments(
    config: TrainConfig,
    dataset: Dataset,
    init_params: Mapping[str, Any] | None,
    resume: Checkpoint | None,
    checkpoint_every: int,
) -> None:
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int):
        raise TypeError(f"checkpoint_every must be an int, got {checkpoint_every!r}")
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0, got {checkpoint_every}")
    if resume is None:
        return
    if not isinstance(resume, Checkpoint):
        raise TypeError(f"resume must be a Checkpoint, got {type(resume).__name__}")
    if init_params is not None:
        raise ValueError("pass either init_params or resume, not both")
    check_resumable(resume, config)
    if resume.task != dataset.task:
        raise ValueError(
            f"the checkpoint was trained for a {resume.task} task, the data set is {dataset.task}"
        )


def _run_epochs(
    loop: _Loop,
    first: int,
    on_epoch: OnEpoch | None,
    checkpoint_every: int,
    on_checkpoint: OnCheckpoint | None,
) -> tuple[list[dict[str, Any]], Status]:
    """Epochs `first` on to the config's last, or until a divergence or a stop; the
    history and the run's status."""
    epochs = loop.config.epochs
    history: list[dict[str, Any]] = []
    for epoch in range(first, epochs):
        metrics, diverged = loop.run_epoch(epoch)
        history.append(metrics)
        answer = on_epoch(dict(metrics)) if on_epoch is not None else None
        if diverged:
            return history, "diverged"
        stop = _wants_stop(answer)
        done = epoch + 1
        if on_checkpoint is not None and (
            stop or (checkpoint_every and (done % checkpoint_every == 0 or done == epochs))
        ):
            on_checkpoint(loop.checkpoint(done))
        if stop:
            return history, "stopped"
    return history, "completed"


class _Loop:
    """The state of one run's epochs: the data in the run's dtype and reusable batch arrays."""

    def __init__(
        self,
        config: TrainConfig,
        model: Model,
        optimizer: Optimizer,
        dataset: Dataset,
        rng: np.random.Generator,
    ) -> None:
        self.config, self.model, self.optimizer, self.rng = config, model, optimizer, rng
        # Cast once: after this line no float64 array enters a float32 run.
        self.X = model.prepare_inputs(dataset.X_train)
        self.y = model.prepare_targets(dataset.y_train, self.X.shape[0])
        self.X_dev = model.prepare_inputs(dataset.X_dev) if len(dataset.X_dev) else None
        self.y_dev = (
            model.prepare_targets(dataset.y_dev, len(dataset.y_dev))
            if self.X_dev is not None
            else None
        )
        m = self.X.shape[0]
        if m == 0:
            raise ValueError("the training set is empty")
        self.m = m
        self.batch = m if config.batch_size == 0 else min(config.batch_size, m)
        self.order = np.arange(m)
        # One input and one target array per batch size (full and last), filled by np.take.
        self._xb: dict[int, Array] = {}
        self._yb: dict[int, Array] = {}
        self.step = 0
        # The cost of this run's first mini-batch (of its resumption, after a checkpoint),
        # before any update: the measure an exploding cost is taken against.
        self.first_cost: float | None = None
        self.divergence: str | None = None

    def checkpoint(self, epochs_done: int) -> Checkpoint:
        """The run's state now, after ``epochs_done`` epochs (copies: training may go on)."""
        return Checkpoint.of_run(
            epoch=epochs_done,
            config=self.config,
            params=self.model.get_params(),
            optimizer_state=self.optimizer.state_dict(),
            rng_state=dict(self.rng.bit_generator.state),
            step=self.step,
            order=self.order.copy(),
            task=self.model.task,
        )

    def restore(self, checkpoint: Checkpoint) -> None:
        """Put the model, optimizer, generator and loop back in ``checkpoint``'s state."""
        if checkpoint.order.shape != (self.m,):
            raise ValueError(
                f"the checkpoint was made on {checkpoint.order.shape[0]} training examples, "
                f"the data set has {self.m}"
            )
        try:
            self.model.set_params(checkpoint.params)
        except ValueError as exc:
            raise ValueError(f"the checkpoint does not fit this data set: {exc}") from None
        self.optimizer.load_state_dict(checkpoint.optimizer_state)
        # Model and dropout hold this same generator object, so one assignment restores
        # every future draw (the ones Model's initialization just made are overwritten).
        self.rng.bit_generator.state = checkpoint.rng_state
        self.order[...] = checkpoint.order
        self.step = int(checkpoint.step)

    def _batch(self, start: int, stop: int) -> tuple[Array, Array]:
        if not self.config.shuffle:
            return self.X[start:stop], self.y[start:stop]  # views: no copy at all
        k = stop - start
        if k not in self._xb:
            self._xb[k] = np.empty((k, *self.X.shape[1:]), self.X.dtype)
            self._yb[k] = np.empty((k, *self.y.shape[1:]), self.y.dtype)
        idx = self.order[start:stop]
        np.take(self.X, idx, axis=0, out=self._xb[k], mode="clip")
        np.take(self.y, idx, axis=0, out=self._yb[k], mode="clip")
        return self._xb[k], self._yb[k]

    def run_epoch(self, epoch: int) -> tuple[dict[str, Any], bool]:
        # Divergence is detected explicitly below; NumPy's overflow warnings on the way
        # there would only be noise in a worker's log.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._run_epoch(epoch)

    def _run_epoch(self, epoch: int) -> tuple[dict[str, Any], bool]:
        cfg, model, optimizer = self.config, self.model, self.optimizer
        began = time.perf_counter()
        if cfg.shuffle:
            self.rng.shuffle(self.order)
        total_cost = 0.0
        correct_total: int | None = 0
        lr = learning_rate(cfg, epoch)
        diverged = False
        for start in range(0, self.m, self.batch):
            stop = min(start + self.batch, self.m)
            X, y = self._batch(start, stop)
            if cfg.decay_per == "step":
                lr = learning_rate(cfg, self.step)
            cost, correct = model.compute_grads(X, y)
            # A sum is one pass with no temporary; it is non-finite if any element is
            # (or if the gradient is so large that it overflows, which is divergence too).
            if not (math.isfinite(cost) and math.isfinite(float(model.grad_vector.sum()))):
                diverged = True
                self.divergence = f"the cost or a gradient was not finite at epoch {epoch + 1}"
                break
            if self._exploded(cost, epoch + 1):
                diverged = True
                break
            optimizer.step(lr)
            self.step += 1
            total_cost += cost * (stop - start)
            if correct is None or correct_total is None:
                correct_total = None
            else:
                correct_total += correct
        metrics: dict[str, Any] = {"epoch": epoch + 1}
        if diverged:
            metrics.update(train_cost=None, train_accuracy=None, dev_cost=None, dev_accuracy=None)
        else:
            metrics["train_cost"] = _finite(total_cost / self.m)
            metrics["train_accuracy"] = (
                None if correct_total is None else _finite(correct_total / self.m)
            )
            dev_cost: float | None = None
            dev_accuracy: float | None = None
            if self.X_dev is not None and self.y_dev is not None:
                cost, correct = model.loss(self.X_dev, self.y_dev, training=False)
                dev_cost = _finite(cost)
                dev_accuracy = None if correct is None else correct / self.X_dev.shape[0]
            metrics["dev_cost"] = dev_cost
            metrics["dev_accuracy"] = dev_accuracy
        metrics["learning_rate"] = _finite(lr)
        metrics["seconds"] = time.perf_counter() - began
        return metrics, diverged

    def _exploded(self, cost: float, epoch: int) -> bool:
        """Whether a mini-batch's cost passed EXPLODED times the run's first's."""
        if self.first_cost is None:
            self.first_cost = cost
        if cost <= EXPLODED * max(self.first_cost, 1.0):
            return False
        self.divergence = (
            f"the cost exploded to {cost:.3g} at epoch {epoch}, over {EXPLODED:.0e} times "
            f"its first mini-batch's {self.first_cost:.3g}"
        )
        return True

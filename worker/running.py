"""Running one leased trial on a worker: the built-in trainer or a task's own function,
then what becomes of it (a result to report, a trial handed back, a lost lease).

`worker.runner.Worker` leases trials and reports their results (the claim and settle
loop); this is the part of it that runs each one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from trainer import TrainConfig
from trainer.checkpoint import Checkpoint
from worker.client import ApiError, Client, LeaseLostError
from worker.dataset_cache import DatasetCache
from worker.objective import run_objective
from worker.trial import TrialRun

log = logging.getLogger("caviar.worker")


class TrialRunner:
    """What `Worker` does with a trial once it starts: train it, then settle its end."""

    # Set by Worker.__init__.
    shutdown: threading.Event
    objectives: dict[str, Callable[..., Any]]
    client: Client
    datasets: DatasetCache
    train_fn: Callable[..., Any]
    _held_lock: threading.Lock
    _unsettled: dict[int, TrialRun]

    def _release(self, trial_id: int, token: str) -> None:
        try:
            self.client.post(f"/api/worker/trials/{trial_id}/release", {"lease_token": token})
        except (LeaseLostError, ApiError) as exc:
            log.warning("could not hand back trial %s: %s", trial_id, exc)

    def run_trial(self, claimed: dict[str, Any], run: TrialRun) -> dict[str, Any] | None:
        """Train one leased trial (`run` holds its lease, see `_hold`); returns its result
        to report, or None if there is none (the lease was lost, or the trial was handed
        back at shutdown)."""
        extra = {"trial_id": run.trial_id, "action": "train"}
        if run.lease_lost.is_set():  # lost while it waited in its batch: not ours to run
            log.warning("trial %s: lease lost before it started", run.trial_id, extra=extra)
            return None
        log.debug("trial %s: attempt %s starts", run.trial_id, claimed["attempt"], extra=extra)
        outcome, error = "failed", None
        try:
            if claimed.get("entrypoint"):  # a task's own function, not the trainer
                ended = run_objective(
                    self.objectives[claimed["entrypoint"]], claimed, run, client=self.client
                )
                outcome, error, run.value = ended.outcome, ended.error, ended.value
            else:
                outcome, error = self._train(claimed, run)
        except Exception as exc:  # a trainer error fails this trial; the worker goes on
            outcome, error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            run.done.set()
        return self._after(run, outcome, error)

    def _train(self, claimed: dict[str, Any], run: TrialRun) -> tuple[str, str | None]:
        """Train the leased trial with the built-in trainer: its outcome, and why."""
        error = None
        config = TrainConfig(**claimed["config"])
        dataset = self.datasets.get(claimed["dataset"])
        run.check_gradients(config, dataset)  # with execution.gradient_check only
        resume = None
        if claimed.get("resume"):
            checkpoint_id = claimed["resume"]["checkpoint_id"]
            data = self.client.request("GET", f"/api/worker/checkpoints/{checkpoint_id}")
            resume = Checkpoint.from_bytes(data.content)
        result = self.train_fn(
            config,
            dataset,
            on_epoch=run.on_epoch,
            resume=resume,
            checkpoint_every=run.checkpoint_every(int(claimed.get("checkpoint_every") or 0)),
            on_checkpoint=run.on_checkpoint,
        )
        outcome = result.status
        if outcome == "diverged":  # in the trainer's words: why (not finite, or exploded)
            error = getattr(result, "divergence", None)
        return outcome, error

    def _after(self, run: TrialRun, outcome: str, error: str | None) -> dict[str, Any] | None:
        """The result of a trial that ran, or None: handed back at shutdown, lease lost."""
        extra = {"trial_id": run.trial_id, "action": "train"}
        run.done.set()
        if outcome == "failed":
            log.warning("trial %s failed: %s", run.trial_id, error, extra=extra)
        took = time.monotonic() - run.started
        if self.shutdown.is_set() and outcome == "stopped" and not run.stop_asked.is_set():
            # The stop's checkpoint is stored before the trial goes back to the queue,
            # which starts its next attempt there.
            with contextlib.suppress(Exception):  # a failed upload: resumed from an earlier one
                run.drain()
            if not run.lease_lost.is_set():
                self._release(run.trial_id, run.token)
            return None
        if run.lease_lost.is_set():
            log.warning("trial %s: lease lost; dropping it", run.trial_id, extra=extra)
            return None
        # Its checkpoints may still be on their way: the claim thread waits for them
        # before it reports the result (see `_settle`), the next trial need not.
        with self._held_lock:
            self._unsettled[run.trial_id] = run
        return run.result(outcome, error, took)

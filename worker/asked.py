"""One trial leased by an ask/tell program (worker.asktell): the handle an objective
gets, with `tell` and `fail` to end it.

It reports, stops and checkpoints as the handle a worker passes to a function does
(worker.objective.Trial), through the same worker routes: epochs in batches (at once at
a pruning decision's epoch), checkpoints in the same format, and what was told checked
in the same words. A lost lease makes every call raise `LeaseLost`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from worker.client import ApiError, LeaseLostError
from worker.client import Client as HttpClient
from worker.objective import UNSTATED_EPOCHS as UNSTATED
from worker.objective import metric_number, returned_metrics

if TYPE_CHECKING:
    from worker.asktell import Study

FLUSH_SECONDS = 1.0  # reported epochs are sent at least this often (and at pruning rungs)
# Metrics the service keeps in columns of their own (the built-in trainer's); a task's
# function may report them too.
BUILTIN_METRICS = frozenset(
    ("train_cost", "train_accuracy", "dev_cost", "dev_accuracy", "learning_rate", "seconds")
)


class LeaseLost(RuntimeError):
    """The service handed this trial to another worker (this one missed its lease)."""


class TrialEnded(RuntimeError):
    """A trial this program already ended (told, failed or handed back) was used again."""


class AskedTrial:
    """One leased trial: what an objective gets as `trial`, plus `tell` and `fail`.

    Attributes: `params` (the sampled values over task.params), `number`, `study_id`,
    `trial_id`, `start_epoch` (the epoch its checkpoint was taken at; 0 when fresh).
    """

    def __init__(self, study: Study, claimed: dict[str, Any]) -> None:
        self.study = study
        self.params: dict[str, Any] = dict(claimed["config"])
        self.number = int(claimed["number"])
        self.study_id = int(claimed["study_id"])
        self.trial_id = int(claimed["trial_id"])
        self.attempt = int(claimed["attempt"])
        self.token = str(claimed["lease_token"])
        self.metric = str(claimed.get("metric") or "value")  # the study's objective.metric
        resume = claimed.get("resume")
        self.start_epoch = int(resume["epoch"]) if resume else 0
        self._resume_id = int(resume["checkpoint_id"]) if resume else None
        self._report_at = frozenset(claimed.get("report_at") or ())
        epochs = self.params.get("epochs")
        self._epochs_max = int(epochs) if isinstance(epochs, int) and epochs > 0 else UNSTATED
        self._epochs: list[dict[str, Any]] = []
        self.last_epoch = self.start_epoch
        self._last_flush = time.monotonic()
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._ended = False

    def __repr__(self) -> str:
        return f"AskedTrial(study_id={self.study_id}, number={self.number}, params={self.params})"

    # --- what an objective calls -----------------------------------------------------------

    def report(self, epoch: int, **metrics: float) -> None:
        """Add epoch `epoch` (from 1, increasing) to the curve, with metrics of any names;
        sent within FLUSH_SECONDS, or at once at an epoch where the pruner decides."""
        self._check_open()
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise TypeError(f"trial {self.trial_id}: epoch must be an int, got {epoch!r}")
        if epoch <= self.last_epoch:
            raise ValueError(
                f"trial {self.trial_id}: epoch {epoch} is not after epoch {self.last_epoch}: "
                "epochs count from 1 and go up"
            )
        if epoch > self._epochs_max:
            raise ValueError(
                f"trial {self.trial_id}: epoch {epoch} is past params['epochs'] = "
                f"{self._epochs_max}, the trial's length"
            )
        row = {"epoch": epoch, **{name: metric_number(name, v) for name, v in metrics.items()}}
        self.last_epoch = epoch
        self._epochs.append(row)
        if epoch in self._report_at or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self._flush()

    def should_stop(self) -> bool:
        """True once the pruner or a person stopped this trial (tell it then: its value
        so far, or None to take the curve's), or its lease was lost."""
        return self._stop.is_set() or self._lost.is_set()

    def checkpoint(self, data: bytes) -> None:
        """Keep `data` as the state after the last reported epoch: pause, resume and fork
        start a later attempt from it (`resume()` hands it back)."""
        self._check_open()
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(
                f"trial {self.trial_id}: a checkpoint is bytes, got {type(data).__name__}"
            )
        if self.last_epoch < 1:
            raise ValueError(
                f"trial {self.trial_id}: report an epoch first: a checkpoint is the state "
                "after an epoch"
            )
        self._flush()
        self._call(
            "POST",
            f"/api/worker/trials/{self.trial_id}/checkpoints",
            params={"epoch": self.last_epoch},
            content=bytes(data),
            headers={"x-lease-token": self.token, "content-type": "application/octet-stream"},
        )

    def resume(self) -> bytes | None:
        """The checkpoint this attempt starts from (taken at `start_epoch`), or None."""
        if self._resume_id is None:
            return None
        response = self._call("GET", f"/api/worker/checkpoints/{self._resume_id}")
        return bytes(response.content)

    # --- ending it -------------------------------------------------------------------------

    def tell(self, value: float | Mapping[str, float] | None) -> str:
        """End the trial with the objective's value, or a dict of metrics holding the
        study's objective.metric (None only after should_stop(): the curve's value);
        returns its new status: completed, or pruned, paused or stopped as the service
        had asked. As under a worker, a value that is not a finite number fails the
        trial, saying why; a trial that never reported gets the told metrics as its one
        epoch."""
        self._check_open()
        stopped = self.should_stop()
        if value is None and stopped:
            return self._finish({"outcome": "stopped"})
        try:
            values = returned_metrics(value, self.metric)
        except ValueError as exc:
            return self.fail(str(exc))
        if self.last_epoch == self.start_epoch:  # nothing reported: the curve's one epoch
            self.report(self.start_epoch + 1, **values)
        outcome = "stopped" if stopped else "completed"
        return self._finish({"outcome": outcome, "value": values[self.metric]})

    def fail(self, reason: str) -> str:
        """End the trial as failed, saying why (it is not retried)."""
        return self._finish({"outcome": "failed", "error": str(reason)})

    def release(self) -> None:
        """Hand the trial back to the queue unfinished (another worker runs it)."""
        if self._ended:
            return
        self._ended = True
        self.study.client.let_go(self)
        # Another worker may have it already, or the service is gone: the lease expires.
        with contextlib.suppress(LeaseLostError, ApiError):
            self.study.client.http.post(
                f"/api/worker/trials/{self.trial_id}/release", {"lease_token": self.token}
            )

    def _finish(self, body: dict[str, Any]) -> str:
        self._check_open()
        body = {
            "lease_token": self.token,
            "seconds": time.monotonic() - self._started,
            "curve": _curve(self._epochs),
            **body,
        }
        try:
            answer = self._call_json(f"/api/worker/trials/{self.trial_id}/finish", body)
        finally:
            self._ended = True
            self.study.client.let_go(self)
        self._epochs = []
        return str(answer["status"])

    # --- plumbing --------------------------------------------------------------------------

    def beat(self, http: HttpClient) -> None:
        if self._ended or self._lost.is_set():
            return
        try:
            answer = http.post(
                f"/api/worker/trials/{self.trial_id}/heartbeat", {"lease_token": self.token}
            )
        except LeaseLostError:
            self._lost.set()
        except ApiError:
            return  # the next beat tries again; the lease outlives a few missed ones
        else:
            if answer and answer.get("stop"):
                self._stop.set()

    def _check_open(self) -> None:
        if self._lost.is_set():
            raise self._lease_lost()
        if self._ended:
            raise TrialEnded(f"trial {self.trial_id} (number {self.number}) has already ended")

    def _lease_lost(self) -> LeaseLost:
        self._lost.set()
        self.study.client.let_go(self)  # no more heartbeats for it
        return LeaseLost(
            f"trial {self.trial_id} (number {self.number} of study {self.study_id}): its "
            "lease was lost (no heartbeat reached the service in time), so it was handed to "
            "another worker; drop this run and ask for the next trial"
        )

    def _flush(self) -> None:
        if not self._epochs:
            return
        epochs, self._epochs = self._epochs, []
        answer = self._call_json(
            f"/api/worker/trials/{self.trial_id}/metrics",
            {"lease_token": self.token, "curve": _curve(epochs)},
        )
        self._last_flush = time.monotonic()
        if answer and answer.get("stop"):
            self._stop.set()

    def _call_json(self, path: str, body: dict[str, Any]) -> Any:
        try:
            return self.study.client.http.post(path, body)
        except LeaseLostError:
            raise self._lease_lost() from None

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.study.client.http.request(method, path, **kwargs)
        except LeaseLostError:
            raise self._lease_lost() from None


def _curve(epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """Reported epochs as the service reads them: a column per metric, the built-in
    trainer's names in their own, any other name under `extra` (null where an epoch did
    not report it)."""
    names = sorted({name for e in epochs for name in e} - {"epoch"})
    curve: dict[str, Any] = {"epoch": [e["epoch"] for e in epochs], "extra": {}}
    for name in names:
        column = [e.get(name) for e in epochs]
        if name in BUILTIN_METRICS:
            curve[name] = column
        else:
            curve["extra"][name] = column
    return curve

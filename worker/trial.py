"""One leased trial while it trains: its heartbeat, its metrics buffer, its checkpoints."""

from __future__ import annotations

import base64
import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from operator import itemgetter
from typing import Any, Protocol

from trainer import TrainConfig
from trainer.datasets import Dataset
from trainer.gradcheck import GradientCheckFailed, check_trial
from worker.client import ApiError, Client, LeaseLostError

log = logging.getLogger("caviar.worker")

FLUSH_SECONDS = 1.0  # metrics are sent in batches at most this often (and at the end)
# The trial's last checkpoint rides with its result up to this size (the service's
# MAX_INLINE_CHECKPOINT_BYTES); a larger one is uploaded on its own, before the result.
INLINE_CHECKPOINT_BYTES = 1 << 20
# Epochs a result carries at most; a longer tail goes out as a metrics report first.
RESULT_EPOCHS = 20_000
METRICS = ("train_cost", "train_accuracy", "dev_cost", "dev_accuracy", "learning_rate", "seconds")


class Snapshot(Protocol):
    """A state to keep after an epoch: a trainer Checkpoint, or a task function's bytes."""

    @property
    def epoch(self) -> int: ...

    def to_bytes(self) -> bytes: ...


class TrialHost(Protocol):
    """What a trial run needs of the worker that leased it (worker.runner.Worker)."""

    client: Client
    hb_client: Client
    upload_client: Client
    uploader: ThreadPoolExecutor
    shutdown: threading.Event

    def prefetch_if_due(self, run: TrialRun, epoch: int) -> float | None: ...

    def report_if_due(self) -> float | None: ...


_ROW = itemgetter("epoch", *METRICS)


def columns(epochs: list[dict[str, Any]], named: bool = False) -> dict[str, Any]:
    """Epochs as the service reads them fastest: one list per metric (see schemas.Curve);
    `named`: the epochs may hold metrics of other names (a task's function's, in each
    row's `extra`), sent as a column per name."""
    try:  # the trainer's epochs have every metric: two passes in C
        rows = list(map(_ROW, epochs))
    except KeyError:  # another train function's may not
        rows = [(e["epoch"], *(e.get(name) for name in METRICS)) for e in epochs]
    if not rows:
        return {"epoch": []}
    transposed = zip(*rows, strict=True)  # every row has a value per column
    out: dict[str, Any] = {
        name: list(values) for name, values in zip(_COLUMNS, transposed, strict=True)
    }
    if named:
        names = sorted({n for e in epochs for n in e.get("extra") or ()})
        if names:
            out["extra"] = {n: [(e.get("extra") or {}).get(n) for e in epochs] for n in names}
        for name in METRICS:  # a task's function reports the metrics it has, none of others
            if all(v is None for v in out[name]):
                del out[name]
    return out


_COLUMNS = ("epoch", *METRICS)


class TrialRun:
    """The state of one leased trial while it trains: the heartbeat, the metrics buffer."""

    def __init__(self, worker: TrialHost, claimed: dict[str, Any]) -> None:
        self.worker = worker
        self.trial_id: int = claimed["trial_id"]
        self.token: str = claimed["lease_token"]
        self.buffer: list[dict[str, Any]] = []
        self.stop_asked = threading.Event()
        self.lease_lost = threading.Event()
        self.done = threading.Event()
        self.last_flush = time.monotonic()
        self.report_at = frozenset(claimed.get("report_at") or ())
        self.started = 0.0  # when its turn came (time.monotonic(), set by the worker)
        self.epochs_run = 0  # epochs trained by this run (a resumed trial starts later)
        self.last_of_lease = False  # nothing else leased waits behind it: may prefetch
        self.expected: float | None = claimed.get("expected_seconds")  # the service's guess
        self.uploads: list[Future[None]] = []  # checkpoints (and epochs before them) in flight
        self.final: tuple[int, bytes] | None = None  # the last checkpoint, to ride inline
        # Periodic checkpoints at most this often (a caviar study's); the last epoch's and
        # a stop's are always kept.
        self.checkpoint_seconds = float(claimed.get("checkpoint_seconds") or 0.0)
        self.last_checkpoint = time.monotonic()
        self.next_look = 0.0  # on_epoch looks at the clock's business no sooner than this
        self.check_first = bool(claimed.get("gradient_check"))  # execution.gradient_check
        self.gradient_check: dict[str, Any] | None = None  # its numbers, for the result
        self.named = False  # a task's function: its epochs may hold metrics of other names
        self.value: float | None = None  # what a task's function returned, for the result
        epochs = claimed["config"].get("epochs")
        self.epochs = int(
            epochs if epochs is not None else TrainConfig.model_fields["epochs"].default
        )

    def checkpoint_every(self, every: int) -> int:
        """How often the trainer should take a checkpoint: every `every` epochs, or, when
        they are kept at most every `checkpoint_seconds` (a caviar study's), the multiple
        of it that comes about that often at the study's expected pace.

        Taking one copies and checks the whole state (a quarter of a millisecond for a
        small network, a tenth of a 100-epoch trial's time): the trainer should not take
        the ones `on_checkpoint` would drop. The last epoch's is taken anyway.
        """
        if not every or not self.checkpoint_seconds or not self.expected or self.epochs < 1:
            return every
        per_epoch = self.expected / self.epochs
        stride = math.ceil(self.checkpoint_seconds / per_epoch / every) * every
        return max(every, min(stride, self.epochs))

    def check_gradients(self, config: TrainConfig, dataset: Dataset) -> None:
        """With execution.gradient_check, check the network before it trains: the numbers
        go with the result, and a wrong backpropagation fails the trial with them."""
        if not self.check_first:
            return
        report = check_trial(config, dataset)
        self.gradient_check = report.to_json()
        if not report.passed:
            raise GradientCheckFailed(report)

    def beat(self) -> None:
        """Extend the lease once (the worker's heartbeat thread calls this)."""
        try:
            answer = self.worker.hb_client.post(
                f"/api/worker/trials/{self.trial_id}/heartbeat", {"lease_token": self.token}
            )
            if answer and answer.get("stop"):
                self.stop_asked.set()
        except LeaseLostError:
            self.lease_lost.set()
        except ApiError as exc:
            log.warning("heartbeat failed: %s", exc, extra={"trial_id": self.trial_id})

    def flush(self) -> None:
        """Send the buffered epochs now, after whatever is still being uploaded."""
        self.drain()
        if not self.buffer:
            return
        epochs, self.buffer = self.buffer, []
        self._send_epochs(epochs, self.worker.client)

    def _send_epochs(self, epochs: list[dict[str, Any]], client: Client) -> None:
        answer = client.post(
            f"/api/worker/trials/{self.trial_id}/metrics",
            {"lease_token": self.token, "curve": columns(epochs, self.named)},
        )
        self.last_flush = time.monotonic()
        if answer and answer.get("stop"):
            self.stop_asked.set()

    def on_checkpoint(self, checkpoint: Snapshot) -> None:
        """Keep the trial's state: its last with its result, any other uploaded now.

        The last (its final epoch, or a stop the service asked for) rides with the result
        when it is small, so a short trial costs no request of its own. A stop because the
        worker is shutting down is uploaded at once: the trial goes back to the queue and
        its next attempt starts from there. Periodic ones go at most every
        `checkpoint_seconds` (a caviar study's). Uploads go out from the worker's upload
        thread, after the epochs before them, while training goes on; the trial's result
        is reported only after them (see `Worker._settle`), so its lease still holds.
        """
        if self.lease_lost.is_set():
            return
        leaving = self.worker.shutdown.is_set() and not self.stop_asked.is_set()
        last = checkpoint.epoch >= self.epochs or self.stop_asked.is_set()
        now = time.monotonic()
        if (
            not (leaving or last)
            and self.checkpoint_seconds
            and now - self.last_checkpoint < self.checkpoint_seconds
        ):
            return
        self.last_checkpoint = now
        content = checkpoint.to_bytes()
        if last and not leaving and len(content) <= INLINE_CHECKPOINT_BYTES:
            self.final = (checkpoint.epoch, content)
            return
        epochs, self.buffer = self.buffer, []
        self.uploads.append(
            self.worker.uploader.submit(self._upload, epochs, checkpoint.epoch, content)
        )

    def _upload(self, epochs: list[dict[str, Any]], epoch: int, content: bytes) -> None:
        if self.lease_lost.is_set():
            return
        client = self.worker.upload_client
        try:
            if epochs:
                self._send_epochs(epochs, client)
            client.request(
                "POST",
                f"/api/worker/trials/{self.trial_id}/checkpoints",
                params={"epoch": epoch},
                content=content,
                headers={"x-lease-token": self.token, "content-type": "application/octet-stream"},
            )
        except LeaseLostError:
            self.lease_lost.set()

    def drain(self) -> None:
        """Wait for this trial's uploads; an upload's error (not a lost lease) is raised
        here, in the training thread, and fails the trial as it would have in line."""
        uploads, self.uploads = self.uploads, []
        for upload in uploads:
            upload.result()

    def result(self, outcome: str, error: str | None, seconds: float) -> dict[str, Any]:
        """The trial's result as a claim reports it: its last epochs and checkpoint."""
        if len(self.buffer) > RESULT_EPOCHS:  # a long tail: a report of its own first
            self.flush()
        result: dict[str, Any] = {
            "trial_id": self.trial_id,
            "lease_token": self.token,
            "outcome": outcome,
            "error": error,
            "seconds": seconds,
        }
        if self.buffer:
            result["curve"] = columns(self.buffer, self.named)
            self.buffer = []
        if self.value is not None:
            result["value"] = self.value
        if self.gradient_check is not None:
            result["gradient_check"] = self.gradient_check
        if self.final is not None:
            epoch, content = self.final
            result["checkpoint"] = {"epoch": epoch, "content": base64.b64encode(content).decode()}
            self.final = None
        return result

    def on_epoch(self, metrics: dict[str, Any]) -> bool:
        """The trainer's callback: buffer; now and then send, claim early, report; True
        asks training to stop.

        Called after every epoch of every trial, so it does little: the rest (the clock's
        business) is looked at only when `next_look` has come, or at a pruning rung.
        """
        self.buffer.append(metrics)
        self.epochs_run += 1
        now = time.monotonic()
        if now >= self.next_look or metrics.get("epoch") in self.report_at:
            self._look(now, int(metrics.get("epoch") or 0))
        return self.stop_asked.is_set() or self.lease_lost.is_set() or self.worker.shutdown.is_set()

    def _look(self, now: float, epoch: int) -> None:
        """Flush epochs due (every FLUSH_SECONDS, at a pruning rung), send earlier results
        or the next claim if due, and set when to look again."""
        if epoch in self.report_at or now - self.last_flush >= FLUSH_SECONDS:
            try:
                self.flush()
            except LeaseLostError:
                self.lease_lost.set()
        look = [self.last_flush + FLUSH_SECONDS]
        if self.last_of_lease and (wait := self.worker.prefetch_if_due(self, epoch)) is not None:
            look.append(now + wait)
        if (wait := self.worker.report_if_due()) is not None:
            look.append(now + wait)
        self.next_look = min(look)

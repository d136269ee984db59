"""One leased trial while it trains: its heartbeat, its metrics buffer, its checkpoint uploads."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from trainer import TrainConfig
from trainer.checkpoint import Checkpoint
from worker.client import ApiError, Client, LeaseLostError

log = logging.getLogger("caviar.worker")

FLUSH_SECONDS = 1.0  # metrics are sent in batches at most this often (and at the end)


class TrialHost(Protocol):
    """What a trial run needs of the worker that leased it (worker.runner.Worker)."""

    client: Client
    hb_client: Client
    upload_client: Client
    uploader: ThreadPoolExecutor
    shutdown: threading.Event

    def prefetch_if_due(self, run: TrialRun, epoch: int) -> None: ...

    def report_if_due(self, trials_ahead: int = 0) -> None: ...


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
        self.uploads: list[Future[None]] = []  # checkpoints (and epochs before them) in flight
        # Periodic checkpoints at most this often (a caviar study's); the last epoch's and
        # a stop's are always sent.
        self.checkpoint_seconds = float(claimed.get("checkpoint_seconds") or 0.0)
        self.last_checkpoint = time.monotonic()
        epochs = claimed["config"].get("epochs")
        self.epochs = int(
            epochs if epochs is not None else TrainConfig.model_fields["epochs"].default
        )

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
            {"lease_token": self.token, "epochs": epochs},
        )
        self.last_flush = time.monotonic()
        if answer and answer.get("stop"):
            self.stop_asked.set()

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Send the epochs so far, then the checkpoint: a resume finds the curve up to it.

        Both go out from the worker's upload thread while training goes on: the bytes
        are taken here, at the epoch, and the trial's result is reported only after its
        uploads (see `Worker._settle`), so its lease still holds when they arrive.
        """
        if self.lease_lost.is_set():
            return
        now = time.monotonic()
        if (
            self.checkpoint_seconds
            and checkpoint.epoch < self.epochs
            and not self.stop_asked.is_set()
            and now - self.last_checkpoint < self.checkpoint_seconds
        ):
            return
        self.last_checkpoint = now
        epochs, self.buffer = self.buffer, []
        content = checkpoint.to_bytes()
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

    def on_epoch(self, metrics: dict[str, Any]) -> bool:
        """The trainer's callback: buffer, send now and then; True asks training to stop."""
        self.buffer.append(metrics)
        self.epochs_run += 1
        if self.last_of_lease:
            self.worker.prefetch_if_due(self, int(metrics.get("epoch") or 0))
        self.worker.report_if_due()  # earlier results, if this trial runs longer than thought
        due = metrics.get("epoch") in self.report_at  # a pruning rung: decide now
        if due or time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            try:
                self.flush()
            except LeaseLostError:
                self.lease_lost.set()
        return self.stop_asked.is_set() or self.lease_lost.is_set() or self.worker.shutdown.is_set()

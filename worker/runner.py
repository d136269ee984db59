"""One worker process: lease trials over HTTP, train each with trainer/, report, repeat."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from trainer import TrainConfig, load_dataset, train
from trainer.checkpoint import Checkpoint
from worker.client import ApiError, Client, LeaseLostError

log = logging.getLogger("caviar.worker")

IDLE_SLEEP_SECONDS = 0.5  # between empty claims; doubles up to IDLE_MAX_SECONDS
IDLE_MAX_SECONDS = 2.0
FLUSH_SECONDS = 1.0  # metrics are sent in batches at most this often (and at the end)
# A result waits at most this long to travel with the next claim; a trial that itself
# took longer is reported at once. Short trials thus cost one request per batch.
FINISH_DELAY_SECONDS = 0.25
# A claim leases about this much work, judged from the trials run so far (at most
# `claim_batch` trials, at least one): short trials share a round trip, long ones do not
# sit leased behind each other while another worker idles.
LEASE_TARGET_SECONDS = 1.0
DATASET_CACHE_SIZE = 8  # data sets kept in memory, keyed by their spec
UPLOADED_PREFIX = "ds-"  # ids of uploaded data sets (the service's service/datasets.py)
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "caviar"


class TrialRun:
    """The state of one leased trial while it trains: the heartbeat, the metrics buffer."""

    def __init__(self, worker: Worker, claimed: dict[str, Any]) -> None:
        self.worker = worker
        self.trial_id: int = claimed["trial_id"]
        self.token: str = claimed["lease_token"]
        self.buffer: list[dict[str, Any]] = []
        self.stop_asked = threading.Event()
        self.lease_lost = threading.Event()
        self.done = threading.Event()
        self.last_flush = time.monotonic()
        self.report_at = frozenset(claimed.get("report_at") or ())
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
        uploads (see `drain`), so its lease still holds when they arrive.
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
        due = metrics.get("epoch") in self.report_at  # a pruning rung: decide now
        if due or time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            try:
                self.flush()
            except LeaseLostError:
                self.lease_lost.set()
        return self.stop_asked.is_set() or self.lease_lost.is_set() or self.worker.shutdown.is_set()


class Worker:
    """Leases trials from the service and trains them, one at a time, until told to stop.

    Parameters
    ----------
    api_url, token : where the service is and the worker-scoped token it wants.
    name : shown in the dashboard's worker list.
    max_trials : leave after this many trials (the pool starts a fresh process), or None.
    claim_batch : at most this many trials leased per round trip; the worker leases as
        many as it expects to finish in about LEASE_TARGET_SECONDS (from the durations
        it has seen), so short trials amortize the request and long ones go one by one.
    exit_when_idle : leave once a claim comes back empty (tests and benchmarks).
    """

    def __init__(
        self,
        api_url: str,
        token: str | None = None,
        *,
        name: str | None = None,
        max_trials: int | None = None,
        claim_batch: int = 16,
        exit_when_idle: bool = False,
        shutdown: threading.Event | None = None,
        train_fn: Callable[..., Any] = train,
        cache_dir: Path | None = None,
    ) -> None:
        self.shutdown = shutdown or threading.Event()
        self.client = Client(api_url, token, stop=self.shutdown)
        self.hb_client = Client(api_url, token, stop=self.shutdown)
        # Checkpoints go out from one thread of their own, in order, while training goes on.
        self.upload_client = Client(api_url, token, stop=self.shutdown)
        self.uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caviar-upload")
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.max_trials = max_trials
        self.claim_batch = claim_batch
        self.exit_when_idle = exit_when_idle
        self.train_fn = train_fn
        self.worker_id = ""
        self.heartbeat_seconds = 5.0
        self.trials_done = 0
        self._datasets: dict[str, Any] = {}
        self.cache_dir = (cache_dir or DEFAULT_CACHE_DIR) / "datasets"
        self._finished: list[dict[str, Any]] = []  # results not yet reported
        self._finished_since = 0.0
        # Every lease this process holds, started or not: the heartbeat thread extends
        # them all, so a trial waiting in a batch keeps its lease as the running one does.
        self._held: dict[int, TrialRun] = {}
        self._held_lock = threading.Lock()
        self._beating = threading.Event()  # set: the heartbeat thread should end
        self._trial_seconds: float | None = None  # a moving average of trial durations

    def lease_size(self) -> int:
        """How many trials the next claim asks for."""
        if self._trial_seconds is None:
            return 1  # nothing seen yet: one trial, then judge
        fits = int(LEASE_TARGET_SECONDS / max(self._trial_seconds, 1e-4))
        return max(1, min(self.claim_batch, fits))

    def _heartbeat_loop(self) -> None:
        # Waits on an event, so the thread ends the moment the worker does.
        while not self._beating.wait(self.heartbeat_seconds):
            with self._held_lock:
                runs = list(self._held.values())
            for run in runs:
                if not run.done.is_set() and not run.lease_lost.is_set():
                    run.beat()

    def _hold(self, claimed: list[dict[str, Any]]) -> list[TrialRun]:
        runs = [TrialRun(self, c) for c in claimed]
        with self._held_lock:
            self._held.update((r.trial_id, r) for r in runs)
        return runs

    def _let_go(self, run: TrialRun) -> None:
        run.done.set()
        with self._held_lock:
            self._held.pop(run.trial_id, None)

    def run(self) -> int:
        """The main loop; returns the number of trials this process ran."""
        try:
            reg = self.client.post(
                "/api/worker/register",
                {"name": self.name, "host": socket.gethostname(), "pid": os.getpid()},
            )
        except ApiError:
            if self.shutdown.is_set():
                return 0
            raise
        self.worker_id = reg["worker_id"]
        self.heartbeat_seconds = float(reg["heartbeat_seconds"])
        log.info("worker %s registered", self.worker_id, extra={"action": "register"})
        idle = IDLE_SLEEP_SECONDS
        beat = threading.Thread(target=self._heartbeat_loop, daemon=True, name="caviar-heartbeat")
        beat.start()
        try:
            while not self.shutdown.is_set():
                if self.max_trials is not None and self.trials_done >= self.max_trials:
                    break
                want = self.lease_size()
                if self.max_trials is not None:
                    want = min(want, self.max_trials - self.trials_done)
                try:
                    answer = self._claim(want)
                except ApiError:
                    if self.shutdown.is_set():
                        break
                    raise
                claimed = answer["trials"]
                if not claimed:
                    if self.exit_when_idle:
                        break
                    self.shutdown.wait(idle)
                    idle = min(idle * 2, IDLE_MAX_SECONDS)
                    continue
                idle = IDLE_SLEEP_SECONDS
                runs = self._hold(claimed)
                for i, (trial, run) in enumerate(zip(claimed, runs, strict=True)):
                    if self.shutdown.is_set():  # hand back what we leased but did not start
                        for rest in runs[i:]:
                            self._release(rest.trial_id, rest.token)
                            self._let_go(rest)
                        break
                    started = time.monotonic()
                    try:
                        result = self.run_trial(trial, run)
                    finally:
                        self._let_go(run)
                    took = time.monotonic() - started
                    self._trial_seconds = (
                        took
                        if self._trial_seconds is None
                        else 0.7 * self._trial_seconds + 0.3 * took
                    )
                    self.trials_done += 1
                    if result is None:
                        continue
                    if not self._finished:
                        self._finished_since = time.monotonic()
                    self._finished.append(result)
                    last = i == len(claimed) - 1
                    waited = time.monotonic() - self._finished_since
                    slow = took > FINISH_DELAY_SECONDS
                    if not last and (slow or waited > FINISH_DELAY_SECONDS):
                        self._claim(0)  # report now; the next claim would come too late
        finally:
            self._beating.set()
            try:
                if self._finished:
                    self._claim(0)
            except (ApiError, LeaseLostError) as exc:
                log.warning("could not report %d results: %s", len(self._finished), exc)
            beat.join(timeout=5)
            self.uploader.shutdown(wait=True)
            self.client.close()
            self.hb_client.close()
            self.upload_client.close()
        return self.trials_done

    def _claim(self, want: int) -> dict[str, Any]:
        """Report the finished trials and lease up to `want` new ones, in one request."""
        answer: dict[str, Any] = self.client.post(
            "/api/worker/claim",
            {"worker_id": self.worker_id, "max_trials": want, "finished": self._finished},
        )
        self._finished = []
        for done in answer.get("finished", []):
            extra = {"trial_id": done["trial_id"], "action": "finish"}
            if done["status"] is None:
                log.warning(
                    "trial %s: result refused: %s", done["trial_id"], done["error"], extra=extra
                )
            else:
                log.info("trial %s: %s", done["trial_id"], done["status"], extra=extra)
        return answer

    def _dataset(self, spec: dict[str, Any]) -> Any:
        key = json.dumps(spec, sort_keys=True)
        ds = self._datasets.get(key)
        if ds is None:
            name = str(spec.get("name", ""))
            if name.startswith(UPLOADED_PREFIX):
                path = self._uploaded_file(name)
                ds = load_dataset({**{k: v for k, v in spec.items() if k != "name"}, "path": path})
            else:
                ds = load_dataset(spec)
            if len(self._datasets) >= DATASET_CACHE_SIZE:
                self._datasets.pop(next(iter(self._datasets)))
            self._datasets[key] = ds
        return ds

    def _uploaded_file(self, dataset_id: str) -> str:
        """The file of an uploaded data set, fetched once and cached on disk by sha256.

        Ids are `ds-` and the first 16 hex digits of the content's sha256, so a cached
        file is found by its name and checked against its own hash before use.
        """
        prefix = dataset_id[len(UPLOADED_PREFIX) :].lower()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for path in self.cache_dir.glob(f"{prefix}*.*"):
            if hashlib.sha256(path.read_bytes()).hexdigest() == path.name.split(".")[0]:
                return str(path)
            path.unlink(missing_ok=True)  # damaged: fetch again
        response = self.client.request("GET", f"/api/worker/datasets/{dataset_id}")
        sha = hashlib.sha256(response.content).hexdigest()
        if sha != response.headers.get("x-caviar-sha256") or not sha.startswith(prefix):
            raise ValueError(f"data set {dataset_id}: the content did not match its sha256")
        fmt = response.headers.get("x-caviar-format", "csv")
        final = self.cache_dir / f"{sha}.{fmt}"
        partial = final.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(response.content)
        os.replace(partial, final)  # atomic: another process never reads half a file
        return str(final)

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
        log.info("trial %s: attempt %s starts", run.trial_id, claimed["attempt"], extra=extra)
        outcome, error = "failed", None
        try:
            config = TrainConfig(**claimed["config"])
            dataset = self._dataset(claimed["dataset"])
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
                checkpoint_every=int(claimed.get("checkpoint_every") or 0),
                on_checkpoint=run.on_checkpoint,
            )
            run.drain()  # the checkpoints are stored before the result is reported
            outcome = result.status
        except Exception as exc:  # a trainer error fails this trial; the worker goes on
            outcome, error = "failed", f"{type(exc).__name__}: {exc}"
            log.warning("trial %s failed: %s", run.trial_id, error, extra=extra)
        finally:
            try:
                run.drain()  # after a failure too: nothing of this trial is left in flight
            except Exception as exc:
                log.warning("trial %s: upload failed: %s", run.trial_id, exc, extra=extra)
            run.done.set()
        if run.lease_lost.is_set():
            log.warning("trial %s: lease lost; dropping it", run.trial_id, extra=extra)
            return None
        if self.shutdown.is_set() and outcome == "stopped" and not run.stop_asked.is_set():
            self._release(run.trial_id, run.token)
            return None
        return {
            "trial_id": run.trial_id,
            "lease_token": run.token,
            "outcome": outcome,
            "error": error,
            "epochs": run.buffer,
        }


def install_sigterm(shutdown: threading.Event) -> None:
    """SIGTERM and SIGINT finish the current epoch, hand the trial back, and exit."""

    def _handler(signum: int, _frame: Any) -> None:
        shutdown.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)

"""One worker process: lease trials over HTTP, train each with trainer/, report, repeat."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
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
# A result waits at most about this long, counted from its trial's start, for a claim to
# carry it (the next claim goes out near the end of the last leased trial); a result that
# would wait longer goes out on its own at once. Trials shorter than this thus cost one
# request each, or one per batch.
FINISH_DELAY_SECONDS = 1.0
# A claim leases about this much work, judged from the trials run so far (at most
# `claim_batch` trials, at least one): very short trials share a round trip; longer ones
# go one by one, so at the end of a queue no process sits on trials another could run
# (the next claim's round trip is hidden anyway: it goes out while a trial trains).
LEASE_TARGET_SECONDS = 0.25
# The next claim goes out while the last leased trial trains, when about this many claim
# round trips of it are left (within these bounds): the next trial is then at hand when
# it ends, and is leased at most about a round trip early, so at the end of a queue one
# process does not sit on a trial the other is free to run.
PREFETCH_ROUND_TRIPS = 3.0
PREFETCH_LEAD_MIN_SECONDS = 0.05
PREFETCH_LEAD_MAX_SECONDS = 1.0
# Moving averages of trial durations and of claim round trips: the weight of a new sample.
TRIAL_SECONDS_WEIGHT = 0.3
ROUND_TRIP_WEIGHT = 0.2
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


class Worker:
    """Leases trials from the service and trains them, one at a time, until told to stop.

    Claims run on a thread of their own, in order: while the last leased trial trains,
    the next claim goes out (see `prefetch_if_due`), so the next trial is at hand when it
    ends and the process hardly waits on the service between trials (a trial longer
    than FINISH_DELAY_SECONDS claims when it ends, with its result). Results travel with
    the next claim when it comes soon enough, else on their own from that thread.

    Parameters
    ----------
    api_url, token : where the service is and the worker-scoped token it wants.
    name : shown in the dashboard's worker list.
    max_trials : leave after this many trials (the pool starts a fresh process), or None.
    claim_batch : at most this many trials leased per round trip; the worker leases as
        many as it expects to finish in about LEASE_TARGET_SECONDS (from the durations
        it has seen), so short trials amortize the request and long ones go one by one.
    exit_when_idle : leave once the queue is empty (tests and benchmarks): a claim came
        back empty and the service says no queued trial waits for a free slot.
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
        # Claims and reports of results: one thread, so they reach the service in order.
        self.claim_client = Client(api_url, token, stop=self.shutdown)
        self.claimer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caviar-claim")
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.max_trials = max_trials
        self.claim_batch = claim_batch
        self.exit_when_idle = exit_when_idle
        self.train_fn = train_fn
        self.worker_id = ""
        self.heartbeat_seconds = 5.0
        self.trials_done = 0
        self.stall_seconds = 0.0  # time the training thread spent waiting on claims
        self._datasets: dict[str, Any] = {}
        self.cache_dir = (cache_dir or DEFAULT_CACHE_DIR) / "datasets"
        self._finished: list[dict[str, Any]] = []  # results not yet sent
        self._finished_since = 0.0
        self._prefetch: Future[tuple[dict[str, Any], list[TrialRun]]] | None = None
        self._reports: list[Future[Any]] = []  # results on their way without a claim
        # Every lease this process holds, started or not: the heartbeat thread extends
        # them all, so a trial waiting in a batch keeps its lease as the running one does.
        self._held: dict[int, TrialRun] = {}
        self._held_lock = threading.Lock()
        # Trials done training whose checkpoints may still be uploading (see `_settle`).
        self._unsettled: dict[int, TrialRun] = {}
        self._beating = threading.Event()  # set: the heartbeat thread should end
        self._trial_seconds: float | None = None  # a moving average of trial durations
        self._round_trip: float | None = None  # a moving average of claim round trips

    def lease_size(self, running: float | None = None) -> int:
        """How many trials the next claim asks for; `running` is the expected duration of
        a trial still training (an early claim's), counted in as if it had ended."""
        seconds = self._trial_seconds
        if running is not None:
            seconds = _average(seconds, running, TRIAL_SECONDS_WEIGHT)
        if seconds is None:
            return 1  # nothing seen yet: one trial, then judge
        fits = int(LEASE_TARGET_SECONDS / max(seconds, 1e-4))
        return max(1, min(self.claim_batch, fits))

    def _want(self, *, running: float | None = None) -> int:
        """The next claim's size, within what `max_trials` leaves (besides a trial still
        `running`, of that expected duration)."""
        want = self.lease_size(running)
        if self.max_trials is not None:
            want = min(want, self.max_trials - self.trials_done - (running is not None))
        return want

    def prefetch_if_due(self, run: TrialRun, epoch: int) -> None:
        """Send the next claim now if `run`, the last leased trial, is about to end.

        Called after each of its epochs: the time left is judged from its epochs so far,
        and the claim goes out when that is within a few claim round trips, so it is
        answered before the trial ends but the trial it leases does not wait long. A
        trial longer than FINISH_DELAY_SECONDS claims when it ends instead: its result
        then rides with that claim rather than cost a request of its own, and one round
        trip is little next to it.
        """
        if (
            self._prefetch is not None
            or self.shutdown.is_set()
            or run.stop_asked.is_set()
            or run.lease_lost.is_set()
            or run.epochs_run == 0
        ):
            return
        elapsed = time.monotonic() - run.started
        left = max(run.epochs - epoch, 0) * elapsed / run.epochs_run
        trip = self._round_trip if self._round_trip is not None else PREFETCH_LEAD_MIN_SECONDS
        lead = min(
            max(PREFETCH_ROUND_TRIPS * trip, PREFETCH_LEAD_MIN_SECONDS), PREFETCH_LEAD_MAX_SECONDS
        )
        if left > lead or elapsed + left > FINISH_DELAY_SECONDS:
            return
        want = self._want(running=elapsed + left)
        if want > 0:
            self._prefetch = self._send_claim(want)

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
        beat = threading.Thread(target=self._heartbeat_loop, daemon=True, name="caviar-heartbeat")
        beat.start()
        pending: deque[tuple[dict[str, Any], TrialRun]] = deque()  # leased, not started
        try:
            self._loop(pending)
        finally:
            self._wind_down(pending)
            beat.join(timeout=5)
        return self.trials_done

    def _loop(self, pending: deque[tuple[dict[str, Any], TrialRun]]) -> None:
        idle = IDLE_SLEEP_SECONDS
        while not self.shutdown.is_set():
            if self.max_trials is not None and self.trials_done >= self.max_trials:
                return
            if not pending:
                try:
                    answer, runs = self._next_lease()
                except ApiError:
                    if self.shutdown.is_set():
                        return
                    raise
                if not runs:
                    if self.exit_when_idle and not answer.get("waiting"):
                        return
                    self.shutdown.wait(idle)
                    idle = min(idle * 2, IDLE_MAX_SECONDS)
                    continue
                idle = IDLE_SLEEP_SECONDS
                pending.extend(zip(answer["trials"], runs, strict=True))
            trial, run = pending.popleft()
            run.last_of_lease = not pending
            run.started = time.monotonic()
            try:
                result = self.run_trial(trial, run)
            finally:
                self._let_go(run)
            took = time.monotonic() - run.started
            self._trial_seconds = _average(self._trial_seconds, took, TRIAL_SECONDS_WEIGHT)
            self.trials_done += 1
            if result is None:
                continue
            if not self._finished:
                self._finished_since = run.started  # a result's age counts from then
            self._finished.append(result)
            if pending:  # else _next_lease decides, once it knows whether a claim comes now
                self.report_if_due(len(pending))

    def report_if_due(self, trials_ahead: int = 0) -> None:
        """Send the results on their own, now, if they would be older than
        FINISH_DELAY_SECONDS when the next claim carries them, `trials_ahead` trials on."""
        if not self._finished:
            return
        ahead = trials_ahead * (self._trial_seconds or 0.0)
        if time.monotonic() - self._finished_since + ahead > FINISH_DELAY_SECONDS:
            self._reports = [r for r in self._reports if not r.done()]  # _claim logs errors
            self._reports.append(self._send_claim(0))

    def _next_lease(self) -> tuple[dict[str, Any], list[TrialRun]]:
        """The trials to run next: those of the claim sent early, or of one sent now.

        An early claim that found nothing is followed by one now: the trial that just
        ended may have freed the slot it waited for, trials may have been queued since,
        and the results ride with it.
        """
        waited = time.monotonic()
        try:
            if self._prefetch is not None:
                early, self._prefetch = self._prefetch, None
                answer, runs = early.result()
                if runs:
                    self.report_if_due(len(runs))
                    return answer, runs
            want = self._want()
            return self._send_claim(want).result() if want > 0 else ({"trials": []}, [])
        finally:
            self.stall_seconds += time.monotonic() - waited

    def _send_claim(self, want: int) -> Future[tuple[dict[str, Any], list[TrialRun]]]:
        """Queue a claim of `want` trials (0: only report) carrying the results so far."""
        finished, self._finished = self._finished, []
        return self.claimer.submit(self._claim, want, finished)

    def _claim(
        self, want: int, finished: list[dict[str, Any]]
    ) -> tuple[dict[str, Any], list[TrialRun]]:
        """Report `finished` and lease up to `want` trials, in one request (claim thread).

        The leases are held (heartbeats extend them) from the moment they arrive.
        """
        finished = self._settle(finished)
        sent = time.monotonic()
        try:
            answer: dict[str, Any] = self.claim_client.post(
                "/api/worker/claim",
                {"worker_id": self.worker_id, "max_trials": want, "finished": finished},
            )
        except ApiError as exc:
            if finished:
                log.warning("could not report %d results: %s", len(finished), exc)
            raise
        trip = time.monotonic() - sent
        self._round_trip = _average(self._round_trip, trip, ROUND_TRIP_WEIGHT)
        for done in answer.get("finished", []):
            extra = {"trial_id": done["trial_id"], "action": "finish"}
            if done["status"] is None:
                log.warning(
                    "trial %s: result refused: %s", done["trial_id"], done["error"], extra=extra
                )
            else:
                log.info("trial %s: %s", done["trial_id"], done["status"], extra=extra)
        return answer, self._hold(answer["trials"])

    def _settle(self, finished: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The results to report, once their trials' checkpoints are stored (claim thread).

        A trial whose upload failed fails with that error, as if it had failed in line; one
        whose lease was lost meanwhile is dropped (another owner has it).
        """
        out = []
        for result in finished:
            with self._held_lock:
                run = self._unsettled.pop(result["trial_id"], None)
            if run is not None:
                try:
                    run.drain()
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    log.warning("trial %s: upload failed: %s", run.trial_id, error)
                    result = {**result, "outcome": "failed", "error": error}
                if run.lease_lost.is_set():
                    log.warning("trial %s: lease lost; dropping it", run.trial_id)
                    continue
            out.append(result)
        return out

    def _wind_down(self, pending: deque[tuple[dict[str, Any], TrialRun]]) -> None:
        """Hand back what was leased but not started, send every result, close up."""
        if self._prefetch is not None:
            early, self._prefetch = self._prefetch, None
            try:
                answer, runs = early.result()
                pending.extend(zip(answer["trials"], runs, strict=True))
            except (ApiError, LeaseLostError) as exc:
                log.warning("the last claim failed: %s", exc)
        for _, run in pending:
            self._release(run.trial_id, run.token)
            self._let_go(run)
        pending.clear()
        self._beating.set()
        if self._finished:
            self._reports.append(self._send_claim(0))
        for report in self._reports:
            with contextlib.suppress(ApiError, LeaseLostError):  # _claim logged it
                report.result()
        self._reports.clear()
        self.claimer.shutdown(wait=True)
        self.uploader.shutdown(wait=True)
        for client in (self.client, self.hb_client, self.upload_client, self.claim_client):
            client.close()

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
            outcome = result.status
        except Exception as exc:  # a trainer error fails this trial; the worker goes on
            outcome, error = "failed", f"{type(exc).__name__}: {exc}"
            log.warning("trial %s failed: %s", run.trial_id, error, extra=extra)
        finally:
            run.done.set()
        if self.shutdown.is_set() and outcome == "stopped" and not run.stop_asked.is_set():
            # The stop's checkpoint is stored before the trial goes back to the queue.
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
        return {
            "trial_id": run.trial_id,
            "lease_token": run.token,
            "outcome": outcome,
            "error": error,
            "epochs": run.buffer,
        }


def _average(average: float | None, sample: float, weight: float) -> float:
    """A moving average that gives `sample` this `weight` (the first sample is all of it)."""
    return sample if average is None else (1.0 - weight) * average + weight * sample


def install_sigterm(shutdown: threading.Event) -> None:
    """SIGTERM and SIGINT finish the current epoch, hand the trial back, and exit."""

    def _handler(signum: int, _frame: Any) -> None:
        shutdown.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)

"""One worker process: lease trials over HTTP, train each with trainer/, report, repeat.

This is the claim and settle loop; running one leased trial is worker.running's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from trainer import train
from worker import policy
from worker.client import ApiError, Client, LeaseLostError
from worker.dataset_cache import DatasetCache
from worker.objective import load_entrypoint
from worker.policy import CLAIM_BATCH, ClaimPolicy, time_left
from worker.results import claimable, expected_work, log_answers, upload_checkpoints
from worker.running import TrialRunner
from worker.trial import TrialRun

log = logging.getLogger("caviar.worker")

IDLE_SLEEP_SECONDS = 0.5  # between empty claims; doubles up to IDLE_MAX_SECONDS
IDLE_MAX_SECONDS = 2.0
BEAT_JOIN_SECONDS = 5.0  # how long a winding-down worker waits for a round of heartbeats


class Worker(TrialRunner):
    """Leases trials from the service and trains them, one at a time, until told to stop.

    Claims run on a thread of their own, in order: while the last leased trial trains,
    the next claim goes out (see `prefetch_if_due`), so the next trial is at hand when it
    ends and the process hardly waits on the service between trials (a trial longer
    than worker.policy.FINISH_DELAY_SECONDS claims when it ends, with its result).
    Results, with their last epochs and checkpoint, travel with the next claim when it
    comes soon enough, else on their own from that thread: a short trial costs no
    request of its own. When to claim and report is worker.policy's to say; how many
    trials a claim leases, the service's (from each study's observed trial durations).

    Parameters
    ----------
    api_url, token : where the service is and the worker-scoped token it wants.
    name : shown in the dashboard's worker list.
    max_trials : leave after this many trials (the pool starts a fresh process), or None:
        after worker.policy.RECYCLE_TRIALS trials and RECYCLE_SECONDS.
    claim_batch : at most this many trials leased per round trip; the service leases as
        many as fit about worker.policy.LEASE_TARGET_SECONDS by the durations it has seen
        of their studies' trials, so short trials amortize the request and long ones (or
        not yet known ones) go one by one.
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
        claim_batch: int = CLAIM_BATCH,
        exit_when_idle: bool = False,
        shutdown: threading.Event | None = None,
        train_fn: Callable[..., Any] = train,
        cache_dir: Path | None = None,
        entrypoints: Sequence[str] = (),
        trainer: bool = True,
    ) -> None:
        self.shutdown = shutdown or threading.Event()
        # A task's functions, imported now: a worker that cannot load one fails at start.
        self.objectives = {e: load_entrypoint(e) for e in entrypoints}
        self.trainer = trainer
        self.client = Client(api_url, token, stop=self.shutdown)
        self.hb_client = Client(api_url, token, stop=self.shutdown)
        # Checkpoints go out from one thread of their own, in order, while training goes on.
        self.upload_client = Client(api_url, token, stop=self.shutdown)
        self.uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caviar-upload")
        # Claims and reports of results: one thread, so they reach the service in order.
        self.claim_client = Client(api_url, token, stop=self.shutdown)
        self.claimer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caviar-claim")
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.policy = ClaimPolicy(claim_batch=claim_batch, max_trials=max_trials)
        self.exit_when_idle = exit_when_idle
        self.train_fn = train_fn
        self.worker_id = ""
        self.heartbeat_seconds = 5.0
        self.trials_done = 0
        self.born = time.monotonic()
        self.stall_seconds = 0.0  # time the training thread spent waiting on claims
        self.datasets = DatasetCache(self.client, cache_dir)
        self._finished: list[dict[str, Any]] = []  # results not yet sent
        self._finished_since = 0.0
        self._ahead = 0.0  # expected seconds of the leased trials not started (inf: unknown)
        self._behind = 0  # how many they are
        self._prefetch: Future[tuple[dict[str, Any], list[TrialRun]]] | None = None
        self._reports: list[Future[Any]] = []  # results on their way without a claim
        # Every lease this process holds, started or not: the heartbeat thread extends
        # them all, so a trial waiting in a batch keeps its lease as the running one does.
        self._held: dict[int, TrialRun] = {}
        self._held_lock = threading.Lock()
        # Trials done training whose checkpoints may still be uploading (see `_settle`).
        self._unsettled: dict[int, TrialRun] = {}
        self._beating = threading.Event()  # set: the heartbeat thread should end
        self._beat: threading.Thread | None = None

    def prefetch_if_due(self, run: TrialRun, epoch: int) -> float | None:
        """Send the next claim now if `run`, the last leased trial, is about to end
        (called now and then as it trains; see `ClaimPolicy.prefetch_in`); returns how
        soon to ask again, or None."""
        if (
            self._prefetch is not None
            or self.shutdown.is_set()
            or run.stop_asked.is_set()
            or run.lease_lost.is_set()
            or run.epochs_run == 0
        ):
            return None
        elapsed = time.monotonic() - run.started
        left = time_left(elapsed=elapsed, epochs_run=run.epochs_run, epochs_left=run.epochs - epoch)
        due = self.policy.prefetch_in(elapsed=elapsed, left=left)
        if due is None or due > 0:
            return due
        want = self.policy.ask(trials_done=self.trials_done, running=1)
        if want > 0:
            self._prefetch = self._send_claim(want, busy=left)
        return None

    def _claim_ahead(self, run: TrialRun) -> None:
        """Send the next claim now, before `run` starts, if what is left of the lease (it
        and the trials behind it) is expected to end within a claim's lead: short trials
        then find the next lease at hand, as a long one does (see `prefetch_if_due`)."""
        if self._prefetch is not None or self.shutdown.is_set() or run.expected is None:
            return
        busy = run.expected + self._ahead
        if busy > self.policy.lead():
            return
        want = self.policy.ask(trials_done=self.trials_done, running=1 + self._behind)
        if want > 0:
            self._prefetch = self._send_claim(want, busy=busy)

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
                {
                    "name": self.name,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "entrypoints": list(self.objectives),
                    "trainer": self.trainer,
                },
            )
        except ApiError:
            if self.shutdown.is_set():
                return 0
            raise
        self.worker_id = reg["worker_id"]
        self.heartbeat_seconds = float(reg["heartbeat_seconds"])
        log.info("worker %s registered", self.worker_id, extra={"action": "register"})
        self._beat = threading.Thread(
            target=self._heartbeat_loop, daemon=True, name="caviar-heartbeat"
        )
        self._beat.start()
        pending: deque[tuple[dict[str, Any], TrialRun]] = deque()  # leased, not started
        try:
            self._loop(pending)
        finally:
            self._wind_down(pending)
            # What a short-trial worker's speed comes down to: how long it trained nothing
            # while it waited for its next lease (bench/queue_vs_optuna.py reads this line).
            log.info(
                "worker %s leaves: %d trials run, %.3f s waiting for leases",
                self.worker_id,
                self.trials_done,
                self.stall_seconds,
                extra={"action": "leave"},
            )
        return self.trials_done

    def _loop(self, pending: deque[tuple[dict[str, Any], TrialRun]]) -> None:
        idle = IDLE_SLEEP_SECONDS
        while not self.shutdown.is_set():
            if not pending and self.policy.retiring(
                trials_done=self.trials_done, lived=time.monotonic() - self.born
            ):
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
            self._ahead = expected_work(r for _, r in pending)
            self._behind = len(pending)
            run.last_of_lease = not pending
            self._claim_ahead(run)
            run.started = time.monotonic()
            try:
                result = self.run_trial(trial, run)
            finally:
                self._let_go(run)
            self.trials_done += 1
            if result is None:
                continue
            if not self._finished:
                self._finished_since = run.started  # a result's age counts from then
            self._finished.append(result)
            if pending:  # else _next_lease decides, once it knows whether a claim comes now
                self.report_if_due(self._ahead)

    def report_if_due(self, ahead: float = 0.0) -> float | None:
        """Send the results on their own, now, if they would be too old by the time the
        next claim carries them, `ahead` seconds from now (see `ClaimPolicy.report_in`);
        returns how soon they would be due, or None if there are none to wait for."""
        if not self._finished:
            return None
        due = self.policy.report_in(age=time.monotonic() - self._finished_since, ahead=ahead)
        if due > 0:
            return due
        self._reports = [r for r in self._reports if not r.done()]  # _claim logs errors
        self._reports.append(self._send_claim(0))
        return None

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
                    self.report_if_due(expected_work(runs))
                    return answer, runs
            want = self.policy.ask(trials_done=self.trials_done)
            return self._send_claim(want).result() if want > 0 else ({"trials": []}, [])
        finally:
            self.stall_seconds += time.monotonic() - waited

    def _send_claim(
        self, want: int, busy: float = 0.0
    ) -> Future[tuple[dict[str, Any], list[TrialRun]]]:
        """Queue a claim of up to `want` trials (0: only report) carrying the results so
        far (as many as a claim takes; the rest wait for the next), from a worker still
        busy `busy` seconds with its running trial."""
        finished, self._finished = claimable(self._finished)
        return self.claimer.submit(self._claim, want, finished, busy)

    def _claim(
        self, want: int, finished: list[dict[str, Any]], busy: float = 0.0
    ) -> tuple[dict[str, Any], list[TrialRun]]:
        """Report `finished` and lease up to `want` trials, in one request (claim thread).

        The leases are held (heartbeats extend them) from the moment they arrive.
        """
        finished = self._settle(finished)
        sent = time.monotonic()
        body = {
            "worker_id": self.worker_id,
            "max_trials": want,
            "target_seconds": policy.LEASE_TARGET_SECONDS,
            "busy_seconds": busy,
            "finished": finished,
        }
        try:
            try:
                answer: dict[str, Any] = self.claim_client.post("/api/worker/claim", body)
            except ApiError as exc:
                if exc.status != 413 or not any("checkpoint" in r for r in finished):
                    raise
                # Too large with its checkpoints: they go on their own, then the results.
                body["finished"] = finished = upload_checkpoints(self.upload_client, finished)
                answer = self.claim_client.post("/api/worker/claim", body)
        except ApiError as exc:
            if finished:
                log.warning("could not report %d results: %s", len(finished), exc)
            raise
        self.policy.claim_took(time.monotonic() - sent)
        log_answers(finished, answer.get("finished", []))
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
        # The heartbeat thread may be amid a round of beats: it ends before its client
        # is closed below (a beat on a closed client raised in that thread).
        if self._beat is not None:
            self._beat.join(timeout=BEAT_JOIN_SECONDS)
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


def install_sigterm(shutdown: threading.Event) -> None:
    """SIGTERM and SIGINT finish the current epoch, hand the trial back, and exit."""

    def _handler(signum: int, _frame: Any) -> None:
        shutdown.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)

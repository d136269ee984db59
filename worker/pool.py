"""The caviar pool: N worker processes, one BLAS thread each, replaced as they retire."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from worker.policy import CLAIM_BATCH

log = logging.getLogger("caviar.worker")

SHUTDOWN_GRACE_SECONDS = 10.0  # SIGTERM: children finish their epoch and hand back by then


@dataclass(frozen=True)
class PoolOptions:
    api_url: str
    token: str | None = None
    processes: int = 1
    # Then a fresh process, so memory cannot creep (None: worker.policy.RECYCLE_TRIALS and
    # RECYCLE_SECONDS, whichever comes last: a new process costs a second of CPU).
    max_trials_per_process: int | None = None
    claim_batch: int = CLAIM_BATCH  # a cap: the service sizes leases to half a second of work
    exit_when_idle: bool = False
    name_prefix: str | None = None
    log_level: int = logging.INFO
    entrypoints: tuple[str, ...] = ()  # task functions each process imports and offers
    trainer: bool = True  # each process runs the built-in trainer's trials too


def worker_name(prefix: str | None, index: int) -> str:
    """A name no other worker process has had: the host (or the given prefix), this
    process's pid and a random part, then the process's index in its pool. A restarted
    pool's processes get new names, so the workers page never shows two lives as one."""
    host = prefix or os.uname().nodename
    return f"{host}-{os.getpid()}-{secrets.token_hex(2)}-{index}"


def _child(options: PoolOptions, index: int) -> None:
    # Spawned, not forked: a fresh interpreter with no threads or sockets of the parent.
    from threadpoolctl import threadpool_limits

    from worker.runner import Worker, install_sigterm

    logging.basicConfig(
        level=options.log_level,
        format="%(asctime)s %(levelname)s %(name)s [worker %(process)d] %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    # N processes on N cores: each BLAS must use one thread or they fight for the cores.
    threadpool_limits(limits=1)
    shutdown = threading.Event()
    install_sigterm(shutdown)
    worker = Worker(
        options.api_url,
        options.token,
        name=worker_name(options.name_prefix, index),
        max_trials=options.max_trials_per_process,
        claim_batch=options.claim_batch,
        exit_when_idle=options.exit_when_idle,
        entrypoints=options.entrypoints,
        trainer=options.trainer,
        shutdown=shutdown,
    )
    worker.run()


class Pool:
    """Starts and supervises worker processes until stopped (or idle, if so configured)."""

    def __init__(self, options: PoolOptions) -> None:
        self.options = options
        self.ctx = mp.get_context("spawn")
        self.procs: dict[int, Any] = {}
        self.stopping = threading.Event()
        # One stop at a time: the supervising thread stops the pool as its owner does, and
        # two joins of one child race (one reaps it; for an instant the other sees it
        # alive, and killed it).
        self._stop_lock = threading.Lock()
        self._stopped: int | None = None

    def _start(self, index: int) -> None:
        proc = self.ctx.Process(
            target=_child, args=(self.options, index), name=f"caviar-worker-{index}", daemon=False
        )
        proc.start()
        self.procs[index] = proc

    def start(self) -> None:
        for i in range(self.options.processes):
            self._start(i)

    def supervise(self) -> int:
        """Replace retired processes until stopped; returns the exit code for the CLI."""
        failures = 0
        while not self.stopping.is_set():
            with self._stop_lock:  # never beside a stop: both reap children
                if self.stopping.is_set():
                    break
                retired = self._retired()
            crashed = [(index, code) for index, code in retired if code != 0]
            for index, code in crashed:
                log.warning("worker process %s exited with %s; starting another", index, code)
            failures += len(crashed)
            if crashed and self.stopping.wait(min(5.0, 0.5 * failures)):
                break
            with self._stop_lock:
                if self.stopping.is_set():
                    break  # a child started now would be missed by the stop under way
                for index, _ in retired:
                    self._start(index)
                if not self.procs:
                    return 0
            self.stopping.wait(0.2)
        return self.stop()

    def _retired(self) -> list[tuple[int, int]]:
        """The children that have exited, with their exit codes, to start again; one done
        for good (idle, with exit_when_idle) is forgotten instead."""
        out = []
        for index, proc in list(self.procs.items()):
            if proc.is_alive():
                continue
            if self.options.exit_when_idle and proc.exitcode == 0:
                del self.procs[index]
                continue
            out.append((index, proc.exitcode))
        return out

    def stop(self) -> int:
        """SIGTERM every child, wait for them to hand back their trials, then kill stragglers.
        Any thread may call it, any number of times: each gets the one stop's exit code."""
        self.stopping.set()
        with self._stop_lock:
            if self._stopped is None:
                self._stopped = self._stop_children()
            return self._stopped

    def _stop_children(self) -> int:
        for proc in self.procs.values():
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        for proc in self.procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
        code = 0
        for proc in self.procs.values():
            if proc.is_alive():
                proc.kill()
                proc.join()
                code = 1
        return code


def run_pool(options: PoolOptions) -> int:
    """`caviar worker`: run the pool in the foreground until SIGTERM or SIGINT."""
    pool = Pool(options)

    def _handler(signum: int, _frame: Any) -> None:
        pool.stopping.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    pool.start()
    pool.supervise()
    return pool.stop()

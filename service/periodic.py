"""A background pass run every few seconds: the reaper, the planner and the journal."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod


class Periodic(ABC):
    """A daemon thread that runs `tick` every `interval` seconds (sooner when `wake` is
    set) until `close`; first at once, or after one interval with `wait_first`. A pass
    that fails (the database may be briefly away) is logged at `failure_level` on
    `logger`, and the next runs at its time."""

    name = "caviar-periodic"
    wait_first = False
    failure_level = logging.WARNING
    logger = logging.getLogger("caviar")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    @abstractmethod
    def tick(self) -> None:
        """One pass."""

    def start(self) -> None:
        self.thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the pass under way."""
        self.stop.set()
        self.wake.set()
        self.thread.join(timeout=timeout)

    def _run(self) -> None:
        if self.wait_first:
            self._pause()
        while not self.stop.is_set():
            try:
                self.tick()
            except Exception:
                self.logger.log(self.failure_level, "%s pass failed", self.name, exc_info=True)
            self._pause()

    def _pause(self) -> None:
        self.wake.wait(self.interval)
        self.wake.clear()

"""Ask and tell: a program that runs its own loop leases a study's trials one at a time.

    from worker.asktell import Client

    with Client("http://127.0.0.1:8000") as client:
        study = client.create_study("examples/objectives/digits.yaml")
        while (trial := study.ask()) is not None:
            trial.tell(objective(trial.params, trial))

The client is a worker of the service that runs only the study's entrypoint
(`trainer=False`, `entrypoints=[...]`): a trial it asks for is leased to it exactly as
one is to `caviar worker`, kept by heartbeats from a thread of its own, and handed to
another worker if this program dies. Its handle has the methods of the one workers pass
to an objective (`report`, `should_stop`, `checkpoint`, `resume`), so the same function
runs under both; `tell` and `fail` end it. A lost lease (the trial was handed to
another worker) makes them raise `LeaseLost`, with the trial named.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from worker.asked import AskedTrial, LeaseLost, TrialEnded
from worker.client import Client as HttpClient

__all__ = ["AskedTrial", "Client", "LeaseLost", "Study", "TrialEnded"]

POLL_FIRST_SECONDS = 0.1  # ask() looks again after this while trials run elsewhere...
POLL_MAX_SECONDS = 2.0  # ...doubling up to this
DONE = ("completed", "failed", "cancelled")  # a study in one of these has nothing to ask


class Client:
    """A connection to the service for programs that ask for trials and tell results.

    `api_url` may list replicas, comma-separated, as `caviar worker --api` does; `token`
    needs the worker scope, and write (create_study) or read (study) for the rest.
    """

    def __init__(
        self,
        api_url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        name: str | None = None,
        max_wait_seconds: float | None = 60.0,
    ) -> None:
        self._closed = threading.Event()
        self.http = HttpClient(api_url, token, stop=self._closed, max_wait_seconds=max_wait_seconds)
        self._beats = HttpClient(
            api_url, token, stop=self._closed, max_wait_seconds=max_wait_seconds
        )
        self.name = name or f"asktell-{socket.gethostname()}-{os.getpid()}"
        self._workers: dict[str, tuple[str, float]] = {}  # entrypoint: (worker id, beat)
        self._held: dict[int, AskedTrial] = {}
        self._lock = threading.Lock()
        self._beater: threading.Thread | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Hand back every trial still held (its next attempt starts from its latest
        checkpoint), stop the heartbeats and close the connections."""
        with self._lock:
            held = list(self._held.values())
        for trial in held:
            trial.release()
        self._closed.set()
        if self._beater is not None:
            self._beater.join(timeout=5)
        self.http.close()
        self._beats.close()

    # --- studies ---------------------------------------------------------------------------

    def create_study(self, spec: Mapping[str, Any] | str | Path) -> Study:
        """Submit a spec (a dict, or the path of a YAML or JSON file) and return its study."""
        if isinstance(spec, Mapping):
            answer = self.http.post("/api/studies", dict(spec))
        else:
            path = Path(spec)
            kind = "json" if path.suffix == ".json" else "yaml"
            response = self.http.request(
                "POST",
                "/api/studies",
                content=path.read_bytes(),
                headers={"content-type": f"application/{kind}"},
            )
            answer = response.json()
        return self._study(answer)

    def study(self, study_id: int) -> Study:
        """A study already submitted, by id."""
        return self._study(self.http.request("GET", f"/api/studies/{study_id}").json())

    def _study(self, document: dict[str, Any]) -> Study:
        entrypoint = (document.get("spec") or {}).get("task", {}).get("entrypoint")
        if not entrypoint:
            raise ValueError(
                f"study {document['id']} ({document['name']}) runs the built-in trainer, not "
                "a function of yours: ask and tell needs a spec with task.entrypoint"
            )
        return Study(self, int(document["id"]), str(document["name"]), str(entrypoint))

    # --- the worker side -------------------------------------------------------------------

    def worker_for(self, entrypoint: str) -> str:
        """This program's worker id for studies of `entrypoint`, registered on first use."""
        with self._lock:
            known = self._workers.get(entrypoint)
        if known is not None:
            return known[0]
        answer = self.http.post(
            "/api/worker/register",
            {
                "name": self.name,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "trainer": False,
                "entrypoints": [entrypoint],
            },
        )
        with self._lock:
            self._workers[entrypoint] = (answer["worker_id"], float(answer["heartbeat_seconds"]))
            if self._beater is None:
                self._beater = threading.Thread(
                    target=self._heartbeat_loop, daemon=True, name="caviar-asktell-heartbeat"
                )
                self._beater.start()
        return str(answer["worker_id"])

    def hold(self, trial: AskedTrial) -> None:
        with self._lock:
            self._held[trial.trial_id] = trial

    def let_go(self, trial: AskedTrial) -> None:
        with self._lock:
            self._held.pop(trial.trial_id, None)

    def _heartbeat_loop(self) -> None:
        # The shortest heartbeat interval of the workers this program registered.
        while True:
            with self._lock:
                every = min((beat for _, beat in self._workers.values()), default=5.0)
            if self._closed.wait(every):
                return
            with self._lock:
                held = list(self._held.values())
            for trial in held:
                trial.beat(self._beats)


class Study:
    """A study whose trials this program asks for (see `Client.create_study`)."""

    def __init__(self, client: Client, study_id: int, name: str, entrypoint: str) -> None:
        self.client = client
        self.id = study_id
        self.name = name
        self.entrypoint = entrypoint

    def __repr__(self) -> str:
        return f"Study(id={self.id}, name={self.name!r}, entrypoint={self.entrypoint!r})"

    def read(self) -> dict[str, Any]:
        """The study as GET /api/studies/{id} returns it: status, counts, best trial."""
        document: dict[str, Any] = self.client.http.request("GET", f"/api/studies/{self.id}").json()
        return document

    def ask(self, timeout: float | None = None) -> AskedTrial | None:
        """Lease the study's next trial; None once the study has none left and is over.

        While its trials are all leased elsewhere (or the next round is being planned),
        waits for one to come back or the study to end, at most `timeout` seconds if
        given (then TimeoutError).
        """
        worker_id = self.client.worker_for(self.entrypoint)
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = POLL_FIRST_SECONDS
        while True:
            claimed = self._claim(worker_id)
            if claimed is not None:
                return claimed
            if self.read()["status"] in DONE:
                return None
            if deadline is not None and time.monotonic() + pause > deadline:
                raise TimeoutError(
                    f"study {self.id} ({self.name}): no trial to lease within {timeout} s "
                    "(its trials are running elsewhere or waiting for a free slot)"
                )
            time.sleep(pause)
            pause = min(pause * 2, POLL_MAX_SECONDS)

    def _claim(self, worker_id: str) -> AskedTrial | None:
        answer = self.client.http.post(
            "/api/worker/claim",
            {"worker_id": worker_id, "max_trials": 1, "study_id": self.id},
        )
        for claimed in answer["trials"]:
            trial = AskedTrial(self, claimed)
            self.client.hold(trial)
            return trial
        return None

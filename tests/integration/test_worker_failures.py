"""Workers die, freeze, are told to stop, or lose the service: no trial is lost or doubled."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from service.db import get_database
from service.models import Metric
from tests.integration.waiting import wait_until

CAVIAR = [sys.executable, "-m", "service.cli"]
FAST_LEASE = {"lease_seconds": 2.0, "heartbeat_seconds": 0.3, "reap_interval_seconds": 0.3}


def slow_spec(
    spec_factory: Callable[..., dict[str, Any]],
    *,
    trials: int = 1,
    epochs: int = 30,
    samples: int = 10_000,
    batch: int = 8,
    **overrides: Any,
) -> dict[str, Any]:
    """Trials whose epochs take about 0.1 s per 10,000 samples (batch 8; twice as long
    in batches of 4)."""
    return spec_factory(
        dataset={"name": "moons", "n_samples": samples, "noise": 0.2, "seed": 1},
        model={"hidden_layers": [32, 32], "epochs": epochs, "batch_size": batch},
        strategy={"type": "random", "trials": trials},
        **overrides,
    )


class Workers:
    """`caviar worker` processes started by a test; all are killed at its end, and what
    they logged is printed then (pytest shows it when the test failed)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        # A file each, never a pipe: a pipe nobody reads blocks a worker that logs more
        # than its 64 KiB buffer (a slow service's retried requests), and it hangs.
        self.logs = Path(tempfile.mkdtemp(prefix="caviar-workers-"))

    def start(self, url: str, *extra: str) -> subprocess.Popen[str]:
        log = os.open(self.logs / f"{len(self.procs)}.log", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            proc = subprocess.Popen(
                [*CAVIAR, "worker", "--api", url, "--processes", "1", *extra],
                start_new_session=True,  # its own group: close() ends the pool's children too
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        finally:
            os.close(log)  # the worker holds its own copy
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for index, proc in enumerate(self.procs):
            try:  # the pool's children too: a killed parent would leave them orphaned
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
            said = (self.logs / f"{index}.log").read_text(errors="replace")[-20_000:]
            print(f"--- caviar worker {proc.pid} said:\n{said}")
        shutil.rmtree(self.logs, ignore_errors=True)


@pytest.fixture
def workers() -> Iterator[Workers]:
    w = Workers()
    yield w
    w.close()


def running_trial(api: httpx.Client, study_id: int, min_epochs: int = 1) -> dict[str, Any] | None:
    items = api.get(f"/api/studies/{study_id}/trials", params={"status": "running"}).json()["items"]
    for t in items:
        if t["epochs_done"] >= min_epochs:
            return t
    return None


def worker_pid(api: httpx.Client, worker_id: str) -> int:
    return int(next(w["pid"] for w in api.get("/api/workers").json() if w["id"] == worker_id))


def study_done(api: httpx.Client, study_id: int) -> dict[str, Any] | None:
    study = api.get(f"/api/studies/{study_id}").json()
    return study if study["status"] in ("completed", "failed", "cancelled") else None


def assert_metrics_unique(db_url: str) -> None:
    with get_database(db_url).session(write=False) as s:
        total = s.scalar(select(func.count()).select_from(Metric))
        distinct = s.scalar(
            select(func.count()).select_from(
                select(Metric.trial_id, Metric.attempt, Metric.epoch).distinct().subquery()
            )
        )
    assert total == distinct


def test_sigterm_finishes_the_epoch_hands_the_trial_back_and_exits_0(
    sqlite_url, live_service, spec_factory, workers
) -> None:
    svc = live_service(sqlite_url, **FAST_LEASE)
    api = httpx.Client(base_url=svc.url, timeout=30)
    study_id = api.post("/api/studies", json=slow_spec(spec_factory, epochs=200)).json()["id"]
    proc = workers.start(svc.url)
    trial = wait_until(lambda: running_trial(api, study_id), what="a running trial")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0  # its log is printed at the end (see Workers)
    assert time.monotonic() - started < 10
    back = api.get(f"/api/trials/{trial['id']}").json()
    assert back["status"] == "queued" and back["retries"] == 0 and back["attempt"] == 1
    # a new worker runs it from scratch as attempt 2
    workers.start(svc.url)
    wait_until(lambda: running_trial(api, study_id), what="the trial to run again")
    api.post(f"/api/trials/{trial['id']}/stop")
    study = wait_until(lambda: study_done(api, study_id), what="the study to end")
    final = api.get(f"/api/trials/{trial['id']}").json()
    assert final["attempt"] == 2 and final["status"] == "stopped"
    assert study["status"] == "completed"  # a stopped trial keeps its value


def test_a_killed_worker_s_trial_runs_again_and_completes_once(
    db_url, live_service, spec_factory, workers
) -> None:
    svc = live_service(db_url, **FAST_LEASE)
    api = httpx.Client(base_url=svc.url, timeout=30)
    # 30 epochs of ~0.1 s: the worker reports a batch of epochs about every second
    spec = slow_spec(spec_factory, trials=2, epochs=30, execution={"max_retries": 2, "seed": 1})
    study_id = api.post("/api/studies", json=spec).json()["id"]
    workers.start(svc.url)
    trial = wait_until(lambda: running_trial(api, study_id, 2), what="a trial with 2 epochs")
    os.kill(worker_pid(api, trial["worker_id"]), signal.SIGKILL)  # the pool starts another
    study = wait_until(lambda: study_done(api, study_id), timeout=120, what="the study to end")
    assert study["status"] == "completed" and study["counts"]["completed"] == 2
    final = api.get(f"/api/trials/{trial['id']}").json()
    assert final["retries"] == 1 and final["attempt"] == 2
    curve = api.get(f"/api/trials/{trial['id']}/metrics").json()
    assert [m["epoch"] for m in curve] == list(range(1, 31))
    assert_metrics_unique(db_url)


def test_a_frozen_worker_loses_its_lease_and_moves_on(
    sqlite_url, live_service, spec_factory, workers
) -> None:
    svc = live_service(sqlite_url, **FAST_LEASE)
    api = httpx.Client(base_url=svc.url, timeout=30)
    spec = slow_spec(spec_factory, trials=2, epochs=40, execution={"max_parallel": 1, "seed": 1})
    study_id = api.post("/api/studies", json=spec).json()["id"]
    workers.start(svc.url)
    trial = wait_until(lambda: running_trial(api, study_id, 1), what="a running trial")
    frozen = worker_pid(api, trial["worker_id"])
    os.kill(frozen, signal.SIGSTOP)
    try:
        wait_until(
            lambda: api.get(f"/api/trials/{trial['id']}").json()["retries"] == 1,
            what="the lease to expire",
        )
        workers.start(svc.url)
        wait_until(
            lambda: api.get(f"/api/trials/{trial['id']}").json()["status"] == "completed",
            timeout=120,
            what="another worker to complete the trial",
        )
    finally:
        os.kill(frozen, signal.SIGCONT)
    study = wait_until(lambda: study_done(api, study_id), timeout=120, what="the study to end")
    assert study["status"] == "completed"
    final = api.get(f"/api/trials/{trial['id']}").json()
    assert final["attempt"] == 2 and final["worker_id"] != trial["worker_id"]
    os.kill(frozen, 0)  # the stale worker is still alive: a 409 did not crash it


def test_a_trial_that_kills_its_worker_every_time_fails_after_max_retries(
    sqlite_url, live_service, spec_factory, workers
) -> None:
    svc = live_service(sqlite_url, **FAST_LEASE)
    api = httpx.Client(base_url=svc.url, timeout=30)
    doomed = api.post(
        "/api/studies",
        json=slow_spec(
            spec_factory, name="doomed", epochs=50, execution={"max_retries": 1, "seed": 1}
        ),
    ).json()["id"]
    workers.start(svc.url)
    for attempt in (1, 2):  # the first attempt and its one retry
        # Generous: in a loaded CI run an attempt once did not run within 60 s; the
        # workers' log is printed when it fails (see Workers), and so are the trials.
        def state(attempt: int = attempt) -> str:
            trials = api.get(f"/api/studies/{doomed}/trials").json()["items"]
            return f"attempt {attempt} to run: {trials}"

        t = wait_until(lambda: running_trial(api, doomed, 1), timeout=150, what=state)
        os.kill(worker_pid(api, t["worker_id"]), signal.SIGKILL)
        wait_until(lambda: running_trial(api, doomed, 0) is None, what="the lease to expire")
    study = wait_until(lambda: study_done(api, doomed), timeout=60, what="the study to fail")
    assert study["status"] == "failed" and study["counts"]["failed"] == 1
    trial = api.get(f"/api/studies/{doomed}/trials").json()["items"][0]
    assert "max_retries is 1" in trial["error"]
    others = api.post("/api/studies", json=spec_factory(name="others")).json()["id"]
    assert (
        wait_until(lambda: study_done(api, others), what="others to flow")["status"] == "completed"
    )


def test_a_long_epoch_with_heartbeats_is_never_reclaimed(
    sqlite_url, live_service, spec_factory, workers
) -> None:
    # Ten heartbeats a lease: with five (1.5 s, 0.3 s), a clean-clone CI run whose tests
    # loaded the 2 cores to about four runnable processes each once missed them all.
    svc = live_service(
        sqlite_url, lease_seconds=2.5, heartbeat_seconds=0.25, reap_interval_seconds=0.2
    )
    api = httpx.Client(base_url=svc.url, timeout=30)
    # epochs of about 4 s, longer than the lease itself: only heartbeats keep it
    long_id = api.post(
        "/api/studies",
        json=slow_spec(spec_factory, name="long", epochs=3, samples=200_000, batch=4),
    ).json()["id"]
    workers.start(svc.url)
    wait_until(lambda: running_trial(api, long_id, 0), what="the long trial to start")
    busy = api.post(
        "/api/studies", json=spec_factory(name="busy", strategy={"type": "random", "trials": 40})
    ).json()["id"]
    for _ in range(3):  # more writers: short trials claimed, trained and reported meanwhile
        workers.start(svc.url)
    study = wait_until(lambda: study_done(api, long_id), timeout=120, what="the long trial")
    assert study["status"] == "completed"
    trial = api.get(f"/api/studies/{long_id}/trials").json()["items"][0]
    assert (trial["attempt"], trial["retries"]) == (1, 0)
    assert wait_until(lambda: study_done(api, busy), timeout=120)["status"] == "completed"


def test_a_result_acknowledged_before_the_api_is_killed_survives(
    tmp_path: Path, spec_factory
) -> None:
    db_path = tmp_path / "caviar.db"
    env = {**os.environ, "CAVIAR_DATABASE_URL": f"sqlite:///{db_path}"}

    def serve(port: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*CAVIAR, "serve", "--port", str(port)],
            env=env,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    api = serve(port)
    try:
        client = httpx.Client(base_url=url, timeout=30)
        wait_until(lambda: _healthy(client), what="the service to start")
        client.post("/api/studies", json=spec_factory())
        wid = client.post("/api/worker/register", json={"name": "w"}).json()["worker_id"]
        claimed = client.post("/api/worker/claim", json={"worker_id": wid, "max_trials": 4}).json()
        for t in claimed["trials"]:
            r = client.post(
                f"/api/worker/trials/{t['trial_id']}/finish",
                json={
                    "lease_token": t["lease_token"],
                    "outcome": "completed",
                    "epochs": [{"epoch": 1, "dev_accuracy": 0.5 + t["number"] / 10}],
                },
            )
            assert r.status_code == 200
            if t["number"] == 1:
                api.kill()  # right after the acknowledgement of the second result
                break
        api.wait(timeout=10)
        api = serve(port)
        wait_until(lambda: _healthy(client), what="the service to restart")
        items = client.get("/api/studies/1/trials").json()["items"]
        assert [t["status"] for t in items[:2]] == ["completed", "completed"]
        assert items[1]["value"] == pytest.approx(0.6)
    finally:
        api.kill()
        api.wait(timeout=10)
    db = get_database(f"sqlite:///{db_path}")
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"


def _healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.postgres
def test_postgres_connections_terminated_mid_run_lose_nothing(
    postgres_url, postgres_admin, live_service, spec_factory, workers
) -> None:
    from service import migrate

    migrate.upgrade(postgres_url)
    svc = live_service(postgres_url, **FAST_LEASE)
    api = httpx.Client(base_url=svc.url, timeout=30)
    spec = slow_spec(spec_factory, trials=12, epochs=20, samples=5_000)
    study_id = api.post("/api/studies", json=spec).json()["id"]
    workers.start(svc.url)
    workers.start(svc.url)
    dbname = postgres_url.rsplit("/", 1)[1]
    statuses: set[int] = set()
    for _ in range(5):
        wait_until(lambda: running_trial(api, study_id, 0), what="trials to run")
        with postgres_admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :d AND pid <> pg_backend_pid()"
                ),
                {"d": dbname},
            )
        for _ in range(5):
            statuses.add(api.get(f"/api/studies/{study_id}").status_code)
        time.sleep(0.5)
    study = wait_until(lambda: study_done(api, study_id), timeout=180, what="the study to end")
    assert study["status"] == "completed"
    assert study["counts"]["completed"] == 12
    assert statuses <= {200, 503}, statuses
    assert_metrics_unique(postgres_url)
    for proc in workers.procs:
        assert proc.poll() is None, "a worker process crashed"


def test_workers_ride_out_an_api_restart(tmp_path: Path, spec_factory, workers) -> None:
    import socket

    env = {**os.environ, "CAVIAR_DATABASE_URL": f"sqlite:///{tmp_path / 'caviar.db'}"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"

    def serve() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*CAVIAR, "serve", "--port", str(port)],
            env=env,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    api_proc = serve()
    try:
        api = httpx.Client(base_url=url, timeout=30)
        wait_until(lambda: _healthy(api), what="the service to start")
        study_id = api.post(
            "/api/studies", json=slow_spec(spec_factory, trials=2, epochs=100)
        ).json()["id"]
        worker = workers.start(url)
        wait_until(lambda: running_trial(api, study_id, 1), what="a trial to report")
        api_proc.kill()
        api_proc.wait(timeout=10)
        time.sleep(3)  # the worker's reports fail meanwhile; it backs off and retries
        api_proc = serve()
        wait_until(lambda: _healthy(api), what="the service to restart")
        study = wait_until(lambda: study_done(api, study_id), timeout=120, what="the study")
        assert study["status"] == "completed" and study["counts"]["completed"] == 2
        assert worker.poll() is None, "the worker died with the API"
    finally:
        api_proc.kill()
        api_proc.wait(timeout=10)

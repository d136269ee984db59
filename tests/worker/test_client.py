"""The worker's client fails over between service replicas listed in `--api`."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from typer.testing import CliRunner

from service.cli import app
from worker.client import Client, parse_urls
from worker.runner import Worker

CAVIAR = [sys.executable, "-m", "service.cli"]


def refused_url() -> str:
    """A loopback URL where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_parse_urls_takes_one_or_several_and_refuses_empty_entries() -> None:
    assert parse_urls("http://a:8000/") == ["http://a:8000"]
    assert parse_urls("http://a:8000, https://b/") == ["http://a:8000", "https://b"]
    for bad in ("", "http://a:8000,", "a:8000", "http://a,,http://b"):
        with pytest.raises(ValueError):
            parse_urls(bad)


def test_a_refused_replica_sends_the_request_to_the_next_which_then_keeps_it(
    sqlite_url, live_service
) -> None:
    svc = live_service(sqlite_url)
    dead = refused_url()
    client = Client(f"{dead},{svc.url}", max_wait_seconds=10)
    try:
        assert client.url == dead
        assert client.request("GET", "/healthz").status_code == 200
        assert client.url == svc.url
        started = time.monotonic()
        for _ in range(5):  # no detour through the dead replica any more
            assert client.request("GET", "/healthz").status_code == 200
        assert time.monotonic() - started < 2.0
        assert client.url == svc.url
    finally:
        client.close()


def test_with_one_url_a_refused_connection_is_retried_there_until_the_deadline() -> None:
    dead = refused_url()
    client = Client(dead, max_wait_seconds=0.5)
    try:
        with pytest.raises(Exception, match="gave up"):
            client.request("GET", "/healthz")
        assert client.url == dead
    finally:
        client.close()


def test_a_worker_runs_a_study_through_the_replica_that_answers(
    sqlite_url, live_service, spec_factory
) -> None:
    svc = live_service(sqlite_url)
    api = httpx.Client(base_url=svc.url, timeout=30)
    study_id = api.post("/api/studies", json=spec_factory()).json()["id"]
    worker = Worker(f"{refused_url()},{svc.url}", exit_when_idle=True, claim_batch=2)
    done = threading.Thread(target=worker.run)
    done.start()
    done.join(timeout=60)
    assert not done.is_alive()
    study = api.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "completed" and study["counts"]["completed"] == 4


def test_the_worker_command_fails_over_when_its_replica_goes_away(
    sqlite_url, live_service, spec_factory
) -> None:
    first = live_service(sqlite_url)
    second = live_service(sqlite_url)
    api = httpx.Client(base_url=second.url, timeout=30)
    spec = spec_factory(
        model={"hidden_layers": [8], "epochs": 20, "batch_size": 8},
        dataset={"name": "moons", "n_samples": 2000, "noise": 0.2, "seed": 1},
        strategy={"type": "random", "trials": 6},
    )
    study_id = api.post("/api/studies", json=spec).json()["id"]
    proc = subprocess.Popen(
        [*CAVIAR, "worker", "--api", f"{first.url},{second.url}", "--processes", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while api.get(f"/api/studies/{study_id}").json()["counts"].get("completed", 0) < 1:
            assert time.monotonic() < deadline, "no trial completed through the first replica"
            time.sleep(0.1)
        first.stop()  # the replica the worker talks to goes away mid-study
        deadline = time.monotonic() + 90
        while (study := api.get(f"/api/studies/{study_id}").json())["status"] != "completed":
            assert time.monotonic() < deadline, study
            assert proc.poll() is None, "the worker died with its replica"
            time.sleep(0.2)
        assert study["counts"]["completed"] == 6
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output


def test_the_worker_command_refuses_a_malformed_url_list() -> None:
    result = CliRunner().invoke(app, ["worker", "--api", "http://a:8000,,http://b:8000"])
    assert result.exit_code == 2
    assert "--api" in result.output and "not an http(s) URL" in result.output

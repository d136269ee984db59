"""Two service replicas on one PostgreSQL: event streams are complete, identical and prompt
on either replica, whichever replica wrote the events."""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from service import migrate
from tests.multihost.hosts import (
    EventStream,
    Processes,
    Replica,
    requests_served,
    start_replica,
    start_workers,
    study_event_ids,
    wait_until,
)

pytestmark = pytest.mark.postgres
FAST_LEASE = {"lease_seconds": 3.0, "heartbeat_seconds": 0.5, "reap_interval_seconds": 0.5}


@pytest.fixture
def replicas(postgres_url: str, procs: Processes) -> tuple[Replica, Replica]:
    migrate.upgrade(postgres_url)  # once, before two replicas could race to do it
    a = start_replica(procs, "replica-a", host="127.0.0.1", db_url=postgres_url, **FAST_LEASE)
    b = start_replica(procs, "replica-b", host="127.0.0.1", db_url=postgres_url, **FAST_LEASE)
    return a, b


def many_short_trials(spec_factory: Any, trials: int) -> dict[str, Any]:
    return spec_factory(
        name="events-everywhere",
        dataset={"name": "moons", "n_samples": 200, "noise": 0.2, "seed": 1},
        model={"hidden_layers": [8], "epochs": 4, "batch_size": 32},
        strategy={"type": "random", "trials": trials},
        execution={"max_parallel": 64, "seed": 3},
    )


def delay_of_next_start(api: httpx.Client, worker_id: str, stream: EventStream) -> float:
    """Claim one trial through `api`; seconds from the claim's answer to its start event
    reaching `stream` (0 if it got there first: the transaction commits before the answer)."""
    claimed = api.post("/api/worker/claim", json={"worker_id": worker_id, "max_trials": 1})
    committed = time.monotonic()
    trial_id = claimed.json()["trials"][0]["trial_id"]

    def arrived() -> Any:
        for r in stream.received:
            if r.type == "trial.started" and r.data["trial_id"] == trial_id:
                return r
        return None

    got = wait_until(arrived, 5, f"trial {trial_id}'s start event")
    return max(0.0, float(got.at - committed))


def test_streams_on_both_replicas_carry_every_event_in_the_same_order(
    postgres_url, replicas, procs, spec_factory
) -> None:
    a, b = replicas
    api = httpx.Client(base_url=a.url, timeout=30)
    study_id = api.post("/api/studies", json=many_short_trials(spec_factory, 160)).json()["id"]
    on_a, on_b = EventStream([a.url], study_id), EventStream([b.url], study_id)
    # Two pools, each preferring another replica: events of one study are written by
    # both replicas at once, from many transactions in flight together.
    start_workers(procs, "workers-a", urls=[a.url, b.url], processes=2)
    start_workers(procs, "workers-b", urls=[b.url, a.url], processes=2)
    for stream in (on_a, on_b):
        assert stream.ended.wait(180), (stream.errors, len(stream.received))
    study = api.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "completed" and study["counts"]["completed"] == 160
    stored = study_event_ids(postgres_url, study_id)
    assert [(r.id, r.type) for r in on_a.received] == stored
    assert [(r.id, r.type) for r in on_b.received] == stored
    types = [t for _, t in stored]
    assert types.count("trial.finished") == 160 and types[-1] == "study.finished"
    for replica in (a, b):  # both replicas wrote: each served the claims of a pool
        assert requests_served(replica, "/api/worker/claim") > 20
    assert on_a.errors == [] and on_b.errors == []


def test_an_event_written_through_one_replica_wakes_a_stream_on_the_other(
    replicas, spec_factory
) -> None:
    a, b = replicas
    api_a = httpx.Client(base_url=a.url, timeout=30)
    study_id = api_a.post("/api/studies", json=many_short_trials(spec_factory, 16)).json()["id"]
    stream = EventStream([b.url], study_id)
    assert stream.connected.wait(10)
    wid = api_a.post("/api/worker/register", json={"name": "prober"}).json()["worker_id"]
    rng = random.Random(0)
    delays = []
    for _ in range(16):
        # at a random phase of B's poll: a stream that only polled would take 0.25 s on
        # average, and up to POLL_SECONDS (0.5 s); woken, it reads within MIN_READ_SECONDS
        time.sleep(rng.uniform(0.1, 0.6))
        delays.append(delay_of_next_start(api_a, wid, stream))
    stream.stop()
    assert statistics.median(delays) < 0.06, delays
    assert max(delays) < 0.3, delays


def test_streams_fall_back_to_polling_while_the_listener_reconnects(
    postgres_url, postgres_admin, replicas, spec_factory
) -> None:
    a, b = replicas
    api_a = httpx.Client(base_url=a.url, timeout=30)
    study_id = api_a.post("/api/studies", json=many_short_trials(spec_factory, 8)).json()["id"]
    stream, other = EventStream([b.url], study_id), EventStream([b.url], study_id)
    assert stream.connected.wait(10) and other.connected.wait(10)
    wid = api_a.post("/api/worker/register", json={"name": "prober"}).json()["worker_id"]
    dbname = postgres_url.rsplit("/", 1)[1]
    listeners = text(
        "SELECT pid FROM pg_stat_activity WHERE datname = :d AND query LIKE 'LISTEN %'"
    )

    with postgres_admin.connect() as conn:
        old = wait_until(lambda: conn.scalars(listeners, {"d": dbname}).all(), 10, "a LISTEN")
        assert len(old) == 1  # one listener for the replica's process, not one per stream
        conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": old[0]})
        # no listener now: the stream still gets the event, by polling
        assert delay_of_next_start(api_a, wid, stream) < 1.0
        new = wait_until(
            lambda: [p for p in conn.scalars(listeners, {"d": dbname}) if p != old[0]],
            15,
            "the listener to reconnect",
        )
        assert len(new) == 1
    time.sleep(0.2)
    assert statistics.median(delay_of_next_start(api_a, wid, stream) for _ in range(5)) < 0.06
    stream.stop()
    other.stop()

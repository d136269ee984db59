"""Many machines on one PostgreSQL: two service replicas, worker pools on two other hosts.

The hosts are network namespaces (tests/multihost/hosts.py). While 300 short trials
run, one worker host loses its link for longer than the lease and gets it back, then
one replica is killed. Every trial must end exactly once with unique metrics, no worker
process may crash, the study must complete on the surviving replica, and clients of
both replicas must see the same events as the database holds.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from service import migrate
from service.db import get_database
from service.models import Event, Metric, Trial, TrialStatus, Worker
from tests.multihost.hosts import (
    EventStream,
    Network,
    Processes,
    start_replica,
    start_workers,
    study_event_ids,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.netns, pytest.mark.slow]

LEASE = {"lease_seconds": 3.0, "heartbeat_seconds": 0.5, "reap_interval_seconds": 0.5}
PARTITION_SECONDS = 7.0  # more than twice the lease: every lease of the cut host expires
TRIALS = 300


def short_trials(spec_factory: Any) -> dict[str, Any]:
    """About 0.1 s of training each: 300 of them keep four processes on two cores busy
    for half a minute, long enough to cut a link and kill a replica along the way."""
    return spec_factory(
        name="partitioned",
        dataset={"name": "moons", "n_samples": 2000, "noise": 0.2, "seed": 1},
        model={"hidden_layers": [16, 8], "epochs": 12, "batch_size": 16},
        strategy={"type": "random", "trials": TRIALS},
        execution={"max_parallel": 64, "seed": 9, "max_retries": 3},
    )


def namespace_pids(network: Network, i: int) -> set[int]:
    out = subprocess.run(
        ["ip", "netns", "pids", network.namespace(i)], capture_output=True, text=True, check=True
    ).stdout
    return {int(p) for p in out.split()}


def counts(api: httpx.Client, study_id: int) -> dict[str, int]:
    return api.get(f"/api/studies/{study_id}").json()["counts"]


def test_a_cut_link_and_a_killed_replica_lose_nothing_and_double_nothing(
    postgres_url: str, network: Network, procs: Processes, spec_factory
) -> None:
    # (postgres_url first: its database is dropped after every process here has stopped)
    admin, worker_token = secrets.token_hex(16), secrets.token_hex(16)
    tokens = f"admin:read,write:{admin};workers:worker:{worker_token}"
    migrate.upgrade(postgres_url)
    host = network.service_address  # on the bridge: both worker hosts reach it
    a = start_replica(procs, "replica-a", host=host, db_url=postgres_url, tokens=tokens, **LEASE)
    b = start_replica(procs, "replica-b", host=host, db_url=postgres_url, tokens=tokens, **LEASE)
    for i in range(network.hosts):
        port = int(a.url.rsplit(":", 1)[1])
        assert network.can_reach(i, host, port), f"host {i} cannot reach the service"

    api = httpx.Client(base_url=b.url, timeout=30, headers={"authorization": f"Bearer {admin}"})
    study_id = api.post("/api/studies", json=short_trials(spec_factory)).json()["id"]
    via_a = EventStream([a.url, b.url], study_id, admin)  # resumes on B once A is gone
    via_b = EventStream([b.url], study_id, admin)
    assert via_a.connected.wait(10) and via_b.connected.wait(10)

    cut, other = 0, 1
    pools = [
        start_workers(
            procs,
            "host-0",
            urls=[a.url, b.url],
            token=worker_token,
            processes=2,
            prefix=network.run_in(cut),
        ),
        start_workers(
            procs,
            "host-1",
            urls=[b.url, a.url],
            token=worker_token,
            processes=2,
            claim_batch=2,
            prefix=network.run_in(other),
        ),
    ]
    wait_until(lambda: counts(api, study_id).get("completed", 0) >= 20, 60, "20 trials")

    # The cable of host 0 is pulled for longer than the lease, then plugged back in.
    network.set_link(cut, up=False)
    time.sleep(PARTITION_SECONDS)
    network.set_link(cut, up=True)
    back = time.time()
    cut_pids = namespace_pids(network, cut)
    db = get_database(postgres_url)

    def finished_by_cut_host_since(when: float) -> bool:
        with db.session(write=False) as s:
            done = s.scalar(
                select(func.count())
                .select_from(Trial)
                .join(Worker, Worker.id == Trial.worker_id)
                .where(
                    Worker.pid.in_(cut_pids),
                    Trial.status == TrialStatus.completed,
                    func.extract("epoch", Trial.finished_at) > when,
                )
            )
        return bool(done)

    wait_until(lambda: finished_by_cut_host_since(back), 60, "host 0 to work again")
    left = TRIALS - counts(api, study_id).get("completed", 0)
    assert left > 20, "the study nearly ended before the replica could be killed: slow it down"
    a.kill()
    killed = time.time()

    study = wait_until(
        lambda: (s := api.get(f"/api/studies/{study_id}").json())["status"] != "running" and s,
        150,
        "the study to end on replica B",
    )
    assert study["status"] == "completed", study
    assert study["counts"].get("completed") == TRIALS, study["counts"]
    assert sum(study["counts"].values()) == TRIALS, study["counts"]

    with db.session(write=False) as s:
        trials = s.execute(select(Trial.id, Trial.attempt, Trial.finished_at)).all()
        finished_events = Counter(
            s.scalars(
                select(Event.trial_id).where(
                    Event.study_id == study_id, Event.type == "trial.finished"
                )
            ).all()
        )
        metric_rows = s.scalar(select(func.count()).select_from(Metric))
        distinct = s.scalar(
            select(func.count()).select_from(
                select(Metric.trial_id, Metric.attempt, Metric.epoch).distinct().subquery()
            )
        )
    # Every trial ended exactly once: one finish each, whatever was re-sent or re-run.
    assert len(trials) == TRIALS and set(finished_events.values()) == {1}
    assert set(finished_events) == {t.id for t in trials}
    assert metric_rows == distinct
    # The cut was felt: leases of host 0 expired and their trials ran again elsewhere.
    assert any(t.attempt >= 2 for t in trials)
    log0 = procs.log("host-0")
    assert re.search(r"lease lost; dropping it|result refused", log0), log0[-3000:]
    # The study went on after replica A died, on B alone, with host 0's workers too:
    # they had A first in their list and moved to B.
    assert any(t.finished_at.timestamp() > killed for t in trials)
    assert finished_by_cut_host_since(killed)

    for name, pool in zip(("host-0", "host-1"), pools, strict=True):
        assert pool.poll() is None, f"{name}'s pool exited"
        log = procs.log(name)
        assert "Traceback" not in log, log[-3000:]
        assert "exited with" not in log, log[-3000:]  # the pool replaced no crashed process

    stored = study_event_ids(postgres_url, study_id)
    assert via_b.ended.wait(30) and via_a.ended.wait(30), (via_a.errors, via_b.errors)
    assert [(r.id, r.type) for r in via_b.received] == stored
    assert [(r.id, r.type) for r in via_a.received] == stored
    from_a = [r for r in via_a.received if r.url == a.url]
    assert from_a and len(from_a) < len(stored)  # A served a prefix, B the rest
    assert via_a.received[: len(from_a)] == from_a

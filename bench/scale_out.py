"""Scale-out: real trials through 1 and 2 service replicas, with 1, 2 and 4 worker
processes on other hosts (network namespaces), and what each trial costs the service.

Two measurements, both against a fresh PostgreSQL database:

* throughput of real, CPU-bound, seconds-long trials (a 64x64 network on 4,000 points,
  about 2 s each) with 1, 2 and 4 worker processes spread over two worker hosts, against
  1 and 2 replicas; and the overhead per trial, the process-seconds a worker spends on a
  trial outside the training loop (leasing, reporting, waiting for the CPU between them);
* the service's own cost per trial, with trials that train nothing worth measuring
  (one epoch on 200 points): requests per trial, replica CPU per request and per trial,
  PostgreSQL connections each replica holds.

Worker hosts are namespaces behind a bridge (tests/multihost/hosts.py), so workers talk
to the replicas over veth links as they would over a network, not over loopback. Needs
root, iproute2 and PostgreSQL (CAVIAR_TEST_POSTGRES_URL, default the test server):

    python bench/scale_out.py [--seconds-per-trial 2] [--quick]

Read the numbers with the machine in mind: all of it (replicas, PostgreSQL, every worker
process) shares this machine's cores, so with 2 cores, 4 processes cannot train faster
than 2; the run prints the core count next to the ratios.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.multihost.hosts import (  # noqa: E402  (the checkout first, as pytest does)
    Network,
    Processes,
    Replica,
    netns_unavailable,
    start_replica,
    start_workers,
    wait_until,
)

PG_ADMIN = os.environ.get(
    "CAVIAR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WORKER_ROUTES = "/api/worker/"


def real_spec(trials: int, epochs: int) -> dict[str, Any]:
    return {
        "name": "scale-out",
        "dataset": {"name": "moons", "n_samples": 4000, "noise": 0.2, "seed": 1},
        "model": {
            "hidden_layers": [64, 64],
            "optimizer": "adam",
            "epochs": epochs,
            "batch_size": 32,
        },
        "space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "scale": "log"}},
        "strategy": {"type": "random", "trials": trials},
        "objective": {"metric": "dev_accuracy", "direction": "maximize"},
        "execution": {"mode": "caviar", "max_parallel": 64, "seed": 1},
    }


def tiny_spec(trials: int) -> dict[str, Any]:
    spec = real_spec(trials, 1)
    spec["name"] = "service-cost"
    spec["dataset"] = {"name": "moons", "n_samples": 200, "noise": 0.2, "seed": 1}
    spec["model"] = {"hidden_layers": [4], "optimizer": "adam", "epochs": 1, "batch_size": 0}
    return spec


def reference_seconds(epochs: int) -> float:
    """One trial trained alone, one BLAS thread, no service: the seconds of its epochs."""
    code = f"""
from threadpoolctl import threadpool_limits
from trainer import TrainConfig, load_dataset, train
threadpool_limits(1)
spec = {real_spec(1, epochs)!r}
ds = load_dataset(spec["dataset"])
cfg = TrainConfig(**{{**spec["model"], "learning_rate": 0.01}})
train(cfg, ds)  # warm
print(sum(h["seconds"] for h in train(cfg, ds).history))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


# --- PostgreSQL -----------------------------------------------------------------------------


def fresh_postgres() -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"caviar_scale_{uuid.uuid4().hex[:8]}"
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)


def drop_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from service.db import forget_database

    forget_database(url)
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    engine.dispose()


class ConnectionSampler:
    """Samples, twice a second, the connections each replica holds (by application_name)."""

    def __init__(self, db_url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        self.dbname = make_url(db_url).database
        self.engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        self.peak: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from sqlalchemy import text

        query = text(
            "SELECT application_name, count(*) FROM pg_stat_activity "
            "WHERE datname = :d GROUP BY application_name"
        )
        with self.engine.connect() as conn:
            while not self.stop.wait(0.5):
                for name, n in conn.execute(query, {"d": self.dbname}):
                    if name.startswith("caviar-"):
                        self.peak[name] = max(self.peak.get(name, 0), n)

    def close(self) -> dict[str, int]:
        self.stop.set()
        self.thread.join()
        self.engine.dispose()
        return self.peak


# --- measurements ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def worker_requests(replica: Replica, token: str) -> Counter[str]:
    """Requests the replica answered on each worker route, from its Prometheus /metrics."""
    text = httpx.get(
        f"{replica.url}/metrics", headers={"authorization": f"Bearer {token}"}, timeout=10
    ).text
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("caviar_http_request_duration_seconds_count{"):
            route = line.split('route="', 1)[1].split('"', 1)[0]
            if route.startswith(WORKER_ROUTES):
                short = route[len(WORKER_ROUTES) :].replace("trials/{trial_id}/", "")
                counts[short] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def all_requests(replicas: list[Replica], token: str) -> Counter[str]:
    total: Counter[str] = Counter()
    for replica in replicas:
        total.update(worker_requests(replica, token))
    return total


@dataclass
class Result:
    replicas: int
    processes: int
    trials: int
    wall: float  # first trial started -> last trial finished
    train_seconds: float  # the epochs' own seconds, summed over trials
    routes: Counter[str]  # worker requests by route, all replicas
    replica_cpu: float  # CPU seconds of the replica processes
    connections: dict[str, int]

    @property
    def requests(self) -> int:
        return sum(self.routes.values())

    def per_trial(self) -> str:
        return ", ".join(f"{k} {v / self.trials:.1f}" for k, v in self.routes.most_common())

    @property
    def throughput(self) -> float:
        return self.trials / self.wall

    @property
    def overhead(self) -> float:
        """Process-seconds per trial outside the training loop."""
        return (self.processes * self.wall - self.train_seconds) / self.trials


def layout(processes: int, hosts: int) -> list[int]:
    """Worker processes per host, spread as evenly as possible: 1 -> [1, 0], 4 -> [2, 2]."""
    return [processes // hosts + (1 if i < processes % hosts else 0) for i in range(hosts)]


def run_study(
    *,
    spec: dict[str, Any],
    replicas: list[Replica],
    network: Network,
    procs: Processes,
    processes: int,
    admin: str,
    worker_token: str,
    db_url: str,
    claim_batch: int = 1,
) -> Result:
    from sqlalchemy import func, select

    from service.db import get_database
    from service.models import Metric, Trial

    api = httpx.Client(
        base_url=replicas[0].url, timeout=60, headers={"authorization": f"Bearer {admin}"}
    )
    sampler = ConnectionSampler(db_url)
    requests_before = all_requests(replicas, admin)
    cpu_before = sum(cpu_seconds(r.proc.pid) for r in replicas)
    pools = []
    for host, count in enumerate(layout(processes, network.hosts)):
        if count:
            # each host prefers another replica; all of them list every replica
            urls = [
                r.url for r in replicas[host % len(replicas) :] + replicas[: host % len(replicas)]
            ]
            name = f"pool-{len(procs.started)}"
            pools.append(
                start_workers(
                    procs,
                    name,
                    urls=urls,
                    token=worker_token,
                    processes=count,
                    claim_batch=claim_batch,
                    prefix=network.run_in(host),
                )
            )
    created = api.post("/api/studies", json=spec)
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]
    wait_until(
        lambda: api.get(f"/api/studies/{study_id}").json()["status"] in ("completed", "failed"),
        3600,
        f"study {study_id}",
    )
    for pool in pools:
        Processes.signal_group(pool, signal.SIGTERM)
    for pool in pools:
        pool.wait(timeout=30)
    routes = all_requests(replicas, admin)
    routes.subtract(requests_before)
    cpu = sum(cpu_seconds(r.proc.pid) for r in replicas) - cpu_before
    connections = sampler.close()
    with get_database(db_url).session(write=False) as s:
        first, last = s.execute(
            select(func.min(Trial.started_at), func.max(Trial.finished_at)).where(
                Trial.study_id == study_id
            )
        ).one()
        seconds = s.scalar(
            select(func.coalesce(func.sum(Metric.seconds), 0.0))
            .join(Trial, Trial.id == Metric.trial_id)
            .where(Trial.study_id == study_id, Metric.attempt == Trial.attempt)
        )
        n = s.scalar(select(func.count()).select_from(Trial).where(Trial.study_id == study_id))
    assert first is not None and last is not None, "the study ran no trial"
    return Result(
        replicas=len(replicas),
        processes=processes,
        trials=int(n or 0),
        wall=(last - first).total_seconds(),
        train_seconds=float(seconds or 0.0),
        routes=+routes,
        replica_cpu=cpu,
        connections=connections,
    )


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds-per-trial", type=float, default=2.0)
    parser.add_argument("--trials-per-process", type=int, default=6)
    parser.add_argument("--tiny-trials", type=int, default=400)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter trials (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.seconds_per_trial, args.trials_per_process, args.tiny_trials = 0.5, 2, 60
    reason = netns_unavailable()
    if reason:
        sys.exit(f"scale_out needs network namespaces: {reason}")
    # SIGTERM unwinds like Ctrl-C: the namespaces, processes and database are removed.
    signal.signal(signal.SIGTERM, _interrupt)
    load_before = os.getloadavg()[0]

    # epochs for about --seconds-per-trial of training alone
    probe = reference_seconds(10)
    epochs = max(1, round(10 * args.seconds_per_trial / probe))
    alone = reference_seconds(epochs)
    cores = os.cpu_count() or 1
    print(f"{cores} cores; one trial alone (1 BLAS thread, no service): {alone:.2f} s", end="")
    print(f" ({epochs} epochs)")

    # (label, processes, spec); the warm-up (caches, first imports) is not reported
    def real(processes: int, checkpoint_every: int = 10) -> dict[str, Any]:
        spec = real_spec(args.trials_per_process * processes, epochs)
        spec["execution"]["checkpoint_every"] = checkpoint_every
        return spec

    plan = [
        ("warm-up", 2, real(1)),
        ("real", 1, real(1)),
        ("real", 2, real(2)),
        ("real", 4, real(4)),
        # checkpoint_every past the last epoch: no checkpoint is sent
        ("real, no checkpoints", 1, real(1, checkpoint_every=epochs + 1)),
        ("real, no checkpoints", 2, real(2, checkpoint_every=epochs + 1)),
        ("real, no checkpoints", 4, real(4, checkpoint_every=epochs + 1)),
        ("tiny", 4, tiny_spec(args.tiny_trials)),
    ]
    admin, worker_token = secrets.token_hex(16), secrets.token_hex(16)
    tokens = f"admin:read,write:{admin};workers:worker:{worker_token}"
    runs: list[tuple[str, Result]] = []
    with tempfile.TemporaryDirectory() as tmp, Network(hosts=2) as network:
        for n_replicas in (1, 2):
            db_url = fresh_postgres()
            procs = Processes(Path(tmp) / f"r{n_replicas}")
            try:
                from service import migrate

                migrate.upgrade(db_url)
                replicas = [
                    start_replica(
                        procs,
                        f"replica-{i}",
                        host=network.service_address,
                        db_url=f"{db_url}?application_name=caviar-replica-{i}",
                        tokens=tokens,
                    )
                    for i in range(n_replicas)
                ]
                for label, processes, spec in plan:
                    r = run_study(
                        spec=spec,
                        replicas=replicas,
                        network=network,
                        procs=procs,
                        processes=processes,
                        admin=admin,
                        worker_token=worker_token,
                        db_url=db_url,
                    )
                    print(
                        f"{label:<20} replicas={r.replicas} processes={r.processes} "
                        f"trials={r.trials}: {r.throughput:.3f} trials/s, "
                        f"overhead {r.overhead * 1000:.0f} ms/trial",
                        flush=True,
                    )
                    if label != "warm-up":
                        runs.append((label, r))
            finally:
                procs.stop_all()
                drop_postgres(db_url)
    report(runs, alone, cores)
    # Other work on the machine takes cores from the run: say how busy it was.
    print(f"\nload average (1 min) before {load_before:.2f}, after {os.getloadavg()[0]:.2f}")


def report(runs: list[tuple[str, Result]], alone: float, cores: int) -> None:
    print()
    print(f"Real trials ({alone:.2f} s each when alone); {cores} cores for everything")
    print(
        f"{'trials':<21} {'replicas':>8} {'procs':>5} {'n':>4} {'wall s':>7} {'trials/s':>9} "
        f"{'vs 1 proc':>9} {'train s/trial':>13} {'overhead ms/trial':>17} {'req/trial':>9}"
    )
    for label, r in runs:
        if label == "tiny":
            continue
        base = next(b for lb, b in runs if lb == label and b.replicas == r.replicas)
        print(
            f"{label:<21} {r.replicas:>8} {r.processes:>5} {r.trials:>4} {r.wall:>7.1f} "
            f"{r.throughput:>9.3f} {r.throughput / base.throughput:>8.2f}x "
            f"{r.train_seconds / r.trials:>13.2f} {r.overhead * 1000:>17.0f} "
            f"{r.requests / r.trials:>9.1f}"
        )
    print()
    print("The service's cost per trial (1-epoch trials, 4 worker processes)")
    print(
        f"{'replicas':>8} {'trials/s':>9} {'req/trial':>9} {'req/s/replica':>14} "
        f"{'replica CPU ms/req':>19} {'replica CPU ms/trial':>21} {'peak PG conns/replica':>22}"
    )
    for label, t in runs:
        if label != "tiny":
            continue
        conns = statistics.mean(t.connections.values()) if t.connections else 0.0
        print(
            f"{t.replicas:>8} {t.throughput:>9.1f} {t.requests / t.trials:>9.2f} "
            f"{t.requests / t.wall / t.replicas:>14.1f} "
            f"{t.replica_cpu * 1000 / max(t.requests, 1):>19.2f} "
            f"{t.replica_cpu * 1000 / t.trials:>21.2f} {conns:>22.1f}"
        )
    print()
    print("Worker requests per trial, by route (registrations and idle claims included)")
    for label, r in runs:
        print(f"  {label:<21} replicas={r.replicas} procs={r.processes}: {r.per_trial()}")
    print("Replica CPU per request, and peak PostgreSQL connections per replica (pool + LISTEN)")
    for label, r in runs:
        cpu = r.replica_cpu * 1000 / max(r.requests, 1)
        peak = dict(sorted(r.connections.items()))
        print(f"  {label:<21} replicas={r.replicas} procs={r.processes}: {cpu:.1f} ms, {peak}")


if __name__ == "__main__":
    main()

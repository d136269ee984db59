"""Benchmark: the REST API under read load while workers report, on SQLite.

Run from the repository root:

    python bench/api_load.py [--rate 500] [--seconds 20] [--writers 2] [--write-rate 50]

What it does, all on this machine:

- serves the API with `caviar serve` (one process, no embedded workers) on a fresh SQLite
  database and queues a few studies totalling `--trials` trials;
- starts `--writers` processes that play workers over HTTP (register, claim, report
  epochs in batches, finish) at `--write-rate` reports a second in all (50: a busy fleet
  of workers sending a batch of epochs every second or two), so reads contend with a
  steady stream of write transactions, each taking SQLite's write lock;
- offers reads at a fixed `--rate` (open loop: each request has a scheduled start, and
  latency counts from that start, so a stalled service cannot hide its queue behind fewer
  requests): a study's status (`GET /api/studies/{id}`) and a page of its trials
  (`GET /api/studies/{id}/trials`, by number or best first), with up to `--clients`
  requests in flight.

It prints requests per second achieved, p50/p90/p99/max latency per route and overall,
the writers' throughput, and every error. Goal (issue 6): p99 < 50 ms at 500 req/s on a
2-core machine, with no error. The exit code is 1 if the goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
WARMUP_SECONDS = 3.0  # excluded from the numbers: connection setup, first queries, JIT of caches


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spec(name: str, trials: int) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": {"name": "moons", "n_samples": 200},
        "model": {"hidden_layers": [8, 4], "optimizer": "adam", "epochs": 20},
        "space": {
            "learning_rate": {"type": "float", "low": 1e-4, "high": 1.0, "scale": "log"},
            "beta1": {"type": "float", "low": 0.8, "high": 0.999, "scale": "one_minus_log"},
            "hidden_layers.0": {"type": "int", "low": 2, "high": 32},
        },
        "strategy": {"type": "random", "trials": trials},
        "objective": {"metric": "dev_accuracy", "direction": "maximize"},
        "execution": {"max_parallel": 64, "seed": 1},
    }


# -- writers: worker processes over HTTP, without the training -------------------------------


def _writer(url: str, stop: Any, counter: Any, index: int, rate: float) -> None:
    """Claim trials and report 20 epochs each in batches of 5, then finish, at `rate`
    writes a second (0: as fast as the service answers)."""
    rng = random.Random(index)
    interval = 1.0 / rate if rate > 0 else 0.0
    next_at = time.perf_counter()

    def pace() -> None:
        nonlocal next_at
        next_at += interval
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.perf_counter()  # behind: do not burst to catch up

    with httpx.Client(base_url=url, timeout=30) as client:
        wid = client.post("/api/worker/register", json={"name": f"bench-{index}"}).json()[
            "worker_id"
        ]
        while not stop.is_set():
            claimed = client.post(
                "/api/worker/claim", json={"worker_id": wid, "max_trials": 2}
            ).json()["trials"]
            if not claimed:
                time.sleep(0.05)
                continue
            for t in claimed:
                acc = rng.uniform(0.5, 1.0)
                epochs = [
                    {
                        "epoch": e,
                        "train_cost": 1 - acc * e / 20,
                        "train_accuracy": acc * e / 20,
                        "dev_cost": 1 - acc * e / 20,
                        "dev_accuracy": acc * e / 20,
                        "learning_rate": 0.01,
                        "seconds": 0.01,
                    }
                    for e in range(1, 21)
                ]
                base = f"/api/worker/trials/{t['trial_id']}"
                lease = t["lease_token"]
                for i in range(0, 15, 5):
                    pace()
                    client.post(
                        f"{base}/metrics", json={"lease_token": lease, "epochs": epochs[i : i + 5]}
                    )
                    with counter.get_lock():
                        counter.value += 1
                pace()
                client.post(
                    f"{base}/finish",
                    json={"lease_token": lease, "outcome": "completed", "epochs": epochs[15:]},
                )
                with counter.get_lock():
                    counter.value += 1


# -- readers ----------------------------------------------------------------------------------


@dataclass
class Results:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    sent: int = 0


class Connection:
    """One keep-alive HTTP/1.1 connection, GET only, written for this benchmark.

    httpx costs about a millisecond of CPU per request; at 500 requests a second on two
    cores, that would be the client competing with the service it measures. A GET needs a
    request line and a Content-Length read: a tenth of the cost.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: str) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {target} HTTP/1.1\r\nhost: {self.host}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        return status, body


async def _read_load(
    url: str, study_ids: list[int], *, rate: float, seconds: float, clients: int
) -> Results:
    results = Results()
    host, port = url.removeprefix("http://").split(":")
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(clients):
        pool.put_nowait(Connection(host, int(port)))
    rng = random.Random(0)
    routes = [
        ("study", "/api/studies/{}"),
        ("trials", "/api/studies/{}/trials?limit=50"),
        ("trials best-first", "/api/studies/{}/trials?limit=20&sort=value"),
    ]

    async def one(scheduled: float, name: str, target: str, measure: bool) -> None:
        conn = await pool.get()  # waiting for a free connection counts in the latency
        try:
            status, body = await conn.get(target)
            ok = status == 200
            if not ok:
                results.errors.append(f"{name}: {status} {body[:200]!r}")
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            ok = False
            conn.writer = None  # reconnect next time
            results.errors.append(f"{name}: {type(exc).__name__}: {exc}")
        finally:
            pool.put_nowait(conn)
        if measure and ok:
            results.latencies.setdefault(name, []).append(time.perf_counter() - scheduled)

    tasks = []
    start = time.perf_counter() + 0.1
    total = int(rate * (seconds + WARMUP_SECONDS))
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        name, template = rng.choice(routes)
        measure = i >= rate * WARMUP_SECONDS
        results.sent += int(measure)
        target = template.format(rng.choice(study_ids))
        tasks.append(asyncio.create_task(one(scheduled, name, target, measure)))
    await asyncio.gather(*tasks)
    return results


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), for CPU per request."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=500.0, help="reads offered per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured duration")
    parser.add_argument("--clients", type=int, default=64, help="reads in flight at most")
    parser.add_argument("--writers", type=int, default=2, help="worker processes reporting")
    parser.add_argument(
        "--write-rate",
        type=float,
        default=50.0,
        help="metrics and finish reports per second, all writers together (0: flat out)",
    )
    parser.add_argument("--trials", type=int, default=2000, help="trials queued in all")
    parser.add_argument("--studies", type=int, default=5)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="caviar-api-load-"))
    db_url = f"sqlite:///{tmp / 'caviar.db'}"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "CAVIAR_DATABASE_URL": db_url,
        "CAVIAR_TOKENS": "",
        "CAVIAR_SUBMIT_BURST": "1000",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("BENCH_EXTRA_PATH", "")]),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "0"],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop = mp.get_context("spawn").Event()
    counter = mp.get_context("spawn").Value("q", 0)
    writers: list[Any] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(
                    f"the service did not start: {server.stderr.read() if server.stderr else ''}"
                )
            time.sleep(0.2)
        per_study = args.trials // args.studies
        study_ids = []
        for i in range(args.studies):
            r = httpx.post(f"{url}/api/studies", json=_spec(f"load-{i}", per_study), timeout=60)
            r.raise_for_status()
            study_ids.append(r.json()["id"])
        print(
            f"service on {url}, SQLite at {db_url}; {args.studies} studies x {per_study} trials; "
            f"{args.writers} writer processes; {args.rate:g} reads/s offered for "
            f"{args.seconds:g} s (+{WARMUP_SECONDS:g} s warm-up), up to {args.clients} in flight",
            flush=True,
        )
        ctx = mp.get_context("spawn")
        writers = [
            ctx.Process(
                target=_writer, args=(url, stop, counter, i, args.write_rate / max(1, args.writers))
            )
            for i in range(args.writers)
        ]
        for w in writers:
            w.start()
        time.sleep(1.0)  # writers under way before the reads start
        began = time.perf_counter()
        writes_before = counter.value
        cpu_before = _cpu_seconds(server.pid)
        results = asyncio.run(
            _read_load(url, study_ids, rate=args.rate, seconds=args.seconds, clients=args.clients)
        )
        elapsed = time.perf_counter() - began - WARMUP_SECONDS
        writes = counter.value - writes_before
        cpu = _cpu_seconds(server.pid) - cpu_before
        wall = time.perf_counter() - began
    finally:
        stop.set()
        for w in writers:
            w.join(timeout=10)
        server.terminate()
        server.wait(timeout=20)

    all_latencies = [v for values in results.latencies.values() for v in values]
    done = len(all_latencies)
    print(
        f"\n{'route':<20}{'requests':>10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'max ms':>10}"
    )
    for name, values in [*sorted(results.latencies.items()), ("all", all_latencies)]:
        print(
            f"{name:<20}{len(values):>10}{1000 * statistics.median(values):>10.1f}"
            f"{1000 * _pct(values, 0.9):>10.1f}{1000 * _pct(values, 0.99):>10.1f}"
            f"{1000 * max(values):>10.1f}"
        )
    achieved = done / elapsed
    p99 = _pct(all_latencies, 0.99) * 1000
    print(
        f"\nreads: {achieved:.0f} req/s achieved of {args.rate:g} offered; "
        f"writes (metrics + finish): {writes / (elapsed + WARMUP_SECONDS):.0f} req/s; "
        f"errors: {len(results.errors)}"
    )
    served = sum(len(v) for v in results.latencies.values()) * (elapsed + WARMUP_SECONDS) / elapsed
    print(
        f"service process: {cpu / wall:.2f} cores busy, "
        f"{1000 * cpu / max(1, served + writes):.2f} ms of CPU per request (reads and writes)"
    )
    for e in results.errors[:10]:
        print(f"  {e}")
    met = p99 < 50 and not results.errors and achieved >= 0.98 * args.rate
    verdict = "met" if met else "MISSED"
    print(f"goal (p99 < 50 ms at {args.rate:g} req/s, no error): {verdict} (p99 {p99:.1f} ms)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())

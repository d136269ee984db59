"""Benchmark: does the service stay responsive while expensive requests are in flight?

Run from the repository root:

    python bench/safety_load.py [--uploads 4] [--upload-mb 20] [--claim-mb 50] [--valid]

What it does, all on this machine, on loopback only:

- serves the API with `caviar serve` (one process, no embedded workers, a fresh SQLite
  database, tokens configured: one read/write token, one worker token);
- a worker registers and leases one trial of a long study, so it has a heartbeat to send;
- then, all at once: `--uploads` CSV uploads of `--upload-mb` MB each (over the row cap,
  as in issue 17's attack: refused in the end; with `--valid`, files within every cap that
  are parsed whole and stored) and one `--claim-mb` MB worker claim body (64 finished
  entries of tens of thousands of epochs, under fake lease tokens);
- while they are in flight, probes `/healthz` and the trial's heartbeat every 50 ms.

It prints the p50 and max latency of each probe during the load, how each expensive
request ended and how long it took. Goal (issue 17): every probe within 1 s. Everything is
bounded: `--uploads` at most 8, bodies within the service's own caps, and the whole run
within `--timeout` seconds. The exit code is 1 if the goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RW = "bench-rw-secret-0123456789abcdef"
WORKER = "bench-worker-secret-0123456789ab"
GOAL_SECONDS = 1.0
PROBE_EVERY = 0.05


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def csv_body(megabytes: float, seed: int, *, valid: bool) -> bytes:
    """A CSV of about `megabytes` MB. Valid: 190,000 rows (under max_samples) of wide rows;
    else short rows, several times the row cap."""
    target = int(megabytes * 1_000_000)
    columns = 10 if valid else 2
    rows = 190_000 if valid else max(1, target // 12)
    header = ",".join(f"x{j}" for j in range(columns)) + ",y\n"
    width = max(1, (target // rows - 3) // columns - 1)  # digits per value to fill the size
    lines = [header]
    for i in range(rows):
        values = ",".join(
            str((i * (j + 7) + seed) % 10**width).zfill(width) for j in range(columns)
        )
        lines.append(f"{values},{(i + seed) % 2}\n")
    return "".join(lines).encode()


def claim_body(worker_id: str, megabytes: float) -> bytes:
    """A claim reporting 64 finished trials under fake leases, `megabytes` MB in all."""
    per_entry = int(megabytes * 1_000_000 / 64 / 16)  # {"epoch":12345}, and a comma
    entries = [
        {
            "trial_id": 1_000_000 + i,
            "lease_token": f"fake-{i}",
            "outcome": "completed",
            "epochs": [{"epoch": e + 1} for e in range(per_entry)],
        }
        for i in range(64)
    ]
    body = {"worker_id": worker_id, "max_trials": 0, "finished": entries}
    return json.dumps(body, separators=(",", ":")).encode()


class Probe(threading.Thread):
    """Calls `request` every PROBE_EVERY seconds until stopped; keeps each latency."""

    def __init__(self, name: str, request: Any) -> None:
        super().__init__(daemon=True, name=name)
        self.request = request
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.perf_counter()
            try:
                r = self.request()
                if r.status_code >= 400:
                    self.errors.append(f"{r.status_code} {r.text[:100]}")
            except httpx.HTTPError as exc:
                self.errors.append(type(exc).__name__)
            self.latencies.append(time.perf_counter() - start)
            self.stop.wait(PROBE_EVERY)


def _start_service(tmp: Path, port: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "CAVIAR_DATABASE_URL": f"sqlite:///{tmp / 'caviar.db'}",
        "CAVIAR_TOKENS": f"bench:read,write:{RW};w:worker:{WORKER}",
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1"]
    return subprocess.Popen(
        [*command, "--port", str(port), "--workers", "0"],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_until_up(url: str, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            err = server.stderr.read() if server.stderr and server.poll() is not None else ""
            raise SystemExit(f"the service did not start: {err}")
        time.sleep(0.2)


def _leased_trial(api: httpx.Client, worker: httpx.Client) -> tuple[str, int, str]:
    """A registered worker and the trial it leased: (worker id, trial id, lease token)."""
    spec = {
        "name": "long",
        "dataset": {"name": "moons", "n_samples": 200},
        "model": {"hidden_layers": [8], "epochs": 1000},
        "strategy": {"type": "random", "trials": 1},
    }
    api.post("/api/studies", json=spec).raise_for_status()
    worker_id = worker.post("/api/worker/register", json={"name": "bench"}).json()["worker_id"]
    claimed = worker.post("/api/worker/claim", json={"worker_id": worker_id, "max_trials": 1})
    claimed.raise_for_status()
    trial = claimed.json()["trials"][0]
    return worker_id, int(trial["trial_id"]), str(trial["lease_token"])


def _heavy(name: str, send: Any, results: dict[str, str]) -> threading.Thread:
    def run() -> None:
        start = time.perf_counter()
        try:
            r = send()
            outcome = f"{r.status_code} {r.text[:90]!r}"
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        results[name] = f"{time.perf_counter() - start:6.2f} s  {outcome}"

    return threading.Thread(target=run, name=name, daemon=True)


def _summary(name: str, probe: Probe) -> tuple[str, float]:
    lat = probe.latencies or [float("nan")]
    worst = max(lat)
    line = (
        f"{name:<11} {len(lat):5d} calls  p50 {statistics.median(lat) * 1000:8.1f} ms  "
        f"max {worst * 1000:8.1f} ms  errors {len(probe.errors)}"
        + (f" (first: {probe.errors[0]})" if probe.errors else "")
    )
    return line, worst


def _requests(
    args: argparse.Namespace, api: httpx.Client, worker: httpx.Client, worker_id: str
) -> tuple[list[threading.Thread], dict[str, str]]:
    """The expensive requests, each on a thread not started yet, and where they report."""
    kind = "within every cap" if args.valid else "over the row cap"
    print(f"building {args.uploads} CSV bodies of {args.upload_mb:g} MB ({kind}) and a "
          f"{args.claim_mb:g} MB claim body...", flush=True)  # fmt: skip
    bodies = [csv_body(args.upload_mb, i, valid=args.valid) for i in range(args.uploads)]
    claim = claim_body(worker_id, args.claim_mb)
    print(f"uploads {[len(b) for b in bodies]} bytes, claim {len(claim)} bytes", flush=True)
    results: dict[str, str] = {}

    def upload(body: bytes) -> httpx.Response:
        return api.post(
            "/api/datasets",
            content=body,
            params={"label_column": "y", "name": "load.csv"},
            headers={"content-type": "text/csv"},
            timeout=args.timeout,
        )

    def report() -> httpx.Response:
        headers = {"content-type": "application/json"}
        return worker.post("/api/worker/claim", content=claim, headers=headers)

    heavy = [
        _heavy(f"upload {i + 1}", lambda b=body: upload(b), results)
        for i, body in enumerate(bodies)
    ]
    return [*heavy, _heavy("claim", report, results)], results


def _report(in_flight: float, results: dict[str, str], probes: list[Probe]) -> bool:
    print(f"\nexpensive requests in flight for {in_flight:.1f} s:")
    for name in sorted(results):
        print(f"  {name:<9} {results[name]}")
    print(f"\nprobes every {PROBE_EVERY * 1000:.0f} ms while they were in flight "
          f"(goal: max within {GOAL_SECONDS:g} s):")  # fmt: skip
    worst = 0.0
    for probe in probes:
        line, probe_worst = _summary(probe.name, probe)
        worst = max(worst, probe_worst)
        print(f"  {line}")
    met = worst <= GOAL_SECONDS and all(not p.errors for p in probes)
    print(f"\ngoal {'met' if met else 'MISSED'}")
    return met


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="caviar-safety-load-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start_service(tmp, port)
    try:
        _wait_until_up(url, server)
        api = httpx.Client(base_url=url, headers={"authorization": f"Bearer {RW}"}, timeout=60)
        worker = httpx.Client(
            base_url=url, headers={"authorization": f"Bearer {WORKER}"}, timeout=args.timeout
        )
        worker_id, trial_id, lease = _leased_trial(api, worker)
        heavy, results = _requests(args, api, worker, worker_id)
        beat = f"/api/worker/trials/{trial_id}/heartbeat"
        probes = [
            Probe("healthz", lambda: httpx.get(f"{url}/healthz", timeout=args.timeout)),
            Probe("heartbeat", lambda: worker.post(beat, json={"lease_token": lease})),
        ]
        for probe in probes:
            probe.start()
        time.sleep(0.5)  # a few calls at rest first
        started = time.perf_counter()
        for t in heavy:
            t.start()
        for t in heavy:
            t.join(max(1.0, args.timeout - (time.perf_counter() - started)))
        in_flight = time.perf_counter() - started
        for probe in probes:
            probe.stop.set()
            probe.join(5)
        return 0 if _report(in_flight, results, probes) else 1
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=4, choices=range(1, 9), metavar="1-8")
    parser.add_argument("--upload-mb", type=float, default=20.0, help="at most 20 (the cap)")
    parser.add_argument(
        "--claim-mb",
        type=float,
        default=50.0,
        help="at most 52; worker bodies over 16 MB are refused (413) before they are read, "
        "so --claim-mb 15 exercises the checks that read one",
    )
    parser.add_argument("--valid", action="store_true", help="uploads within every cap")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the run")
    args = parser.parse_args()
    args.upload_mb = min(args.upload_mb, 20.9)
    args.claim_mb = min(args.claim_mb, 52.0)
    sys.exit(run(args))


if __name__ == "__main__":
    main()

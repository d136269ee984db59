"""Machines for multi-host tests: network namespaces behind a bridge, replicas and worker pools.

Each worker "host" is a Linux network namespace of its own, joined by a veth pair to a
bridge in this (the root) namespace, like machines on one switch. The bridge carries
the only address the service replicas bind to, so a worker host reaches the service
only over its own link, and taking that link down partitions exactly that host. The
addresses are in 10.77.0.0/16, chosen per run among subnets not in use, and exist only
on the bridge and inside the namespaces made here; everything is removed on exit, even
when the test fails half-way. PostgreSQL stays on 127.0.0.1: the replicas run in the
root namespace and reach it there.

Every process is started in a session of its own and stopped by its process group, so a
worker pool's children never outlive the test. bench/scale_out.py uses the same module.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.integration.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CAVIAR = [sys.executable, "-m", "service.cli"]
PREFIX = "10.77"


def ip(*args: str) -> str:
    """Run `ip ARGS`; raises CalledProcessError with ip's message on failure."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(
            done.returncode, ["ip", *args], done.stdout, done.stderr
        )
    return done.stdout


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None if they can."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    tag = secrets.token_hex(3)
    try:
        ip("netns", "add", f"caviar-probe-{tag}")
    except subprocess.CalledProcessError as exc:
        return f"`ip netns add` is not permitted here: {exc.stderr.strip()}"
    ip("netns", "del", f"caviar-probe-{tag}")
    try:
        ip("link", "add", "name", f"cvp{tag}", "type", "bridge")
    except subprocess.CalledProcessError as exc:
        return f"no bridge can be made here: {exc.stderr.strip()}"
    ip("link", "del", f"cvp{tag}")
    return None


def _free_subnet() -> int:
    """A third octet S such that no interface of this machine has an address in 10.77.S.0/24."""
    used = ip("-o", "-4", "addr", "show")
    free = [s for s in range(1, 255) if f" {PREFIX}.{s}." not in used]
    if not free:
        raise RuntimeError(f"every {PREFIX}.S.0/24 subnet is in use")
    return secrets.choice(free)


@dataclass
class Network:
    """A bridge with the service's address and `hosts` namespaces, each on its own link."""

    hosts: int
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    subnet: int = 0
    created: list[tuple[str, str]] = field(default_factory=list)  # ("netns" | "link", name)

    @property
    def bridge(self) -> str:
        return f"cv{self.tag}br"

    @property
    def service_address(self) -> str:
        """Where replicas listen: on the bridge, reachable from every host's link."""
        return f"{PREFIX}.{self.subnet}.1"

    def namespace(self, i: int) -> str:
        return f"caviar-{self.tag}-h{i}"

    def link_name(self, i: int) -> str:
        """The bridge side of host i's veth pair: taking it down pulls that host's cable."""
        return f"cv{self.tag}h{i}"

    def address(self, i: int) -> str:
        return f"{PREFIX}.{self.subnet}.{10 + i}"

    def __enter__(self) -> Network:
        try:
            self.subnet = _free_subnet()
            ip("link", "add", "name", self.bridge, "type", "bridge")
            self.created.append(("link", self.bridge))
            ip("addr", "add", f"{self.service_address}/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            for i in range(self.hosts):
                ns, outside, inside = self.namespace(i), self.link_name(i), f"cv{self.tag}n{i}"
                ip("netns", "add", ns)
                self.created.append(("netns", ns))
                ip("link", "add", outside, "type", "veth", "peer", "name", inside)
                self.created.append(("link", outside))
                ip("link", "set", inside, "netns", ns)
                ip("link", "set", outside, "master", self.bridge)
                ip("link", "set", outside, "up")
                ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", inside)
                ip("-n", ns, "link", "set", inside, "up")
                ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove what was made, newest first; a namespace takes its end of the veth along."""
        for kind, name in reversed(self.created):
            try:
                if kind == "netns":
                    ip("netns", "del", name)
                else:
                    ip("link", "del", name)
            except subprocess.CalledProcessError:
                pass  # already gone with its namespace or peer
        self.created.clear()

    def set_link(self, i: int, up: bool) -> None:
        ip("link", "set", self.link_name(i), "up" if up else "down")

    def run_in(self, i: int) -> list[str]:
        """The command prefix that runs a program on host i."""
        return ["ip", "netns", "exec", self.namespace(i)]

    def can_reach(self, i: int, host: str, port: int) -> bool:
        code = f"import socket; socket.create_connection(({host!r}, {port}), timeout=2).close()"
        done = subprocess.run([*self.run_in(i), sys.executable, "-c", code], capture_output=True)
        return done.returncode == 0


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Processes:
    """Processes started by a test, each in a session of its own; all stopped at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            list(args),
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()  # the child has its own descriptor
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    @staticmethod
    def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # the session leader's pid is its group's id

    def stop_all(self, grace: float = 15.0) -> None:
        """SIGTERM every group (pools hand their trials back), then SIGKILL what is left."""
        for proc in self.started:
            self.signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.started:
            self.signal_group(proc, signal.SIGKILL)  # the group: a pool's orphans too
            if proc.poll() is None:
                proc.wait(timeout=10)


@dataclass
class Replica:
    """A `caviar serve` process."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        Processes.signal_group(self.proc, signal.SIGKILL)
        self.proc.wait(timeout=10)


def service_env(db_url: str, **settings: object) -> dict[str, str]:
    env = {**os.environ, "CAVIAR_DATABASE_URL": db_url}
    for key, value in settings.items():
        env[f"CAVIAR_{key.upper()}"] = str(value)
    return env


def start_replica(
    procs: Processes, name: str, *, host: str, db_url: str, **settings: object
) -> Replica:
    port = free_port(host)
    args = [*CAVIAR, "serve", "--host", host, "--port", str(port), "--workers", "0"]
    proc = procs.start(name, args, service_env(db_url, **settings))
    replica = Replica(name, f"http://{host}:{port}", proc)
    wait_until(lambda: replica.ready() or proc.poll() is not None, 60, f"{name} to be ready")
    if proc.poll() is not None:
        raise RuntimeError(f"{name} exited with {proc.returncode}:\n{procs.log(name)}")
    return replica


def start_workers(
    procs: Processes,
    name: str,
    *,
    urls: Sequence[str],
    token: str | None = None,
    processes: int = 1,
    claim_batch: int = 1,
    prefix: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """`caviar worker` with the replicas' URLs, run under `prefix` (a namespace's exec)."""
    args = [
        *prefix,
        *CAVIAR,
        "worker",
        "--api",
        ",".join(urls),
        "--processes",
        str(processes),
        "--claim-batch",
        str(claim_batch),
    ]
    env = {**os.environ}
    if token:
        env["CAVIAR_TOKEN"] = token
    return procs.start(name, args, env)


@dataclass
class Received:
    id: int
    type: str
    data: dict[str, Any]
    at: float  # time.monotonic() when it arrived
    url: str


class EventStream:
    """Follows a study's server-sent events in a thread, as a dashboard would.

    When the replica it reads from goes away it resumes on the next URL with
    `Last-Event-ID`, the way a browser's EventSource reconnects through a load balancer.
    """

    def __init__(self, urls: Sequence[str], study_id: int, token: str | None = None) -> None:
        self.urls = list(urls)
        self.study_id = study_id
        self.headers = {"authorization": f"Bearer {token}"} if token else {}
        self.received: list[Received] = []
        self.connected = threading.Event()
        self.ended = threading.Event()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="event-stream")
        self.thread.start()

    def _run(self) -> None:
        index, failures = 0, 0
        while not self._stop.is_set() and failures < 50:
            url = self.urls[index % len(self.urls)]
            headers = dict(self.headers)
            if self.received:
                headers["last-event-id"] = str(self.received[-1].id)
            try:
                self._follow(url, headers)
                self.ended.set()
                return
            except (httpx.HTTPError, OSError) as exc:
                self.errors.append(f"{url}: {type(exc).__name__}: {exc}")
                failures += 1
                index += 1
                time.sleep(0.2)

    def _follow(self, url: str, headers: dict[str, str]) -> None:
        timeout = httpx.Timeout(5.0, read=30.0)
        path = f"{url}/api/studies/{self.study_id}/events"
        with httpx.stream("GET", path, headers=headers, timeout=timeout) as response:
            response.raise_for_status()
            self.connected.set()
            fields: dict[str, str] = {}
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if not line:
                    if "event" in fields:
                        self.received.append(
                            Received(
                                int(fields["id"]),
                                fields["event"],
                                json.loads(fields["data"]),
                                time.monotonic(),
                                url,
                            )
                        )
                    fields = {}
                    continue
                if line.startswith(":"):
                    continue
                key, _, value = line.partition(": ")
                fields[key] = value
        # A stream that ends cleanly has sent every event of an ended study.

    def stop(self) -> None:
        """Stop following; the thread leaves at the stream's next line or when it breaks."""
        self._stop.set()
        self.thread.join(timeout=1)

    def ids(self) -> list[int]:
        return [r.id for r in self.received]


def study_event_ids(db_url: str, study_id: int) -> list[tuple[int, str]]:
    """Every event of the study in the database, in id order."""
    from sqlalchemy import select

    from service.db import get_database
    from service.models import Event

    with get_database(db_url).session(write=False) as s:
        rows = s.execute(
            select(Event.id, Event.type).where(Event.study_id == study_id).order_by(Event.id)
        ).all()
    return [(r.id, r.type) for r in rows]


def requests_served(replica: Replica, route: str, token: str | None = None) -> int:
    """How many requests to `route` the replica answered, from its Prometheus /metrics."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    text = httpx.get(f"{replica.url}/metrics", headers=headers, timeout=10).text
    total = 0
    for line in text.splitlines():
        if line.startswith("caviar_http_request_duration_seconds_count{") and (
            f'route="{route}"' in line
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total

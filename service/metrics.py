"""Prometheus metrics: request latency, lease expiries, and trial counts read at scrape time.

Counters and the latency histogram live in one process-wide registry (`REGISTRY`), not
prometheus_client's global default, so importing this module twice in tests or beside
another library never collides. Gauges that describe the database (trials by status,
queue depth) are not kept in memory at all: a collector queries them on each scrape, so
every replica reports the same truth however the trials got where they are.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db import Database
from service.models import Study, StudyStatus, Trial, TrialStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REGISTRY = CollectorRegistry(auto_describe=True)

# The reaper increments this by the number of trials whose lease it found expired
# (a worker that died or lost the network): a rising rate means workers are unhealthy.
LEASE_EXPIRIES = Counter(
    "caviar_lease_expiries",
    "Trials whose worker lease expired and were taken back by the reaper.",
    registry=REGISTRY,
)

REQUEST_LATENCY = Histogram(
    "caviar_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by route template.",
    ("method", "route", "status"),
    # Reads should stay well under 50 ms; the upper buckets catch uploads and slow disks.
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)

SUBMISSIONS_REFUSED = Counter(
    "caviar_submissions_rate_limited",
    "Submissions answered 429 because their token exceeded the submission rate.",
    registry=REGISTRY,
)


class DatabaseCollector(Collector):
    """Trials by status and the queue's depth, counted in the database at scrape time."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily(
            "caviar_trials", "Trials in each status, across all studies.", labels=["status"]
        )
        depth = GaugeMetricFamily(
            "caviar_queue_depth", "Queued trials of studies that are still queued or running."
        )
        studies = GaugeMetricFamily("caviar_studies", "Studies in each status.", labels=["status"])
        with self.db.session(write=False) as s:
            trials = dict.fromkeys(TrialStatus, 0)
            for status, n in s.execute(select(Trial.status, func.count()).group_by(Trial.status)):
                trials[TrialStatus(status)] = n
            queued = s.scalar(
                select(func.count())
                .select_from(Trial)
                .join(Study, Study.id == Trial.study_id)
                .where(
                    Trial.status == TrialStatus.queued,
                    Study.status.in_([StudyStatus.queued, StudyStatus.running]),
                )
            )
            study_counts = dict.fromkeys(StudyStatus, 0)
            for study_status, n in s.execute(
                select(Study.status, func.count()).group_by(Study.status)
            ):
                study_counts[StudyStatus(study_status)] = n
        for key, n in trials.items():
            by_status.add_metric([key.value], n)
        for skey, n in study_counts.items():
            studies.add_metric([skey.value], n)
        depth.add_metric([], queued or 0)
        yield by_status
        yield depth
        yield studies


def exposition(db: Database) -> bytes:
    """The text a Prometheus scrape receives: process-wide metrics, then the database's."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(DatabaseCollector(db))
    return generate_latest(REGISTRY) + generate_latest(scrape)


class LatencyMiddleware:
    """Observes each HTTP request's duration under its route template, never its raw path.

    Raw paths (`/api/trials/123`) would make one time series per id; the template
    (`/api/trials/{trial_id}`) keeps the label set small. Event streams are left out:
    they last as long as the study, which is not latency.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_template(scope)
            if not route.endswith("/events"):
                REQUEST_LATENCY.labels(scope["method"], route, str(status)).observe(
                    time.perf_counter() - began
                )


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    return "/static" if scope.get("path", "").startswith("/static/") else "unmatched"

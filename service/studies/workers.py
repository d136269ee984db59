"""The workers the service has seen lately, and the trials each one runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import Database, db_epoch
from service.models import Trial, TrialStatus, Worker


def list_workers(*, db: Database, lease_seconds: float) -> list[dict[str, Any]]:
    """Workers seen in the last hour, most recent heartbeat first, with what each runs."""
    with db.session(write=False) as s:
        now = s.scalar(select(db_epoch())) or 0.0
        workers = s.scalars(
            select(Worker)
            .where(Worker.last_heartbeat > now - 3600)
            .order_by(Worker.last_heartbeat.desc())
            .limit(500)
        ).all()
        running: dict[str, list[int]] = {}
        for trial_id, worker_id in s.execute(
            select(Trial.id, Trial.worker_id).where(Trial.status == TrialStatus.running)
        ):
            if worker_id is not None:
                running.setdefault(worker_id, []).append(trial_id)
        return [
            {
                "id": w.id,
                "name": w.name,
                "host": w.host,
                "pid": w.pid,
                "alive": now - w.last_heartbeat < lease_seconds,
                "seconds_since_heartbeat": round(now - w.last_heartbeat, 3),
                "trials_done": w.trials_done,
                "running": running.get(w.id, []),
                "trainer": w.trainer,
                "entrypoints": list(w.entrypoints or []),
            }
            for w in workers
        ]


# A worker whose heartbeat is older than this is not counted as offering anything: its
# leases would have lapsed (the service's lease is a few heartbeats).
ALIVE_SECONDS = 60.0


def waiting_for(s: Session, study: dict[str, Any]) -> str | None:
    """Why a study of a task's function has queued trials that nobody runs: "waiting for a
    worker offering <entrypoint>" when no live worker offers it; else None."""
    entrypoint = (study.get("spec") or {}).get("task", {}).get("entrypoint")
    if not entrypoint or study["status"] not in ("queued", "running"):
        return None
    if not study["counts"].get("queued"):
        return None
    now = s.scalar(select(db_epoch())) or 0.0
    offered = s.scalars(
        select(Worker.entrypoints).where(
            Worker.last_heartbeat > now - ALIVE_SECONDS, Worker.entrypoints.is_not(None)
        )
    )
    if any(entrypoint in (names or ()) for names in offered):
        return None
    return f"waiting for a worker offering {entrypoint}"

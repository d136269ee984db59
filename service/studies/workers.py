"""The workers the service has seen lately, and the trials each one runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

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

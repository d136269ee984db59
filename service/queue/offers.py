"""What each worker runs, said when it registers: the trainer's trials, its entrypoints."""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import Database, db_epoch
from service.errors import NotFound
from service.models import Worker
from service.queue.tables import TOUCH_WORKER, WORKERS

_TOUCH_OFFERS = TOUCH_WORKER.returning(WORKERS.c.trainer, WORKERS.c.entrypoints)


@dataclass(frozen=True)
class Offers:
    """What a worker runs: the built-in trainer's trials (`trainer`), and those of studies
    whose task names one of `entrypoints` (functions installed where it runs)."""

    trainer: bool = True
    entrypoints: tuple[str, ...] = ()
    # One claim's own narrowing: only this study's trials (a program asking for a study's
    # trials one by one), None: every study the worker runs.
    study_id: int | None = None

    @classmethod
    def of_row(cls, trainer: Any, entrypoints: Any) -> Offers:
        return cls(trainer=trainer is not False, entrypoints=tuple(entrypoints or ()))

    @property
    def statements(self) -> tuple[bool, bool]:
        """The key of the statements that serve these offers (`claims._candidates`,
        `claims.waiting`): whether the trainer's trials, whether only one study's."""
        return self.trainer, self.study_id is not None

    def params(self) -> dict[str, Any]:
        """The bind parameters of the statements `_serving` builds."""
        params: dict[str, Any] = {"b_entrypoints": list(self.entrypoints)}
        if self.study_id is not None:
            params["b_only_study"] = self.study_id
        return params


def register_worker(
    *,
    db: Database,
    name: str,
    host: str | None,
    pid: int | None,
    offers: Offers = Offers(),
) -> str:
    worker_id = f"w-{secrets.token_hex(6)}"
    with db.session() as s:
        now = s.scalar(select(db_epoch()))
        s.add(
            Worker(
                id=worker_id,
                name=name,
                host=host or socket.gethostname(),
                pid=pid,
                started_at=now,
                last_heartbeat=now,
                trials_done=0,
                trainer=offers.trainer,
                entrypoints=list(offers.entrypoints) or None,
            )
        )
    return worker_id


def touch_worker(s: Session, worker_id: str) -> Offers:
    """Note that the worker is alive, and return what it runs; NotFound if no worker
    registered as `worker_id`."""
    row = s.connection().execute(_TOUCH_OFFERS, {"b_worker": worker_id}).one_or_none()
    if row is None:
        raise NotFound(f"worker {worker_id} is not registered; register it first")
    return Offers.of_row(row.trainer, row.entrypoints)

"""Storing a worker's checkpoints: lease-guarded, idempotent, checked, kept within bounds."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from sqlalchemy import select, update

from service.checkpoints import CAVIAR_CHECKPOINTS_KEPT, store_checkpoint
from service.db import Database
from service.errors import LeaseLost, NotFound
from service.models import Checkpoint, Trial
from service.queue import ResultError, claim_trials, register_worker
from service.settings import Settings
from service.studies import create_study
from tests.conftest import small_spec
from trainer import TrainConfig, load_dataset, train

EPOCHS = 8


def running_trials(db: Database, mode: str, n: int = 2) -> list[Any]:
    spec = small_spec(
        strategy={"type": "random", "trials": n},
        model={"hidden_layers": [2], "epochs": EPOCHS},
        execution={"mode": mode, "max_parallel": n, "checkpoint_every": 1, "seed": 1},
    )
    create_study(db=db, data=spec, settings=Settings(database_url=db.url))
    worker = register_worker(db=db, name="w", host="h", pid=1)
    return claim_trials(db=db, worker_id=worker, max_trials=n, lease_seconds=600)


@cache
def checkpoint_bytes(epoch: int) -> bytes:
    """A trainer checkpoint taken after `epoch` (of a tiny run; the service reads only its
    header, the worker that resumes from it the rest)."""
    taken: list[Any] = []
    dataset = load_dataset({"name": "moons", "n_samples": 20, "seed": 0})
    config = TrainConfig(hidden_layers=[2], epochs=EPOCHS, batch_size=0)
    train(config, dataset, checkpoint_every=1, on_checkpoint=taken.append)
    return bytes(taken[epoch - 1].to_bytes())


def store(db: Database, trial: Any, epoch: int, content: bytes | None = None) -> int:
    """Store a checkpoint for a claimed `trial` under its own lease."""
    return store_checkpoint(
        db=db,
        trial_id=trial.trial_id,
        lease_token=trial.lease_token,
        epoch=epoch,
        content=checkpoint_bytes(epoch) if content is None else content,
    )


def epochs_kept(db: Database, trial_id: int) -> list[int]:
    with db.session(write=False) as s:
        rows = s.scalars(
            select(Checkpoint.epoch).where(Checkpoint.trial_id == trial_id).order_by("epoch")
        )
        return list(rows)


def test_a_checkpoint_needs_the_lease_and_a_resent_one_is_stored_once(db: Database) -> None:
    (trial,) = running_trials(db, "panda", n=1)
    first = store(db, trial, 1)
    again = store(db, trial, 1)
    assert again == first and epochs_kept(db, trial.trial_id) == [1]
    with pytest.raises(LeaseLost):
        store_checkpoint(
            db=db,
            trial_id=trial.trial_id,
            lease_token="not-mine",
            epoch=2,
            content=checkpoint_bytes(2),
        )
    with pytest.raises(NotFound):
        store_checkpoint(db=db, trial_id=10**9, lease_token="x", epoch=1, content=b"y")
    assert epochs_kept(db, trial.trial_id) == [1]


def test_junk_bytes_and_epochs_beyond_the_trial_s_are_refused(db: Database) -> None:
    # Both were stored before: a fork from junk bytes was created (and failed only when a
    # worker loaded it), and an epoch past the trial's end stood in its checkpoint list.
    (trial,) = running_trials(db, "panda", n=1)
    for junk in (b"c", b"x" * 64, checkpoint_bytes(2)[:-40], b"PK\x03\x04" + bytes(200)):
        with pytest.raises(ResultError, match="not a trainer checkpoint"):
            store(db, trial, 2, junk)
    with pytest.raises(ResultError, match="epoch 3"):  # bytes of epoch 3 said to be epoch 2
        store(db, trial, 2, checkpoint_bytes(3))
    with pytest.raises(ResultError, match=f"beyond the trial's {EPOCHS} epochs"):
        store(db, trial, EPOCHS + 1, checkpoint_bytes(EPOCHS))
    assert epochs_kept(db, trial.trial_id) == []


def test_panda_keeps_every_checkpoint_caviar_the_latest(db: Database) -> None:
    (babysat,) = running_trials(db, "panda", n=1)
    for epoch in range(1, 6):
        store(db, babysat, epoch)
    assert epochs_kept(db, babysat.trial_id) == [1, 2, 3, 4, 5]

    one, other = running_trials(db, "caviar", n=2)
    first = store(db, one, 1)
    # Another trial of the study resumes from the first one (a fork, say): it must stay.
    with db.session() as s:
        s.execute(
            update(Trial).where(Trial.id == other.trial_id).values(resume_checkpoint_id=first)
        )
    for epoch in range(2, 7):
        store(db, one, epoch)
        store(db, other, epoch)
    assert CAVIAR_CHECKPOINTS_KEPT == 2
    assert epochs_kept(db, one.trial_id) == [1, 5, 6]
    assert epochs_kept(db, other.trial_id) == [5, 6]

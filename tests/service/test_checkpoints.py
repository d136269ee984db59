"""Storing a worker's checkpoints: lease-guarded, idempotent, checked, kept within bounds."""

from __future__ import annotations

import base64
from functools import cache
from typing import Any

import pytest
from sqlalchemy import select, update

from service.checkpoints import (
    CAVIAR_CHECKPOINTS_KEPT,
    MAX_CHECKPOINT_BYTES,
    checkpoint_content,
    store_checkpoint,
)
from service.db import Database
from service.errors import InvalidSpec, LeaseLost, NotFound
from service.models import Checkpoint, Trial
from service.queue import Offers, ResultError, claim_trials, finish_trial, register_worker
from service.settings import Settings
from service.studies import create_study
from tests.conftest import small_spec
from tests.integration.objectives import opaque_blob
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


# --- a task's own function: its checkpoints are its own bytes ----------------------------

TASK = "mypkg.train:objective"


def task_trial(db: Database) -> Any:
    spec = {
        "name": "own code",
        "task": {"entrypoint": TASK, "params": {"epochs": EPOCHS}},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "strategy": {"type": "random", "trials": 1},
        "objective": {"direction": "minimize"},
        "execution": {"mode": "panda", "checkpoint_every": 1, "seed": 1},
    }
    create_study(db=db, data=spec, settings=Settings(database_url=db.url))
    offers = Offers(trainer=False, entrypoints=(TASK,))
    worker = register_worker(db=db, name="w", host="h", pid=1, offers=offers)
    (trial,) = claim_trials(db=db, worker_id=worker, max_trials=1, lease_seconds=600)
    return trial


def stored_at(db: Database, trial_id: int) -> dict[int, bytes]:
    with db.session(write=False) as s:
        rows = s.execute(
            select(Checkpoint.epoch, Checkpoint.id).where(Checkpoint.trial_id == trial_id)
        )
        ids = {int(epoch): int(checkpoint_id) for epoch, checkpoint_id in rows}
    return {epoch: checkpoint_content(db=db, checkpoint_id=i) for epoch, i in ids.items()}


def test_a_task_s_checkpoints_are_stored_as_given_whatever_they_hold(db: Database) -> None:
    trial = task_trial(db)
    zeros, archive = opaque_blob("zeros", 1), opaque_blob("zip", 2)
    looks_like_a_trainer_s = b"PK\x03\x04" + bytes(200)  # refused from the trainer
    store(db, trial, 1, zeros)
    store(db, trial, 2, archive)
    store(db, trial, 3, looks_like_a_trainer_s)
    with pytest.raises(ResultError, match=f"beyond the trial's {EPOCHS} epochs"):
        store(db, trial, EPOCHS + 1, zeros)  # the epoch is still checked
    with pytest.raises(InvalidSpec, match="at most"):
        store(db, trial, 4, bytes(MAX_CHECKPOINT_BYTES + 1))  # and the size
    finish_trial(  # the last one rides with the result
        db=db,
        trial_id=trial.trial_id,
        lease_token=trial.lease_token,
        outcome="completed",
        curve={"epoch": list(range(1, EPOCHS + 1)), "extra": {"value": [0.5] * EPOCHS}},
        checkpoint={"epoch": EPOCHS, "content": base64.b64encode(b"\x00").decode()},
        value=0.5,
    )
    assert stored_at(db, trial.trial_id) == {
        1: zeros,
        2: archive,
        3: looks_like_a_trainer_s,
        EPOCHS: b"\x00",
    }


def test_a_trainer_s_result_with_junk_for_a_checkpoint_is_still_refused(db: Database) -> None:
    (trial,) = running_trials(db, "panda", n=1)
    with pytest.raises(ResultError, match="not a trainer checkpoint"):
        finish_trial(
            db=db,
            trial_id=trial.trial_id,
            lease_token=trial.lease_token,
            outcome="completed",
            checkpoint={"epoch": 1, "content": base64.b64encode(b"\x00" * 100).decode()},
        )
    with pytest.raises(ResultError, match="not a trainer checkpoint"):
        store(db, trial, 1, opaque_blob("zip", 1))
    assert epochs_kept(db, trial.trial_id) == []

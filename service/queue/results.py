"""What a worker reports for a trial, checked against that trial once its lease holds.

A body's shape is checked as it is read (service.schemas); what depends on the trial is
checked here, inside the transaction that holds the trial's row: every epoch within the
trial's own `epochs` (a fake epoch 10**6 would otherwise become its objective), and a
checkpoint that is one (a fork from junk bytes would be created, and fail only when a
worker loads it). A task's function keeps checkpoints of its own making: those are opaque
bytes, stored as given within the size caps. The check of trainer checkpoint bytes reads
only the archive's header entry: the trainer validates the whole state when it loads one
(trainer.checkpoint), which costs a millisecond, more than the rest of a small trial's
finish.

Inline checkpoints (a finished trial's last, riding with its result) are stored here,
set-based, with the caviar mode's pruning to each trial's latest few.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Connection, bindparam, delete, func, select
from sqlalchemy.dialects import sqlite

from service.db import db_epoch
from service.errors import CaviarError
from service.models import Checkpoint, Trial
from service.protocol import Curve, EpochReport, InlineCheckpoint
from service.queue.tables import MetricRow, curve_rows, metric_rows, trial_epochs
from trainer.checkpoint import FORMAT as CHECKPOINT_FORMAT
from trainer.checkpoint import MAGIC as CHECKPOINT_MAGIC
from trainer.checkpoint import READABLE as CHECKPOINT_VERSIONS
from trainer.checkpoint import CheckpointError
from trainer.checkpoint import peek as peek_checkpoint

# A caviar study keeps each trial's latest checkpoints: a requeued attempt resumes from
# the last, a finished trial can be continued from its end (service.checkpoints).
CAVIAR_CHECKPOINTS_KEPT = 2
# The sum of an archive's uncompressed entries a checkpoint may have (trainer's cap).
MAX_UNCOMPRESSED_BYTES = 1 << 30
_MAX_HEADER_BYTES = 1 << 20  # a header is a kilobyte or two of JSON


class ResultError(CaviarError):
    """The result does not fit its trial."""

    status = 422
    slug = "invalid-request"


@dataclass(frozen=True)
class Checked:
    """A result's rows, ready to store: its metrics and its checkpoint, if any."""

    metrics: list[MetricRow]
    last_epoch: int  # the furthest epoch reported, 0 if none
    checkpoint: tuple[int, bytes] | None  # (epoch, content)


_ROWS = TypeAdapter(list[EpochReport])


def check_result(
    *,
    trial_id: int,
    attempt: int,
    epochs: Any,
    result: Mapping[str, Any],
    opaque: bool = False,
) -> Checked:
    """The rows of `result` (rows in `epochs`, columns in `curve`, an inline `checkpoint`,
    as read from JSON and not validated yet) for attempt `attempt` of a trial of `epochs`
    epochs; ResultError if they are invalid or do not fit the trial. With `opaque` (a
    trial of a task's function) a checkpoint's bytes are the function's own, not checked.

    Called once the lease is known to hold: what a worker without one sends is never
    validated. The epochs are counted against the trial's first, then validated.
    """
    total = trial_epochs(epochs)
    raw_rows, raw_curve = result.get("epochs") or [], result.get("curve")
    points = len(raw_curve.get("epoch") or []) if isinstance(raw_curve, dict) else 0
    if len(raw_rows) + points > total:
        raise ResultError(f"{len(raw_rows) + points} epochs for a trial of {total} epochs")
    try:
        rows = metric_rows(trial_id, attempt, _rows(raw_rows))
        # the validated fields as they are (a dump would copy every list again)
        curve = vars(Curve.model_validate(raw_curve)) if raw_curve is not None else None
        inline = result.get("checkpoint")
        checkpoint = InlineCheckpoint.model_validate(inline) if inline is not None else None
    except ValidationError as exc:
        raise ResultError(_first_error(exc)) from None
    last = max((r[2] for r in rows), default=0)
    if curve and curve["epoch"]:
        rows += curve_rows(trial_id, attempt, curve)
        last = max(last, max(curve["epoch"]))
    if last > total:
        raise ResultError(f"epoch {last} is beyond the trial's {total} epochs")
    stored = None
    if checkpoint is not None:
        if checkpoint.epoch > total:
            raise ResultError(
                f"checkpoint: epoch {checkpoint.epoch} is beyond the trial's {total} epochs"
            )
        content = decode_checkpoint(checkpoint.content)
        if not opaque:
            check_checkpoint(content, epoch=checkpoint.epoch)
        stored = (checkpoint.epoch, content)
    return Checked(metrics=rows, last_epoch=last, checkpoint=stored)


def _rows(raw: list[Any]) -> list[dict[str, Any]]:
    """Epochs reported as rows, validated, as dicts."""
    if not raw:
        return []
    return [e.model_dump() for e in _ROWS.validate_python(list(raw))]


def _first_error(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def decode_checkpoint(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ResultError("checkpoint: the content is not base64") from None


def check_checkpoint(content: bytes, *, epoch: int) -> None:
    """ResultError unless `content` is a trainer checkpoint of `epoch`: its header, and
    for today's bytes that their length is what its arrays need; nothing is decoded (the
    worker that resumes from it checks every array)."""
    try:
        if content.startswith(CHECKPOINT_MAGIC):
            header: Any = peek_checkpoint(content)
        else:  # version 1: a compressed archive, from a worker not yet upgraded
            header = json.loads(_archive_header_bytes(content))
    except CheckpointError as exc:
        raise ResultError(f"checkpoint: not a trainer checkpoint ({exc})") from None
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, EOFError, zlib.error):
        raise ResultError("checkpoint: not a trainer checkpoint (no archive, no header)") from None
    if (
        not isinstance(header, dict)
        or header.get("format") != CHECKPOINT_FORMAT
        or header.get("version") not in CHECKPOINT_VERSIONS
    ):
        raise ResultError("checkpoint: not a trainer checkpoint of a known format and version")
    if header.get("epoch") != epoch:
        raise ResultError(f"checkpoint: its header says epoch {header.get('epoch')!r}, not {epoch}")


def _archive_header_bytes(content: bytes) -> bytes:
    """The bytes of a version 1 archive's `header` array (UTF-8 JSON).

    The trainer writes it first, deflated: it is read in place from the first local
    header, which takes a few microseconds where zipfile and numpy's reader take half a
    millisecond, more than the rest of a short trial's finish. Any other layout goes
    through zipfile.
    """
    if content[:4] != b"PK\x03\x04" or b"PK\x05\x06" not in content[-(1 << 16) - 22 :]:
        raise zipfile.BadZipFile("not a zip archive")
    method = struct.unpack_from("<H", content, 8)[0]
    name_length, extra_length = struct.unpack_from("<HH", content, 26)
    if method != zipfile.ZIP_DEFLATED or content[30 : 30 + name_length] != b"header.npy":
        return _header_by_zipfile(content)
    start = 30 + name_length + extra_length
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    entry = inflate.decompress(content[start : start + _MAX_HEADER_BYTES], _MAX_HEADER_BYTES)
    if not inflate.eof:
        raise ValueError("the header entry is cut short or too long")
    return _npy_data(entry)


def _npy_data(entry: bytes) -> bytes:
    """The data of a one-dimensional uint8 .npy file (after its magic and header)."""
    if entry[:6] != b"\x93NUMPY" or len(entry) < 10:
        raise ValueError("not a .npy entry")
    if entry[6] == 1:
        size, offset = struct.unpack_from("<H", entry, 8)[0], 10
    else:
        size, offset = struct.unpack_from("<I", entry, 8)[0], 12
    if b"'|u1'" not in entry[offset : offset + size]:
        raise ValueError("the header is not an array of bytes")
    return entry[offset + size :]


def _header_by_zipfile(content: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        if sum(i.file_size for i in archive.infolist()) > MAX_UNCOMPRESSED_BYTES:
            raise ValueError("the archive inflates beyond 1 GiB")
        with archive.open("header.npy") as entry:
            return _npy_data(entry.read(_MAX_HEADER_BYTES))


# A checkpoint stored already (the same attempt and epoch, sent again) stays as it is.
_INSERT_CHECKPOINTS = (
    sqlite.insert(Checkpoint)
    .values(created_at=db_epoch())
    .on_conflict_do_nothing(index_elements=["trial_id", "attempt", "epoch"])
)
_PG_INSERT_CHECKPOINTS = """
INSERT INTO checkpoints (trial_id, attempt, epoch, size_bytes, content, created_at)
SELECT c.trial_id, c.attempt, c.epoch, c.size_bytes, c.content,
       extract(epoch from clock_timestamp())::float8
FROM unnest(
    %(trial_ids)s::integer[], %(attempts)s::integer[], %(epochs)s::integer[],
    %(sizes)s::integer[], %(contents)s::bytea[]
) AS c(trial_id, attempt, epoch, size_bytes, content)
ON CONFLICT (trial_id, attempt, epoch) DO NOTHING
"""
_CROWDED = (
    select(Checkpoint.trial_id)
    .where(Checkpoint.trial_id.in_(bindparam("ids", expanding=True)))
    .group_by(Checkpoint.trial_id)
    .having(func.count() > CAVIAR_CHECKPOINTS_KEPT)
)


def store_checkpoints(
    conn: Connection, items: Sequence[tuple[int, int, int, bytes]], *, caviar: set[int]
) -> None:
    """Store checkpoints (trial_id, attempt, epoch, content) in one insert; then, for the
    trials among them in `caviar` (ids of trials of caviar studies), keep the latest few."""
    if not items:
        return
    if conn.dialect.name == "postgresql":
        # One statement over arrays (an executemany ran one INSERT per checkpoint).
        conn.exec_driver_sql(
            _PG_INSERT_CHECKPOINTS,
            {
                "trial_ids": [t for t, _, _, _ in items],
                "attempts": [a for _, a, _, _ in items],
                "epochs": [e for _, _, e, _ in items],
                "sizes": [len(c) for _, _, _, c in items],
                "contents": [c for _, _, _, c in items],
            },
        )
    else:
        conn.execute(
            _INSERT_CHECKPOINTS,
            [
                {"trial_id": t, "attempt": a, "epoch": e, "size_bytes": len(c), "content": c}
                for t, a, e, c in items
            ],
        )
    keep_latest(conn, trial_ids=sorted({t for t, *_ in items} & caviar))


def keep_latest(conn: Connection, *, trial_ids: Sequence[int]) -> None:
    """Delete all but the latest CAVIAR_CHECKPOINTS_KEPT checkpoints of each trial, never
    one a trial of its study resumes from. Most trials have no more: one indexed count
    finds those that do."""
    if not trial_ids:
        return
    for trial_id in conn.execute(_CROWDED, {"ids": list(trial_ids)}).scalars():
        conn.execute(_PRUNE, {"trial_id": trial_id})


_STUDY_OF = select(Trial.study_id).where(Trial.id == bindparam("trial_id")).scalar_subquery()
_PRUNE = delete(Checkpoint).where(
    Checkpoint.trial_id == bindparam("trial_id"),
    Checkpoint.id.not_in(
        select(Checkpoint.id)
        .where(Checkpoint.trial_id == bindparam("trial_id"))
        .order_by(Checkpoint.attempt.desc(), Checkpoint.epoch.desc())
        .limit(CAVIAR_CHECKPOINTS_KEPT)
    ),
    Checkpoint.id.not_in(
        select(Trial.resume_checkpoint_id).where(
            Trial.study_id == _STUDY_OF, Trial.resume_checkpoint_id.is_not(None)
        )
    ),
)

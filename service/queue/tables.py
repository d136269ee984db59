"""The core tables and the statements the claim, report and finish paths share."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from itertools import chain, repeat
from typing import Any

from psycopg.errors import UniqueViolation
from sqlalchemy import Connection, Table, bindparam, update

from service.db import db_epoch
from service.models import METRIC_FIELDS, Metric, Study, Trial, Worker

# Core tables, not the ORM entities: the hot paths need no identity map or unit of work.
STUDIES: Table = Study.__table__  # type: ignore[assignment]
TRIALS: Table = Trial.__table__  # type: ignore[assignment]
METRICS: Table = Metric.__table__  # type: ignore[assignment]
WORKERS: Table = Worker.__table__  # type: ignore[assignment]

TOUCH_WORKER = (
    update(WORKERS).where(WORKERS.c.id == bindparam("b_worker")).values(last_heartbeat=db_epoch())
)
# A trial's epochs, read from its config in the database (no JSON parsed in Python).
TRIAL_EPOCHS = TRIALS.c.config["epochs"].as_integer().label("total_epochs")
# A built-in trainer's config always has its epochs. A task's own function has them when
# its params name epochs (the spec checks they are a whole number); when they do not, its
# reports are bounded by this alone (and by each body's own bounds).
UNSTATED_EPOCHS = 1_000_000

# One metrics row as the inserts take it: (trial_id, attempt, epoch, *METRIC_FIELDS,
# extra), extra the JSON text of the metrics of other names, or None.
MetricRow = tuple[Any, ...]
_COLUMNS = ("trial_id", "attempt", "epoch", *METRIC_FIELDS, "extra")
# A re-sent batch (the worker retried after a lost response) is ignored, not doubled.
# Driver-level SQL: these run for every epoch of every trial, and SQLAlchemy's per-row
# parameter processing cost more than the database's own work. SQLite takes chunks of
# SQLITE_CHUNK rows per statement (a row costs half of what it does in an executemany).
SQLITE_CHUNK = 100
_SQLITE_ROW = f"({', '.join('?' * len(_COLUMNS))})"
_SQLITE_INSERT = (
    f"INSERT INTO metrics ({', '.join(_COLUMNS)}) VALUES {{rows}}"
    " ON CONFLICT (trial_id, attempt, epoch) DO NOTHING"
)
# PostgreSQL: the batch is copied (binary COPY, rows written in C) straight into metrics,
# inside a savepoint. COPY cannot skip rows already stored: when a row is (a batch sent
# again), the savepoint is rolled back and the batch goes through a temporary table of
# the connection, emptied at each commit, inserted from there skipping what is stored.
# The straight copy costs half of that path (7 µs a row against 14, client and server);
# arrays through unnest() cost four times more CPU (psycopg packs their values in
# Python), an executemany seven times.
_POSTGRES_DIRECT = f"COPY metrics ({', '.join(_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_POSTGRES_STAGE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS caviar_metrics_in (trial_id integer, "
    "attempt integer, epoch integer, "
    + ", ".join(f"{name} double precision" for name in METRIC_FIELDS)
    + ", extra text) ON COMMIT DELETE ROWS"
)
_POSTGRES_COPY = "COPY caviar_metrics_in FROM STDIN (FORMAT BINARY)"
# extra is JSON text: json's binary form is its text, so it is sent as text either way.
_POSTGRES_TYPES = ["int4", "int4", "int4"] + ["float8"] * len(METRIC_FIELDS) + ["text"]
_POSTGRES_MOVE = (
    f"INSERT INTO metrics ({', '.join(_COLUMNS)}) SELECT {', '.join(_COLUMNS[:-1])}, "
    "extra::json FROM caviar_metrics_in ON CONFLICT (trial_id, attempt, epoch) DO NOTHING"
)


@lru_cache(maxsize=SQLITE_CHUNK)
def _sqlite_insert(n: int) -> str:
    return _SQLITE_INSERT.format(rows=", ".join([_SQLITE_ROW] * n))


def metric_column(metric: str) -> Any:
    """The stored values of `metric`, as a column: a built-in one's own, another's out of
    the row's named metrics (JSON, read as a float: null where the epoch did not report it)."""
    if metric in METRIC_FIELDS:
        return getattr(Metric, metric)
    return Metric.extra[metric].as_float()


def trial_epochs(value: Any) -> int:
    """The epochs a trial trains: its config's, or UNSTATED_EPOCHS for a task's function
    whose params name none."""
    return int(value) if value else UNSTATED_EPOCHS


def clean(value: Any) -> float | None:
    """A reported number as stored: None for a missing or non-finite one."""
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def metric_rows(
    trial_id: int, attempt: int, epochs: Iterable[Mapping[str, Any]]
) -> list[MetricRow]:
    """The metrics rows of reported epochs (dicts) of one attempt."""
    return [
        (trial_id, attempt, int(e["epoch"]), *(clean(e.get(k)) for k in METRIC_FIELDS), None)
        for e in epochs
    ]


def curve_rows(trial_id: int, attempt: int, curve: Mapping[str, Any]) -> list[MetricRow]:
    """The metrics rows of reported epochs as columns (validated: finite or None), with
    the metrics of other names (`extra`, a column per name) as each row's JSON."""
    epochs = curve["epoch"]
    n = len(epochs)
    columns = [curve.get(k) or repeat(None, n) for k in METRIC_FIELDS]
    columns.append(extra_json(curve.get("extra"), n))
    # strict: every column is as long as `epoch` (schemas.Curve checked it)
    return list(zip(repeat(trial_id, n), repeat(attempt, n), epochs, *columns, strict=False))


def extra_json(extra: Mapping[str, Sequence[Any]] | None, n: int) -> Iterable[str | None]:
    """Per epoch, the JSON text of the named metrics reported in it (None: none were)."""
    if not extra:
        return repeat(None, n)
    out: list[str | None] = []
    for i in range(n):
        row = {name: values[i] for name, values in extra.items() if values[i] is not None}
        out.append(json.dumps(row, allow_nan=False) if row else None)
    return out


def insert_metrics(conn: Connection, rows: Sequence[MetricRow]) -> None:
    """Store metrics rows, ignoring any already stored (same trial, attempt and epoch)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _copy_metrics(conn, rows)
        return
    for start in range(0, len(rows), SQLITE_CHUNK):
        chunk = rows[start : start + SQLITE_CHUNK]
        conn.exec_driver_sql(_sqlite_insert(len(chunk)), tuple(chain.from_iterable(chunk)))


def _copy_metrics(conn: Connection, rows: Sequence[MetricRow]) -> None:
    """PostgreSQL: `rows` copied into metrics, or through the connection's staging table
    when some are stored already (see _POSTGRES_DIRECT)."""
    try:
        with conn.begin_nested():
            _copy(conn, _POSTGRES_DIRECT, rows)
        return
    except UniqueViolation:
        pass
    conn.exec_driver_sql(_POSTGRES_STAGE)
    _copy(conn, _POSTGRES_COPY, rows)
    conn.exec_driver_sql(_POSTGRES_MOVE)


def _copy(conn: Connection, statement: str, rows: Sequence[MetricRow]) -> None:
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(statement) as copy:
            copy.set_types(_POSTGRES_TYPES)
            for row in rows:
                copy.write_row(row)
    finally:
        cursor.close()

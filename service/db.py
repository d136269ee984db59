"""Engines, sessions and the database clock, for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.sql.functions import now
from sqlalchemy.types import Float

SQLITE_BUSY_TIMEOUT_MS = 30_000  # the service is the only writer; waits are short transactions


class db_epoch(FunctionElement[float]):
    """The database's clock in seconds since the epoch, as a float.

    Leases and heartbeats are compared against this, never against a worker's clock or a
    replica's, so clock skew between machines cannot expire a lease early.
    """

    type = Float()
    inherit_cache = True


@compiles(db_epoch, "sqlite")
def _sqlite_epoch(element: db_epoch, compiler: Any, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


@compiles(db_epoch, "postgresql")
def _pg_epoch(element: db_epoch, compiler: Any, **kw: Any) -> str:
    return "extract(epoch from clock_timestamp())::float8"


@compiles(now, "sqlite")
def _sqlite_now(element: now, compiler: Any, **kw: Any) -> str:
    # SQLite's CURRENT_TIMESTAMP is to the second: a trial of 0.4 s lasted 0 s or 1 s.
    # This is UTC to the millisecond, in the text form SQLAlchemy's DateTime reads; as a
    # column default too, for every database migrated with it.
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling issues BEGIN lazily and never BEGIN IMMEDIATE;
    # take it over (SQLAlchemy's documented recipe) so that write transactions take the
    # write lock up front and never fail half-way with "database is locked".
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("caviar_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str) -> Engine:
    """An engine for `url` with the per-dialect settings Caviar relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine)
        return engine
    # No pre-ping: it costs a round trip on every checkout. A connection that died (a
    # server restart, a terminated backend) fails its statement instead; SQLAlchemy then
    # invalidates the pool, the request answers 503, and the client's retry gets a new one.
    # Times are read back in UTC whatever the server's zone, as the API writes them (Z).
    return create_engine(
        url, pool_size=10, max_overflow=20, connect_args={"options": "-c timezone=UTC"}
    )


class Database:
    """One engine and its two session factories: reads, and writes that lock up front."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        write_engine = self.engine.execution_options(caviar_write=True)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(write_engine, expire_on_commit=False)

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on error, always closes."""
        session = (self._write if write else self._read)()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


_databases: dict[str, Database] = {}
_lock = threading.Lock()


def get_database(url: str) -> Database:
    """The process's `Database` for `url`, created once."""
    with _lock:
        db = _databases.get(url)
        if db is None:
            db = _databases[url] = Database(url)
        return db


def forget_database(url: str) -> None:
    """Dispose of the cached `Database` for `url` (tests that drop their database)."""
    with _lock:
        db = _databases.pop(url, None)
    if db is not None:
        db.dispose()

"""Uploaded data sets: checked with the trainer's own loader, stored by sha256, deduplicated.

A file is accepted only if `trainer.load_dataset` can build a train/dev split from it, so
a study that names it cannot fail later on its data. The content lives in the database
(the service is the only process that opens it); workers fetch it over HTTP and cache it
by sha256.
"""

from __future__ import annotations

import hashlib
import io
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from service.db import Database
from service.errors import Conflict, InvalidDataset, NotFound
from service.models import Dataset, Study
from service.settings import Settings

FORMATS = ("csv", "npz")
_ZIP_MAGIC = b"PK\x03\x04"
_META = (
    Dataset.id,
    Dataset.sha256,
    Dataset.name,
    Dataset.format,
    Dataset.size_bytes,
    Dataset.n_rows,
    Dataset.n_columns,
    Dataset.label_column,
    Dataset.created_at,
)


def _invalid(msg: str, loc: str = "file", value: Any = None) -> InvalidDataset:
    return InvalidDataset(msg, errors=[{"loc": loc, "msg": msg, "input": value}])


def detect_format(content: bytes, filename: str | None, declared: str | None) -> str:
    """csv or npz: as declared, else from the file's name, else from its first bytes."""
    if declared:
        if declared not in FORMATS:
            raise _invalid(f"format must be csv or npz (got {declared!r})", "format", declared)
        return declared
    suffix = Path(filename or "").suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    return "npz" if content.startswith(_ZIP_MAGIC) else "csv"


def check_npz_sizes(content: bytes, *, limit: int) -> None:
    """Refuse an NPZ whose arrays would take more than `limit` bytes once loaded.

    An NPZ is a zip of .npy files; each .npy header declares its shape and dtype. Reading
    the headers first means a small upload cannot make the loader allocate gigabytes.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile as exc:
        raise _invalid(f"not a readable NPZ archive: {exc}") from None
    total = 0
    with archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise _invalid(f"NPZ member {info.filename!r} is not a .npy array")
            try:
                with archive.open(info) as member:
                    major, _minor = np.lib.format.read_magic(member)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if major == 1
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(member)
            except Exception as exc:  # a corrupt member raises one of several types
                msg = f"NPZ member {info.filename!r} is not a valid array: {exc}"
                raise _invalid(msg) from None
            if dtype.hasobject:
                raise _invalid(f"NPZ member {info.filename!r} holds Python objects, not numbers")
            total += int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if total > limit:
                raise _invalid(f"the arrays would take more than {limit} bytes once loaded")


def _check_content(
    content: bytes, *, fmt: str, label_column: str | None, name: str, settings: Settings
) -> tuple[int, int]:
    """Load the file exactly as a worker will; (rows, feature columns) or InvalidDataset."""
    if not content:
        raise _invalid("the file is empty")
    if fmt == "npz":
        check_npz_sizes(content, limit=settings.max_dataset_array_bytes)
    elif label_column is None:
        raise _invalid(
            "label_column is required for a CSV file: name the column that holds y",
            "label_column",
        )
    try:
        ds = _load(content, fmt=fmt, label_column=label_column, name=name)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _invalid(str(exc)) from None
    rows = int(ds.X_train.shape[0] + ds.X_dev.shape[0])
    if rows > settings.max_samples:
        raise _invalid(f"the file has {rows} rows; at most {settings.max_samples} (max_samples)")
    return rows, int(ds.X_train.shape[1])


def _load(content: bytes, *, fmt: str, label_column: str | None, name: str = "upload") -> Any:
    """`trainer.load_dataset` on these bytes, through a temporary file as a worker does.

    The file is named after the upload (sanitized), so the loader's messages name the
    file the user sent.
    """
    from trainer import load_dataset

    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).stem)[:100] or "upload"
    with tempfile.TemporaryDirectory(prefix="caviar-dataset-") as tmp:
        path = Path(tmp) / f"{stem}.{fmt}"
        path.write_bytes(content)
        spec: dict[str, Any] = {"path": str(path)}
        if label_column is not None:
            spec["label_column"] = label_column
        try:
            return load_dataset(spec)
        except ValueError as exc:  # name the file as the user knows it, not our temp path
            raise ValueError(str(exc).replace(str(path), path.name)) from None


def load_stored(s: Session, *, dataset_id: str, label_column: str | None) -> Any:
    """Load a stored data set with `label_column`; ValueError says why it cannot be."""
    row = s.execute(select(Dataset.content, Dataset.format).where(Dataset.id == dataset_id)).one()
    try:
        return _load(bytes(row.content), fmt=row.format, label_column=label_column)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(str(exc)) from None


def _meta(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "sha256": row.sha256,
        "name": row.name,
        "format": row.format,
        "size_bytes": row.size_bytes,
        "n_rows": row.n_rows,
        "n_columns": row.n_columns,
        "label_column": row.label_column,
        "created_at": row.created_at,
    }


def store_dataset(
    *,
    db: Database,
    content: bytes,
    name: str,
    label_column: str | None,
    fmt: str,
    settings: Settings,
) -> tuple[dict[str, Any], bool]:
    """Check and store an upload; (the data set, whether it is new).

    The same bytes uploaded again are the same data set (its id derives from the sha256),
    unless they come with another label column: then 409, since one file cannot hold two
    meanings under one id.
    """
    rows, columns = _check_content(
        content, fmt=fmt, label_column=label_column, name=name, settings=settings
    )
    sha = hashlib.sha256(content).hexdigest()
    with db.session() as s:
        existing = s.execute(select(*_META).where(Dataset.sha256 == sha)).first()
        if existing is not None:
            if existing.label_column != label_column:
                raise Conflict(
                    f"this file is already data set {existing.id} with label column "
                    f"{existing.label_column!r}; use that id (a study spec may set "
                    "dataset.label_column to train on another column)"
                )
            return _meta(existing), False
        s.add(
            Dataset(
                id=f"ds-{sha[:16]}",
                sha256=sha,
                name=name,
                format=fmt,
                size_bytes=len(content),
                n_rows=rows,
                n_columns=columns,
                label_column=label_column,
                content=content,
            )
        )
        s.flush()
        return _meta(s.execute(select(*_META).where(Dataset.sha256 == sha)).one()), True


def list_datasets(
    *, db: Database, limit: int = 50, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    with db.session(write=False) as s:
        total = s.scalar(select(func.count()).select_from(Dataset)) or 0
        rows = s.execute(
            select(*_META)
            .order_by(Dataset.created_at.desc(), Dataset.id)
            .limit(limit)
            .offset(offset)
        ).all()
        return [_meta(r) for r in rows], total


def get_dataset(*, db: Database, dataset_id: str) -> dict[str, Any]:
    with db.session(write=False) as s:
        return _meta(_row(s, dataset_id))


def _row(s: Session, dataset_id: str, *, lock: bool = False) -> Any:
    q = select(*_META).where(Dataset.id == dataset_id)
    if lock:  # PostgreSQL: serialize with a study that is being created on this data set
        q = q.with_for_update(of=Dataset)
    row = s.execute(q).first()
    if row is None:
        raise NotFound(f"data set {dataset_id} does not exist")
    return row


def studies_using(s: Session, dataset_id: str) -> list[int]:
    """Ids of the studies whose spec names this data set (at most 10)."""
    return list(
        s.scalars(
            select(Study.id)
            .where(Study.spec["dataset"]["name"].as_string() == dataset_id)
            .order_by(Study.id)
            .limit(10)
        )
    )


def delete_dataset(*, db: Database, dataset_id: str) -> None:
    """Delete a data set no study names; 409 listing the studies otherwise."""
    with db.session() as s:
        _row(s, dataset_id, lock=True)
        users = studies_using(s, dataset_id)
        if users:
            raise Conflict(
                f"data set {dataset_id} is used by studies {', '.join(map(str, users))}; "
                "it can be deleted once no study names it",
                studies=users,
            )
        s.execute(delete(Dataset).where(Dataset.id == dataset_id))


def dataset_content(*, db: Database, dataset_id: str) -> tuple[bytes, dict[str, Any]]:
    """The stored bytes and the data set's description, for a worker to cache by sha256."""
    with db.session(write=False) as s:
        meta = _meta(_row(s, dataset_id))
        content = s.scalar(select(Dataset.content).where(Dataset.id == dataset_id))
        return bytes(content or b""), meta

"""Uploaded data sets: read within the caps, split as the trainer splits, stored by sha256.

A file is accepted only if it reads (service.uploads: the trainer's arrays, caps checked
as it is read) and `trainer.dataset_from_arrays` can build a train/dev split from it, so
a study that names it cannot fail later on its data; a study's own reading of it (another
label column, a task, a split) is checked at submission (`check_study_data`). The content
lives in the database (the service is the only process that opens it); workers fetch it
over HTTP and cache it by sha256.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from service.db import Database
from service.errors import Conflict, InvalidDataset, InvalidSpec, NotFound
from service.models import Dataset, Study
from service.settings import Settings, get_settings
from service.spec import DataShape, StudySpec, fit_errors
from service.uploads import UploadCaps, check_outputs, read_upload
from trainer.datasets import dataset_from_arrays

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


def _display_name(name: str, fmt: str) -> str:
    """The file's name as messages give it: the upload's own, sanitized, with its format."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).stem)[:100] or "upload"
    return f"{stem}.{fmt}"


def _check_content(
    content: bytes, *, fmt: str, label_column: str | None, name: str, settings: Settings
) -> tuple[int, int]:
    """Read the file as a worker will, caps checked as it is read; (rows, feature columns).

    The arrays are split and standardized as `trainer.load_dataset` does, so a file that
    is accepted is one every study naming it can train on.
    """
    if not content:
        raise _invalid("the file is empty")
    if fmt == "csv" and label_column is None:
        raise _invalid(
            "label_column is required for a CSV file: name the column that holds y",
            "label_column",
        )
    caps = UploadCaps.from_settings(settings)
    try:
        data = read_upload(
            content, fmt=fmt, label_column=label_column, caps=caps, name=_display_name(name, fmt)
        )
        check_outputs(data.y, None, caps, what="the label column")
        ds = dataset_from_arrays(data.X, data.y, feature_names=data.feature_names)
    except ValueError as exc:  # UploadRefused, or the trainer's own refusal
        raise _invalid(str(exc)) from None
    return int(ds.X_train.shape[0] + ds.X_dev.shape[0]), ds.n_features


def load_stored(
    s: Session, *, dataset_id: str, label_column: str | None, settings: Settings | None = None
) -> Any:
    """Load a stored data set with `label_column`; ValueError says why it cannot be."""
    row = s.execute(
        select(Dataset.content, Dataset.format, Dataset.name).where(Dataset.id == dataset_id)
    ).one()
    data = read_upload(
        bytes(row.content),
        fmt=row.format,
        label_column=label_column,
        caps=UploadCaps.from_settings(settings or get_settings()),
        name=_display_name(row.name, row.format),
    )
    return dataset_from_arrays(data.X, data.y, feature_names=data.feature_names)


# Shapes measured per (data set, how a spec reads it): ids derive from the content's
# sha256, so a shape never goes stale; a handful covers the studies being submitted.
_SHAPES: OrderedDict[tuple[Any, ...], DataShape] = OrderedDict()
_SHAPES_KEPT = 64


def check_study_data(*, db: Database, spec: StudySpec, settings: Settings) -> None:
    """InvalidSpec unless an uploaded data set loads as the spec reads it (label column,
    task, split) within the class cap, and the spec's largest network fits the checkpoint
    cap for it. Built-in data sets are checked by the spec itself; a missing one is
    reported by `service.studies.check_dataset`."""
    if spec.dataset is None or spec.dataset.is_builtin:  # None: a task's own function
        return
    shape = _study_data_shape(db=db, spec=spec, settings=settings)
    if shape is not None and (errors := fit_errors(spec, shape, settings)):
        raise InvalidSpec(errors=errors)


def _study_data_shape(*, db: Database, spec: StudySpec, settings: Settings) -> DataShape | None:
    ds = spec.dataset
    assert ds is not None  # check_study_data reads uploads only
    with db.session(write=False) as s:
        row = s.execute(
            select(Dataset.content, Dataset.format, Dataset.label_column, Dataset.name).where(
                Dataset.id == ds.name
            )
        ).first()
    if row is None:
        return None
    label = ds.label_column or row.label_column
    key = (ds.name, label, ds.task, ds.dev_fraction, ds.seed, ds.standardize, settings.max_classes)
    if key in _SHAPES:
        return _SHAPES[key]
    loc, value = ("dataset.label_column", label) if ds.label_column else ("dataset.name", ds.name)
    caps = UploadCaps.from_settings(settings)
    try:
        data = read_upload(
            bytes(row.content),
            fmt=row.format,
            label_column=label,
            caps=caps,
            name=_display_name(row.name, row.format),
        )
    except ValueError as exc:
        raise InvalidSpec.at(loc, str(exc), value) from None
    try:
        check_outputs(data.y, ds.task, caps, what=f"the label column {label!r}")
    except ValueError as exc:
        where = ("dataset.task", ds.task) if ds.task else (loc, value)
        raise InvalidSpec.at(where[0], str(exc), where[1]) from None
    try:
        built = dataset_from_arrays(
            data.X,
            data.y,
            task=ds.task,
            dev_fraction=ds.dev_fraction,
            seed=ds.seed,
            standardize=ds.standardize,
            feature_names=data.feature_names,
        )
    except ValueError as exc:
        raise InvalidSpec.at("dataset", str(exc), ds.name) from None
    shape = DataShape(built.n_features, built.n_outputs, int(built.y_train.shape[0]))
    _SHAPES[key] = shape
    while len(_SHAPES) > _SHAPES_KEPT:
        _SHAPES.popitem(last=False)
    return shape


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

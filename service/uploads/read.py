"""One entry point for an upload's arrays, whichever its format."""

from __future__ import annotations

from service.uploads.csv_files import read_csv
from service.uploads.limits import DataFile, UploadCaps, UploadRefused
from service.uploads.npz_files import read_npz


def read_upload(
    content: bytes, *, fmt: str, label_column: str | None, caps: UploadCaps, name: str
) -> DataFile:
    """The arrays of a CSV or NPZ file, or UploadRefused naming the problem."""
    if not content:
        raise UploadRefused(f"data file {name!r} is empty")
    if fmt == "npz":
        return read_npz(content, label_column=label_column, caps=caps, name=name)
    if label_column is None:
        raise UploadRefused("label_column is required for a CSV file: name the column with y")
    return read_csv(content, label_column=label_column, caps=caps, name=name)

"""CSV uploads read by pyarrow's streaming reader, block by block, each cap checked per block.

The header row is read with the csv module, exactly as the trainer reads it; the rows
after it are tokenized by pyarrow (off the GIL, on one thread) a block at a time, and
after each block the caps are checked - rows, values, the longest value, distinct text
labels - so a file over a cap is refused after the first block past it. Every value is
read as text and then as a number the way Python's float() reads it (pyarrow's cast,
with Python's float() for the forms only Python takes), so X, y and the messages are the
trainer's own (`trainer.datafiles`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from service.uploads.limits import DataFile, UploadCaps, UploadRefused

_BOM = b"\xef\xbb\xbf"
# The trainer reads with the csv module, which refuses a longer value; so does the upload.
FIELD_LIMIT = 131_072
# The header is read with the csv module (it must be split exactly as the trainer splits
# it); past this many bytes of blank lines or header, the file is refused instead.
HEADER_SEARCH_BYTES = 1 << 20
BLOCK_BYTES = 1 << 20


def read_csv(content: bytes, *, label_column: str, caps: UploadCaps, name: str) -> DataFile:
    """A CSV file's X, y and feature names, read block by block with the caps checked."""
    header, data_at = csv_header(content, name)
    if label_column not in header:
        raise UploadRefused(
            f"label column {label_column!r} not found; the columns are {header}"
            + separator_hint(header)
        )
    if len(header) < 2:
        raise UploadRefused(
            f"data file {name!r} has no feature columns besides the label{separator_hint(header)}"
        )
    if len(header) - 1 > caps.max_features:
        raise UploadRefused(
            f"data file {name!r} has {len(header) - 1} feature columns; "
            f"at most {caps.max_features} (max_features)"
        )
    label_at = header.index(label_column)
    features = [h for i, h in enumerate(header) if i != label_at]
    reader = _CsvBlocks(content, data_at, header=header, label_at=label_at, caps=caps, name=name)
    X, labels = reader.read()
    if X.shape[0] == 0:
        raise UploadRefused(f"data file {name!r} has a header but no data rows")
    return DataFile(X=X, y=_labels_array(labels, name=name, caps=caps), feature_names=features)


def separator_hint(header: list[str]) -> str:
    """For a header read as one column: the separator it seems to use instead of commas."""
    if len(header) != 1:
        return ""
    for sep, called in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
        if sep in header[0]:
            return (
                f" (its header {header[0]!r} is one column: CSV columns are separated by"
                f" commas, this file seems to use {called})"
            )
    return ""


def csv_header(content: bytes, name: str) -> tuple[list[str], int]:
    """The header row (the first that is not blank), and the byte offset of the data after it.

    Read with the csv module, as the trainer reads it; blank lines before it are skipped.
    """
    start = len(_BOM) if content.startswith(_BOM) else 0
    raw = io.BytesIO(content)
    raw.seek(start)
    text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
    consumed = 0

    def lines() -> Iterator[str]:
        nonlocal consumed
        for line in iter(text.readline, ""):
            consumed += len(line.encode("utf-8"))
            if consumed > HEADER_SEARCH_BYTES:
                raise UploadRefused(
                    f"data file {name!r}: no header row in its first {HEADER_SEARCH_BYTES} bytes"
                )
            yield line

    try:
        for row in csv.reader(lines()):
            if row and any(cell.strip() for cell in row):
                return [cell.strip() for cell in row], start + consumed
    except UnicodeDecodeError as exc:
        raise UploadRefused(f"data file {name!r} is not UTF-8 text: {exc}") from None
    except csv.Error as exc:
        raise UploadRefused(f"data file {name!r}: {exc}") from None
    raise UploadRefused(f"data file {name!r} is empty")


class _CsvBlocks:
    """The data rows after the header, block by block: X filled in, labels kept as text."""

    def __init__(
        self,
        content: bytes,
        start: int,
        *,
        header: list[str],
        label_at: int,
        caps: UploadCaps,
        name: str,
    ) -> None:
        self.buffer = pa.py_buffer(content)[start:]
        self.header, self.label_at, self.caps, self.name = header, label_at, caps, name
        self.features = [h for i, h in enumerate(header) if i != label_at]
        self.rows = 0
        self.classes: set[str] = set()
        self.text_labels = False  # some label is not a number: every label is a class
        self.bad_row: Any = None

    def read(self) -> tuple[np.ndarray, list[pa.Array]]:
        blocks: list[np.ndarray] = []
        labels: list[pa.Array] = []
        try:
            for batch in self._batches():
                columns = [pc.utf8_trim_whitespace(c) for c in batch.columns]
                columns = _drop_blank_rows(columns)
                if not len(columns[0]):
                    continue
                self._check_block(batch, len(columns[0]))
                label = columns[self.label_at]
                self._count_classes(label)
                features = [c for i, c in enumerate(columns) if i != self.label_at]
                blocks.append(self._numbers(features))
                labels.append(label)
                self.rows += len(label)
        except pa.ArrowInvalid as exc:
            raise self._parse_error(exc) from None
        width = len(self.features)
        X = np.concatenate(blocks) if blocks else np.empty((0, width))
        return X, labels

    def _batches(self) -> Iterator[pa.RecordBatch]:
        names = [f"c{i}" for i in range(len(self.header))]
        reader = pa_csv.open_csv(
            pa.BufferReader(self.buffer),
            read_options=pa_csv.ReadOptions(
                column_names=names, block_size=BLOCK_BYTES, use_threads=False
            ),
            parse_options=pa_csv.ParseOptions(
                newlines_in_values=True, invalid_row_handler=self._invalid_row
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                null_values=[],
            ),
        )
        yield from reader

    def _invalid_row(self, row: Any) -> str:
        """A row whose values do not match the header: skipped if blank, else refused."""
        cells = next(csv.reader([row.text]), [])
        if not any(cell.strip() for cell in cells):
            return "skip"
        self.bad_row = row
        return "error"

    def _parse_error(self, exc: Exception) -> UploadRefused:
        row = self.bad_row
        if row is not None:
            line = f", line {row.number + 1}" if row.number is not None else ""
            return UploadRefused(
                f"data file {self.name!r}{line}: {row.actual_columns} values "
                f"for {row.expected_columns} columns"
            )
        return UploadRefused(f"data file {self.name!r} is not a readable CSV file: {exc}")

    def _check_block(self, batch: pa.RecordBatch, rows: int) -> None:
        """Every cap a block can pass: rows, values, and the longest value."""
        total = self.rows + rows
        if total > self.caps.max_rows:
            raise UploadRefused(
                f"data file {self.name!r} has more than {self.caps.max_rows} rows (max_samples)"
            )
        if total * len(self.features) > self.caps.max_values:
            raise UploadRefused(
                f"data file {self.name!r} has more than {self.caps.max_values} values "
                f"(max_dataset_values): {len(self.features)} feature columns by more than "
                f"{total - 1} rows"
            )
        longest = max((pc.max(pc.utf8_length(c)).as_py() or 0) for c in batch.columns)
        if longest > FIELD_LIMIT:
            raise UploadRefused(
                f"data file {self.name!r} has a value of {longest} characters; "
                f"at most {FIELD_LIMIT}"
            )

    def _count_classes(self, label: pa.Array) -> None:
        """Refuse once text labels have more distinct values than `max_classes`."""
        if not self.text_labels and not _all_numbers(label):
            self.text_labels = True
        if len(self.classes) <= self.caps.max_classes:
            self.classes.update(pc.unique(label).to_pylist())
        if self.text_labels and len(self.classes) > self.caps.max_classes:
            raise UploadRefused(
                f"data file {self.name!r}: the label column has more than "
                f"{self.caps.max_classes} distinct values (max_classes); a model needs "
                "an output unit for each"
            )

    def _numbers(self, features: list[pa.Array]) -> np.ndarray:
        """The block's feature values as floats, or the refusal naming the first bad one."""
        block = np.empty((len(features[0]), len(features)))
        for j, column in enumerate(features):
            values = _numbers_or_none(column)
            if values is None:
                values = self._python_floats(column, j)
            block[:, j] = values
        finite = np.isfinite(block)
        if not finite.all():
            row, col = np.argwhere(~finite)[0]
            raise UploadRefused(
                f"data file {self.name!r} has NaN or infinite values "
                f"(first at line {self.rows + row + 2}, column {self.features[col]!r})"
            )
        return block

    def _python_floats(self, column: pa.Array, j: int) -> np.ndarray:
        # What pyarrow does not read as a number may still be one to Python ("1_000"):
        # the trainer's float() decides, cell by cell, only for such a column.
        out = np.empty(len(column))
        for i, cell in enumerate(column.to_pylist()):
            try:
                out[i] = float(cell)
            except ValueError:
                raise UploadRefused(
                    f"data file {self.name!r}, line {self.rows + i + 2}, column "
                    f"{self.features[j]!r}: {cell!r} is not a number"
                ) from None
        return out


def _drop_blank_rows(columns: list[pa.Array]) -> list[pa.Array]:
    """Without the rows whose every value is blank (the trainer skips those)."""
    blank = pc.equal(pc.utf8_length(columns[0]), 0)
    for column in columns[1:]:
        blank = pc.and_(blank, pc.equal(pc.utf8_length(column), 0))
    if not pc.any(blank).as_py():
        return columns
    keep = pc.invert(blank)
    return [pc.filter(c, keep) for c in columns]


def _numbers_or_none(column: pa.Array) -> np.ndarray | None:
    """The column as float64 if every value is a number to pyarrow, else None.

    pyarrow reads exactly what Python's float() reads of trimmed text, except the
    forms only Python takes ("1_000", digits of other scripts): those give None.
    """
    try:
        return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _all_numbers(column: pa.Array) -> bool:
    """Whether Python's float() reads every value (pyarrow first; Python only if it fails)."""
    if _numbers_or_none(column) is not None:
        return True
    try:
        for text in column.to_pylist():
            float(text)
    except ValueError:
        return False
    return True


def _labels_array(labels: list[pa.Array], *, name: str, caps: UploadCaps) -> np.ndarray:
    """y as the trainer builds it: floats if every label is a number, else the texts."""
    column = pa.chunked_array(labels, type=pa.string())
    if pc.any(pc.equal(pc.utf8_length(column), 0)).as_py():
        raise UploadRefused(f"data file {name!r}: the label column has empty values")
    numbers = [_numbers_or_none(chunk) for chunk in column.chunks]
    if all(n is not None for n in numbers):
        return np.concatenate([n for n in numbers if n is not None])
    texts = column.to_pylist()
    try:
        return np.array([float(text) for text in texts])
    except ValueError:
        pass
    # NumPy stores every text at the longest one's width (4 bytes a character).
    longest = pc.max(pc.utf8_length(column)).as_py() or 0
    if len(texts) * longest * 4 > caps.max_array_bytes:
        raise UploadRefused(
            f"data file {name!r}: its labels would take {len(texts) * longest * 4} bytes "
            f"once loaded (the longest has {longest} characters); at most "
            f"{caps.max_array_bytes} (max_dataset_array_bytes)"
        )
    return np.array(texts)

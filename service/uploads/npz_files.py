"""NPZ uploads: both headers checked against the caps, then each array inflated no further
than its header declares, a block at a time, so a small zip cannot inflate into gigabytes."""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.uploads.limits import DataFile, UploadCaps, UploadRefused

BLOCK_BYTES = 1 << 20
MAX_NPZ_MEMBERS = 64


def read_npz(content: bytes, *, label_column: str | None, caps: UploadCaps, name: str) -> DataFile:
    """An NPZ file's X and y: both headers checked against the caps before either is
    inflated, then each inflated only as far as its header declares."""
    y_key = "y" if label_column is None else str(label_column)
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise UploadRefused(f"data file {name!r} is not a readable NPZ archive: {exc}") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_NPZ_MEMBERS:
            raise UploadRefused(
                f"NPZ file {name!r} has {len(members)} members; at most {MAX_NPZ_MEMBERS}"
            )
        for info in members:
            if not info.filename.endswith(".npy"):
                raise UploadRefused(f"NPZ member {info.filename!r} is not a .npy array")
        keys = [info.filename[: -len(".npy")] for info in members]
        if "X" not in keys or y_key not in keys:
            raise UploadRefused(f"NPZ file {name!r} needs arrays 'X' and {y_key!r}; it has {keys}")
        x_info, y_info = members[keys.index("X")], members[keys.index(y_key)]
        x_head, y_head = _member_header(archive, x_info), _member_header(archive, y_info)
        total = x_head.nbytes + y_head.nbytes
        if total > caps.max_array_bytes:
            raise UploadRefused(
                f"the arrays would take {total} bytes once loaded; at most "
                f"{caps.max_array_bytes} (max_dataset_array_bytes)"
            )
        _check_shape(x_head.shape, caps, role="X")
        _check_shape(y_head.shape, caps, role="y")
        X, y = _inflate(archive, x_info, x_head), _inflate(archive, y_info, y_head)
    if X.ndim == 2 and X.shape[0] == 0:
        raise UploadRefused(f"data file {name!r} has no examples")
    names = [f"x{i + 1}" for i in range(X.shape[1])] if X.ndim == 2 else []
    return DataFile(X=X, y=y, feature_names=names)


@dataclass(frozen=True)
class _Header:
    """What a .npy header declares: enough to know its size before inflating a byte of it."""

    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype[Any]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _member_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Header:
    with archive.open(info) as member:
        try:
            header = _Header(*_npy_header(member))
        except Exception as exc:  # a corrupt member raises one of several types
            msg = f"NPZ member {info.filename!r} is not a valid array: {exc}"
            raise UploadRefused(msg) from None
    if header.dtype.hasobject:
        raise UploadRefused(f"NPZ member {info.filename!r} holds Python objects, not numbers")
    return header


def _inflate(archive: zipfile.ZipFile, info: zipfile.ZipInfo, header: _Header) -> np.ndarray:
    """The member's array, inflating no more than the bytes its header declares."""
    with archive.open(info) as member:
        _npy_header(member)  # read past it again: the data follows
        data = _read_exactly(member, header.nbytes, info.filename)
    try:
        array = np.frombuffer(data, dtype=header.dtype, count=math.prod(header.shape))
        if header.fortran:
            return array.reshape(header.shape[::-1]).transpose()
        return array.reshape(header.shape)
    except (ValueError, TypeError) as exc:
        raise UploadRefused(f"NPZ member {info.filename!r} is not a valid array: {exc}") from None


def _npy_header(member: Any) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    major, _minor = np.lib.format.read_magic(member)
    if major == 1:
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
    return tuple(int(n) for n in shape), bool(fortran), dtype


def _check_shape(shape: tuple[int, ...], caps: UploadCaps, *, role: str) -> None:
    """The row, column and value caps, from the header alone (nothing inflated yet)."""
    rows = shape[0] if shape else 1
    if rows > caps.max_rows:
        raise UploadRefused(f"{role} has {rows} rows; at most {caps.max_rows} (max_samples)")
    if role == "X" and len(shape) == 2:
        if shape[1] > caps.max_features:
            raise UploadRefused(
                f"X has {shape[1]} feature columns; at most {caps.max_features} (max_features)"
            )
        if rows * shape[1] > caps.max_values:
            raise UploadRefused(
                f"X has {rows * shape[1]} values; at most {caps.max_values} (max_dataset_values)"
            )
    if role == "y" and len(shape) == 2 and shape[1] > caps.max_classes:
        raise UploadRefused(
            f"y has {shape[1]} targets per row, each an output unit; "
            f"at most {caps.max_classes} (max_classes)"
        )


def _read_exactly(member: Any, nbytes: int, filename: str) -> bytearray:
    """`nbytes` inflated bytes, read a block at a time: never more than the header declared."""
    out = bytearray()
    while len(out) < nbytes:
        chunk = member.read(min(BLOCK_BYTES, nbytes - len(out)))
        if not chunk:
            raise UploadRefused(
                f"NPZ member {filename!r} is not a valid array: it ends after {len(out)} "
                f"of {nbytes} bytes"
            )
        out += chunk
    return out

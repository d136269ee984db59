"""Uploaded data files read fast (pyarrow, NumPy), with the caps checked as they are read.

`read_upload` gives the arrays `trainer.datafiles.read_file` gives for the same bytes (the
same X, y and feature names, or a refusal), without its pure-Python parse: a CSV is
tokenized by pyarrow's streaming reader, block by block, off the GIL, and every cap (rows,
feature columns, values, distinct classes, the longest value) is checked after each block,
so a file over a cap is refused after the first block past it, not after being parsed
whole. An NPZ member is inflated only up to what its header declares and the caps allow,
so a few hundred kilobytes cannot inflate into gigabytes.

A worker still reads the stored file with the trainer's own reader; the tests hold the
two to the same arrays (tests/service/test_uploads.py).
"""

from service.uploads.csv_files import csv_header, separator_hint
from service.uploads.limits import (
    DataFile,
    UploadCaps,
    UploadRefused,
    check_outputs,
    label_outputs,
)
from service.uploads.read import read_upload

__all__ = [
    "DataFile",
    "UploadCaps",
    "UploadRefused",
    "check_outputs",
    "csv_header",
    "label_outputs",
    "read_upload",
    "separator_hint",
]

"""Uploads read fast and within the caps: the trainer's own arrays, refused as they are read."""

from __future__ import annotations

import io
import threading
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import datasets
from service.uploads import UploadCaps, UploadRefused, read_upload
from trainer.datafiles import read_file

WIDE = UploadCaps(
    max_rows=10**6,
    max_features=10**4,
    max_values=10**8,
    max_classes=10**6,
    max_array_bytes=1 << 32,
)


def trainer_arrays(content: bytes, fmt: str, label: str | None, tmp: Path) -> Any:
    path = tmp / f"data.{fmt}"
    path.write_bytes(content)
    try:
        return read_file(path, label)
    except Exception as exc:  # the trainer's csv module raises csv.Error too
        return exc


def service_arrays(content: bytes, fmt: str, label: str | None) -> Any:
    try:
        data = read_upload(content, fmt=fmt, label_column=label, caps=WIDE, name="data")
    except UploadRefused as exc:
        return exc
    return data.X, data.y, data.feature_names


def assert_same(theirs: Any, ours: Any) -> None:
    """Both refuse, or both give the same X, y (values and kind) and feature names."""
    if isinstance(theirs, Exception) or isinstance(ours, Exception):
        assert isinstance(theirs, Exception) and isinstance(ours, Exception), (theirs, ours)
        return
    (X1, y1, n1), (X2, y2, n2) = theirs, ours
    assert n1 == n2
    assert X1.shape == X2.shape and X1.dtype == X2.dtype
    assert np.array_equal(X1, X2)
    assert y1.dtype.kind == y2.dtype.kind and y1.shape == y2.shape
    assert np.array_equal(y1, y2, equal_nan=y1.dtype.kind == "f")


CELLS = st.sampled_from(
    ["1", "-2.5", " 3 ", "4e2", "1_000", "nan", "inf", "", " ", "x", "٣", "0.1", "+.5", "7.", "a b"]
)
QUOTED = st.sampled_from(['"1"', '"2,5"', '"a""b"', '"line\nbreak"', '"x"y', '""'])
NEWLINES = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def csv_texts(draw: Any) -> tuple[bytes, str]:
    width = draw(st.integers(2, 4))
    header = [draw(st.sampled_from(["a", "b", " y ", "label", "a"])) for _ in range(width)]
    lines = [",".join(header)]
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            lines.append(draw(st.sampled_from(["", "  ", ",", " , ", ",,,"])))
            continue
        n = width if kind > 1 else draw(st.integers(1, width + 1))
        cells = [draw(st.one_of(CELLS, QUOTED) if kind == 2 else CELLS) for _ in range(n)]
        lines.append(",".join(cells))
    newline = draw(NEWLINES)
    text = newline.join(lines) + draw(st.sampled_from(["", newline]))
    if draw(st.booleans()):
        text = draw(st.sampled_from(["\n", " \n", "\ufeff"])) + text
    return text.encode("utf-8"), draw(st.sampled_from([*header, "y", "label"])).strip()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_texts())
def test_a_csv_reads_as_the_trainer_reads_it(tmp_path_factory: Any, case: Any) -> None:
    content, label = case
    tmp = tmp_path_factory.mktemp("csv")
    assert_same(trainer_arrays(content, "csv", label, tmp), service_arrays(content, "csv", label))


def npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "arrays",
    [
        {"X": np.arange(12, dtype=np.float32).reshape(4, 3), "y": np.array([0, 1, 0, 1])},
        {"X": np.asfortranarray(np.ones((5, 2))), "y": np.array(["a", "b", "a", "b", "c"])},
        {"X": np.ones((3, 2), dtype=np.int16), "y": np.ones((3, 2))},
        {"X": np.ones(4), "y": np.ones(4)},
        {"X": np.ones((4, 2))},
    ],
)
def test_an_npz_reads_as_the_trainer_reads_it(tmp_path: Path, arrays: dict[str, Any]) -> None:
    content = npz(**arrays)
    theirs = trainer_arrays(content, "npz", None, tmp_path)
    assert_same(theirs, service_arrays(content, "npz", None))


def caps(**overrides: int) -> UploadCaps:
    values = {**WIDE.__dict__, **overrides}
    return UploadCaps(**values)


def test_rows_past_the_cap_are_refused_as_they_are_read_not_after_the_whole_file() -> None:
    # 4 MB of rows, then a broken one at the very end: the refusal is about the rows, so
    # the reader stopped at the cap and never reached the end (the trainer's parse did).
    rows = "".join(f"{i},{i % 7},{i % 2}\n" for i in range(400_000))
    content = ("a,b,y\n" + rows + "not,a,row,at,all\n").encode()
    with pytest.raises(UploadRefused, match=r"more than 1000 rows \(max_samples\)"):
        read_upload(content, fmt="csv", label_column="y", caps=caps(max_rows=1000), name="big")


def test_text_labels_past_the_class_cap_are_refused() -> None:
    content = ("a,y\n" + "".join(f"{i},label-{i}\n" for i in range(2000))).encode()
    data = read_upload(content, fmt="csv", label_column="y", caps=caps(), name="d")
    assert len(set(data.y)) == 2000
    with pytest.raises(UploadRefused, match=r"more than 50 distinct values \(max_classes\)"):
        read_upload(content, fmt="csv", label_column="y", caps=caps(max_classes=50), name="d")


def test_columns_values_and_label_widths_are_capped() -> None:
    wide = (",".join(f"x{i}" for i in range(30)) + ",y\n" + ",".join(["1"] * 31) + "\n") * 1
    narrow = caps(max_features=20)
    with pytest.raises(UploadRefused, match=r"30 feature columns; at most 20 \(max_features\)"):
        read_upload(wide.encode(), fmt="csv", label_column="y", caps=narrow, name="w")
    many, few = "a,b,y\n" + "1,2,0\n" * 600, caps(max_values=1000)
    with pytest.raises(UploadRefused, match=r"max_dataset_values"):
        read_upload(many.encode(), fmt="csv", label_column="y", caps=few, name="m")
    # One long label makes NumPy store every label at its width: 4 bytes a character.
    long = "a,y\n" + "1,x\n" * 5000 + f"2,{'z' * 100_000}\n"
    small = caps(max_array_bytes=400 * 2**20)
    with pytest.raises(UploadRefused, match=r"labels would take 2000400000 bytes"):
        read_upload(long.encode(), fmt="csv", label_column="y", caps=small, name="l")


def bomb(rows: int, columns: int) -> bytes:
    """An NPZ of zeros: a few hundred kilobytes that inflate to rows x columns x 8 bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, shape in (("X", (rows, columns)), ("y", (rows,))):
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(
                    member, {"descr": "<f8", "fortran_order": False, "shape": shape}
                )
                zeros = bytes(1 << 20)
                left = int(np.prod(shape)) * 8
                while left:
                    member.write(zeros[: min(left, len(zeros))])
                    left -= min(left, len(zeros))
    return buffer.getvalue()


def test_an_npz_bomb_under_the_byte_cap_is_refused_uninflated(sqlite_url, settings_for) -> None:
    # 398 MB of zeros: under max_dataset_array_bytes (400 MiB), so the headers alone did
    # not refuse it, and loading it took the service to 1.9 GB.
    content = bomb(199_000, 250)
    assert len(content) < 1_000_000
    settings = settings_for(sqlite_url, migrate_on_start=False)
    tracemalloc.start()
    try:
        with pytest.raises(Exception, match=r"max_dataset_values") as refused:
            datasets.store_dataset(
                db=datasets.Database(sqlite_url),
                content=content,
                name="bomb.npz",
                label_column=None,
                fmt="npz",
                settings=settings,
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.type.__name__ == "InvalidDataset"
    assert peak < 20 * 1024 * 1024, f"{peak} bytes allocated for a refused upload"


def test_an_npz_member_is_inflated_no_further_than_its_header_declares() -> None:
    # The header says 4 values; the member holds a megabyte more: only 32 bytes are read.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in ("X", "y"):
            header = io.BytesIO()
            shape = (4, 1) if name == "X" else (4,)
            np.lib.format.write_array_header_1_0(
                header, {"descr": "<f8", "fortran_order": False, "shape": shape}
            )
            body = np.array([0.0, 1.0, 0.0, 1.0]).tobytes() + bytes(1 << 20)
            archive.writestr(f"{name}.npy", header.getvalue() + body)
    data = read_upload(buffer.getvalue(), fmt="npz", label_column=None, caps=caps(), name="d")
    assert data.X.shape == (4, 1) and list(data.y) == [0.0, 1.0, 0.0, 1.0]


def test_uploads_run_on_threads_of_their_own(sqlite_url, live_service, monkeypatch) -> None:
    """Uploads being parsed never hold the threads reads, claims and heartbeats run on."""
    started, release = threading.Semaphore(0), threading.Event()
    real = datasets.read_upload

    def slow_read(*args: Any, **kwargs: Any) -> Any:
        started.release()
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "read_upload", slow_read)
    svc = live_service(sqlite_url, api_threads=1, upload_threads=2)
    content = b"a,b,y\n" + b"".join(b"%d,%d,%d\n" % (i, i * 2, i % 2) for i in range(40))

    def upload(i: int) -> None:
        httpx.post(
            f"{svc.url}/api/datasets",
            content=content + b"%d,0,1\n" % i,
            params={"label_column": "y"},
            timeout=60,
        )

    uploads = [threading.Thread(target=upload, args=(i,)) for i in range(3)]
    for t in uploads:
        t.start()
    try:
        assert started.acquire(timeout=20) and started.acquire(timeout=20)  # both threads busy
        # The one shared thread is free: a read (a sync route) answers at once.
        r = httpx.get(f"{svc.url}/api/datasets", timeout=5)
        assert r.status_code == 200
    finally:
        release.set()
        for t in uploads:
            t.join(60)
    assert httpx.get(f"{svc.url}/api/datasets").json()["total"] == 3

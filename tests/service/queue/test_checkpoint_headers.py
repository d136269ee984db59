"""The service reads a result's checkpoint header in place: today's bytes and version 1's
compressed archives (a worker not yet upgraded) alike, and refuses anything else."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import numpy as np
import pytest

from service.queue.results import ResultError, check_checkpoint
from trainer import TrainConfig, load_dataset, train
from trainer.checkpoint import MAGIC, Checkpoint


@pytest.fixture(scope="module")
def ckpt() -> Checkpoint:
    taken: list[Checkpoint] = []
    ds = load_dataset({"name": "moons", "n_samples": 40, "seed": 0})
    train(
        TrainConfig(hidden_layers=[2], epochs=3), ds, checkpoint_every=3, on_checkpoint=taken.append
    )
    return taken[-1]


def version_1(ckpt: Checkpoint) -> bytes:
    """The checkpoint as version 1 wrote it: a compressed NPZ archive, its header first."""
    data = ckpt.to_bytes()
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    header = json.loads(data[len(MAGIC) + 4 : len(MAGIC) + 4 + length])
    header["version"] = 1
    del header["arrays"]
    out = io.BytesIO()
    arrays: dict[str, Any] = {
        "header": np.frombuffer(json.dumps(header).encode(), np.uint8),
        "order": ckpt.order,
    }
    arrays |= {f"params/{k}": v for k, v in ckpt.params.items()}
    np.savez_compressed(out, **arrays)
    return out.getvalue()


def test_both_versions_headers_are_read_and_their_epoch_checked(ckpt: Checkpoint) -> None:
    for content in (ckpt.to_bytes(), version_1(ckpt)):
        check_checkpoint(content, epoch=3)
        with pytest.raises(ResultError, match="says epoch 3, not 2"):
            check_checkpoint(content, epoch=2)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        MAGIC,
        MAGIC + b"\x01\x00",
        MAGIC + struct.pack("<I", 50) + b"{}",
        MAGIC + struct.pack("<I", 2) + b"[]",
        MAGIC + struct.pack("<I", 2) + b"{}",
        MAGIC + struct.pack("<I", 2**31) + b"{}",
        b"PK\x03\x04 not really",
    ],
)
def test_junk_is_refused_as_not_a_checkpoint(content: bytes) -> None:
    with pytest.raises(ResultError, match="not a trainer checkpoint"):
        check_checkpoint(content, epoch=1)


def test_an_unknown_version_is_refused(ckpt: Checkpoint) -> None:
    data = ckpt.to_bytes()
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    header = json.loads(data[len(MAGIC) + 4 : len(MAGIC) + 4 + length])
    head = json.dumps({**header, "version": 3}).encode()
    with pytest.raises(ResultError, match="unsupported checkpoint version 3"):
        check_checkpoint(MAGIC + struct.pack("<I", len(head)) + head, epoch=3)

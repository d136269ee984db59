"""Checkpoint: the whole state of a run after an epoch, to resume it exactly or fork it.

A run's future depends on more than its parameters: the optimizer's buffers and step
count (Adam's bias correction reads ``t``), batch norm's running averages, the one
random generator (shuffling and dropout masks draw from it), the current shuffle
permutation (each epoch shuffles the previous epoch's order in place, so the order is
state too) and the mini-batch step counter (the schedule's position when
``decay_per: step``). A :class:`Checkpoint` holds all of it, with the config it was
made under, so ``train(config, dataset, resume=checkpoint)`` continues exactly as if
the run had never stopped: in float64 the metrics and parameters after N epochs are
bit-identical to an uninterrupted run's.

Serialized form (:meth:`Checkpoint.to_bytes`, version 2): the magic ``MAGIC``, the length
of a UTF-8 JSON header as 4 little-endian bytes, the header (format, version, epoch,
step, config, generator state, optimizer step count, task, and each array's name, dtype
and shape), then the arrays' raw bytes one after another, uncompressed. Building it costs
a few microseconds where the compressed NPZ archive of version 1 cost about half a
millisecond, more than a small trial's whole epoch; the weights of a network compress
poorly anyway. :meth:`Checkpoint.from_bytes` reads both versions. Nothing is pickled: it
reads only numeric dtypes and validates every field and every size, so bytes from a
worker cannot run code in the service or resume half a model.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from trainer.config import TrainConfig
from trainer.layers import Array
from trainer.losses import TASKS

FORMAT = "caviar-checkpoint"
VERSION = 2  # what to_bytes writes; from_bytes reads READABLE
READABLE = (1, 2)  # 1: a compressed NPZ archive, as written before 2
MAGIC = b"CAVIARCKPT\x00"  # version 2 bytes start with this; version 1's with b"PK" (zip)
_LENGTH = struct.Struct("<I")  # the header's length in bytes
# The dtypes an array of a version 2 checkpoint may have: the trainer's floats and the
# shuffle order's integers, little-endian (no object, string or structured dtype).
ARRAY_DTYPES = {name: np.dtype(name) for name in ("<f4", "<f8", "<i4", "<i8", "<u4", "<u8")}
# Decompressed size accepted by from_bytes: far above any course-size network (a 1000 x
# 1000 float64 layer with Adam is 24 MB), far below what would exhaust a service.
MAX_UNCOMPRESSED_BYTES = 1 << 30

#: Fields a fork may change: they only steer the updates from the next epoch on.
FORKABLE_FIELDS = frozenset(
    {
        "learning_rate",
        "beta1",
        "beta2",
        "epsilon",
        "lr_decay",
        "decay_rate",
        "decay_every",
        "decay_per",
        "l2",
        "keep_prob",
        "bn_momentum",
        "epochs",
        "batch_size",
        "shuffle",
    }
)
#: Fields a resume must keep: they define the network, the optimizer's buffers, or
#: only act before the first epoch (init, seed), so changing them would silently mean
#: nothing or half-load a model.
FROZEN_FIELDS = frozenset(TrainConfig.model_fields) - FORKABLE_FIELDS


class CheckpointError(ValueError):
    """Bytes that are not a valid checkpoint, or a checkpoint that does not fit a run."""


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """The state of a run after ``epoch`` completed epochs.

    Attributes
    ----------
    epoch : int
        Epochs completed (the resumed run's first epoch is numbered ``epoch + 1``).
    config : TrainConfig
        The config the run was trained under up to ``epoch``.
    params : dict of str to ndarray
        ``Model.get_params()``: the learned parameters and, with batch norm, the
        running averages ``running_mean{l}`` and ``running_var{l}``.
    optimizer_state : dict
        ``Optimizer.state_dict()``: ``"t"`` (int, the update count) and one flat array
        of shape (n_params,) per state slot ("v" for momentum, "s" for RMSprop, both
        for Adam, none for gd).
    rng_state : dict
        ``rng.bit_generator.state`` of the run's one generator.
    step : int
        Mini-batch steps taken so far (the schedule position when ``decay_per`` is
        "step").
    order : ndarray of int, shape (m_train,)
        The shuffle permutation after the last epoch (the next epoch shuffles it).
    task : str
        "binary", "multiclass" or "regression": the data set's task.
    """

    epoch: int
    config: TrainConfig
    params: dict[str, Array]
    optimizer_state: dict[str, Any]
    rng_state: dict[str, Any]
    step: int
    order: Array
    task: str

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def of_run(
        cls,
        *,
        epoch: int,
        config: TrainConfig,
        params: dict[str, Array],
        optimizer_state: dict[str, Any],
        rng_state: dict[str, Any],
        step: int,
        order: Array,
        task: str,
    ) -> Checkpoint:
        """The checkpoint a training loop takes of its own state, without the full check.

        The loop's pieces fit each other by construction, and the check costs more than a
        small network's epoch; bytes read back go through :meth:`from_bytes`, which
        checks everything. Anything else builds a checkpoint with the constructor.
        """
        ckpt = object.__new__(cls)
        fields = {
            "epoch": epoch,
            "config": config,
            "params": params,
            "optimizer_state": optimizer_state,
            "rng_state": rng_state,
            "step": step,
            "order": order,
            "task": task,
        }
        for name, value in fields.items():
            object.__setattr__(ckpt, name, value)
        return ckpt

    # -- serialization ------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The checkpoint as bytes: a JSON header and the arrays' raw bytes (no pickle).

        Returns
        -------
        bytes
            What :meth:`from_bytes` reads back into an equal checkpoint.
        """
        slots = [k for k in self.optimizer_state if k != "t"]
        arrays: list[tuple[str, Array]] = [("order", self.order)]
        arrays += [(f"params/{name}", value) for name, value in self.params.items()]
        arrays += [(f"optimizer/{slot}", self.optimizer_state[slot]) for slot in slots]
        arrays = [
            (name, np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))) for name, a in arrays
        ]
        header = {
            "format": FORMAT,
            "version": VERSION,
            "epoch": self.epoch,
            "step": self.step,
            "task": self.task,
            "config": self.config.model_dump(mode="json"),
            "rng_state": self.rng_state,
            "optimizer_t": int(self.optimizer_state["t"]),
            "params": list(self.params),
            "optimizer_slots": slots,
            "arrays": [[name, a.dtype.str, list(a.shape)] for name, a in arrays],
        }
        head = json.dumps(header).encode("utf-8")
        return b"".join([MAGIC, _LENGTH.pack(len(head)), head, *(a.tobytes() for _, a in arrays)])

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        """Read and validate what :meth:`to_bytes` wrote.

        Parameters
        ----------
        data : bytes

        Returns
        -------
        Checkpoint

        Raises
        ------
        CheckpointError
            (a ``ValueError``) naming what is wrong: not an archive, no or bad header,
            another format or version, missing or extra arrays, wrong shapes or dtypes,
            non-finite parameters, an invalid config or generator state.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise CheckpointError(f"checkpoint must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if data.startswith(MAGIC):
            header, arrays = _read_v2(data)
        else:
            arrays = _read_npz(data)
            header = _read_header(arrays.pop("header", None), version=1)
        if "order" not in arrays:
            raise CheckpointError("not a checkpoint: the array 'order' is missing")
        order = arrays.pop("order")
        params = _take(arrays, "params", header["params"])
        slots = _take(arrays, "optimizer", header["optimizer_slots"])
        if arrays:
            raise CheckpointError(f"unexpected arrays in the checkpoint: {sorted(arrays)}")
        try:
            config = TrainConfig.model_validate(header["config"])
        except ValidationError as exc:
            raise CheckpointError(f"the checkpoint's config is invalid: {exc}") from None
        return cls(
            epoch=header["epoch"],
            config=config,
            params=params,
            optimizer_state={"t": header["optimizer_t"], **slots},
            rng_state=header["rng_state"],
            step=header["step"],
            order=order,
            task=header["task"],
        )

    # -- comparison ---------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Checkpoint):
            return NotImplemented
        return (
            (self.epoch, self.step, self.task, self.config, self.rng_state)
            == (other.epoch, other.step, other.task, other.config, other.rng_state)
            and _same_arrays(self.params, other.params)
            and _same_arrays(self.optimizer_state, other.optimizer_state)
            and np.array_equal(self.order, other.order)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside: not hashable


def check_resumable(checkpoint: Checkpoint, config: TrainConfig) -> None:
    """Raise ``ValueError`` if ``config`` cannot continue from ``checkpoint``.

    A fork may change any of :data:`FORKABLE_FIELDS` (they take effect from the next
    epoch on); every other field must equal the checkpoint's, and ``epochs`` may not
    fall below the epochs already done.

    Parameters
    ----------
    checkpoint : Checkpoint
    config : TrainConfig
        The config of the resumed (or forked) run.
    """
    for name in sorted(FROZEN_FIELDS):
        before, after = getattr(checkpoint.config, name), getattr(config, name)
        if before != after:
            raise ValueError(
                f"{name}: cannot change when resuming from a checkpoint (it was {before!r}, "
                f"the config has {after!r}); a fork may change only "
                f"{', '.join(sorted(FORKABLE_FIELDS))}"
            )
    if config.epochs < checkpoint.epoch:
        raise ValueError(
            f"epochs: {config.epochs} is fewer than the {checkpoint.epoch} epochs the "
            "checkpoint has already done"
        )


# -- helpers ----------------------------------------------------------------------------


def _same_arrays(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if set(a) != set(b):
        return False
    for key, value in a.items():
        other = b[key]
        if isinstance(value, np.ndarray) or isinstance(other, np.ndarray):
            if not (
                isinstance(value, np.ndarray)
                and isinstance(other, np.ndarray)
                and value.dtype == other.dtype
                and np.array_equal(value, other)
            ):
                return False
        elif value != other:
            return False
    return True


def _read_npz(data: bytes) -> dict[str, Array]:
    """The arrays of a version 1 checkpoint (a compressed NPZ archive), the header too."""
    buffer = io.BytesIO(data)
    try:
        with zipfile.ZipFile(buffer) as archive:
            size = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"not a checkpoint (neither {MAGIC!r} nor an NPZ archive): {exc}"
        ) from None
    if size > MAX_UNCOMPRESSED_BYTES:
        raise CheckpointError(
            f"checkpoint too large: {size} bytes uncompressed, at most {MAX_UNCOMPRESSED_BYTES}"
        )
    buffer.seek(0)
    try:
        with np.load(buffer, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"not a checkpoint (unreadable array): {exc}") from None


def _v2_header(data: bytes) -> tuple[dict[str, Any], int, int]:
    """The header of version 2 bytes (whose magic is checked), where it starts, and its
    length: what `layout` and `peek` both read first."""
    start = len(MAGIC) + _LENGTH.size
    if len(data) < start:
        raise CheckpointError("not a checkpoint: it ends inside its header's length")
    (length,) = _LENGTH.unpack_from(data, len(MAGIC))
    if start + length > len(data):
        raise CheckpointError(
            f"not a checkpoint: its header says {length} bytes, only {len(data) - start} follow"
        )
    header = _read_header(np.frombuffer(data, np.uint8, count=length, offset=start), version=2)
    return header, start, length


def layout(
    data: bytes,
) -> tuple[dict[str, Any], list[tuple[str, np.dtype[Any], tuple[int, ...], int]]]:
    """The header of version 2 bytes and where each array lies in them (name, dtype,
    shape, offset), every size checked and nothing decoded: what the service checks of
    a checkpoint it stores, in microseconds.

    Raises
    ------
    CheckpointError
        Naming what is wrong: no magic, a header cut short or not JSON, another format
        or version, an array of a refused dtype or shape, bytes missing or left over.
    """
    if not data.startswith(MAGIC):
        raise CheckpointError(f"not a checkpoint: it does not start with {MAGIC!r}")
    if len(data) > MAX_UNCOMPRESSED_BYTES:
        raise CheckpointError(
            f"checkpoint too large: {len(data)} bytes, at most {MAX_UNCOMPRESSED_BYTES}"
        )
    header, start, length = _v2_header(data)
    listed = header.get("arrays")
    if not isinstance(listed, list):
        raise CheckpointError("checkpoint header: arrays must list [name, dtype, shape]")
    where: list[tuple[str, np.dtype[Any], tuple[int, ...], int]] = []
    names = {"header"}
    offset = start + length
    for entry in listed:
        name, dtype, shape = _array_entry(entry)
        if name in names:
            raise CheckpointError(f"checkpoint header: the array {name!r} is listed twice")
        names.add(name)
        size = math.prod(shape) * dtype.itemsize
        if offset + size > len(data):
            raise CheckpointError(
                f"not a checkpoint: the array {name!r} needs {size} bytes, "
                f"{len(data) - offset} are left"
            )
        where.append((name, dtype, shape, offset))
        offset += size
    if offset != len(data):
        raise CheckpointError(f"not a checkpoint: {len(data) - offset} bytes follow its last array")
    return header, where


def peek(data: bytes) -> dict[str, Any]:
    """The header of version 2 bytes, once their length is what the header's arrays need:
    what the service checks of a checkpoint it stores, in a few microseconds. The arrays'
    dtypes and shapes are checked only as far as their sizes; :meth:`Checkpoint.from_bytes`
    (through :func:`layout`) checks everything before a run resumes from them.

    Raises
    ------
    CheckpointError
        No magic, a header cut short or not JSON, another format or version, an array
        listing that is not [name, dtype, shape] of known dtypes, or a length that is not
        the header's and arrays' sum.
    """
    if not data.startswith(MAGIC):
        raise CheckpointError(f"not a checkpoint: it does not start with {MAGIC!r}")
    header, start, length = _v2_header(data)
    try:
        size = sum(ARRAY_DTYPES[d].itemsize * math.prod(shape) for _, d, shape in header["arrays"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint header: arrays must list [name, dtype, shape] ({exc!r:.80})"
        ) from None
    if start + length + size != len(data):
        raise CheckpointError(
            f"not a checkpoint: its arrays need {size} bytes after the header, "
            f"{len(data) - start - length} follow"
        )
    return header


def _read_v2(data: bytes) -> tuple[dict[str, Any], dict[str, Array]]:
    """The header and the arrays of version 2 bytes (copies, in native byte order)."""
    header, where = layout(data)
    arrays: dict[str, Array] = {}
    for name, dtype, shape, offset in where:
        count = math.prod(shape)
        flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        arrays[name] = flat.reshape(shape).astype(dtype.newbyteorder("="), copy=True)
    return header, arrays


def _array_entry(entry: Any) -> tuple[str, np.dtype[Any], tuple[int, ...]]:
    """One [name, dtype, shape] of a version 2 header, checked."""
    if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)):
        raise CheckpointError(
            f"checkpoint header: an array must be [name, dtype, shape], got {entry!r:.80}"
        )
    name, dtype, shape = entry
    if not isinstance(dtype, str) or dtype not in ARRAY_DTYPES:
        raise CheckpointError(
            f"checkpoint header: the array {name!r} has dtype {dtype!r:.20}, not one of "
            f"{sorted(ARRAY_DTYPES)}"
        )
    if not (
        isinstance(shape, list)
        and len(shape) <= 2
        and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in shape)
    ):
        raise CheckpointError(f"checkpoint header: the array {name!r} has shape {shape!r:.40}")
    return name, ARRAY_DTYPES[dtype], tuple(shape)


def _read_header(raw: Array | None, *, version: int) -> dict[str, Any]:
    if raw is None:
        raise CheckpointError("not a checkpoint: the 'header' entry is missing")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError("not a checkpoint: the header must be UTF-8 JSON bytes")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"not a checkpoint: the header is not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"not a checkpoint: the header's format is not {FORMAT!r}")
    if header.get("version") != version:
        raise CheckpointError(
            f"unsupported checkpoint version {header.get('version')!r} in a version "
            f"{version} container; this trainer reads versions {READABLE}"
        )
    expected = {
        "epoch": int,
        "step": int,
        "task": str,
        "config": dict,
        "rng_state": dict,
        "optimizer_t": int,
        "params": list,
        "optimizer_slots": list,
    }
    for key, kind in expected.items():
        value = header.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CheckpointError(
                f"checkpoint header: {key} must be {kind.__name__}, got {value!r:.80}"
            )
    for key in ("params", "optimizer_slots"):
        if not all(isinstance(name, str) for name in header[key]):
            raise CheckpointError(f"checkpoint header: {key} must list names")
    return header


def _take(arrays: dict[str, Array], prefix: str, names: list[str]) -> dict[str, Array]:
    out: dict[str, Array] = {}
    for name in names:
        key = f"{prefix}/{name}"
        if key not in arrays:
            raise CheckpointError(f"checkpoint is missing the array {key!r}")
        out[name] = arrays.pop(key)
    return out


def _validate(ckpt: Checkpoint) -> None:
    """Check that the pieces are consistent with each other and with the config."""
    if not isinstance(ckpt.config, TrainConfig):
        raise CheckpointError(f"config must be a TrainConfig, got {type(ckpt.config).__name__}")
    cfg = ckpt.config
    for name in ("epoch", "step"):
        value = getattr(ckpt, name)
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
            raise CheckpointError(f"{name} must be an integer >= 0, got {value!r}")
    if ckpt.epoch > cfg.epochs:
        raise CheckpointError(f"epoch {ckpt.epoch} is beyond the config's {cfg.epochs} epochs")
    if ckpt.task not in TASKS:
        raise CheckpointError(f"task must be one of {TASKS}, got {ckpt.task!r}")
    dtype = np.dtype(cfg.dtype)
    _check_params(ckpt.params, cfg, dtype)
    n_params = sum(
        v.size for k, v in ckpt.params.items() if not k.startswith(("running_mean", "running_var"))
    )
    _check_optimizer(ckpt.optimizer_state, cfg, dtype, n_params)
    order = ckpt.order
    if not isinstance(order, np.ndarray) or order.ndim != 1 or order.dtype.kind not in "iu":
        raise CheckpointError("order must be a 1-d integer array (the shuffle permutation)")
    if not np.array_equal(np.sort(order), np.arange(order.shape[0])):
        raise CheckpointError(f"order must be a permutation of 0..{order.shape[0] - 1}")
    _check_rng_state(ckpt.rng_state)


def _check_params(params: Mapping[str, Any], cfg: TrainConfig, dtype: np.dtype[Any]) -> None:
    if not isinstance(params, dict) or not params:
        raise CheckpointError("params must be a non-empty dict of arrays")
    n_layers = len(cfg.hidden_layers) + 1
    expected: set[str] = set()
    for layer in range(1, n_layers + 1):
        expected.add(f"W{layer}")
        if cfg.batch_norm and layer < n_layers:
            expected |= {f"gamma{layer}", f"beta{layer}"}
            expected |= {f"running_mean{layer}", f"running_var{layer}"}
        else:
            expected.add(f"b{layer}")
    if set(params) != expected:
        raise CheckpointError(
            f"params do not match the config's architecture: missing "
            f"{sorted(expected - set(params))}, unexpected {sorted(set(params) - expected)}"
        )
    for name, value in params.items():
        if not isinstance(value, np.ndarray) or value.dtype != dtype:
            raise CheckpointError(f"params[{name!r}] must be a {dtype} array")
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"params[{name!r}] has NaN or infinite values")
    for layer, width in enumerate(cfg.hidden_layers, start=1):
        if params[f"W{layer}"].shape[0] != width or params[f"W{layer}"].ndim != 2:
            raise CheckpointError(
                f"params['W{layer}'] has shape {params[f'W{layer}'].shape}, the config's "
                f"hidden layer {layer} has {width} units"
            )
    for layer in range(2, n_layers + 1):
        prev = params[f"W{layer - 1}"].shape[0]
        if params[f"W{layer}"].ndim != 2 or params[f"W{layer}"].shape[1] != prev:
            raise CheckpointError(
                f"params['W{layer}'] has shape {params[f'W{layer}'].shape}; it must take "
                f"{prev} inputs"
            )
    for name, value in params.items():
        if name.startswith("W"):
            continue
        layer = int("".join(c for c in name if c.isdigit()))
        if value.shape != (params[f"W{layer}"].shape[0],):
            raise CheckpointError(f"params[{name!r}] has shape {value.shape}")


def _check_optimizer(
    state: Mapping[str, Any], cfg: TrainConfig, dtype: np.dtype[Any], n_params: int
) -> None:
    from trainer.optimizers import OPTIMIZERS

    if not isinstance(state, dict):
        raise CheckpointError("optimizer_state must be a dict")
    slots = set(OPTIMIZERS[cfg.optimizer].slots)
    if set(state) != slots | {"t"}:
        raise CheckpointError(
            f"optimizer_state for {cfg.optimizer} must hold t and {sorted(slots)}, "
            f"got {sorted(state)}"
        )
    t = state["t"]
    if not isinstance(t, int | np.integer) or isinstance(t, bool) or t < 0:
        raise CheckpointError(f"optimizer_state['t'] must be an integer >= 0, got {t!r}")
    for slot in slots:
        value = state[slot]
        if not isinstance(value, np.ndarray) or value.dtype != dtype or value.shape != (n_params,):
            raise CheckpointError(
                f"optimizer_state[{slot!r}] must be a {dtype} array of shape ({n_params},)"
            )
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"optimizer_state[{slot!r}] has NaN or infinite values")


def _check_rng_state(state: Any) -> None:
    if not isinstance(state, dict):
        raise CheckpointError("rng_state must be a dict (rng.bit_generator.state)")
    name = state.get("bit_generator")
    if name != "PCG64":
        # np.random.default_rng is PCG64; a state for another bit generator cannot be
        # loaded into the run's generator.
        raise CheckpointError(f"rng_state must be a PCG64 state, got {name!r}")
    # Typed as the base class, whose state is a plain mapping (PCG64's is a TypedDict).
    probe: np.random.BitGenerator = np.random.PCG64()
    try:
        probe.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"rng_state is not a valid PCG64 state: {exc}") from None

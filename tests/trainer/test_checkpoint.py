"""Checkpoints: resuming equals never stopping (bit for bit in float64), forks, validation."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import numpy as np
import pytest

from trainer import (
    Checkpoint,
    CheckpointError,
    Dataset,
    TrainConfig,
    dataset_from_arrays,
    load_dataset,
    train,
)
from trainer.checkpoint import FORKABLE_FIELDS, FROZEN_FIELDS, MAGIC
from trainer.training import TrainResult


@pytest.fixture(scope="module")
def moons() -> Dataset:
    return load_dataset(
        {"name": "moons", "n_samples": 200, "noise": 0.25, "dev_fraction": 0.25, "seed": 5}
    )


@pytest.fixture(scope="module")
def blobs() -> Dataset:
    return load_dataset(
        {"name": "blobs", "n_samples": 150, "noise": 1.0, "dev_fraction": 0.2, "seed": 1}
    )


# Each scenario exercises a different piece of carried state: batch norm's running
# averages, dropout masks and shuffling (the generator and the permutation), the step
# counter (decay per step) and the epoch position (staircase decay per epoch).
SCENARIOS: dict[str, dict[str, Any]] = {
    "bn-dropout-shuffle-step-decay": {
        "batch_norm": True,
        "keep_prob": 0.8,
        "shuffle": True,
        "batch_size": 32,
        "lr_decay": "inverse_time",
        "decay_rate": 0.05,
        "decay_per": "step",
        "l2": 0.01,
    },
    "dropout-epoch-staircase-decay": {
        "keep_prob": 0.7,
        "batch_size": 48,
        "lr_decay": "exponential",
        "decay_rate": 0.9,
        "decay_every": 2,
        "decay_per": "epoch",
    },
    "bn-full-batch-no-shuffle": {
        "batch_norm": True,
        "batch_size": 0,
        "shuffle": False,
        "lr_decay": "inverse_sqrt",
        "decay_rate": 0.5,
    },
}
LEARNING_RATES = {"gd": 0.3, "momentum": 0.3, "rmsprop": 0.01, "adam": 0.01}


def _config(optimizer: str, scenario: str, **overrides: Any) -> TrainConfig:
    fields: dict[str, Any] = {
        "hidden_layers": [6, 4],
        "optimizer": optimizer,
        "learning_rate": LEARNING_RATES[optimizer],
        "epochs": 7,
        "dtype": "float64",
        "seed": 11,
        **SCENARIOS[scenario],
        **overrides,
    }
    return TrainConfig(**fields)


def _curve(result: TrainResult) -> list[dict[str, Any]]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in result.history]


def _assert_same_state(a: TrainResult, b: TrainResult) -> None:
    assert set(a.params) == set(b.params)
    for name in a.params:
        assert a.params[name].dtype == b.params[name].dtype
        assert np.array_equal(a.params[name], b.params[name]), name
    assert a.optimizer_state["t"] == b.optimizer_state["t"]
    for slot in a.optimizer_state:
        assert np.array_equal(a.optimizer_state[slot], b.optimizer_state[slot]), slot


def _checkpoints(config: TrainConfig, ds: Dataset, every: int) -> list[Checkpoint]:
    saved: list[Checkpoint] = []
    train(config, ds, checkpoint_every=every, on_checkpoint=saved.append)
    return saved


# -- resume equals uninterrupted --------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("optimizer", ["gd", "momentum", "rmsprop", "adam"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(
    moons: Dataset, optimizer: str, scenario: str
) -> None:
    cfg = _config(optimizer, scenario)
    full = train(cfg, moons)
    assert full.status == "completed"
    saved = _checkpoints(cfg, moons, every=3)
    assert [c.epoch for c in saved] == [3, 6, 7]  # and after the last epoch
    # Through bytes, as the service stores it.
    ckpt = Checkpoint.from_bytes(saved[0].to_bytes())
    resumed = train(cfg, moons, resume=ckpt)
    assert [h["epoch"] for h in resumed.history] == [4, 5, 6, 7]
    assert _curve(resumed) == _curve(full)[3:]
    _assert_same_state(resumed, full)
    assert np.array_equal(resumed.model.predict(moons.X_dev), full.model.predict(moons.X_dev))


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("optimizer", ["gd", "momentum", "rmsprop", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_loops_unchecked_checkpoints_pass_the_full_check(
    moons: Dataset, optimizer: str, scenario: str, dtype: str
) -> None:
    """The loop builds its checkpoints with Checkpoint.of_run, skipping the check: every
    one of them must pass it, as the constructor and from_bytes run it."""
    for ckpt in _checkpoints(_config(optimizer, scenario, dtype=dtype), moons, every=2):
        fields = {name: getattr(ckpt, name) for name in Checkpoint.__dataclass_fields__}
        assert Checkpoint(**fields) == ckpt


def test_pause_resume_pause_resume_chain_equals_one_run(blobs: Dataset) -> None:
    """A run paused twice (by on_epoch) ends where it would have; multiclass, float32."""
    cfg = TrainConfig(
        hidden_layers=[8],
        optimizer="adam",
        learning_rate=0.01,
        epochs=9,
        batch_size=16,
        keep_prob=0.9,
        batch_norm=True,
        dtype="float32",
        seed=2,
    )
    full = train(cfg, blobs)
    history: list[dict[str, Any]] = []
    ckpt: Checkpoint | None = None
    for pause_at in (2, 5, None):
        saved: list[Checkpoint] = []

        def pause(metrics: dict[str, Any], at: int | None = pause_at) -> bool:
            return metrics["epoch"] == at

        result = train(cfg, blobs, resume=ckpt, on_epoch=pause, on_checkpoint=saved.append)
        history += result.history
        if pause_at is None:
            assert result.status == "completed" and saved == []
        else:
            assert result.status == "stopped"
            assert [c.epoch for c in saved] == [pause_at]
            ckpt = Checkpoint.from_bytes(saved[0].to_bytes())
    assert [h["epoch"] for h in history] == list(range(1, 10))
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in history] == _curve(full)
    _assert_same_state(result, full)


def test_a_checkpoint_is_a_snapshot_not_a_view(moons: Dataset) -> None:
    cfg = _config("adam", "bn-dropout-shuffle-step-decay")
    early = _checkpoints(cfg, moons, every=2)[0]  # training went on to epoch 7 after it
    stopped: list[Checkpoint] = []
    train(cfg, moons, on_epoch=lambda m: m["epoch"] == 2, on_checkpoint=stopped.append)
    assert early == stopped[0]
    assert early.optimizer_state["t"] == early.step == 2 * 5  # 150 examples / 32 -> 5 steps


def test_a_completed_run_continues_from_its_last_checkpoint(moons: Dataset) -> None:
    # The run's end is checkpointed even off the schedule, so a completed trial can be
    # given more epochs and land exactly where a longer run from the start would.
    short = _config("adam", "dropout-epoch-staircase-decay", epochs=5)
    last = _checkpoints(short, moons, every=3)[-1]
    assert last.epoch == 5
    longer = short.model_copy(update={"epochs": 8})
    continued = train(longer, moons, resume=Checkpoint.from_bytes(last.to_bytes()))
    full = train(longer, moons)
    assert [h["epoch"] for h in continued.history] == [6, 7, 8]
    assert _curve(continued) == _curve(full)[5:]
    _assert_same_state(continued, full)


def test_checkpoint_schedule_pause_and_divergence(moons: Dataset) -> None:
    cfg = _config("gd", "dropout-epoch-staircase-decay", epochs=10)
    assert [c.epoch for c in _checkpoints(cfg, moons, every=3)] == [3, 6, 9, 10]
    assert [c.epoch for c in _checkpoints(cfg, moons, every=5)] == [5, 10]  # not twice
    saved: list[Checkpoint] = []
    result = train(
        cfg,
        moons,
        on_epoch=lambda m: m["epoch"] == 6,
        checkpoint_every=3,
        on_checkpoint=saved.append,
    )
    assert result.status == "stopped"
    assert [c.epoch for c in saved] == [3, 6]  # one checkpoint for epoch 6, not two
    assert _checkpoints(cfg, moons, every=0) == []
    blowup = TrainConfig(
        hidden_layers=[10],
        optimizer="gd",
        learning_rate=1e8,
        init="random",
        init_scale=10.0,
        epochs=30,
        dtype="float64",
    )
    diverged: list[Checkpoint] = []
    result = train(blowup, moons, checkpoint_every=1, on_checkpoint=diverged.append)
    assert result.status == "diverged"
    # Every epoch but the diverged last one left a checkpoint.
    assert [c.epoch for c in diverged] == list(range(1, len(result.history)))


def test_resume_at_the_last_epoch_runs_nothing(moons: Dataset) -> None:
    cfg = _config("momentum", "bn-full-batch-no-shuffle", epochs=4)
    last = _checkpoints(cfg, moons, every=4)[0]
    result = train(cfg, moons, resume=last)
    assert result.status == "completed" and result.history == []
    _assert_same_state(result, train(cfg, moons))


# -- fork -------------------------------------------------------------------------------


def test_fork_applies_the_new_learning_rate_from_the_next_epoch_on_the_same_schedule(
    moons: Dataset,
) -> None:
    cfg = _config("adam", "dropout-epoch-staircase-decay")  # exponential 0.9, every 2
    ckpt = _checkpoints(cfg, moons, every=3)[0]
    forked = train(cfg.model_copy(update={"learning_rate": 0.001}), moons, resume=ckpt)
    # Epoch e (from 1) has t = (e - 1) // 2: the schedule keeps its position.
    assert [h["learning_rate"] for h in forked.history] == [
        0.001 * 0.9 ** ((e - 1) // 2) for e in range(4, 8)
    ]
    resumed = train(cfg, moons, resume=ckpt)
    assert not np.array_equal(forked.params["W1"], resumed.params["W1"])


@pytest.mark.parametrize(
    ("change", "check"),
    [
        ({"l2": 5.0}, "cost_rises"),
        ({"keep_prob": 0.5}, "differs"),
        ({"keep_prob": 1.0}, "differs"),
        ({"beta1": 0.5}, "differs"),
        ({"beta2": 0.9}, "differs"),
        ({"lr_decay": "none"}, "differs"),
        ({"decay_rate": 0.2}, "differs"),
        ({"batch_size": 16}, "differs"),
    ],
)
def test_fork_changes_take_effect(moons: Dataset, change: dict[str, Any], check: str) -> None:
    cfg = _config("adam", "bn-dropout-shuffle-step-decay")
    ckpt = _checkpoints(cfg, moons, every=3)[0]
    resumed = train(cfg, moons, resume=ckpt)
    forked = train(cfg.model_copy(update=change), moons, resume=ckpt)
    assert [h["epoch"] for h in forked.history] == [4, 5, 6, 7]
    assert not np.array_equal(forked.params["W1"], resumed.params["W1"])
    if check == "cost_rises":
        # The L2 term of the new lambda is in the very first forked epoch's cost.
        assert forked.history[0]["train_cost"] > resumed.history[0]["train_cost"] + 0.1


def test_fork_can_extend_the_run_but_not_cut_below_the_checkpoint(moons: Dataset) -> None:
    cfg = _config("rmsprop", "bn-full-batch-no-shuffle", epochs=5)
    ckpt = _checkpoints(cfg, moons, every=4)[0]
    longer = train(cfg.model_copy(update={"epochs": 9}), moons, resume=ckpt)
    assert [h["epoch"] for h in longer.history] == [5, 6, 7, 8, 9]
    # A longer fork is the same run as one configured that long from the start.
    straight = train(cfg.model_copy(update={"epochs": 9}), moons)
    assert _curve(longer) == _curve(straight)[4:]
    with pytest.raises(ValueError, match="epochs"):
        train(cfg.model_copy(update={"epochs": 3}), moons, resume=ckpt)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hidden_layers", [6, 5]),
        ("batch_norm", False),
        ("activation", "tanh"),
        ("dtype", "float32"),
        ("optimizer", "momentum"),
        ("seed", 12),
        ("init", "xavier"),
        ("bn_epsilon", 1e-3),
    ],
)
def test_fork_refuses_to_change_the_architecture(moons: Dataset, field: str, value: Any) -> None:
    cfg = _config("adam", "bn-dropout-shuffle-step-decay")
    ckpt = _checkpoints(cfg, moons, every=3)[0]
    with pytest.raises(ValueError, match=rf"^{field}: cannot change"):
        train(cfg.model_copy(update={field: value}), moons, resume=ckpt)


def test_forkable_and_frozen_fields_cover_the_config() -> None:
    assert set(TrainConfig.model_fields) == FORKABLE_FIELDS | FROZEN_FIELDS
    assert not FORKABLE_FIELDS & FROZEN_FIELDS
    assert {"hidden_layers", "batch_norm", "activation", "dtype"} <= FROZEN_FIELDS


def test_resume_checks_the_data_set_and_arguments(moons: Dataset, blobs: Dataset) -> None:
    cfg = _config("gd", "bn-full-batch-no-shuffle")
    ckpt = _checkpoints(cfg, moons, every=3)[0]
    with pytest.raises(ValueError, match="init_params or resume"):
        train(cfg, moons, init_params=ckpt.params, resume=ckpt)
    with pytest.raises(ValueError, match="multiclass"):
        train(cfg, blobs, resume=ckpt)
    smaller = load_dataset(
        {"name": "moons", "n_samples": 100, "noise": 0.25, "dev_fraction": 0.25, "seed": 5}
    )
    with pytest.raises(ValueError, match="150 training examples, the data set has 76"):
        train(cfg, smaller, resume=ckpt)
    rng = np.random.default_rng(0)
    wider = dataset_from_arrays(rng.normal(size=(150, 3)), np.arange(150) % 2, dev_fraction=0.0)
    with pytest.raises(ValueError, match=r"does not fit this data set.*W1"):
        train(cfg, wider, resume=ckpt)
    with pytest.raises(ValueError, match="checkpoint_every"):
        train(cfg, moons, checkpoint_every=-1)
    with pytest.raises(TypeError, match="Checkpoint"):
        train(cfg, moons, resume=ckpt.to_bytes())  # type: ignore[arg-type]


# -- serialization and validation -------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(moons: Dataset) -> Checkpoint:
    return _checkpoints(_config("adam", "bn-dropout-shuffle-step-decay"), moons, every=3)[0]


def _entries(ckpt: Checkpoint) -> dict[str, np.ndarray]:
    """The checkpoint's header (as UTF-8 bytes) and arrays, by name, read from its bytes."""
    data = ckpt.to_bytes()
    assert data.startswith(MAGIC)
    start = len(MAGIC) + 4
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    header = json.loads(data[start : start + length])
    entries = {"header": np.frombuffer(data[start : start + length], np.uint8)}
    offset = start + length
    for name, dtype, shape in header["arrays"]:
        count = int(np.prod(shape))
        entries[name] = np.frombuffer(data, dtype, count, offset).reshape(shape)
        offset += count * np.dtype(dtype).itemsize
    assert offset == len(data)
    return entries


def _header(entries: dict[str, np.ndarray]) -> dict[str, Any]:
    return json.loads(entries["header"].tobytes())


def _config_of(entries: dict[str, np.ndarray], **changes: Any) -> dict[str, Any]:
    return {**_header(entries)["config"], **changes}


Packed = tuple[dict[str, Any], dict[str, Any]]


def _pack(entries: dict[str, Any], **header_changes: Any) -> Packed:
    """Entries and header changes, to be written in either container by `_encode`."""
    return dict(entries), header_changes


def _encode(packed: Packed, container: str) -> bytes:
    """Bytes of the current container (a header and raw arrays) or version 1's (an NPZ
    archive), with the header changed as asked and everything else as given."""
    entries, changes = packed
    raw_header = entries.get("header")
    try:
        if raw_header is not None:
            json.loads(raw_header.tobytes())
    except json.JSONDecodeError:
        raw_header = None  # not JSON: written as given
    if container == "npz":
        if raw_header is not None:
            header = {**_header(entries), "version": 1, **changes}
            header.pop("arrays", None)
            entries = {**entries, "header": np.frombuffer(json.dumps(header).encode(), np.uint8)}
        out = io.BytesIO()
        np.savez(out, **entries)
        return out.getvalue()
    arrays = {k: np.asarray(v) for k, v in entries.items() if k != "header"}
    fields = {**_header(entries), **changes} if raw_header is not None else None
    if fields is not None and "arrays" not in changes:
        fields["arrays"] = [[k, a.dtype.str, list(a.shape)] for k, a in arrays.items()]
    head = entries["header"].tobytes() if fields is None else json.dumps(fields).encode()
    raw = b"".join(a.tobytes() for a in arrays.values())
    return MAGIC + struct.pack("<I", len(head)) + head + raw


def test_round_trip_keeps_every_field(ckpt: Checkpoint) -> None:
    back = Checkpoint.from_bytes(ckpt.to_bytes())
    assert back == ckpt
    assert back.config == ckpt.config and back.rng_state == ckpt.rng_state
    assert back.epoch == 3 and back.step == ckpt.step and back.task == "binary"
    assert {"running_mean1", "running_var2", "gamma1"} <= set(back.params)
    assert set(back.optimizer_state) == {"t", "v", "s"}
    assert back != Checkpoint.from_bytes(_encode(_pack(_entries(ckpt), step=ckpt.step + 1), "raw"))
    entries = _entries(ckpt)
    assert set(entries) == {"header", "order"} | {f"params/{n}" for n in ckpt.params} | {
        "optimizer/v",
        "optimizer/s",
    }


def test_the_header_is_plain_json(ckpt: Checkpoint) -> None:
    header = _header(_entries(ckpt))
    assert header["format"] == "caviar-checkpoint" and header["version"] == 2
    assert header["config"]["optimizer"] == "adam"
    assert header["rng_state"]["bit_generator"] == "PCG64"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: _pack({**e, "header": np.frombuffer(b"{nope", np.uint8)}), "not JSON"),
        (lambda e: _pack(e, format="other"), "format"),
        (lambda e: _pack(e, version=99), "unsupported checkpoint version 99"),
        (lambda e: _pack(e, epoch="3"), "epoch must be int"),
        (lambda e: _pack(e, epoch=-1), "epoch must be an integer >= 0"),
        (lambda e: _pack(e, epoch=999), "beyond the config"),
        (lambda e: _pack(e, task="ranking"), "task must be one of"),
        (lambda e: _pack({k: v for k, v in e.items() if k != "params/W2"}), "params/W2"),
        (lambda e: _pack({k: v for k, v in e.items() if k != "order"}), "'order'"),
        (lambda e: _pack({**e, "extra": np.zeros(2)}), "unexpected arrays"),
        (lambda e: _pack({**e, "params/W1": e["params/W1"].astype(np.float32)}), "float64"),
        (lambda e: _pack({**e, "params/W2": e["params/W2"][:, :5]}), "W2.*take 6 inputs"),
        (lambda e: _pack({**e, "params/b3": np.full(1, np.nan)}), "NaN"),
        (lambda e: _pack({**e, "optimizer/v": e["optimizer/v"][1:]}), "optimizer_state"),
        (
            lambda e: _pack(
                {k: v for k, v in e.items() if k != "optimizer/s"}, optimizer_slots=["v"]
            ),
            "optimizer_state for adam must hold",
        ),
        (lambda e: _pack({**e, "order": e["order"] * 0}), "permutation"),
        (lambda e: _pack(e, rng_state={"bit_generator": "MT19937"}), "PCG64 state"),
        (lambda e: _pack(e, rng_state={"bit_generator": "PCG64", "state": 1}), "valid PCG64"),
        (lambda e: _pack(e, config=_config_of(e, hidden_layers=[0])), "config is invalid"),
        (
            lambda e: _pack(e, config=_config_of(e, hidden_layers=[6, 5])),
            "hidden layer 2 has 5 units",
        ),
        (lambda e: _pack(e, config=_config_of(e, batch_norm=False)), "architecture"),
    ],
)
@pytest.mark.parametrize("container", ["raw", "npz"])
def test_from_bytes_rejects_bad_input_with_a_clear_error(
    ckpt: Checkpoint, mutate: Any, message: str, container: str
) -> None:
    """Every check holds in both containers: today's, and version 1's NPZ archive."""
    with pytest.raises(CheckpointError, match=message):
        Checkpoint.from_bytes(_encode(mutate(_entries(ckpt)), container))


def test_a_version_1_checkpoint_still_loads(ckpt: Checkpoint) -> None:
    """Checkpoints stored before version 2 resume as they did."""
    old = _encode(_pack(_entries(ckpt)), "npz")
    assert old.startswith(b"PK")
    assert Checkpoint.from_bytes(old) == ckpt
    with pytest.raises(CheckpointError, match="version 2 in a version 1 container"):
        Checkpoint.from_bytes(_encode(_pack(_entries(ckpt), version=2), "npz"))


def _raw(ckpt: Checkpoint, **header_changes: Any) -> bytes:
    return _encode(_pack(_entries(ckpt), **header_changes), "raw")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda c: b"not a checkpoint at all", "nor an NPZ archive"),
        (lambda c: MAGIC + b"\x01", "ends inside its header's length"),
        (lambda c: c.to_bytes()[:-1], "needs .* bytes, .* are left"),
        (lambda c: c.to_bytes() + b"\x00", "1 bytes follow its last array"),
        (lambda c: MAGIC + struct.pack("<I", 10**6) + b"{}", "says 1000000 bytes"),
        (lambda c: _raw(c, arrays="all"), "arrays must list"),
        (lambda c: _raw(c, arrays=[["order", "|O", [3]]]), "dtype '|O'"),
        (lambda c: _raw(c, arrays=[["order", ["<i8"], [3]]]), "dtype \\['<i8'\\]"),
        (lambda c: _raw(c, arrays=[["order", "<i8", [-1]]]), "has shape"),
        (lambda c: _raw(c, arrays=[["order", "<i8", [2, 2, 2]]]), "has shape"),
        (lambda c: _raw(c, arrays=[["order", "<i8", [1]], ["order", "<i8", [1]]]), "twice"),
        (
            lambda c: _raw(c, arrays=[["order", "<i8", [2**30, 2**30]]]),
            "needs 9223372036854775808 bytes",
        ),
        (lambda c: _raw(c, version=1), "unsupported checkpoint version 1 in a version 2"),
    ],
)
def test_from_bytes_rejects_a_bad_container_with_a_clear_error(
    ckpt: Checkpoint, make: Any, message: str
) -> None:
    with pytest.raises(CheckpointError, match=message):
        Checkpoint.from_bytes(make(ckpt))


def test_from_bytes_never_unpickles(ckpt: Checkpoint) -> None:
    entries: dict[str, Any] = _entries(ckpt)
    out = io.BytesIO()
    np.savez(out, **{**entries, "order": np.array([{"evil": 1}], dtype=object)})
    with pytest.raises(CheckpointError, match="unreadable array"):
        Checkpoint.from_bytes(out.getvalue())


def test_from_bytes_caps_the_decompressed_size(
    ckpt: Checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("trainer.checkpoint.MAX_UNCOMPRESSED_BYTES", 1000)
    with pytest.raises(CheckpointError, match="too large"):
        Checkpoint.from_bytes(ckpt.to_bytes())

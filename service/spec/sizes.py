"""What a study's data and largest network cost: output units, checkpoint bytes, checkpoints.

Caps that make every accepted study finishable, checked before anything is queued: the
data set's output units within `max_classes`; the checkpoint of the largest network the
space allows within the checkpoint cap (a trial's checkpoint over it would be refused
after training, so the study could never finish); and a panda trial's checkpoints, one
every `checkpoint_every` epochs, within `max_checkpoints_per_trial`.

The shape of a built-in data set is known here; an uploaded one's is measured by the
service (`service.datasets`) and passed in.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from service.search.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    LayersDistribution,
)
from service.settings import Settings
from service.spec.messages import error_at
from service.spec.schema import DatasetSpec, StudySpec

# Buffers each optimizer keeps per parameter (trainer/optimizers.py's slots).
_SLOTS = {"gd": 0, "momentum": 1, "rmsprop": 1, "adam": 2}
_ITEMSIZE = {"float32": 4, "float64": 8}
# The checkpoint's JSON header and the archive's own bytes, generously.
_OVERHEAD_BYTES = 64 * 1024
_MB = 1024 * 1024


@dataclass(frozen=True)
class DataShape:
    """What a data set means for a network: inputs, outputs, and training rows."""

    features: int
    outputs: int
    train_rows: int


# Built-in data sets: (features, classes, examples); generators take n_samples.
_SHIPPED = {"digits": (64, 10, 1797), "breast_cancer": (30, 2, 569)}


def builtin_shape(ds: DatasetSpec) -> DataShape:
    """The shape a built-in data set block makes (generators: 2 features)."""
    if ds.name in _SHIPPED:
        features, classes, rows = _SHIPPED[ds.name]
    else:
        default = 3 if ds.name == "blobs" else 2
        features, classes, rows = 2, ds.n_classes or default, ds.n_samples
    one = ds.task == "regression" or (classes == 2 and ds.task != "multiclass")
    outputs = 1 if one else classes
    return DataShape(features=features, outputs=outputs, train_rows=rows)


@dataclass(frozen=True)
class Network:
    """The largest network a spec allows: its hidden widths and what multiplies its bytes."""

    hidden: list[int]
    optimizer: str
    dtype: str
    batch_norm: bool
    loc: str  # where the widths come from: model.hidden_layers or space.hidden_layers

    def checkpoint_bytes(self, shape: DataShape) -> int:
        """An upper bound of its checkpoint's size: every array, uncompressed."""
        sizes = [shape.features, *self.hidden, shape.outputs]
        weights = sum(a * b for a, b in itertools.pairwise(sizes))
        per_unit = 2 if self.batch_norm else 1  # gamma and beta, or a bias
        params = weights + per_unit * sum(self.hidden) + shape.outputs
        running = 2 * sum(self.hidden) if self.batch_norm else 0
        values = params * (1 + _SLOTS[self.optimizer]) + running
        order = 8 * shape.train_rows  # the shuffle permutation, int64
        return values * _ITEMSIZE[self.dtype] + order + _OVERHEAD_BYTES

    def describe(self, shape: DataShape) -> str:
        layers = " -> ".join(map(str, [shape.features, *self.hidden, shape.outputs]))
        extras = f"{self.optimizer}, {self.dtype}" + (", batch norm" if self.batch_norm else "")
        return f"layers {layers} ({extras})"


def largest_network(spec: StudySpec, shape: DataShape) -> Network | None:
    """The network of the widest layers, the most optimizer buffers and the widest floats
    the base model and the space allow; None if the base model is not a valid config."""
    try:
        base = spec.base_config()
    except ValueError:
        return None
    layers, loc = _widest_layers(spec, list(base.hidden_layers))
    optimizer = max(_values(spec, "optimizer", base.optimizer), key=lambda o: _SLOTS.get(o, 0))
    dtype = max(_values(spec, "dtype", base.dtype), key=lambda d: _ITEMSIZE.get(d, 0))
    batch_norm = any(v is True for v in _values(spec, "batch_norm", base.batch_norm))
    if optimizer not in _SLOTS or dtype not in _ITEMSIZE:
        return None  # a choice that is not valid: reported by the checks of the space
    networks = [Network(h, str(optimizer), str(dtype), batch_norm, loc) for h in layers]
    return max(networks, key=lambda n: n.checkpoint_bytes(shape))


def _values(spec: StudySpec, path: str, base: Any) -> list[Any]:
    dist = spec.space.get(path)
    return list(dist.choices) if isinstance(dist, CategoricalDistribution) else [base]


def _widest_layers(spec: StudySpec, base: list[int]) -> tuple[list[list[int]], str]:
    """The hidden widths that may make the largest network (a choice of lists gives each),
    and where they come from."""
    whole = spec.space.get("hidden_layers")
    if isinstance(whole, LayersDistribution):
        # Every layer at its widest, as many as may be: more layers only add weights.
        return [[whole.units.high] * whole.depth.high], "space.hidden_layers"
    if isinstance(whole, CategoricalDistribution):
        lists = [list(c) for c in whole.choices if isinstance(c, list) and _all_ints(c)]
        return lists or [base], "space.hidden_layers"
    widths, loc = list(base), "model.hidden_layers"
    for i in range(len(widths)):
        dist = spec.space.get(f"hidden_layers.{i}")
        if isinstance(dist, IntDistribution | FloatDistribution):
            widths[i], loc = max(widths[i], int(dist.high)), "space.hidden_layers"
        elif isinstance(dist, CategoricalDistribution):
            ints = [c for c in dist.choices if isinstance(c, int) and not isinstance(c, bool)]
            widths[i], loc = max([widths[i], *ints]), "space.hidden_layers"
    return [widths], loc


def _all_ints(items: Iterable[Any]) -> bool:
    return all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in items)


def fit_errors(spec: StudySpec, shape: DataShape, settings: Settings) -> list[dict[str, Any]]:
    """Errors if the data set's outputs or the largest network's checkpoint pass the caps."""
    errors = []
    ds = spec.dataset
    if ds is not None and shape.outputs > settings.max_classes:
        loc = "dataset.task" if ds.task else "dataset.name"
        errors.append(
            error_at(
                loc,
                f"the data set makes {shape.outputs} output units (one per class); at most "
                f"{settings.max_classes} (max_classes)",
                ds.task or ds.name,
            )
        )
        return errors
    network = largest_network(spec, shape)
    if network is None:
        return errors
    size, cap = network.checkpoint_bytes(shape), settings.max_checkpoint_bytes
    if size > cap:
        errors.append(
            error_at(
                network.loc,
                f"the largest network the spec allows, {network.describe(shape)}, makes "
                f"checkpoints of up to {size / _MB:.1f} MB, over the cap of {cap / _MB:.1f} MB "
                "(max_checkpoint_bytes): its trials could never store one; use fewer or "
                "narrower hidden layers",
                network.hidden,
            )
        )
    return errors


def checkpoint_count_errors(spec: StudySpec, settings: Settings) -> list[dict[str, Any]]:
    """A panda trial keeps every checkpoint: at most `max_checkpoints_per_trial` of them."""
    if spec.execution.mode != "panda":
        return []
    try:
        epochs = spec.base_config().epochs
    except ValueError:
        return []
    dist = spec.space.get("epochs")
    if isinstance(dist, IntDistribution | FloatDistribution):
        epochs = max(epochs, int(dist.high))
    elif isinstance(dist, CategoricalDistribution):
        epochs = max([epochs, *(c for c in dist.choices if isinstance(c, int))])
    return epochs_checkpoint_errors(
        epochs, spec.execution.checkpoint_every, settings, loc="execution.checkpoint_every"
    )


def epochs_checkpoint_errors(
    epochs: int, every: int, settings: Settings, *, loc: str
) -> list[dict[str, Any]]:
    """The error if `epochs` epochs, a checkpoint every `every`, make too many checkpoints."""
    count, cap = math.ceil(epochs / every), settings.max_checkpoints_per_trial
    if count <= cap:
        return []
    return [
        error_at(
            loc,
            f"a panda trial of {epochs} epochs with a checkpoint every {every} keeps {count} "
            f"checkpoints, over the cap of {cap} (max_checkpoints_per_trial); checkpoint "
            f"every {math.ceil(epochs / cap)} epochs or more, or train fewer epochs",
            every if loc.endswith("checkpoint_every") else epochs,
        )
    ]

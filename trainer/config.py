"""TrainConfig: the one schema of a training run, shared by the trainer, the spec and the API."""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

Activation = Literal["relu", "tanh", "sigmoid", "leaky_relu"]
Init = Literal["zeros", "random", "xavier", "he"]
Optimizer = Literal["gd", "momentum", "rmsprop", "adam"]
LrDecay = Literal["none", "inverse_time", "exponential", "inverse_sqrt"]


def _kind(annotation: Any) -> str | None:
    """ "number" for an int or float field (optional or not), "numbers" for a list of them,
    "bool" for a bool field; None for any other."""
    if get_origin(annotation) is Annotated:
        return _kind(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = {_kind(a) for a in get_args(annotation)} - {None}
        return kinds.pop() if len(kinds) == 1 else None
    if annotation is bool:
        return "bool"
    if annotation in (int, float):
        return "number"
    if get_origin(annotation) is list and _kind(get_args(annotation)[0]) == "number":
        return "numbers"
    return None


def plain_value(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """`value` if its field takes it as it is; ValueError for what lax pydantic would convert.

    Pydantic reads true as 1, "5" as 5 and 0 or "yes" as booleans: `learning_rate: true`
    is a mistake to name, not a rate of 1.0. Whole floats (5.0) still count as integers.
    """
    kind = _kind(model.model_fields[str(info.field_name)].annotation)
    if value is None:  # pydantic says whether the field may be left empty
        return value
    if kind == "bool" and not isinstance(value, bool):
        raise ValueError(f"must be true or false (got {value!r})")
    items = value if kind == "numbers" and isinstance(value, list) else [value]
    for item in items if kind in ("number", "numbers") else ():
        if isinstance(item, bool | str):
            raise ValueError(f"must be a number, not {type(item).__name__} (got {item!r})")
    return value


class TrainConfig(BaseModel):
    """Every knob of one training run; the `model` block of a search spec.

    The names are a public contract (docs/spec.md, generated from the descriptions
    here). Validation happens here, once, so the
    service, the worker and a user importing `trainer` alone all reject the same configs
    with the same messages.
    """

    # Infinity is no rate, scale or penalty: every number must be finite.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    hidden_layers: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [20, 7, 5],
        description="units of each hidden layer, from the input on; the output layer is "
        "sized by the data (1 unit for binary, one per class for multiclass)",
    )
    activation: Activation = Field("relu", description="the hidden layers' activation")
    leaky_slope: float = Field(
        0.01, ge=0.0, lt=1.0, description="leaky_relu: the slope for negative inputs"
    )
    init: Init = Field(
        "he",
        description="weight initialization: zeros (every unit learns the same: symmetry is "
        "never broken), random (init_scale * N(0, 1)), xavier (N(0, 1) * sqrt(1 / fan_in)), "
        "he (N(0, 1) * sqrt(2 / fan_in), for relu)",
    )
    init_scale: float = Field(0.01, gt=0.0, description="factor of N(0, 1) for init: random")

    optimizer: Optimizer = Field(
        "adam", description="gd (plain gradient descent), momentum, rmsprop or adam"
    )
    learning_rate: float = Field(
        0.001, gt=0.0, description="the step size alpha (at epoch 0 when lr_decay is set)"
    )
    beta1: float = Field(0.9, ge=0.0, lt=1.0, description="momentum and Adam's first moment")
    beta2: float = Field(0.999, ge=0.0, lt=1.0, description="RMSprop and Adam's second moment")
    epsilon: float = Field(
        1e-8, gt=0.0, description="RMSprop and Adam: added to the denominator's square root"
    )

    lr_decay: LrDecay = Field(
        "none",
        description="learning-rate decay, with t = floor(e / decay_every) and e the epoch "
        "(or step) from 0: none; inverse_time lr / (1 + decay_rate * t); exponential "
        "lr * decay_rate^t; inverse_sqrt lr / sqrt(1 + decay_rate * t)",
    )
    decay_rate: float = Field(
        1.0, ge=0.0, description="how fast the rate decays; exponential: must be in (0, 1]"
    )
    decay_every: int = Field(
        1, ge=1, description="epochs (or steps) per stair of the decay: t grows every this many"
    )
    decay_per: Literal["epoch", "step"] = Field(
        "epoch", description="what e counts in lr_decay: epochs, or mini-batch steps"
    )

    l2: float = Field(0.0, ge=0.0, description="lambda of the L2 penalty")
    keep_prob: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="dropout keep probability of the hidden layers (1 = no dropout)",
    )

    batch_norm: bool = Field(
        False, description="batch normalization before each hidden layer's activation"
    )
    bn_momentum: float = Field(0.9, ge=0.0, lt=1.0, description="weight of the old running average")
    bn_epsilon: float = Field(
        1e-5, gt=0.0, description="batch norm: added to the variance before its square root"
    )

    epochs: int = Field(100, ge=1, description="passes over the training set")
    batch_size: int = Field(64, ge=0, description="examples per mini-batch; 0 = full batch")
    shuffle: bool = Field(True, description="reshuffle the training set before every epoch")
    dtype: Literal["float32", "float64"] = Field(
        "float32", description="the floating-point type of the weights and the arithmetic"
    )
    seed: int = Field(
        0, ge=0, lt=2**63, description="seed of the initialization, shuffling and dropout"
    )

    @field_validator("*", mode="before")
    @classmethod
    def _plain_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return plain_value(cls, value, info)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.lr_decay == "exponential" and not 0.0 < self.decay_rate <= 1.0:
            raise ValueError(
                f"decay_rate: must be in (0, 1] for lr_decay exponential (got {self.decay_rate})"
            )
        return self

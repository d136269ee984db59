"""TrainConfig: the one schema of a training run, shared by the trainer, the spec and the API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Activation = Literal["relu", "tanh", "sigmoid", "leaky_relu"]
Init = Literal["zeros", "random", "xavier", "he"]
Optimizer = Literal["gd", "momentum", "rmsprop", "adam"]
LrDecay = Literal["none", "inverse_time", "exponential", "inverse_sqrt"]


class TrainConfig(BaseModel):
    """Every knob of one training run; the `model` block of a search spec.

    The names are a public contract (DESIGN.md). Validation happens here, once, so the
    service, the worker and a user importing `trainer` alone all reject the same configs
    with the same messages.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden_layers: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [20, 7, 5])
    activation: Activation = "relu"
    leaky_slope: float = Field(0.01, ge=0.0, lt=1.0)
    init: Init = "he"
    init_scale: float = Field(0.01, gt=0.0, description="factor of N(0, 1) for init: random")

    optimizer: Optimizer = "adam"
    learning_rate: float = Field(0.001, gt=0.0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0, description="momentum and Adam's first moment")
    beta2: float = Field(0.999, ge=0.0, lt=1.0, description="RMSprop and Adam's second moment")
    epsilon: float = Field(1e-8, gt=0.0)

    lr_decay: LrDecay = "none"
    decay_rate: float = Field(1.0, ge=0.0)
    decay_every: int = Field(1, ge=1)
    decay_per: Literal["epoch", "step"] = "epoch"

    l2: float = Field(0.0, ge=0.0, description="lambda of the L2 penalty")
    keep_prob: float = Field(1.0, gt=0.0, le=1.0, description="dropout keep probability")

    batch_norm: bool = False
    bn_momentum: float = Field(0.9, ge=0.0, lt=1.0, description="weight of the old running average")
    bn_epsilon: float = Field(1e-5, gt=0.0)

    epochs: int = Field(100, ge=1)
    batch_size: int = Field(64, ge=0, description="0 = full batch")
    shuffle: bool = True
    dtype: Literal["float32", "float64"] = "float32"
    seed: int = Field(0, ge=0, lt=2**63)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.lr_decay == "exponential" and not 0.0 < self.decay_rate <= 1.0:
            raise ValueError(
                f"decay_rate: must be in (0, 1] for lr_decay exponential (got {self.decay_rate})"
            )
        return self

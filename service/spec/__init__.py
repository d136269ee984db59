"""The search spec: its schema, its strict validation, and its expansion into trials.

A spec (YAML or JSON; the body of ``POST /api/studies``) names a data set, a base model
(a ``TrainConfig`` given as the fields to change), a space of distributions keyed by
dotted paths into the model, a strategy, an objective, how to execute and how to prune
(field by field in DESIGN.md). `parse_spec` validates all of it before anything is
queued and raises `SpecError` listing every problem as ``loc: msg``, each naming the
field and echoing the value (``space.learning_rate.low: must be > 0 for scale log (got 0)``).

Space paths and distributions::

    space:
      learning_rate:   {type: float, low: 1.0e-4, high: 1.0, scale: log}
      beta1:           {type: float, low: 0.9, high: 0.999, scale: one_minus_log}
      keep_prob:       {type: float, low: 0.5, high: 1.0, step: 0.05}
      hidden_layers.0: {type: int, low: 5, high: 50}          # one width of model.hidden_layers
      epochs:          {type: int, low: 10, high: 1000, scale: log}
      init:            {type: categorical, choices: [he, xavier]}

A path is a model field, or ``<list field>.<index>`` for one element of a list the base
model already has. A distribution must fit the field: ``float`` for a float field,
``int`` for an int or float field, ``categorical`` for anything (its choices are any JSON
values, so ``hidden_layers`` can be a choice of lists: ``choices: [[50], [20, 7, 5]]``).

Depth and widths together - "1 to 4 hidden layers, 5 to 200 units each on a log
scale" - is the ``layers`` distribution on ``hidden_layers``::

    hidden_layers: {type: layers, depth: {low: 1, high: 4}, units: {low: 5, high: 200, scale: log}}

``depth`` and ``units`` are int distributions (``type: int`` may be left out). A trial
first draws the depth, then one width per layer that exists, each from ``units``; widths
of layers that do not exist are not drawn (on the grid, each depth is combined only with
widths for its own layers). ``hidden_layers`` then cannot also appear as
``hidden_layers.<index>``.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from service.search.distributions import (
    DISTRIBUTION_TYPES,
    AnyDistribution,
    CategoricalDistribution,
    Distribution,
    FloatDistribution,
    IntDistribution,
    LayersDistribution,
    show,
)
from service.search.strategies import (
    CoarseToFineStrategy,
    GridStrategy,
    RandomStrategy,
    SearchSpace,
    SobolStrategy,
    Strategy,
)
from service.settings import Settings, get_settings
from trainer.config import TrainConfig

BUILTIN_DATASETS = ("moons", "circles", "spirals", "blobs", "xor", "digits", "breast_cancer")
GENERATED_DATASETS = ("moons", "circles", "spirals", "blobs", "xor")
METRICS = ("dev_accuracy", "dev_cost", "train_accuracy", "train_cost")

# Trials checked against TrainConfig before any is queued: all of round 1. Only the first
# few failures are reported, since one bad range usually spoils most trials.
_MAX_TRIAL_ERRORS = 5


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DatasetSpec(_Strict):
    """A built-in generator, a built-in real data set, or the id of an uploaded one."""

    name: str = Field(max_length=200)
    n_samples: int = Field(1000, ge=4, description="generators only")
    noise: float = Field(0.2, ge=0.0, le=1000.0, description="generators only")
    dev_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = Field(0, ge=0, lt=2**63)
    label_column: str | None = Field(None, min_length=1, description="uploaded data only")
    # Beyond DESIGN.md's block: what trainer.load_dataset also takes.
    n_classes: int | None = Field(None, ge=2, le=50, description="spirals and blobs only")
    standardize: bool = True
    task: Literal["binary", "multiclass", "regression"] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not name.strip():
            raise ValueError(
                f"must be a built-in data set ({', '.join(BUILTIN_DATASETS)}) "
                f"or an uploaded data set's id (got {name!r})"
            )
        if name != name.strip():
            raise ValueError(f"must not start or end with spaces (got {name!r})")
        return name

    @model_validator(mode="after")
    def _label_column(self) -> DatasetSpec:
        if self.label_column is not None and self.is_builtin:
            raise ValueError(
                f"label_column: only for an uploaded data set, not the built-in "
                f"{self.name!r} (got {self.label_column!r})"
            )
        return self

    @model_validator(mode="after")
    def _n_classes(self) -> DatasetSpec:
        if self.n_classes is not None and self.name not in ("spirals", "blobs"):
            raise ValueError(
                f"n_classes: only for spirals and blobs (got {self.n_classes} for {self.name!r})"
            )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Dumped, the block is what trainer.load_dataset takes: no unset options, and no
        # generator-only keys for a real data set (parsing it again restores the defaults).
        out: dict[str, Any] = {k: v for k, v in handler(self).items() if v is not None}
        if not self.is_generated:
            out.pop("n_samples", None)
            out.pop("noise", None)
        return out

    def loader_args(self) -> dict[str, Any]:
        """The mapping `trainer.load_dataset` takes for a built-in data set.

        The same as the dumped block. For an uploaded data set the service adds the file's
        ``path`` (the ``name`` is its id).
        """
        return self.model_dump()

    @property
    def is_builtin(self) -> bool:
        return self.name in BUILTIN_DATASETS

    @property
    def is_generated(self) -> bool:
        """Whether `n_samples` and `noise` apply (they are ignored otherwise)."""
        return self.name in GENERATED_DATASETS


class StrategySpec(_Strict):
    """How trials are chosen: grid, random, sobol or coarse_to_fine."""

    type: Literal["grid", "random", "sobol", "coarse_to_fine"] = "random"
    trials: int = Field(60, ge=1, description="random and sobol")
    grid_points: int = Field(5, ge=1, description="grid: points per continuous dimension")
    rounds: int = Field(3, ge=1, description="coarse_to_fine")
    trials_per_round: int = Field(20, ge=1, description="coarse_to_fine")
    keep_top: float = Field(0.25, gt=0.0, le=1.0, description="coarse_to_fine")
    margin: float = Field(
        0.1, ge=0.0, le=1.0, description="coarse_to_fine: widen the best's span by this share"
    )
    placement: Literal["model", "uniform"] = Field(
        "model",
        description=(
            "coarse_to_fine: where in the box a round's trials go - model: by Thompson "
            "sampling from a Gaussian process of the finished trials; uniform: uniformly"
        ),
    )


class ObjectiveSpec(_Strict):
    """What a trial's value is; `direction` defaults to the one the metric needs."""

    metric: Literal["dev_accuracy", "dev_cost", "train_accuracy", "train_cost"] = "dev_accuracy"
    direction: Literal["maximize", "minimize"]
    at: Literal["last", "best"] = "last"

    @model_validator(mode="before")
    @classmethod
    def _default_direction(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("direction") is None:
            metric = data.get("metric", "dev_accuracy")
            natural = "minimize" if str(metric).endswith("_cost") else "maximize"
            return {**data, "direction": natural}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ObjectiveSpec:
        natural = "minimize" if self.metric.endswith("_cost") else "maximize"
        if self.direction != natural:
            raise ValueError(
                f"direction: {self.metric} is to {natural}, a search that would "
                f"{self.direction} it finds the worst model (got {self.direction!r})"
            )
        return self


class ExecutionSpec(_Strict):
    """How the queue runs a study's trials."""

    mode: Literal["caviar", "panda"] = "caviar"
    max_parallel: int = Field(8, ge=1, le=100_000)
    seed: int = Field(42, ge=0, lt=2**63)
    max_retries: int = Field(2, ge=0, le=100)
    checkpoint_every: int = Field(10, ge=1)
    await_review: bool = False

    @model_validator(mode="after")
    def _review_needs_panda(self) -> ExecutionSpec:
        if self.await_review and self.mode != "panda":
            raise ValueError(
                f"await_review: only with mode panda, one trial at a time (got mode {self.mode!r})"
            )
        return self


class PruningSpec(_Strict):
    """Stopping unpromising trials early: none, median or ASHA."""

    type: Literal["none", "median", "asha"] = "none"
    warmup_epochs: int = Field(10, ge=0, description="median")
    min_epochs: int = Field(5, ge=1, description="asha: rungs at min_epochs * reduction_factor^k")
    reduction_factor: int = Field(3, ge=2, description="asha")


class StudySpec(_Strict):
    """A whole search. Build it with `parse_spec`, which also checks it against the model."""

    name: str = Field(min_length=1, max_length=200)
    dataset: DatasetSpec
    model: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, AnyDistribution] = Field(default_factory=dict)
    strategy: StrategySpec = Field(default_factory=lambda: StrategySpec())
    objective: ObjectiveSpec = Field(default_factory=lambda: ObjectiveSpec.model_validate({}))
    execution: ExecutionSpec = Field(default_factory=lambda: ExecutionSpec())
    pruning: PruningSpec = Field(default_factory=lambda: PruningSpec())

    @field_validator("pruning", mode="before")
    @classmethod
    def _null_pruning(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not name.strip():
            raise ValueError(f"must not be blank (got {name!r})")
        return name

    def base_config(self) -> TrainConfig:
        """The model block over TrainConfig's defaults (raises if the block is invalid)."""
        return TrainConfig(**self.model)

    def search_space(self) -> SearchSpace:
        return SearchSpace(self.space)

    def to_json(self) -> dict[str, Any]:
        """JSON-able and complete (defaults filled in); `parse_spec` reads it back as equal."""
        return self.model_dump(mode="json", exclude_none=True)


class SpecError(Exception):
    """A spec is invalid: `errors` lists each problem with its field path and input."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__(
            "\n".join(f"{e['loc']}: {e['msg']}" if e["loc"] else e["msg"] for e in errors)
        )


@dataclass(frozen=True)
class TrialPlan:
    """One trial to queue: the sampled values and the full config they make."""

    params: dict[str, Any]  # sampled values keyed by space path
    config: dict[str, Any]  # the merged TrainConfig, JSON-able


# --- parsing ---------------------------------------------------------------------------


def parse_spec(
    data: Mapping[str, Any] | StudySpec | str | bytes,
    *,
    settings: Settings | None = None,
    check_trials: bool = True,
) -> StudySpec:
    """Validate a spec completely and return it; raise `SpecError` listing every problem.

    `data` is a dict, or YAML or JSON text. Checked: the schema (unknown fields
    rejected), the caps of `settings`, that every space path exists in TrainConfig and its
    distribution fits the field, that both ends of every range and every choice make a
    valid config, and (`check_trials`) that every trial of the first round does.
    """
    settings = settings or get_settings()
    if isinstance(data, StudySpec):
        data = data.to_json()
    elif isinstance(data, str | bytes):
        data = _load_text(data)
    if not isinstance(data, Mapping):
        raise SpecError([_error("", f"a spec must be a mapping (got {_kind(data)})", None)])
    try:
        spec = StudySpec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(_from_validation(exc)) from None
    model_errors = _check_model(spec, settings)
    space_errors = _check_space(spec, settings)
    errors = model_errors + _check_dataset(spec, settings) + space_errors
    if not space_errors:  # sizes need a sane space; a huge one must not be built
        errors += _check_sizes(spec, settings)
    if errors:
        raise SpecError(errors)
    if check_trials:
        _check_first_round(spec, settings)
    return spec


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice instead of keeping the last silently."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_text(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError([_error("", f"a spec must be UTF-8 text ({exc})", None)]) from None
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        where = " ".join(str(exc).split())
        raise SpecError([_error("", f"not valid YAML or JSON: {where}", None)]) from None


# --- errors ----------------------------------------------------------------------------

_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w]*(?:\.[\w]+)*): (.+)$", re.DOTALL)
_COMPARE = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}
_SPEC_FIELDS = sorted(
    {
        f
        for m in (
            StudySpec,
            DatasetSpec,
            StrategySpec,
            ObjectiveSpec,
            ExecutionSpec,
            PruningSpec,
            FloatDistribution,
            IntDistribution,
            CategoricalDistribution,
            LayersDistribution,
        )
        for f in m.model_fields
    }
)


def _error(loc: str, msg: str, value: Any) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "input": _jsonable(value)}


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def _join(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc)


def _suggest(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _from_validation(
    exc: ValidationError, *, known: Sequence[str] = _SPEC_FIELDS
) -> list[dict[str, Any]]:
    """Pydantic's errors as ours: dotted locs, messages that say the rule and the value.

    `known` are the field names an unknown field is compared with for a suggestion.
    """
    out = []
    for e in exc.errors(include_url=False):
        loc = list(e["loc"])
        if len(loc) >= 3 and loc[0] == "space" and loc[2] in DISTRIBUTION_TYPES:
            del loc[2]  # the discriminator's tag is not a field the user wrote
        msg, value = _message(
            e, loc, known=list(TrainConfig.model_fields) if loc[:1] == ["model"] else known
        )
        match = _FIELD_PREFIX.match(msg)
        if match and e["type"] in ("value_error", "assertion_error"):
            for part in match.group(1).split("."):
                loc.append(part)
                value = value.get(part) if isinstance(value, Mapping) else value
            msg = match.group(2)
        elif "(got" not in msg and e["type"] not in ("missing", "union_tag_not_found"):
            msg = f"{msg} (got {show(value)})"
        out.append(_error(_join(loc), msg, value))
    return out


def _message(e: Any, loc: list[Any], *, known: Sequence[str]) -> tuple[str, Any]:
    kind, ctx, value = e["type"], e.get("ctx", {}), e.get("input")
    if kind == "value_error":
        return str(ctx.get("error", e["msg"])), value
    if kind in _COMPARE:
        op, key = _COMPARE[kind]
        return f"must be {op} {show(ctx[key])}", value
    if kind == "missing":
        return "required", value
    if kind == "extra_forbidden":
        return "unknown field" + _suggest(str(loc[-1]), known), value
    if kind == "literal_error":
        return f"must be {ctx['expected']}", value
    if kind == "union_tag_not_found":
        loc.append("type")
        return f"required, one of {', '.join(DISTRIBUTION_TYPES)}", None
    if kind == "union_tag_invalid":
        loc.append("type")
        tag = ctx.get("tag")
        return (
            f"must be one of {', '.join(DISTRIBUTION_TYPES)}"
            f"{_suggest(str(tag), DISTRIBUTION_TYPES)} (got {show(tag)})",
            tag,
        )
    if kind in ("model_attributes_type", "model_type", "dict_type"):
        return f"must be a mapping (got {_kind(value)}: {show(value)})", value
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be an integer", value
    if kind in ("float_parsing", "float_type"):
        return "must be a number", value
    if kind == "finite_number":
        return "must be a finite number", value
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false", value
    if kind in ("string_too_short",):
        return "must not be empty", value
    if kind in ("list_type",):
        return "must be a list", value
    return str(e["msg"]), value


# --- checks beyond the schema ----------------------------------------------------------


def _field_kind(name: str) -> str:
    """float | int | bool | choice | list | other: which distributions fit the field."""
    annotation = TrainConfig.model_fields[name].annotation
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    if get_origin(annotation) is Literal:
        return "choice"
    if get_origin(annotation) is list:
        return "list"
    return "other"


_FITS: dict[str, tuple[type[Distribution], ...]] = {
    "float": (FloatDistribution, IntDistribution, CategoricalDistribution),
    "int": (IntDistribution, CategoricalDistribution),
    "list": (LayersDistribution, CategoricalDistribution),
    "item": (IntDistribution, CategoricalDistribution),  # one element of a list of ints
}
_PATH = re.compile(r"^([A-Za-z_]\w*)(?:\.(\d+))?$")


def _cap_errors(cfg: TrainConfig, settings: Settings) -> list[tuple[str, str, Any]]:
    """(field, msg, value) for every cap of `settings` that `cfg` goes over."""
    out: list[tuple[str, str, Any]] = []
    if len(cfg.hidden_layers) > settings.max_layers:
        out.append(
            (
                "hidden_layers",
                f"{len(cfg.hidden_layers)} layers, over the cap of {settings.max_layers} "
                f"(max_layers) (got {cfg.hidden_layers})",
                cfg.hidden_layers,
            )
        )
    for i, w in enumerate(cfg.hidden_layers):
        if w > settings.max_units:
            out.append(
                (f"hidden_layers.{i}", f"must be <= {settings.max_units} (max_units) (got {w})", w)
            )
    if cfg.epochs > settings.max_epochs:
        out.append(
            (
                "epochs",
                f"must be <= {settings.max_epochs} (max_epochs) (got {cfg.epochs})",
                cfg.epochs,
            )
        )
    return out


def _config_errors(config: Mapping[str, Any], settings: Settings) -> list[tuple[str, str, Any]]:
    """(field, msg, value) for every way `config` is not a valid, capped TrainConfig."""
    try:
        cfg = TrainConfig(**config)
    except ValidationError as exc:
        errors = _from_validation(exc, known=list(TrainConfig.model_fields))
        return [(e["loc"], e["msg"], e["input"]) for e in errors]
    return _cap_errors(cfg, settings)


def _check_model(spec: StudySpec, settings: Settings) -> list[dict[str, Any]]:
    return [_error(f"model.{f}", m, v) for f, m, v in _config_errors(spec.model, settings)]


def _check_dataset(spec: StudySpec, settings: Settings) -> list[dict[str, Any]]:
    ds = spec.dataset
    if ds.is_generated and ds.n_samples > settings.max_samples:
        return [
            _error(
                "dataset.n_samples",
                f"must be <= {settings.max_samples} (max_samples) (got {ds.n_samples})",
                ds.n_samples,
            )
        ]
    return []


def _merge(base: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """`base` (a full config dict) with each path ("lr", "hidden_layers.0") set from `params`."""
    out = dict(base)
    for path, value in params.items():
        name, _, index = path.partition(".")
        if index:
            items = list(out[name])
            items[int(index)] = value
            out[name] = items
        else:
            out[name] = value
    return out


def _check_space(spec: StudySpec, settings: Settings) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    try:
        base: dict[str, Any] | None = spec.base_config().model_dump()
    except ValidationError:  # reported under model.*; ranges cannot be checked against it
        base = None
    for path, dist in spec.space.items():
        loc = f"space.{path}"
        match = _PATH.match(path)
        if not match:
            errors.append(
                _error(loc, "not a path into the model: a field, or <list field>.<index>", path)
            )
            continue
        name, index = match.group(1), match.group(2)
        if name not in TrainConfig.model_fields:
            hint = _suggest(name, list(TrainConfig.model_fields))
            errors.append(_error(loc, f"not a field of the model{hint} (got {name!r})", path))
            continue
        kind = _field_kind(name)
        if index is not None:
            if kind != "list":
                errors.append(_error(loc, f"{name} is not a list, it has no element {index}", path))
                continue
            if name in spec.space:
                errors.append(
                    _error(loc, f"{name} is searched as a whole already (space.{name})", path)
                )
                continue
            if base is not None and int(index) >= len(base[name]):
                errors.append(
                    _error(
                        loc,
                        f"model.{name} has {len(base[name])} elements, so no index {index}; "
                        f"lengthen model.{name} or search its depth with type: layers",
                        path,
                    )
                )
                continue
            kind = "item"
        fits = _FITS.get(kind, (CategoricalDistribution,))
        if not isinstance(dist, fits):
            wanted = " or ".join(str(t.model_fields["type"].default) for t in fits)
            errors.append(
                _error(
                    f"{loc}.type",
                    f"{path} takes {wanted}, not {dist.type} (got {dist.type!r})",
                    dist.type,
                )
            )
            continue
        if base is not None or isinstance(dist, LayersDistribution):
            errors += _check_ends(loc, path, dist, base or {}, settings)
    return errors


def _check_ends(
    loc: str, path: str, dist: Distribution, base: Mapping[str, Any], settings: Settings
) -> list[dict[str, Any]]:
    """Both ends of a range, and every choice, must make a valid config within the caps."""
    if isinstance(dist, LayersDistribution):
        out = []
        if dist.depth.high > settings.max_layers:
            out.append(
                _error(
                    f"{loc}.depth.high",
                    f"must be <= {settings.max_layers} (max_layers) (got {dist.depth.high})",
                    dist.depth.high,
                )
            )
        if dist.units.high > settings.max_units:
            out.append(
                _error(
                    f"{loc}.units.high",
                    f"must be <= {settings.max_units} (max_units) (got {dist.units.high})",
                    dist.units.high,
                )
            )
        return out
    if isinstance(dist, CategoricalDistribution):
        ends = [(f"choices.{i}", c) for i, c in enumerate(dist.choices)]
    else:
        assert isinstance(dist, FloatDistribution | IntDistribution)
        ends = [("low", dist.low), ("high", dist.high)]
    out = []
    field = path
    # A cap the base model already breaks is reported once, under model.*.
    known = {(f, m) for f, m, _ in _config_errors(base, settings)}
    for where, value in ends:
        for f, msg, _ in _config_errors(_merge(base, {path: value}), settings):
            if (f, msg) in known:
                continue
            # The message is about this value unless it names another field.
            text = msg if f == field else f"{f}: {msg}"
            out.append(_error(f"{loc}.{where}", text, value))
    return out


def _check_sizes(spec: StudySpec, settings: Settings) -> list[dict[str, Any]]:
    st, cap = spec.strategy, settings.max_trials_per_study
    if st.type == "grid":
        size = spec.search_space().grid_size(st.grid_points)
        for limit, setting in (
            (settings.max_grid_size, "max_grid_size"),
            (cap, "max_trials_per_study"),
        ):
            if size > limit:
                return [
                    _error(
                        "strategy.grid_points",
                        f"the grid would have {size} trials, over the cap of {limit} ({setting}) "
                        f"(got grid_points {st.grid_points})",
                        st.grid_points,
                    )
                ]
    elif st.type == "coarse_to_fine":
        total = st.rounds * st.trials_per_round
        if total > cap:
            return [
                _error(
                    "strategy.trials_per_round",
                    f"rounds x trials_per_round = {st.rounds} x {st.trials_per_round} = {total} "
                    f"trials, over the cap of {cap} (max_trials_per_study)",
                    st.trials_per_round,
                )
            ]
    elif st.trials > cap:
        return [
            _error(
                "strategy.trials",
                f"must be <= {cap} (max_trials_per_study) (got {st.trials})",
                st.trials,
            )
        ]
    return []


def _check_first_round(spec: StudySpec, settings: Settings) -> None:
    _, plans = _plan(spec, round_index=0, history=())
    errors = []
    for i, plan in enumerate(plans):
        for f, msg, value in _config_errors(plan.config, settings):
            errors.append(_trial_error(spec, i, plan.params, f, msg, value))
        if len(errors) >= _MAX_TRIAL_ERRORS:
            break
    if errors:
        raise SpecError(errors)


def _trial_error(
    spec: StudySpec, i: int, params: Mapping[str, Any], field: str, msg: str, value: Any
) -> dict[str, Any]:
    """An error of one sampled trial, at the space path it is about when there is one."""
    name = field.split(".")[0]
    path = field if field in spec.space else name if name in spec.space else None
    loc = f"space.{path}" if path else "space"
    return _error(loc, f"trial {i} {json.dumps(params)}: {field}: {msg}", value)


# --- planning --------------------------------------------------------------------------


def make_strategy(spec: StudySpec) -> Strategy:
    """The strategy object a spec describes, over the spec's space."""
    st, space, seed = spec.strategy, spec.search_space(), spec.execution.seed
    if st.type == "grid":
        return GridStrategy(space=space, seed=seed, points=st.grid_points)
    if st.type == "sobol":
        return SobolStrategy(space=space, seed=seed, trials=st.trials)
    if st.type == "coarse_to_fine":
        return CoarseToFineStrategy(
            space=space,
            seed=seed,
            rounds=st.rounds,
            trials_per_round=st.trials_per_round,
            keep_top=st.keep_top,
            margin=st.margin,
            direction=spec.objective.direction,
            placement=st.placement,
        )
    return RandomStrategy(space=space, seed=seed, trials=st.trials)


def plan_round(
    spec: StudySpec,
    *,
    round_index: int,
    history: Sequence[tuple[Mapping[str, Any], float | None]] = (),
) -> tuple[dict[str, Any] | None, list[TrialPlan]]:
    """The trials of round `round_index` (0 = the first), and the box they were drawn from.

    For coarse_to_fine rounds >= 1, `history` holds (params, value) of every finished
    trial so far, value None for a failed or diverged one (ranked worst); the box
    (JSON-able, per axis low/high in the original units or the kept choices) is None for
    the strategies that have no box. Same spec, round and history give the same plans.
    Raises SpecError if a trial does not make a valid TrainConfig, ValueError for a
    round the strategy does not have.
    """
    box, plans = _plan(spec, round_index=round_index, history=history)
    for i, plan in enumerate(plans):
        try:
            TrainConfig(**plan.config)
        except ValidationError as exc:
            errors = _from_validation(exc, known=list(TrainConfig.model_fields))
            raise SpecError(
                [_trial_error(spec, i, plan.params, e["loc"], e["msg"], e["input"]) for e in errors]
            ) from None
    return box, plans


def _plan(
    spec: StudySpec,
    *,
    round_index: int,
    history: Sequence[tuple[Mapping[str, Any], float | None]],
) -> tuple[dict[str, Any] | None, list[TrialPlan]]:
    strategy = make_strategy(spec)
    box, params = strategy.suggest(round_index=round_index, history=history)
    base = spec.base_config().model_dump(mode="json")
    plans = []
    for p in params:
        plans.append(TrialPlan(params=p, config=_merge(base, p)))
    return (box.describe(strategy.space) if box is not None else None), plans


def total_rounds(spec: StudySpec) -> int:
    """How many rounds the study has: strategy.rounds for coarse_to_fine, else 1."""
    return spec.strategy.rounds if spec.strategy.type == "coarse_to_fine" else 1


def total_trials(spec: StudySpec) -> int:
    """How many trials the whole study queues over all its rounds."""
    return make_strategy(spec).total_trials


def objective_direction(spec: StudySpec) -> str:
    """ "maximize" or "minimize": how to rank the objective's values."""
    return spec.objective.direction


def preview(spec: StudySpec, n: int = 20) -> dict[str, Any]:
    """Where the first `n` trials put each hyperparameter, for the dashboard's form.

    Per space path: its distribution, the values of the first `n` trials of round 1, and
    their positions along the distribution's own scale (0 = low, 1 = high; for a
    ``layers`` space, the position of the depth). For a grid, also the levels of each
    hyperparameter.
    """
    strategy = make_strategy(spec)
    space = strategy.space
    _, params = strategy.suggest(round_index=0, history=())
    first = params[:n]
    out: dict[str, Any] = {
        "strategy": spec.strategy.type,
        "rounds": total_rounds(spec),
        "trials_in_first_round": strategy.trials_in_round(0),
        "total_trials": strategy.total_trials,
        "n": len(first),
        "params": {},
    }
    for path in space.paths:
        dist = space.distributions[path]
        values = [p[path] for p in first]
        entry: dict[str, Any] = {
            "distribution": dist.to_json(),
            "values": values,
            "positions": [_position(dist.to_unit(v)[0]) for v in values],
        }
        if spec.strategy.type == "grid":
            entry["levels"] = dist.grid(spec.strategy.grid_points) if dist.dims == 1 else None
        out["params"][path] = entry
    return out


def _position(u: float) -> float | None:
    return None if math.isnan(u) else round(float(u), 6)

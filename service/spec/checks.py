"""The checks past the schema: the spec against TrainConfig, the caps, and its first round.

The schema checks each block alone; these check what needs the model or the settings:
that the base model is a valid config within the caps, that every space path exists and
its distribution fits the field, that both ends of every range make a valid config, that
the study is not bigger than the caps allow (`sizes`: nor its checkpoints), and that
every trial of round 1 is valid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_origin

from pydantic import ValidationError

from service.search.distributions import (
    CategoricalDistribution,
    Distribution,
    FloatDistribution,
    IntDistribution,
    LayersDistribution,
)
from service.settings import Settings
from service.spec.messages import SpecError, error_at, from_validation, suggest, trial_error
from service.spec.planning import merge_params, sample_round, total_trials
from service.spec.schema import StudySpec, TrialPlan
from service.spec.sizes import builtin_shape, checkpoint_count_errors, fit_errors
from trainer.config import TrainConfig

# Trials checked against TrainConfig before any is queued: all of round 1. Only the first
# few failures are reported, since one bad range usually spoils most trials.
_MAX_TRIAL_ERRORS = 5


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


def cap_errors(cfg: TrainConfig, settings: Settings) -> list[tuple[str, str, Any]]:
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
        errors = from_validation(exc, known=list(TrainConfig.model_fields))
        return [(e["loc"], e["msg"], e["input"]) for e in errors]
    return cap_errors(cfg, settings)


def _check_model(spec: StudySpec, settings: Settings) -> list[dict[str, Any]]:
    return [error_at(f"model.{f}", m, v) for f, m, v in _config_errors(spec.model, settings)]


def _check_dataset(spec: StudySpec, settings: Settings) -> list[dict[str, Any]]:
    ds = spec.dataset
    if ds.is_generated and ds.n_samples > settings.max_samples:
        return [
            error_at(
                "dataset.n_samples",
                f"must be <= {settings.max_samples} (max_samples) (got {ds.n_samples})",
                ds.n_samples,
            )
        ]
    return []


def _check_space(spec: StudySpec, settings: Settings) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    try:
        base: dict[str, Any] | None = spec.base_config().model_dump()
    except ValidationError:  # reported under model.*; ranges cannot be checked against it
        base = None
    for path, dist in spec.space.items():
        loc = f"space.{path}"
        kind, path_error = _path_kind(spec, path, base)
        if path_error is not None:
            errors.append(path_error)
            continue
        fits = _FITS.get(kind, (CategoricalDistribution,))
        if not isinstance(dist, fits):
            wanted = " or ".join(str(t.model_fields["type"].default) for t in fits)
            errors.append(
                error_at(
                    f"{loc}.type",
                    f"{path} takes {wanted}, not {dist.type} (got {dist.type!r})",
                    dist.type,
                )
            )
            continue
        if base is not None or isinstance(dist, LayersDistribution):
            errors += _check_ends(loc, path, dist, base or {}, settings)
    return errors


def _path_kind(
    spec: StudySpec, path: str, base: Mapping[str, Any] | None
) -> tuple[str, dict[str, Any] | None]:
    """What `path` points at (a `_field_kind`, or "item" for one element of a list field),
    or the error saying why it points at nothing."""
    loc = f"space.{path}"
    match = _PATH.match(path)
    if not match:
        return "", error_at(
            loc, "not a path into the model: a field, or <list field>.<index>", path
        )
    name, index = match.group(1), match.group(2)
    if name not in TrainConfig.model_fields:
        hint = suggest(name, list(TrainConfig.model_fields))
        return "", error_at(loc, f"not a field of the model{hint} (got {name!r})", path)
    kind = _field_kind(name)
    if index is None:
        return kind, None
    if kind != "list":
        return "", error_at(loc, f"{name} is not a list, it has no element {index}", path)
    if name in spec.space:
        return "", error_at(loc, f"{name} is searched as a whole already (space.{name})", path)
    if base is not None and int(index) >= len(base[name]):
        return "", error_at(
            loc,
            f"model.{name} has {len(base[name])} elements, so no index {index}; "
            f"lengthen model.{name} or search its depth with type: layers",
            path,
        )
    return "item", None


def _check_ends(
    loc: str, path: str, dist: Distribution, base: Mapping[str, Any], settings: Settings
) -> list[dict[str, Any]]:
    """Both ends of a range, and every choice, must make a valid config within the caps."""
    if isinstance(dist, LayersDistribution):
        out = []
        if dist.depth.high > settings.max_layers:
            out.append(
                error_at(
                    f"{loc}.depth.high",
                    f"must be <= {settings.max_layers} (max_layers) (got {dist.depth.high})",
                    dist.depth.high,
                )
            )
        if dist.units.high > settings.max_units:
            out.append(
                error_at(
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
        for f, msg, _ in _config_errors(merge_params(base, {path: value}), settings):
            if (f, msg) in known:
                continue
            # The message is about this value unless it names another field.
            text = msg if f == field else f"{f}: {msg}"
            out.append(error_at(f"{loc}.{where}", text, value))
    return out


def _check_sizes(spec: StudySpec, settings: Settings) -> list[dict[str, Any]]:
    st, cap = spec.strategy, settings.max_trials_per_study
    total = total_trials(spec)
    if st.type == "grid":
        for limit, setting in (
            (settings.max_grid_size, "max_grid_size"),
            (cap, "max_trials_per_study"),
        ):
            if total > limit:
                return [
                    error_at(
                        "strategy.grid_points",
                        f"the grid would have {total} trials, over the cap of {limit} ({setting}) "
                        f"(got grid_points {st.grid_points})",
                        st.grid_points,
                    )
                ]
        return []
    if total <= cap:
        return []
    if st.type == "coarse_to_fine":
        return [
            error_at(
                "strategy.trials_per_round",
                f"rounds x trials_per_round = {st.rounds} x {st.trials_per_round} = {total} "
                f"trials, over the cap of {cap} (max_trials_per_study)",
                st.trials_per_round,
            )
        ]
    return [
        error_at(
            "strategy.trials",
            f"must be <= {cap} (max_trials_per_study) (got {st.trials})",
            st.trials,
        )
    ]


def checked_round(
    spec: StudySpec,
    *,
    settings: Settings,
    history: Sequence[tuple[Mapping[str, Any], float | None]] = (),
) -> tuple[dict[str, Any] | None, list[TrialPlan]]:
    """The first round's box and trials, each trial's config checked once (the schema of
    TrainConfig and the caps); `SpecError` naming the first trials that fail.

    `history` (a parent's trials) makes a coarse-to-fine round start around their best.
    """
    box, plans = sample_round(spec, round_index=0, history=history)
    errors = []
    for i, plan in enumerate(plans):
        for f, msg, value in _config_errors(plan.config, settings):
            errors.append(trial_error(spec, i, plan.params, f, msg, value))
        if len(errors) >= _MAX_TRIAL_ERRORS:
            break
    if errors:
        raise SpecError(errors)
    return box, plans


def check_spec(spec: StudySpec, *, settings: Settings, check_trials: bool = True) -> None:
    """Raise `SpecError` listing every problem of a schema-valid spec past its schema.

    `check_trials`: also that every trial of the first round makes a valid config.
    """
    model_errors = _check_model(spec, settings)
    space_errors = _check_space(spec, settings)
    errors = model_errors + _check_dataset(spec, settings) + space_errors
    if not space_errors:  # sizes need a sane space; a huge one must not be built
        errors += _check_sizes(spec, settings)
    if not errors:
        errors += checkpoint_count_errors(spec, settings)
        if spec.dataset.is_builtin:  # an upload's shape is measured by the service
            errors += fit_errors(spec, builtin_shape(spec.dataset), settings)
    if errors:
        raise SpecError(errors)
    if check_trials:
        checked_round(spec, settings=settings)

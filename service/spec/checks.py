"""The checks past the schema: the spec against TrainConfig, the caps, and its first round.

The schema checks each block alone; these check what needs the model or the settings:
that the base model is a valid config within the caps, that every space path exists and
its distribution fits the field, that both ends of every range make a valid config, that
the study is not bigger than the caps allow (`sizes`: nor its checkpoints), and that
every trial of round 1 is valid.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal, get_origin

from pydantic import BaseModel, ValidationError

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
from service.spec.schema import BUILTIN_DATASETS, GENERATED_DATASETS, StudySpec, TrialPlan
from service.spec.sizes import builtin_shape, checkpoint_count_errors, fit_errors
from service.spec.tasks import task_errors
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
BLOCKS = frozenset(StudySpec.model_fields)  # a spec's top-level blocks


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
    if ds is not None and ds.is_generated and ds.n_samples > settings.max_samples:
        return [
            error_at(
                "dataset.n_samples",
                f"must be <= {settings.max_samples} (max_samples) (got {ds.n_samples})",
                ds.n_samples,
            )
        ]
    return []


def _check_space(
    spec: StudySpec, settings: Settings, *, base_known: bool = True
) -> list[dict[str, Any]]:
    """Every space path exists and its distribution fits; `base_known`: the model block
    parsed, so the ends of each range can be checked against it."""
    errors: list[dict[str, Any]] = []
    try:
        base: dict[str, Any] | None = spec.base_config().model_dump() if base_known else None
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


# The fields each kind of strategy and of pruning reads. A field set for a kind that does
# not read it would be ignored without a word: `trials: 10` on coarse_to_fine still ran
# rounds x trials_per_round trials, `warmup_epochs` under ASHA changed nothing.
STRATEGY_FIELDS: dict[str, tuple[str, ...]] = {
    "grid": ("grid_points",),
    "random": ("trials",),
    "sobol": ("trials",),
    "coarse_to_fine": ("rounds", "trials_per_round", "keep_top", "margin", "placement"),
}
PRUNING_FIELDS: dict[str, tuple[str, ...]] = {
    "median": ("warmup_epochs",),
    "asha": ("min_epochs", "reduction_factor"),
}


def _changed(block: BaseModel, names: Collection[str]) -> list[str]:
    """Those of `names` set in `block` to other than their defaults, sorted. (At its
    default a field says nothing: a spec written out whole, as a zoom's preview or a stored
    study gives it, holds every field.)"""
    fields = type(block).model_fields
    return [
        name
        for name in sorted(block.model_fields_set & set(names))
        if getattr(block, name) != fields[name].default
    ]


def _unread(block: BaseModel, kind: str, table: dict[str, tuple[str, ...]]) -> list[str]:
    """The fields of `block` set, to other than their defaults, that `kind` does not read."""
    unread = set(type(block).model_fields) - {"type", *table.get(kind, ())}
    return _changed(block, unread)


def _readers(name: str, table: dict[str, tuple[str, ...]]) -> str:
    kinds = [k for k, fields in table.items() if name in fields]
    return f"only {' and '.join(kinds)} {'do' if len(kinds) > 1 else 'does'}"


def _check_unread_fields(spec: StudySpec, parsed: Collection[str]) -> list[dict[str, Any]]:
    """Fields set for a kind of strategy, pruning or data set that does not read them:
    what the person meant would silently not happen."""
    out = []
    st = spec.strategy
    if "strategy" in parsed:
        if st.type == "coarse_to_fine":
            total = st.rounds * st.trials_per_round
            runs = f"it runs rounds x trials_per_round = {st.rounds} x {st.trials_per_round} = "
            runs += f"{total} trials"
        else:
            runs = f"it reads {', '.join(STRATEGY_FIELDS[st.type])}"
        for name in _unread(st, st.type, STRATEGY_FIELDS):
            why = f"{st.type} does not read {name} ({_readers(name, STRATEGY_FIELDS)}): {runs}"
            out.append(error_at(f"strategy.{name}", f"{why}; remove it", getattr(st, name)))
    pr = spec.pruning
    if "pruning" in parsed and pr.type != "none":  # off: settings kept for later say nothing
        for name in _unread(pr, pr.type, PRUNING_FIELDS):
            why = f"{pr.type} does not read {name} ({_readers(name, PRUNING_FIELDS)})"
            out.append(error_at(f"pruning.{name}", f"{why}; remove it", getattr(pr, name)))
    ds = spec.dataset
    if "dataset" in parsed and ds is not None and not ds.is_generated:
        for name in _changed(ds, ("n_samples", "noise")):
            what = "the built-in" if ds.is_builtin else "the uploaded data set"
            out.append(
                error_at(
                    f"dataset.{name}",
                    f"only the generators ({', '.join(GENERATED_DATASETS)}) read {name}; "
                    f"{what} {ds.name!r} is used whole, as it is; remove it",
                    getattr(ds, name),
                )
            )
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
    if spec.entrypoint is not None:  # a task's own params: the function checks them
        return box, plans
    errors = []
    for i, plan in enumerate(plans):
        for f, msg, value in _config_errors(plan.config, settings):
            errors.append(trial_error(spec, i, plan.params, f, msg, value))
        if len(errors) >= _MAX_TRIAL_ERRORS:
            break
    if errors:
        raise SpecError(errors)
    return box, plans


def spec_errors(
    spec: StudySpec,
    *,
    settings: Settings,
    parsed: Collection[str] = BLOCKS,
    unparsed_paths: Collection[str] = (),
) -> list[dict[str, Any]]:
    """Every problem past the schema of the blocks of `spec` named in `parsed`.

    A check runs when every block it reads parsed and passed its own checks, so one spec
    with mistakes in several blocks has all of them reported at once. `unparsed_paths` are
    space paths whose distributions the schema refused: only their paths are checked.
    """
    errors = task_errors(spec, settings=settings, parsed=frozenset(parsed))
    errors += _check_unread_fields(spec, parsed)
    if spec.entrypoint is None:
        errors += _trainer_errors(spec, settings, parsed, unparsed_paths)
    clean = set(parsed) - {str(e["loc"]).split(".")[0] for e in errors}
    if {"space", "strategy"} <= clean:  # sizes need a sane space; a huge one must not be built
        errors += _check_sizes(spec, settings) or _check_empty_space(spec)
    if spec.entrypoint is not None:
        return _in_block_order(errors)
    if {"model", "space", "execution"} <= clean:
        errors += checkpoint_count_errors(spec, settings)
    ds = spec.dataset
    if {"model", "space", "dataset"} <= clean and ds is not None and ds.is_builtin:
        errors += fit_errors(spec, builtin_shape(ds), settings)  # uploads: service
    return _in_block_order(errors)


_ORDER = {block: i for i, block in enumerate(StudySpec.model_fields)}


def _in_block_order(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`errors` in the order of the blocks they are about (stable within one block)."""
    return sorted(errors, key=lambda e: _ORDER.get(str(e["loc"]).split(".")[0], len(_ORDER)))


def _trainer_errors(
    spec: StudySpec, settings: Settings, parsed: Collection[str], unparsed_paths: Collection[str]
) -> list[dict[str, Any]]:
    """The built-in trainer's blocks: the model, the data set, space paths into the model."""
    errors = _check_model(spec, settings) if "model" in parsed else []
    if "dataset" in parsed:
        errors += _check_dataset(spec, settings)
    if "space" in parsed or unparsed_paths:
        errors += _check_space(spec, settings, base_known="model" in parsed)
        errors += [e for p in unparsed_paths if (e := _path_kind(spec, p, None)[1])]
    return errors


def _check_empty_space(spec: StudySpec) -> list[dict[str, Any]]:
    """No space and several trials: every trial would train the same model."""
    total = total_trials(spec)
    if spec.space or total <= 1:
        return []
    return [
        error_at(
            "space",
            f"empty, so all {total} trials would train the same model: add a distribution "
            "for each field to search, or run the base model once with strategy "
            "{type: random, trials: 1}",
            {},
        )
    ]


# Stand-ins for required blocks the schema refused, so the others can still be checked.
_STAND_INS: dict[str, Any] = {"name": "unnamed", "dataset": {"name": BUILTIN_DATASETS[0]}}
_TASK_STAND_IN = {"entrypoint": "refused.entrypoint:objective"}


def errors_past_schema(
    data: Mapping[str, Any], exc: ValidationError, *, settings: Settings
) -> list[dict[str, Any]]:
    """The problems `spec_errors` finds in the blocks of `data` the schema accepted.

    `exc` is the schema's refusal of `data`: its blocks are left out (required ones
    replaced by stand-ins) and so are the space's refused distributions, and what is left
    is checked as a whole spec would be. Nothing if what is left does not parse either.
    """
    failed: set[str] = set()
    bad_paths: set[str] = set()
    space = data.get("space")
    for e in exc.errors(include_url=False):
        loc = e["loc"]
        if not loc:
            return []
        if len(loc) >= 2 and loc[0] == "space" and isinstance(space, Mapping):
            bad_paths.add(str(loc[1]))
        else:
            failed.add(str(loc[0]))
    kept = {k: v for k, v in data.items() if k not in failed}
    kept.update({k: v for k, v in _STAND_INS.items() if k in failed})
    task = data.get("task")
    if "task" in failed and isinstance(task, Mapping) and task.get("entrypoint") is not None:
        kept["task"] = _TASK_STAND_IN  # a task's spec all the same: check it as one
        if "dataset" in failed:  # refused already; a stand-in would be refused again
            del kept["dataset"]
    if bad_paths and isinstance(space, Mapping):
        kept["space"] = {p: d for p, d in space.items() if p not in bad_paths}
    try:
        spec = StudySpec.model_validate(kept)
    except ValidationError:
        return []
    parsed = BLOCKS - failed - ({"space"} if bad_paths else set())
    return spec_errors(spec, settings=settings, parsed=parsed, unparsed_paths=sorted(bad_paths))


def check_spec(spec: StudySpec, *, settings: Settings, check_trials: bool = True) -> None:
    """Raise `SpecError` listing every problem of a schema-valid spec past its schema.

    `check_trials`: also that every trial of the first round makes a valid config.
    """
    if errors := spec_errors(spec, settings=settings):
        raise SpecError(errors)
    if check_trials:
        checked_round(spec, settings=settings)

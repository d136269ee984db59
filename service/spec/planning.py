"""Round planning: a spec's strategy, the trials of each round, and how many there are."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import islice, product
from typing import Any

from pydantic import ValidationError

from service.search.strategies import (
    CoarseToFineStrategy,
    GridStrategy,
    RandomStrategy,
    SobolStrategy,
    Strategy,
)
from service.spec.messages import SpecError, from_validation, trial_error
from service.spec.schema import StudySpec, TrialPlan
from trainer.config import TrainConfig


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
            # A spec not yet checked may lack it (the checks say so); counting needs none.
            direction=spec.objective.direction or "maximize",
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
    box, plans = sample_round(spec, round_index=round_index, history=history)
    if spec.entrypoint is not None:  # a task's own params: the function checks them
        return box, plans
    for i, plan in enumerate(plans):
        try:
            TrainConfig(**plan.config)
        except ValidationError as exc:
            errors = from_validation(exc, known=list(TrainConfig.model_fields))
            raise SpecError(
                [trial_error(spec, i, plan.params, e["loc"], e["msg"], e["input"]) for e in errors]
            ) from None
    return box, plans


def sample_round(
    spec: StudySpec,
    *,
    round_index: int,
    history: Sequence[tuple[Mapping[str, Any], float | None]],
) -> tuple[dict[str, Any] | None, list[TrialPlan]]:
    """`plan_round` without its check of each config against TrainConfig."""
    strategy = make_strategy(spec)
    box, params = strategy.suggest(round_index=round_index, history=history)
    described = box.describe(strategy.space) if box is not None else None
    if spec.task is not None and spec.entrypoint is not None:
        # A task's function gets its fixed params overlaid by the sampled ones, flat.
        return described, [TrialPlan(params=p, config={**spec.task.params, **p}) for p in params]
    base = spec.base_config().model_dump(mode="json")
    plans = []
    for p in params:
        plans.append(TrialPlan(params=p, config=merge_params(base, p)))
    return described, plans


def merge_params(base: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
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


def total_rounds(spec: StudySpec) -> int:
    """How many rounds the study has: strategy.rounds for coarse_to_fine, else 1."""
    return spec.strategy.rounds if spec.strategy.type == "coarse_to_fine" else 1


def total_trials(spec: StudySpec) -> int:
    """How many trials the whole study queues over all its rounds."""
    return make_strategy(spec).total_trials


def objective_direction(spec: StudySpec) -> str:
    """ "maximize" or "minimize": how to rank the objective's values."""
    return spec.direction


def preview(spec: StudySpec, n: int = 20) -> dict[str, Any]:
    """Where the first `n` trials put each hyperparameter, for the dashboard's form.

    Per space path: its distribution, the values of the first `n` trials of round 1, and
    their positions along the distribution's own scale (0 = low, 1 = high; for a
    ``layers`` space, the position of the depth). For a grid, also the levels of each
    hyperparameter.
    """
    strategy = make_strategy(spec)
    space = strategy.space
    first = first_params(spec, n)
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


def first_params(spec: StudySpec, n: int) -> list[dict[str, Any]]:
    """The params of round 1's first `n` trials, drawing no more than `n`.

    The same as the first `n` of `plan_round`'s: random draws and Sobol points come in
    order from their seed, and the grid is a product taken in order.
    """
    st = spec.strategy
    if st.type == "grid":
        space = spec.search_space()
        per_path = [space.distributions[p].grid_units(st.grid_points) for p in space.paths]
        combos = islice(product(*per_path), n)
        return [space.decode(list(sum(combo, ()))) for combo in combos]
    if st.type == "coarse_to_fine":
        fewer = {"trials_per_round": min(n, st.trials_per_round)}
    else:
        fewer = {"trials": min(n, st.trials)}
    cut = spec.model_copy(update={"strategy": st.model_copy(update=fewer)})
    return make_strategy(cut).suggest(round_index=0, history=())[1]


def _position(u: float) -> float | None:
    return None if math.isnan(u) else round(float(u), 6)

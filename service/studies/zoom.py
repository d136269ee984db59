"""Zooming into a study: a coarse-to-fine child whose first box surrounds its best trials.

Two ways, one box. `zoom_study` creates the child, which keeps the parent's whole space
and samples the box first (as coarse-to-fine's later rounds do), with the lineage kept.
`zoom_preview` writes that same box back as the child's own ranges, for a person to read
and edit before submitting it as a study of its own; the dashboard asks for it rather than
computing a box of its own.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from service.db import Database
from service.errors import Conflict, get_or_404
from service.models import Study, Trial, TrialStatus
from service.search.strategies import CoarseToFineStrategy
from service.search.zoom import narrowed_space
from service.settings import Settings
from service.spec import make_strategy
from service.studies.commands import create_study, validate_spec

History = list[tuple[dict[str, Any], float | None]]


def _child(
    db: Database,
    study_id: int,
    *,
    rounds: int | None,
    trials_per_round: int | None,
    keep_top: float | None,
) -> tuple[dict[str, Any], History]:
    """The zoomed child's spec (the parent's space, a coarse-to-fine strategy) and the
    parent's history (params, value; None for a trial that did not complete)."""
    with db.session(write=False) as s:
        parent = get_or_404(s, Study, study_id)
        rows = s.execute(
            select(Trial.params, Trial.value, Trial.status).where(Trial.study_id == study_id)
        ).all()
        spec = dict(parent.spec)
        name = parent.name
    history = [(r.params, r.value if r.status == TrialStatus.completed else None) for r in rows]
    if not any(value is not None for _, value in history):
        raise Conflict(f"study {study_id} has no finished trial to zoom into yet")
    old = spec.get("strategy", {})
    strategy: dict[str, Any] = {
        "type": "coarse_to_fine",
        "rounds": rounds or (old.get("rounds") if old.get("type") == "coarse_to_fine" else 2),
        "trials_per_round": trials_per_round
        or old.get("trials_per_round")
        or max(4, min(50, old.get("trials", 20) // 2)),
    }
    if keep_top is not None:
        strategy["keep_top"] = keep_top
    if old.get("type") == "coarse_to_fine" and "placement" in old:
        strategy["placement"] = old["placement"]  # how the parent placed its trials
    return {**spec, "name": f"{name} (zoom)"[:200], "strategy": strategy}, history


def zoom_study(
    *,
    db: Database,
    study_id: int,
    settings: Settings,
    rounds: int | None = None,
    trials_per_round: int | None = None,
    keep_top: float | None = None,
) -> int:
    """Start a coarse-to-fine study whose first box surrounds study_id's best trials."""
    child, history = _child(
        db, study_id, rounds=rounds, trials_per_round=trials_per_round, keep_top=keep_top
    )
    return create_study(
        db=db, data=child, settings=settings, parent_study_id=study_id, history=history
    )


def zoom_preview(
    *,
    db: Database,
    study_id: int,
    settings: Settings,
    rounds: int | None = None,
    trials_per_round: int | None = None,
    keep_top: float | None = None,
) -> dict[str, Any]:
    """The spec of a study that samples only the box `zoom_study` would start from.

    Returns ``spec`` (its space narrowed to the box, on each hyperparameter's own scale),
    ``box`` (as a round's box is described) and ``kept`` (how many best trials set it).
    """
    child, history = _child(
        db, study_id, rounds=rounds, trials_per_round=trials_per_round, keep_top=keep_top
    )
    strategy = make_strategy(validate_spec(child, settings=settings))
    assert isinstance(strategy, CoarseToFineStrategy)
    box = strategy.box(history=history)
    space = narrowed_space(strategy.space, box)
    spec = {**child, "space": {path: d.to_json() for path, d in space.items()}}
    validate_spec(spec, settings=settings)  # what the person gets must be submittable as is
    return {"spec": spec, "box": box.describe(strategy.space), "kept": len(strategy.top(history))}

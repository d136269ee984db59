"""A study's hyperparameter importance as the API returns it: sampled, computed once, cached.

Fitting fANOVA's forest to a thousand trials costs most of a second (Optuna's study and
fANOVA's variances are Python; `service.importance.fanova`), so a study is fitted on at
most `SAMPLE` of its completed trials, drawn at random with the study's id as the seed,
and the answer is kept per study version: the count of its completed trials. A study
that grows by less than `REUSE_GROWTH` of what it had once it has more than `SAMPLE` (a
new sample would say the same) answers from the cache too, so a live 50,000-trial study
recomputes every 2,500 trials, not on every refresh.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func, select

from service.db import Database
from service.errors import get_or_404
from service.importance.fanova import fanova_importances
from service.importance.features import COURSE_TIERS, course_tier, feature_rows, features_of
from service.models import Study, Trial, TrialStatus
from service.spec import stored_spec

SAMPLE = 800  # completed trials the forest is fitted to, at most
MIN_TRIALS = 8  # fewer explain nothing: the answer says so instead
REUSE_GROWTH = 0.05
CACHED_STUDIES = 256


@dataclass(frozen=True)
class _Entry:
    version: int  # completed trials when it was computed
    document: dict[str, Any]


_cache: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
_cache_lock = threading.Lock()
_study_locks: dict[tuple[str, int], threading.Lock] = {}


def _fresh(entry: _Entry | None, version: int) -> bool:
    if entry is None:
        return False
    if entry.version == version:
        return True
    grown = version - entry.version
    return entry.version >= SAMPLE and 0 <= grown < REUSE_GROWTH * entry.version


def _cached(key: tuple[str, int], version: int) -> dict[str, Any] | None:
    with _cache_lock:
        entry = _cache.get(key)
        if not _fresh(entry, version):
            return None
        _cache.move_to_end(key)
        assert entry is not None
        return {**entry.document, "cached": True}


def _keep(key: tuple[str, int], version: int, document: dict[str, Any]) -> None:
    with _cache_lock:
        _cache[key] = _Entry(version, document)
        _cache.move_to_end(key)
        while len(_cache) > CACHED_STUDIES:
            _cache.popitem(last=False)


def _completed(study_id: int) -> list[Any]:
    return [
        Trial.study_id == study_id,
        Trial.status == TrialStatus.completed,
        Trial.value.is_not(None),
    ]


def study_importance(*, db: Database, study_id: int) -> dict[str, Any]:
    """How much each hyperparameter of a study explains of its objective (fANOVA), beside
    the course's ranking; see the module's docstring for the sample and the cache."""
    key = (str(db.engine.url), study_id)
    with db.session(write=False) as s:
        get_or_404(s, Study, study_id)
        version = s.scalar(select(func.count()).where(*_completed(study_id))) or 0
    found = _cached(key, version)
    if found is not None:
        return found
    with _cache_lock:
        lock = _study_locks.setdefault(key, threading.Lock())
    with lock:  # one computation per study at a time; the others then read its answer
        found = _cached(key, version)
        if found is not None:
            return found
        document = _compute(db=db, study_id=study_id)
        _keep(key, document["completed_trials"], document)
    return {**document, "cached": False}


def _read_sample(db: Database, study_id: int) -> tuple[Any, int, list[Any]]:
    """The study's typed spec, its completed trials' count, and (params, value) of a sample."""
    with db.session(write=False) as s:
        study = get_or_404(s, Study, study_id)
        spec = stored_spec(study.spec, fingerprint=study.spec_sha256)
        ids = list(s.scalars(select(Trial.id).where(*_completed(study_id))))
        if len(ids) > SAMPLE:
            draw = np.random.default_rng(study_id)
            ids = sorted(int(i) for i in draw.choice(ids, size=SAMPLE, replace=False))
            count = s.scalar(select(func.count()).where(*_completed(study_id))) or 0
        else:
            count = len(ids)
        rows = s.execute(select(Trial.params, Trial.value).where(Trial.id.in_(ids))).all()
    return spec, count, list(rows)


def _compute(*, db: Database, study_id: int) -> dict[str, Any]:
    started = time.perf_counter()
    spec, count, rows = _read_sample(db, study_id)
    space = spec.space
    features = features_of(space)
    table, kept = feature_rows(space, [r.params for r in rows])
    values = [float(rows[i].value) for i in kept]
    note = None
    shares: dict[str, float] = {}
    if not features:
        note = "the study searches no hyperparameter"
    elif len(table) < MIN_TRIALS:
        note = f"needs {MIN_TRIALS} completed trials at least (it has {len(table)})"
    else:
        shares = fanova_importances(features, table, values, seed=study_id)
    ranked = sorted(features, key=lambda f: -shares.get(f.name, 0.0))
    return {
        "study_id": study_id,
        "method": "fanova",
        "metric": spec.objective.metric,
        "completed_trials": count,
        "trials_used": len(table) if shares else 0,
        "sampled": bool(shares) and len(table) < count,
        "importances": [
            {
                "name": f.name,
                "importance": shares[f.name],
                "rank": rank,
                "scale": f.scale,
                "course_tier": course_tier(f.name),
            }
            for rank, f in enumerate(ranked, start=1)
            if f.name in shares
        ],
        "course": [{"tier": tier, "what": what} for tier, what in COURSE_TIERS],
        "note": note,
        "seconds": round(time.perf_counter() - started, 4),
    }

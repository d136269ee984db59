"""Claims: workers register, then lease queued trials, served fairly across studies."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    String,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from service.db import Database, db_epoch
from service.events import emit_many
from service.models import (
    METRIC_FIELDS,
    Checkpoint,
    Metric,
    StudyStatus,
    Trial,
    TrialStatus,
)
from service.queue.closing import ROUND_DUE
from service.queue.offers import Offers, touch_worker
from service.queue.pace import PACE, fair_share, lease_from_study, work_ahead
from service.queue.reports import pruning_spec
from service.queue.tables import METRICS, STUDIES, TRIALS, trial_epochs
from service.search.pruners import decision_epochs
from service.spec import PruningSpec


@dataclass(frozen=True)
class Claimed:
    """What a worker needs to run one trial."""

    trial_id: int
    study_id: int
    number: int
    attempt: int
    lease_token: str
    config: dict[str, Any]
    dataset: dict[str, Any]
    checkpoint_every: int = 0
    # At least this many seconds between periodic checkpoints (0: every checkpoint_every
    # epochs). A caviar study's checkpoints are for a requeued trial to resume and a
    # finished one to go on, not for forks from any epoch: one per few seconds is enough.
    checkpoint_seconds: float = 0.0
    resume: dict[str, Any] | None = None  # {"checkpoint_id", "epoch"}: start from there
    report_at: list[int] = field(default_factory=list)  # epochs to report at once (rungs)
    expected_seconds: float | None = None  # how long the study's trials take, if known
    gradient_check: bool = False  # execution.gradient_check: check the network first
    entrypoint: str | None = None  # task.entrypoint: the function to call (None: the trainer)
    metric: str | None = None  # a task's objective.metric: what its function returns


def claim_trials(
    *,
    db: Database,
    worker_id: str,
    max_trials: int,
    lease_seconds: float,
    caviar_checkpoint_seconds: float = 0.0,
    target_seconds: float | None = None,
    busy_seconds: float = 0.0,
    study_id: int | None = None,
) -> list[Claimed]:
    """Lease up to `max_trials` queued trials to `worker_id` (see `claim_in`); with
    `study_id`, only that study's."""
    with db.session() as s:
        offers = replace(touch_worker(s, worker_id), study_id=study_id)
        return claim_in(
            s,
            worker_id=worker_id,
            offers=offers,
            max_trials=max_trials,
            lease_seconds=lease_seconds,
            caviar_checkpoint_seconds=caviar_checkpoint_seconds,
            target_seconds=target_seconds,
            busy_seconds=busy_seconds,
        )


def claim_in(
    s: Session,
    *,
    worker_id: str,
    max_trials: int,
    lease_seconds: float,
    offers: Offers = Offers(),
    caviar_checkpoint_seconds: float = 0.0,
    target_seconds: float | None = None,
    busy_seconds: float = 0.0,
) -> list[Claimed]:
    """Lease up to `max_trials` queued trials to `worker_id`, within the session `s`.

    Only trials the worker runs (`offers`): a study of a task's own function goes only to
    a worker that offers its entrypoint, the built-in trainer's to one that runs it.

    Studies are served oldest-waiting first (the one whose last claim is oldest), which is
    round-robin across studies; `max_parallel` and panda's one-at-a-time are enforced
    under a lock on the study row, so two replicas cannot both take the last free slot.
    With `target_seconds`, a lease holds only as many trials as fit it by each study's
    observed trial durations, after `busy_seconds` of the worker's running trial, and at
    most half of a study's queued trials (see service.queue.pace); without, up to
    `max_trials`.
    """
    conn = s.connection()
    plain, skip_locked, wait = _candidates(*offers.statements)
    if conn.dialect.name == "postgresql":
        # The study rows stay locked to the end of the transaction: a replica that
        # finds one locked serves another study, and max_parallel is counted under
        # the lock, so two replicas cannot both fill the last free slot. NO KEY
        # UPDATE, not UPDATE: see closing.after_trial_finished.
        studies = conn.execute(skip_locked, offers.params()).all()
        if not studies:
            # Every study with work is locked by a short claim or finish: wait for
            # one rather than send the worker to sleep with work in the queue.
            studies = conn.execute(wait, offers.params()).all()
    else:
        studies = conn.execute(plain, offers.params()).all()
    claimed: list[Claimed] = []
    ahead = busy_seconds
    for study in studies:
        want = max_trials - len(claimed)
        if want <= 0:
            break
        expected = _expected_seconds(s, study.id)
        if target_seconds is not None:
            want = lease_from_study(
                ahead=ahead, expected=expected, budget=target_seconds, want=want
            )
        if want <= 0:
            break
        taken = _claim_from_study(
            s,
            study=study,
            worker_id=worker_id,
            want=want,
            lease_seconds=lease_seconds,
            caviar_checkpoint_seconds=caviar_checkpoint_seconds,
            expected=expected,
            share=target_seconds is not None,
        )
        claimed.extend(taken)
        ahead = work_ahead(ahead=ahead, expected=expected, taken=len(taken))
    return claimed


def _expected_seconds(s: Session, study_id: int) -> float | None:
    """The study's expected trial duration: as this process has seen its results, else
    the epochs of its latest completed trial (another replica's, before a restart)."""
    database = str(s.get_bind().engine.url)
    expected = PACE.expected(database=database, study_id=study_id)
    if expected is None:
        last = s.connection().execute(_LAST_RUN, {"b_study": study_id}).scalar()
        if last is not None:
            PACE.seed(database=database, study_id=study_id, seconds=float(last))
            expected = float(last)
    return expected


def trials_waiting(*, db: Database, offers: Offers = Offers()) -> bool:
    """Whether queued trials wait for a free slot (an open study at its `max_parallel`, a
    panda study running its one trial), or a study's next round is being planned: a claim
    that came back empty does not mean the queue is empty. Trials of a study awaiting a
    person's review do not count, nor those of studies a worker of `offers` cannot run."""
    with db.session(write=False) as s:
        return bool(s.connection().execute(waiting(*offers.statements), offers.params()).scalar())


_S, _T = STUDIES, TRIALS
# An open study, not waiting for a person's review, with a queued trial: what a claim
# serves, and what an empty claim reports as waiting (see trials_waiting).
_SERVABLE = (
    _S.c.status.in_([StudyStatus.queued, StudyStatus.running]),
    _S.c.awaiting_review.is_(False),
    exists().where(and_(_T.c.study_id == _S.c.id, _T.c.status == TrialStatus.queued)),
)


def _serving(trainer: bool, only_study: bool = False) -> Any:
    """The studies a worker runs: those naming one of its entrypoints (`b_entrypoints`,
    maybe none), and with `trainer` the built-in trainer's (no entrypoint); with
    `only_study`, of those only the study `b_only_study`."""
    named = _S.c.entrypoint.in_(bindparam("b_entrypoints", expanding=True))
    serving = or_(_S.c.entrypoint.is_(None), named) if trainer else named
    return and_(serving, _S.c.id == bindparam("b_only_study")) if only_study else serving


@cache
def _candidates(trainer: bool, only_study: bool = False) -> tuple[Any, Any, Any]:
    """The claim's candidate studies for a worker that does (not) run the trainer (of
    those, with `only_study`, one study): as SQLite reads them, FOR UPDATE SKIP LOCKED,
    and the one to wait for (PostgreSQL)."""
    plain = (
        select(_S.c.id, _S.c.mode, _S.c.max_parallel, _S.c.status, _S.c.spec, _S.c.entrypoint)
        .where(*_SERVABLE, _serving(trainer, only_study))
        .order_by(_S.c.last_claim_at.asc().nulls_first(), _S.c.id)
        .limit(16)
    )
    return (
        plain,
        plain.with_for_update(skip_locked=True, of=_S, key_share=True),
        plain.limit(1).with_for_update(of=_S, key_share=True),
    )


@cache
def waiting(trainer: bool, only_study: bool = False) -> Any:
    """Whether queued trials a worker runs wait for a free slot, or a round of a study it
    runs is due: the planner opens a due round moments after the finish that closed the
    last one, so a worker leaving when idle must not leave now."""
    serving = _serving(trainer, only_study)
    return select(or_(exists().where(*_SERVABLE, serving), exists().where(*ROUND_DUE, serving)))


_COUNT_RUNNING = (
    select(func.count())
    .select_from(_T)
    .where(_T.c.study_id == bindparam("b_study"), _T.c.status == TrialStatus.running)
)
# How many trials of the study wait in the queue, counted up to `b_cap` (an index range).
_QUEUED = select(func.count()).select_from(
    select(_T.c.id)
    .where(_T.c.study_id == bindparam("b_study"), _T.c.status == TrialStatus.queued)
    .limit(bindparam("b_cap", type_=Integer))
    .subquery()
)
# The training seconds of the study's latest completed trial (its final attempt's epochs).
_LATEST_DONE = (
    select(_T.c.id, _T.c.attempt)
    .where(_T.c.study_id == bindparam("b_study"), _T.c.status == TrialStatus.completed)
    .order_by(_T.c.id.desc())
    .limit(1)
    .subquery()
)
_LAST_RUN = select(func.sum(METRICS.c.seconds)).where(
    METRICS.c.trial_id == _LATEST_DONE.c.id, METRICS.c.attempt == _LATEST_DONE.c.attempt
)
# One statement takes the trials: a CTE picks queued rows (on PostgreSQL locking them
# FOR UPDATE SKIP LOCKED, so replicas pass over each other's picks instead of waiting)
# and the UPDATE ... RETURNING leases them. SQLite, whose write transactions are serial
# under BEGIN IMMEDIATE, runs the same statement without the lock clause.
_PICKED = (
    select(_T.c.id)
    .where(_T.c.study_id == bindparam("b_study"), _T.c.status == TrialStatus.queued)
    .order_by(_T.c.id)
    .limit(bindparam("b_limit", type_=Integer))
    .with_for_update(skip_locked=True)
    .cte("picked")
)
_LEASE = (
    update(_T)
    .where(_T.c.id.in_(select(_PICKED.c.id)), _T.c.status == TrialStatus.queued)
    .values(
        status=TrialStatus.running,
        attempt=_T.c.attempt + 1,
        # unguessable (the batch part) and distinct per trial (the id part)
        lease_token=bindparam("b_batch", type_=String) + cast(_T.c.id, String),
        lease_expires_at=db_epoch() + bindparam("b_lease", type_=Float),
        worker_id=bindparam("b_worker", type_=String),
        stop_requested=False,
        started_at=func.coalesce(_T.c.started_at, func.now()),
    )
    .returning(
        _T.c.id,
        _T.c.number,
        _T.c.attempt,
        _T.c.config,
        _T.c.lease_token,
        _T.c.resume_checkpoint_id,
    )
)
# The claim stamp orders studies for the next claim (oldest first). Claims come faster
# than the clock ticks (SQLite's has milliseconds), so a stamp is also later than every
# other open study's: two claims in one tick still hand out studies in turn.
_LAST_STAMP = (
    select(func.max(_S.c.last_claim_at) + 1e-6)
    .where(_S.c.status.in_([StudyStatus.queued, StudyStatus.running]))
    .scalar_subquery()
)
_STUDY_CLAIMED = (
    update(_S)
    .where(
        _S.c.id == bindparam("b_study"),
        _S.c.status.in_([StudyStatus.queued, StudyStatus.running]),
    )
    .values(last_claim_at=case((db_epoch() < _LAST_STAMP, _LAST_STAMP), else_=db_epoch()))
)
_STUDY_STARTED = _STUDY_CLAIMED.values(status=StudyStatus.running, started_at=func.now())


def _claim_from_study(
    s: Session,
    *,
    study: Any,
    worker_id: str,
    want: int,
    lease_seconds: float,
    caviar_checkpoint_seconds: float = 0.0,
    expected: float | None = None,
    share: bool = False,
) -> list[Claimed]:
    conn = s.connection()
    cap = 1 if study.mode == "panda" else study.max_parallel
    running = conn.execute(_COUNT_RUNNING, {"b_study": study.id}).scalar()
    free = cap - (running or 0)
    if free <= 0:
        return []
    want = min(free, want)
    if share and want > 1:  # a sized lease of short trials: the last ones are shared out
        queued = conn.execute(_QUEUED, {"b_study": study.id, "b_cap": 2 * want}).scalar()
        want = fair_share(queued=int(queued or 0), want=want)
    rows = conn.execute(
        _LEASE,
        {
            "b_study": study.id,
            "b_limit": want,
            "b_batch": f"{secrets.token_hex(16)}-",
            "b_lease": lease_seconds,
            "b_worker": worker_id,
        },
    ).all()
    if not rows:
        return []
    spec = study.spec
    pruning = pruning_spec(s, study.id, spec)
    terms = {
        # Unset fields stay unset, so the trainer applies its own defaults.
        "dataset": {k: v for k, v in spec.get("dataset", {}).items() if v is not None},
        "checkpoint_every": int(spec.get("execution", {}).get("checkpoint_every") or 0),
        "checkpoint_seconds": caviar_checkpoint_seconds if study.mode == "caviar" else 0.0,
        "expected_seconds": expected,
        "gradient_check": bool(spec.get("execution", {}).get("gradient_check")),
        "entrypoint": study.entrypoint,
        "metric": spec.get("objective", {}).get("metric") if study.entrypoint else None,
    }
    out = [
        _claimed(s, study_id=study.id, row=row, pruning=pruning, terms=terms)
        for row in sorted(rows, key=lambda r: r.id)
    ]
    emit_many(
        s,
        [
            {
                "study_id": study.id,
                "type": "trial.started",
                "trial_id": c.trial_id,
                "data": {"number": c.number, "attempt": c.attempt, "worker_id": worker_id},
            }
            for c in out
        ],
    )
    started = study.status == StudyStatus.queued
    conn.execute(_STUDY_STARTED if started else _STUDY_CLAIMED, {"b_study": study.id})
    return out


def _claimed(
    s: Session, *, study_id: int, row: Any, pruning: PruningSpec | None, terms: dict[str, Any]
) -> Claimed:
    """One leased trial as its worker gets it; `terms` are its study's (data set, checkpoints)."""
    resume = None
    if row.resume_checkpoint_id is not None:
        resume = _carry_curve(
            s, trial_id=row.id, attempt=row.attempt, checkpoint_id=row.resume_checkpoint_id
        )
    return Claimed(
        trial_id=row.id,
        study_id=study_id,
        number=row.number,
        attempt=row.attempt,
        lease_token=row.lease_token,
        config=row.config,
        resume=resume,
        # Pruning decides at these epochs (ASHA's rungs, the median rule's evenly spaced
        # ones): the worker reports them at once, so a trial stops there rather than at
        # its next periodic report, or never if it is short.
        report_at=(
            decision_epochs(pruning, trial_epochs(row.config.get("epochs")))
            if pruning is not None
            else []
        ),
        **terms,
    )


def _carry_curve(s: Session, *, trial_id: int, attempt: int, checkpoint_id: int) -> dict[str, Any]:
    """Copy the curve up to a checkpoint into the attempt that starts from it.

    The new attempt then holds one continuous curve, whether it resumes its own trial or
    forks another, so its objective, its plot and pruning need no special case.
    """
    ckpt = s.get(Checkpoint, checkpoint_id)
    assert ckpt is not None
    columns = [getattr(Metric, k) for k in (*METRIC_FIELDS, "extra")]
    s.execute(
        insert(Metric).from_select(
            ["trial_id", "attempt", "epoch", *METRIC_FIELDS, "extra"],
            select(literal(trial_id), literal(attempt), Metric.epoch, *columns).where(
                Metric.trial_id == ckpt.trial_id,
                Metric.attempt == ckpt.attempt,
                Metric.epoch <= ckpt.epoch,
            ),
        )
    )
    s.execute(update(Trial).where(Trial.id == trial_id).values(epochs_done=ckpt.epoch))
    return {"checkpoint_id": ckpt.id, "epoch": ckpt.epoch}

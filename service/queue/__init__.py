"""The trial queue: claim with a lease, heartbeat, report, finish, release and reap.

Every transition is a compare-and-set on (id, status, lease_token): the loser of a race
changes nothing and is told so (LeaseLost), so a trial's result is stored exactly once
however many workers, reapers or replicas touch it. The modules: offers (register, what a
worker runs), claims (claim only what it runs,
trials_waiting), reports (heartbeat, metrics, pruning), finish (finish_trial(s), the
objective), leases (lease_problem, release, reap, the Reaper thread) and closing (what a
trial's end does to its study; the next round is left to service.studies.rounds);
exchange (a worker's claim that also reports, in one transaction), results (a result
checked against its trial, inline checkpoints) and pace (lease sizes from each study's
observed trial durations).
"""

from service.queue.claims import Claimed, claim_trials, trials_waiting
from service.queue.closing import ROUNDS_DUE, after_trial_finished
from service.queue.exchange import Exchange, claim_and_report
from service.queue.finish import finish_trial, finish_trials, objective_value_sql, study_objective
from service.queue.leases import Reaper, lease_problem, reap_expired, release_trial
from service.queue.offers import Offers, register_worker
from service.queue.reports import heartbeat, report_metrics
from service.queue.results import ResultError

__all__ = [
    "ROUNDS_DUE",
    "Claimed",
    "Exchange",
    "Offers",
    "Reaper",
    "ResultError",
    "after_trial_finished",
    "claim_and_report",
    "claim_trials",
    "finish_trial",
    "finish_trials",
    "heartbeat",
    "lease_problem",
    "objective_value_sql",
    "reap_expired",
    "register_worker",
    "release_trial",
    "report_metrics",
    "study_objective",
    "trials_waiting",
]

"""Study and trial operations behind the API and the CLI: create, read, list, steer."""

from service.studies.commands import (
    cancel_study,
    check_dataset,
    create_study,
    retry_failed,
    stop_trial,
    validate_spec,
)
from service.studies.export import EXPORT_COLUMNS, export_csv, export_trials
from service.studies.hot_reads import get_study, list_studies, list_trials
from service.studies.reads import (
    best_trial,
    get_trial,
    list_rounds,
    study_dict,
    trial_detail,
    trial_dict,
    trial_metrics,
)
from service.studies.workers import list_workers
from service.studies.zoom import zoom_preview, zoom_study

__all__ = [
    "EXPORT_COLUMNS",
    "best_trial",
    "cancel_study",
    "check_dataset",
    "create_study",
    "export_csv",
    "export_trials",
    "get_study",
    "get_trial",
    "list_rounds",
    "list_studies",
    "list_trials",
    "list_workers",
    "retry_failed",
    "stop_trial",
    "study_dict",
    "trial_detail",
    "trial_dict",
    "trial_metrics",
    "validate_spec",
    "zoom_preview",
    "zoom_study",
]
